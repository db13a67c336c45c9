"""Durations: one strict parser used everywhere a duration is accepted."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import TypeAlias

__all__ = ["Duration", "duration_seconds", "parse_duration", "positive_duration"]

Duration: TypeAlias = timedelta | int | float | str
"""What `parse_duration` accepts: a `timedelta`, seconds as a number, or a string like "1h30m"."""

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


def parse_duration(value: Duration) -> timedelta:
    """Return `value` as a non-negative `timedelta`.

    Accepts a `timedelta`, a number of seconds (`int` or `float`), or a string made of one or more
    number-and-unit parts (`"500ms"`, `"1h30m"`, `"1.5s"`). Every number in a string needs a unit.

    Raises:
        ValueError: the value is negative, not finite, empty, has a number without a unit, or is not
            one of the accepted types. The message names the value.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"duration {value!r} is negative; expected {_ACCEPTED}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"duration {value!r} is not a duration; expected {_ACCEPTED}")
    if isinstance(value, int | float):
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(
                f"duration {value!r} must be finite and non-negative; expected {_ACCEPTED}"
            )
        return _seconds(value, value)
    return _parse_string(value)


def positive_duration(value: Duration) -> timedelta:
    """`parse_duration(value)`, refusing zero: for periods, timeouts and leases.

    Usable directly as a converter in a facet's `config_schema`.
    """
    parsed = parse_duration(value)
    if parsed <= timedelta(0):
        raise ValueError(f"duration {value!r} must be positive")
    return parsed


def duration_seconds(value: Duration) -> float:
    """`parse_duration(value)` in seconds, with a fast path for plain non-negative numbers."""
    kind = type(value)
    # `0 <= value` is False for NaN, which then takes the strict path and its error.
    if (kind is float or kind is int) and 0 <= value < _MAX_SECONDS:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    return parse_duration(value).total_seconds()


_MAX_SECONDS = timedelta.max.total_seconds()


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
            raise ValueError(f"duration {text!r} is too large") from None
        pos = match.end()
        parts += 1
    if parts == 0:
        raise ValueError(f"duration {text!r} is empty; expected {_ACCEPTED}")
    return total


def _seconds(seconds: float, original: object) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise ValueError(f"duration {original!r} is too large") from None
