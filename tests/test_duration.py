"""`parse_duration`: the one strict parser behind every duration the runtime accepts."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from plexspaces import duration_seconds, parse_duration
from plexspaces._duration import MAX_DURATION


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), timedelta(0)),
        (timedelta(seconds=5), timedelta(seconds=5)),
        (timedelta(days=30, microseconds=1), timedelta(days=30, microseconds=1)),
        (0, timedelta(0)),
        (5, timedelta(seconds=5)),
        (0.0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (0.001, timedelta(milliseconds=1)),
        (86_400, timedelta(days=1)),
    ],
)
def test_timedelta_and_seconds_are_accepted(value: object, expected: timedelta) -> None:
    """A non-negative timedelta is returned as is; a number is read as seconds."""
    result = parse_duration(value)  # type: ignore[arg-type]
    assert result == expected
    assert type(result) is timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("2s", timedelta(seconds=2)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("30d", timedelta(days=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1, milliseconds=500)),
        ("250us", timedelta(microseconds=250)),
        ("0s", timedelta(0)),
        ("0ms", timedelta(0)),
        ("1ms", timedelta(milliseconds=1)),
        ("1us", timedelta(microseconds=1)),
        ("90s", timedelta(minutes=1, seconds=30)),
        ("1d2h3m4s5ms6us", timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5006)),
        ("2m30s", timedelta(minutes=2, seconds=30)),
        ("30d1us", timedelta(days=30, microseconds=1)),
        ("0.25h", timedelta(minutes=15)),
    ],
)
def test_strings_with_units_are_parsed_exactly(text: str, expected: timedelta) -> None:
    """Each number-and-unit part of a string adds up, exact to the microsecond."""
    assert parse_duration(text) == expected


def test_ms_is_not_read_as_minutes() -> None:
    """ "5ms" is five milliseconds, not five minutes followed by a stray "s"."""
    assert parse_duration("5ms") == timedelta(milliseconds=5)
    assert parse_duration("5m") == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT5M", timedelta(minutes=5)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,5S", timedelta(milliseconds=500)),
        ("P2W", timedelta(weeks=2)),
        ("P1D", timedelta(days=1)),
        ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
        ("P0D", timedelta(0)),
    ],
)
def test_iso_8601_durations_are_parsed(text: str, expected: timedelta) -> None:
    """ISO-8601 durations in weeks, days, hours, minutes and seconds parse exactly."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 min", timedelta(minutes=5)),
        ("5 mins", timedelta(minutes=5)),
        ("5 minutes", timedelta(minutes=5)),
        ("1 minute", timedelta(minutes=1)),
        ("2 hours", timedelta(hours=2)),
        ("1 hour 30 minutes", timedelta(hours=1, minutes=30)),
        ("10 seconds", timedelta(seconds=10)),
        ("3 days", timedelta(days=3)),
        ("500 milliseconds", timedelta(milliseconds=500)),
        ("2 weeks", timedelta(weeks=2)),
        ("2w", timedelta(weeks=2)),
        ("5min", timedelta(minutes=5)),
        ("1.5 hours", timedelta(minutes=90)),
    ],
)
def test_unit_words_are_parsed(text: str, expected: timedelta) -> None:
    """Unit names and their common abbreviations read as their short units."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P1Y", "P1M", "P1Y2M3D", "P1MT5M"])
def test_iso_years_and_months_are_refused_as_having_no_fixed_length(text: str) -> None:
    """Years and months vary in length, so an ISO duration with them is refused, saying why."""
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert repr(text) in str(raised.value)
    assert "no fixed length" in str(raised.value)


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "PT1H1D", "P-1D", "P1S", "PT5"])
def test_malformed_iso_durations_are_refused_naming_them(text: str) -> None:
    """An ISO-8601 duration without parts, with parts out of order, or negative is refused."""
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    assert repr(text) in str(raised.value)
    assert "ISO-8601" in str(raised.value)


def test_an_unknown_unit_word_is_reported_whole() -> None:
    """A misspelt unit is reported from its number on, not from the middle of the word."""
    with pytest.raises(ValueError, match="not understood at '5 minuets'"):
        parse_duration("1 hour 5 minuets")


def test_iso_and_unit_word_durations_respect_the_longest_duration() -> None:
    """`MAX_DURATION` bounds ISO-8601 and unit-word durations like every other form."""
    assert parse_duration("P36500D") == MAX_DURATION
    for text in ("P36500DT1S", "P5300W", "36501 days", "5300 weeks"):
        with pytest.raises(ValueError, match="too large"):
            parse_duration(text)


def _random_cases(count: int) -> list[tuple[str, timedelta]]:
    # A deterministic stand-in for a property test: random compositions of every unit, in the
    # canonical order, each checked against timedelta's own arithmetic.
    rng = random.Random(20260101)
    cases = []
    units = [
        ("d", "days"),
        ("h", "hours"),
        ("m", "minutes"),
        ("s", "seconds"),
        ("ms", "milliseconds"),
        ("us", "microseconds"),
    ]
    for _ in range(count):
        text = ""
        expected = timedelta(0)
        for suffix, keyword in units:
            if rng.random() < 0.5:
                amount = rng.randint(0, 999)
                text += f"{amount}{suffix}"
                expected += timedelta(**{keyword: amount})
        if not text:
            text, expected = "0s", timedelta(0)
        cases.append((text, expected))
    return cases


@pytest.mark.parametrize(("text", "expected"), _random_cases(200))
def test_random_compositions_of_units_add_up(text: str, expected: timedelta) -> None:
    """Any mix of d/h/m/s/ms/us parts parses to the sum of its parts."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("seconds", [0, 1, 7, 59, 3600, 86_399, 2_592_000])
