"""`parse_period`: the period forms accepted wherever something repeats (reminders' `period`,
and for the timer facet's interval)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from plexspaces import parse_period


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2s", (timedelta(seconds=2), None)),
        (1.5, (timedelta(seconds=1.5), None)),
        (timedelta(minutes=1), (timedelta(minutes=1), None)),
        ("PT5M", (timedelta(minutes=5), None)),
        ("P1DT2H", (timedelta(days=1, hours=2), None)),
        ("5 min", (timedelta(minutes=5), None)),
        ("2 hours", (timedelta(hours=2), None)),
        ("R5/PT1S", (timedelta(seconds=1), 5)),
        ("R/PT1S", (timedelta(seconds=1), None)),
        ("R1/P1D", (timedelta(days=1), 1)),
        (" R3/PT2M ", (timedelta(minutes=2), 3)),
        ("@every 1h30m", (timedelta(hours=1, minutes=30), None)),
        ("@every 90 seconds", (timedelta(seconds=90), None)),
        ("@every PT10S", (timedelta(seconds=10), None)),
    ],
)
def test_each_period_form_gives_its_period_and_count(
    value: object, expected: tuple[timedelta, int | None]
) -> None:
    """Durations give (period, None); "R<n>/<ISO duration>" gives the count n ("R/" none);
    "@every <duration>" gives no count."""
    assert parse_period(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0s", r"duration '0s' must be positive"),
        (0, r"duration 0 must be positive"),
        ("-1s", r"'-1s' is not understood"),
        ("R0/PT1S", r"period 'R0/PT1S' repeats 0 times"),
        ("R5/1s", r"period 'R5/1s' is a repeating interval without an ISO-8601 duration"),
        ("R5/2026-01-01T00:00:00Z/PT1S", r"without an ISO-8601 duration"),
        ("R5/", r"without an ISO-8601 duration"),
        ("R5/P1M", r"'P1M' has years or months"),
        ("Rx/PT1S", r"'Rx/PT1S' is not understood"),
        ("@every", r"period '@every' has no duration after '@every'"),
        ("@every   ", r"has no duration after '@every'"),
        ("@every 5", r"'5' is not understood"),
        ("@daily", r"'@daily' is not understood"),
        (None, r"None is not a duration"),
    ],
)
def test_each_bad_period_form_is_a_value_error_naming_it(value: object, expected: str) -> None:
    """A zero or negative period, R0, an interval with times instead of a duration, ISO months,
    an empty or count-only @every, or something that is no period: ValueError naming the value
    and listing the accepted forms."""
    with pytest.raises(ValueError, match=expected) as caught:
        parse_period(value)  # type: ignore[arg-type]
    assert "'R5/PT1S'" in str(caught.value)
    assert "'@every 1h30m'" in str(caught.value)
