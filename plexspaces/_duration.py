"""Durations: one strict parser used everywhere a duration is accepted."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import TypeAlias

__all__ = ["MAX_DURATION", "Duration", "duration_seconds", "parse_duration", "positive_duration"]

Duration: TypeAlias = timedelta | int | float | str
"""What `parse_duration` accepts: a `timedelta`, seconds as a number, or a string like "1h30m"."""

MAX_DURATION = timedelta(days=36_500)
"""The longest duration the runtime accepts (36500 days, about 100 years), wherever it takes one.

A delay, period, timeout or lease is added to the current time and read back as a `datetime`
(`datetime.max` is the year 9999), and a timeout becomes a thread wait (at most
`threading.TIMEOUT_MAX`, about 292 years on POSIX). A longer duration would be accepted and fail
later, far from the call that gave it; `parse_duration` refuses it up front instead.
"""
_MAX_SECONDS = MAX_DURATION.total_seconds()

_UNIT_MICROSECONDS = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
# One component: a number and a unit. Longer unit names come first so "ms" is not read as "m".
_COMPONENT = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(us|µs|ms|s|m|h|d)")
_ACCEPTED = (
    "a timedelta, a non-negative number of seconds, or a string such as "
    "'500ms', '2s', '15m', '1h', '30d' or '1h30m' (units: us, ms, s, m, h, d)"
)
_TOO_LARGE = (
    f"is too large; the longest duration accepted is {MAX_DURATION.days}d (about 100 years)"
)


def parse_duration(value: Duration) -> timedelta:
    """Return `value` as a non-negative `timedelta` of at most `MAX_DURATION`.

    Accepts a `timedelta`, a number of seconds (`int` or `float`), or a string made of one or more
    number-and-unit parts (`"500ms"`, `"1h30m"`, `"1.5s"`). Every number in a string needs a unit.

    Raises:
        ValueError: the value is negative, not finite, longer than `MAX_DURATION`, empty, has a
            number without a unit, or is not one of the accepted types. The message names the
            value.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"duration {value!r} is negative; expected {_ACCEPTED}")
        parsed = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"duration {value!r} is not a duration; expected {_ACCEPTED}")
    elif isinstance(value, int | float):
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(
                f"duration {value!r} must be finite and non-negative; expected {_ACCEPTED}"
            )
        # Compared as a number first: timedelta() overflows on far larger ones.
        if value > _MAX_SECONDS:
            raise ValueError(f"duration {value!r} {_TOO_LARGE}")
        parsed = timedelta(seconds=value)
    else:
        parsed = _parse_string(value)
    # The runtime's one limit: every duration it accepts comes through here.
    if parsed > MAX_DURATION:
        raise ValueError(f"duration {value!r} {_TOO_LARGE}")
    return parsed


def positive_duration(value: Duration) -> timedelta:
    """`parse_duration(value)`, refusing zero: for periods, timeouts and leases.

    Usable directly as a converter in a facet's `config_schema`.
    """
    parsed = parse_duration(value)
    if parsed <= timedelta(0):
        raise ValueError(f"duration {value!r} must be positive")
    return parsed


def duration_seconds(value: Duration) -> float:
    """`parse_duration(value)` in seconds, with a fast path for plain numbers in range."""
    kind = type(value)
    # The same bounds as parse_duration's. `0 <= value` is False for NaN, and a number out of
    # range fails the comparison too: both take the strict path and its error.
    if (kind is float or kind is int) and 0 <= value <= _MAX_SECONDS:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    return parse_duration(value).total_seconds()


@lru_cache(maxsize=512)
def _parse_string(text: str) -> timedelta:
    pos = 0
    total = timedelta(0)
    parts = 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise ValueError(
                f"duration {text!r} is not understood at {text[pos:].strip()!r}; "
                f"expected {_ACCEPTED}"
            )
        # Decimal keeps every part exact ("100000d1us" keeps its 1 us, "999999999d" all days).
        micros = Decimal(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
        try:
            total += timedelta(microseconds=int(micros.to_integral_value(ROUND_HALF_EVEN)))
        except OverflowError:
            raise ValueError(f"duration {text!r} {_TOO_LARGE}") from None
        pos = match.end()
        parts += 1
    if parts == 0:
        raise ValueError(f"duration {text!r} is empty; expected {_ACCEPTED}")
    return total