def test_number_and_seconds_string_agree(seconds: int) -> None:
    """`n` and `"<n>s"` mean the same duration."""
    assert parse_duration(seconds) == parse_duration(f"{seconds}s") == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["1h30m", 2.5, 7, timedelta(milliseconds=3)])
def test_parsing_a_parsed_duration_is_the_identity(value: object) -> None:
    """Feeding a result back in gives the same timedelta."""
    once = parse_duration(value)  # type: ignore[arg-type]
    assert parse_duration(once) == once


@pytest.mark.parametrize(
    "value",
    [
        "5",  # a number without a unit
        "",
        "   ",
        "-5s",
        "5x",
        "1h 30",  # the second number has no unit
        "1h30",
        "5ms5",
        "s",
        "ms",
        "h1",
        "1.5.5s",
        "5 minuets",
        "1 hour 30",
        "5minutesx",
        "p1d",
        "nan",
        "infs",
        "-1ms",
        "+5s",
        "five seconds",
        "1h-30m",
    ],
)
def test_bad_strings_raise_value_error_naming_the_value(value: str) -> None:
    """A string that is empty, negative, unit-less or has an unknown unit is a ValueError."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.001,
        -5.0,
        math.nan,
        math.inf,
        -math.inf,
        timedelta(seconds=-1),
        timedelta(microseconds=-1),
        timedelta(days=-1, hours=23),
    ],
)
def test_negative_and_non_finite_numbers_raise_value_error(value: object) -> None:
    """Negative numbers or timedeltas, NaN and infinities are a ValueError naming the value."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [True, False, None, [1], ["1s"], (1,), {"s": 1}, b"5s", Decimal("1"), Fraction(1, 2), object],
)
def test_values_of_other_types_raise_value_error(value: object) -> None:
    """bool, None, containers, bytes and other number types are not durations."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        10**30,
        1e300,
        "1000000000d",
        "9" * 400 + "s",
        "99999999999999999999h",
        10**400,
        -(10**400),
    ],
    ids=["int-1e30", "float-1e300", "1e9-days", "400-digits", "huge-hours", "int-1e400", "-1e400"],
)
def test_values_beyond_timedelta_range_raise_value_error(value: object) -> None:
    """A duration too large for a timedelta is a ValueError naming the value, not OverflowError."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value)  # type: ignore[arg-type]
    assert repr(value) in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [MAX_DURATION, MAX_DURATION.total_seconds(), int(MAX_DURATION.total_seconds()), "36500d"],
    ids=["timedelta", "float", "int", "string"],
)
def test_the_longest_duration_is_accepted_in_every_form(value: object) -> None:
    """`MAX_DURATION` (36500 days) itself parses, through the parser and the seconds fast path."""
    assert parse_duration(value) == MAX_DURATION  # type: ignore[arg-type]
    assert duration_seconds(value) == MAX_DURATION.total_seconds()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        MAX_DURATION + timedelta(microseconds=1),
        MAX_DURATION.total_seconds() + 0.001,
        int(MAX_DURATION.total_seconds()) + 1,
        "36500d1us",
        "99999999d",  # a timedelta holds it; no datetime after 2026 can reach it
        "999999999d",  # the largest timedelta in days
        timedelta.max,
        1e12,
    ],
    ids=[
        "timedelta+1us",
        "float+1ms",
        "int+1s",
        "string+1us",
        "99999999d",
        "999999999d",
        "timedelta-max",
        "1e12",
    ],
)
def test_a_duration_beyond_the_longest_is_refused_naming_it_and_the_limit(value: object) -> None:
    """Past `MAX_DURATION` is a ValueError that names the value and the limit, from the parser
    and from duration_seconds alike (its number fast path must not let it through)."""
    for convert in (parse_duration, duration_seconds):
        with pytest.raises(ValueError) as raised:
            convert(value)  # type: ignore[arg-type]
        assert repr(value) in str(raised.value)
        assert "too large" in str(raised.value)
        assert "36500d" in str(raised.value)
