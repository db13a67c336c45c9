"""Durations: one strict parser used everywhere a duration is accepted."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import TypeAlias

__all__ = [
    "MAX_DURATION",
    "Duration",
    "duration_seconds",
    "parse_duration",
    "parse_period",
    "positive_duration",
]

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

_MICROSECONDS = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 7 * 86_400_000_000,
}
# Every spelling of a unit, mapped to its short form.
_UNIT_NAMES = {
    "us": "us",
    "µs": "us",
    "usec": "us",
    "usecs": "us",
    "microsecond": "us",
    "microseconds": "us",
    "ms": "ms",
    "msec": "ms",
    "msecs": "ms",
    "millisecond": "ms",
    "milliseconds": "ms",
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "week": "w",
    "weeks": "w",
}
# One component: a number and a unit. Longer unit names come first so "ms" is not read as "m",
# and a unit must end where a word ends, so "5 minutes" is not read as "5m" and "inutes".
_COMPONENT = re.compile(
    r"\s*(\d+(?:\.\d+)?|\.\d+)\s*("
    + "|".join(sorted(map(re.escape, _UNIT_NAMES), key=len, reverse=True))
    + r")(?![^\W\d_])"
)
_ISO_NUMBER = r"(\d+(?:[.,]\d+)?)"
# ISO-8601 durations: "PT5M", "P1DT2H", "PT0.5S", "P2W". Years and months are matched only to be
# refused with a message of their own.
_ISO = re.compile(
    rf"P(?:{_ISO_NUMBER}Y)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}W)?(?:{_ISO_NUMBER}D)?"
    rf"(?:T(?:{_ISO_NUMBER}H)?(?:{_ISO_NUMBER}M)?(?:{_ISO_NUMBER}S)?)?"
)
_ISO_UNITS = (None, None, "w", "d", "h", "m", "s")
_ACCEPTED = (
    "a timedelta, a non-negative number of seconds, or a string such as "
    "'500ms', '2s', '15m', '1h', '30d', '1h30m', '5 min', '2 hours', '1 hour 30 minutes' "
    "(units: us, ms, s, m, h, d, w, or their names) or ISO-8601 'PT5M', 'P1DT2H'"
)
_TOO_LARGE = (
    f"is too large; the longest duration accepted is {MAX_DURATION.days}d (about 100 years)"
)


def parse_duration(value: Duration) -> timedelta:
    """Return `value` as a non-negative `timedelta` of at most `MAX_DURATION`.

    Accepts a `timedelta`, a number of seconds (`int` or `float`), a string made of one or more
    number-and-unit parts (`"500ms"`, `"1h30m"`, `"1.5s"`, `"5 min"`, `"1 hour 30 minutes"`), or an
    ISO-8601 duration (`"PT5M"`, `"P1DT2H"`, `"P2W"`). Every number in a string needs a unit.
    Years and months (`"P1Y"`, `"P1M"`) have no fixed length and are refused.

    Raises:
        ValueError: the value is negative, not finite, longer than `MAX_DURATION`, empty, has a
            number without a unit, has ISO years or months, or is not one of the accepted types.
            The message names the value.
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


_REPEAT = re.compile(r"R(\d*)/(.*)", re.DOTALL)
_EVERY = re.compile(r"@every(?:\s+(.*))?", re.DOTALL)
_PERIOD_FORMS = (
    "a positive duration (see parse_duration), an ISO-8601 repeating interval 'R5/PT1S' "
    "(every second, 5 times) or 'R/PT1S' (no limit), or '@every 1h30m'"
)


def parse_period(value: Duration) -> tuple[timedelta, int | None]:
    """A period and the number of repetitions it carries: `(period, count)`.

    Accepts what `positive_duration` accepts (count None), and two forms that only make sense
    for something that repeats: an ISO-8601 repeating interval, `"R5/PT1S"` (every second, 5
    times in all) or `"R/PT1S"` (no limit: count None), and `"@every 1h30m"` (any duration
    string after `@every`; count None).

    Raises:
        ValueError: the period is zero, negative or not understood, or `R0/...` asks for no
            repetition at all; the message names the value and the accepted forms.
    """
    count: int | None = None
    if isinstance(value, str):
        text = value.strip()
        repeat = _REPEAT.fullmatch(text)
        every = _EVERY.fullmatch(text)
        if repeat is not None:
            digits, value = repeat.group(1), repeat.group(2).strip()
            if digits:
                count = int(digits)
                if count < 1:
                    raise ValueError(
                        f"period {text!r} repeats {count} times; a repeating interval repeats "
                        f"at least once (or 'R/...' for no limit). Accepted: {_PERIOD_FORMS}"
                    )
            if not value.startswith("P"):
                raise ValueError(
                    f"period {text!r} is a repeating interval without an ISO-8601 duration "
                    f"after the '/' (such as 'R5/PT1S'; start and end times are not accepted). "
                    f"Accepted: {_PERIOD_FORMS}"
                )
        elif every is not None:
            value = (every.group(1) or "").strip()
            if not value:
                raise ValueError(f"period {text!r} has no duration after '@every'; {_PERIOD_FORMS}")
    try:
        period = positive_duration(value)
    except ValueError as error:
        raise ValueError(f"period: {error}; accepted are {_PERIOD_FORMS}") from None
    return period, count


def duration_seconds(value: Duration) -> float:
    """`parse_duration(value)` in seconds, with a fast path for plain numbers in range."""
    kind = type(value)
    # The same bounds as parse_duration's. `0 <= value` is False for NaN, and a number out of
    # range fails the comparison too: both take the strict path and its error.
    if (kind is float or kind is int) and 0 <= value <= _MAX_SECONDS:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    if kind is str:
        return _string_seconds(value)
    return parse_duration(value).total_seconds()


@lru_cache(maxsize=512)
def _string_seconds(text: str) -> float:
    # The same few strings ("1h", "500ms") come back on every timer armed; a bounded cache keeps
    # their seconds (a bad string raises each time: exceptions are not cached).
    return parse_duration(text).total_seconds()


@lru_cache(maxsize=512)
def _parse_string(text: str) -> timedelta:
    if text.strip().startswith("P"):
        return _parse_iso(text)
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
        total += _component(text, match.group(1), _UNIT_NAMES[match.group(2)])
        pos = match.end()
        parts += 1
    if parts == 0:
        raise ValueError(f"duration {text!r} is empty; expected {_ACCEPTED}")
    return total


def _parse_iso(text: str) -> timedelta:
    match = _ISO.fullmatch(text.strip())
    if match is None or not any(match.groups()) or text.strip().endswith("T"):
        raise ValueError(
            f"duration {text!r} is not a valid ISO-8601 duration; expected {_ACCEPTED}"
        )
    years, months = match.group(1), match.group(2)
    if years is not None or months is not None:
        raise ValueError(
            f"duration {text!r} has years or months, which have no fixed length; "
            "give weeks, days or smaller units instead (such as 'P365D' or 'P30D')"
        )
    total = timedelta(0)
    for number, unit in zip(match.groups(), _ISO_UNITS, strict=True):
        if number is not None and unit is not None:
            total += _component(text, number.replace(",", "."), unit)
    return total


def _component(text: str, number: str, unit: str) -> timedelta:
    # Decimal keeps every part exact ("100000d1us" keeps its 1 us, "999999999d" all days).
    micros = Decimal(number) * _MICROSECONDS[unit]
    try:
        return timedelta(microseconds=int(micros.to_integral_value(ROUND_HALF_EVEN)))
    except OverflowError:
        raise ValueError(f"duration {text!r} {_TOO_LARGE}") from None
