# ruff: noqa: F811  (the fixtures db, journal and rem of test_reminder_facet are imported by name)
"""Calendar (cron) reminders, expiry, `overwrite=False` and repeating-interval periods, through
`ReminderFacet` on a ManualClock.

Clock changes are tested on the real 2026 dates: Europe/Prague springs forward on 29 March (02:00
becomes 03:00) and falls back on 25 October (03:00 becomes 02:00); America/New_York on 8 March and
1 November. Every system here is a real one on a SQLite file; only time is virtual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog.testing

from facets.reminder import ReminderRegistration
from plexspaces import (
    ActorSystem,
    ManualClock,
    PlexSpacesError,
    ReminderExistsError,
    ReminderInfo,
)
from tests.conftest import START
from tests.test_reminder_facet import (  # noqa: F401
    WAIT,
    Journal,
    Reminding,
    bound,
    db,
    journal,
    listed,
    names,
    raw_count,
    register,
    rem,
    restart,
)

PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
MS = timedelta(milliseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def at(
    make_system: Callable[..., ActorSystem], journal: Journal
) -> Callable[[datetime], tuple[ActorSystem, ManualClock]]:
    """A system with virtual type "rem" on a ManualClock that starts at the given time."""

    def start(when: datetime) -> tuple[ActorSystem, ManualClock]:
        clock = ManualClock(start=when)
        system = make_system(clock=clock)
        system.register_virtual("rem", bound(Reminding, journal))
        return system, clock

    return start


def fired_at(journal: Journal, name: str = "cal") -> list[datetime]:
    """When each fire of `name` was handled (the clock's time inside the handler)."""
    return [f.handled_at for f in journal.fired(name)]


def advance_to(clock: ManualClock, when: datetime) -> None:
    clock.advance(when - clock.now())


# -- calendar schedules ----------------------------------------------------------------------------


def test_a_weekday_cron_in_prague_fires_at_nine_local_on_weekdays_only(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """ "0 9 * * MON-FRI" in Europe/Prague fires at 09:00 Prague time (08:00 UTC in winter) on
    Monday to Friday, never at the weekend, and its info shows the schedule and the next fire in
    UTC and in Prague."""
    system, clock = at(utc(2026, 1, 9, 12))  # a Friday, after 09:00
    info = register(system.virtual("rem", "k"), "cal", cron="0 9 * * MON-FRI", tz="Europe/Prague")
    assert (info.cron, info.tz, info.period) == ("0 9 * * MON-FRI", "Europe/Prague", None)
    assert info.next_fire_at == utc(2026, 1, 12, 8)  # Monday
    assert info.next_fire_local == datetime(2026, 1, 12, 9, tzinfo=PRAGUE)
    assert info.next_fire_local is not None
    assert info.next_fire_local.tzinfo == PRAGUE
    advance_to(clock, utc(2026, 1, 19, 12))
    assert fired_at(journal) == [utc(2026, 1, d, 8) for d in (12, 13, 14, 15, 16, 19)]
    assert [f.scheduled_at for f in journal.fired("cal")] == fired_at(journal)
    assert [f.fire_count for f in journal.fired("cal")] == [1, 2, 3, 4, 5, 6]


def test_the_default_zone_is_utc_and_info_shows_it(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """Without tz a cron is read in UTC; tz shows "UTC" and the local next fire is in UTC."""
    system, clock = at(utc(2026, 1, 1))
    info = register(system.virtual("rem", "k"), "cal", cron="30 6 * * *")
    assert (info.tz, info.next_fire_at) == ("UTC", utc(2026, 1, 1, 6, 30))
    assert info.next_fire_local == utc(2026, 1, 1, 6, 30)
    clock.advance("2d")
    assert fired_at(journal) == [utc(2026, 1, 1, 6, 30), utc(2026, 1, 2, 6, 30)]


def test_a_zoneinfo_object_is_accepted_as_tz_and_stored_by_its_name(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
) -> None:
    """tz may be a ZoneInfo; the reminder stores and shows its IANA name."""
    system, _ = at(utc(2026, 1, 1))
    info = register(system.virtual("rem", "k"), "cal", cron="0 9 * * *", tz=NEW_YORK)
    assert info.tz == "America/New_York"
    assert info.next_fire_at == utc(2026, 1, 1, 14)


def test_prague_spring_forward_a_0230_schedule_fires_once_at_0300_local(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """On 29 March 2026 Prague has no 02:30: "30 2 * * *" fires once that day, at 03:00 CEST
    (01:00 UTC), and at 02:30 local on the days before and after."""
    system, clock = at(utc(2026, 3, 27, 12))
    register(system.virtual("rem", "k"), "cal", cron="30 2 * * *", tz="Europe/Prague")
    advance_to(clock, utc(2026, 3, 31, 12))
    assert fired_at(journal) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST: the first local time after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_prague_fall_back_a_0230_schedule_fires_once_not_twice(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """On 25 October 2026 Prague has 02:30 twice: "30 2 * * *" fires once that day, at the first
    (02:30 CEST, 00:30 UTC), never at the second (01:30 UTC)."""
    system, clock = at(utc(2026, 10, 23, 12))
    register(system.virtual("rem", "k"), "cal", cron="30 2 * * *", tz="Europe/Prague")
    advance_to(clock, utc(2026, 10, 26, 12))
    assert fired_at(journal) == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_a_schedule_more_often_than_hourly_follows_the_wall_clock_through_fall_back(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """ "*/30 * * * *" in Prague on 25 October 2026 fires every 30 real minutes through the
    repeated hour (02:00 and 02:30 come twice, and each fires), no more and no fewer."""
    system, clock = at(utc(2026, 10, 24, 23, 45))
    register(system.virtual("rem", "k"), "cal", cron="*/30 * * * *", tz="Europe/Prague")
    advance_to(clock, utc(2026, 10, 25, 2, 10))
    assert fired_at(journal) == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 0),  # 02:00 CET
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
    ]


def test_new_york_spring_forward_and_fall_back(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """America/New_York 2026: "30 2 * * *" fires at 03:00 EDT on 8 March (no 02:30 that day);
    "30 1 * * *" fires once on 1 November, at the first 01:30 (EDT), not at the second."""
    system, clock = at(utc(2026, 3, 7, 12))
    ref = system.virtual("rem", "k")
    register(ref, "cal", cron="30 2 * * *", tz="America/New_York")
    advance_to(clock, utc(2026, 3, 9, 12))
    assert fired_at(journal) == [
        utc(2026, 3, 8, 7, 0),  # 03:00 EDT: the first local time after the gap
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]
    register(ref, "fall", cron="30 1 * * *", tz="America/New_York")
    advance_to(clock, utc(2026, 10, 31, 12))
    before = len(journal.fired("fall"))
    advance_to(clock, utc(2026, 11, 2, 12))
    assert fired_at(journal, "fall")[before:] == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT; 01:30 EST (06:30 UTC) does not fire
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_day_31_fires_only_in_months_that_have_one(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """ "0 0 31 * *" fires on the 31st of the seven months that have one in 2026, and on no other
    day (standard cron: no "last day" fallback)."""
    system, clock = at(utc(2026, 1, 1))
    register(system.virtual("rem", "k"), "cal", cron="0 0 31 * *")
    advance_to(clock, utc(2027, 1, 1, 12))
    assert fired_at(journal) == [utc(2026, m, 31) for m in (1, 3, 5, 7, 8, 10, 12)]


def test_l_is_the_last_day_of_each_month_leap_february_included(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """ "0 0 L * *" fires on the last day of every month: 28 February in 2027, 29 in 2028."""
    system, clock = at(utc(2027, 1, 15))
    register(system.virtual("rem", "k"), "cal", cron="0 0 L * *", max_count=15)
    advance_to(clock, utc(2028, 4, 1))
    days = [(d.year, d.month, d.day) for d in fired_at(journal)]
    assert days[:2] == [(2027, 1, 31), (2027, 2, 28)]
    assert (2028, 2, 29) in days
    assert len(days) == 15


def test_a_leap_day_schedule_waits_for_the_next_leap_year(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """ "0 12 29 2 *" registered in 2026 first fires on 29 February 2028, then 2032."""
    system, clock = at(utc(2026, 1, 1))
    info = register(system.virtual("rem", "k"), "cal", cron="0 12 29 2 *")
    assert info.next_fire_at == utc(2028, 2, 29, 12)
    advance_to(clock, utc(2032, 3, 1))
    assert fired_at(journal) == [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)]


def test_max_count_ends_a_calendar_reminder_and_deletes_it(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal, db: Path
) -> None:
    """A daily cron with max_count 2 fires twice, then is deleted and no longer listed."""
    system, clock = at(utc(2026, 1, 1))
    ref = system.virtual("rem", "k")
    register(ref, "cal", cron="0 9 * * *", max_count=2)
    clock.advance("5d")
    assert [(f.fire_count, f.max_count) for f in journal.fired("cal")] == [(1, 2), (2, 2)]
    assert names(ref) == []
    assert raw_count(db) == 0


def _hourly_down(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    make_system: Callable[..., ActorSystem],
    **kwargs: Any,
) -> tuple[ActorSystem, ManualClock]:
    """An hourly cron registered at 00:00 (first tick 01:00), the system down for 3.5 hours."""
    system, _ = at(utc(2026, 1, 1))
    register(system.virtual("rem", "k"), "cal", cron="0 * * * *", **kwargs)
    second = restart(system, make_system, "3h30m")
    assert isinstance(second.clock, ManualClock)
    return second, second.clock


def test_restart_with_missed_calendar_ticks_once(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    make_system: Callable[..., ActorSystem],
    journal: Journal,
) -> None:
    """missed="once": after 3.5 hours down, one fire at restart carrying the latest missed tick
    (03:00), then the schedule goes on at 04:00."""
    _, clock = _hourly_down(at, make_system, missed="once")
    clock.advance(0)
    clock.advance("1h")
    fires = journal.fired("cal")
    assert [(f.fire_count, f.scheduled_at, f.handled_at) for f in fires] == [
        (1, utc(2026, 1, 1, 3), utc(2026, 1, 1, 3, 30)),
        (2, utc(2026, 1, 1, 4), utc(2026, 1, 1, 4)),
    ]


def test_restart_with_missed_calendar_ticks_skip(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    make_system: Callable[..., ActorSystem],
    journal: Journal,
) -> None:
    """missed="skip": nothing fires at restart; the next fire is the 04:00 tick, count 1."""
    _, clock = _hourly_down(at, make_system, missed="skip")
    clock.advance(0)
    assert journal.fired() == []
    clock.advance("30m")
    fires = journal.fired("cal")
    assert [(f.fire_count, f.scheduled_at) for f in fires] == [(1, utc(2026, 1, 1, 4))]


def test_restart_with_missed_calendar_ticks_all_up_to_max_count(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    make_system: Callable[..., ActorSystem],
    journal: Journal,
) -> None:
    """missed="all": each missed tick (01:00, 02:00, 03:00) fires at restart in order; with
    max_count 4 the 04:00 tick is the last."""
    second, clock = _hourly_down(at, make_system, missed="all", max_count=4)
    clock.advance(0)
    assert [f.scheduled_at for f in journal.fired("cal")] == [utc(2026, 1, 1, h) for h in (1, 2, 3)]
    clock.advance("3h")
    assert [f.fire_count for f in journal.fired("cal")] == [1, 2, 3, 4]
    assert names(second.virtual("rem", "k")) == []


def test_a_calendar_reminder_keeps_its_schedule_and_zone_across_a_restart(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    make_system: Callable[..., ActorSystem],
    journal: Journal,
) -> None:
    """cron and tz are stored: after a restart the reminder is listed with them and goes on
    firing at 09:00 Prague time, its fire count continued."""
    system, clock = at(utc(2026, 1, 1))
    register(system.virtual("rem", "k"), "cal", cron="0 9 * * *", tz="Europe/Prague")
    clock.advance("1d")
    second = restart(system, make_system)
    [info] = listed(second.virtual("rem", "k"))
    assert (info.cron, info.tz, info.fire_count) == ("0 9 * * *", "Europe/Prague", 1)
    assert info.next_fire_local == datetime(2026, 1, 2, 9, tzinfo=PRAGUE)
    clock.advance("1d")
    assert [(f.fire_count, f.handled_at) for f in journal.fired("cal")] == [
        (1, utc(2026, 1, 1, 8)),
        (2, utc(2026, 1, 2, 8)),
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cron": "61 * * * *"}, r"cron '61 \* \* \* \*' is not valid.*five fields"),
        ({"cron": "0 9 * *"}, r"cron '0 9 \* \*' has 4 fields; expected five fields"),
        ({"cron": "0 0 0 9 * *"}, r"has 6 fields.*Seconds"),
        ({"cron": "@daily"}, r"'@daily' is '0 0 \* \* \*'"),
        ({"cron": "0 0 30 2 *"}, r"cron '0 0 30 2 \*' is not valid"),
        ({"cron": 9}, r"cron 9 is not a string"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, r"tz 'Mars/Olympus' is not a time zone"),
        ({"cron": "0 9 * * *", "tz": "../etc/passwd"}, r"tz '../etc/passwd' is not a time zone"),
        ({"cron": "0 9 * * *", "tz": 1}, r"tz 1 is not a time zone name"),
        ({"cron": "0 9 * * *", "due": "1m"}, r"has both due '1m' and cron '0 9 \* \* \*'"),
        ({"cron": "0 9 * * *", "period": "1h"}, r"both cron '0 9 \* \* \*' and period '1h'"),
        ({"due": "1m", "tz": "UTC"}, r"tz 'UTC' is given without cron"),
        ({}, r"has neither due nor cron"),
    ],
)
def test_a_bad_calendar_registration_is_a_value_error_and_stores_nothing(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]],
    db: Path,
    kwargs: dict[str, Any],
    expected: str,
) -> None:
    """A bad cron, an unknown zone, or a mix of due/period/cron/tz that is not accepted raises a
    ValueError naming the value; nothing is stored."""
    system, _ = at(utc(2026, 1, 1))
    ref = system.virtual("rem", "k")
    with pytest.raises(ValueError, match=expected):
        register(ref, "cal", **kwargs)
    assert names(ref) == []
    assert raw_count(db) == 0


# -- expiry ----------------------------------------------------------------------------------------


def test_a_periodic_reminder_with_a_ttl_fires_until_it_expires_then_is_deleted(
    rem: ActorSystem, clock: ManualClock, journal: Journal, db: Path
) -> None:
    """period 1m, ttl 3m30s: fires at 1, 2 and 3 minutes, then (the 4-minute tick being past
    its expiry) is deleted and no longer listed."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "tick", due="1m", period="1m", ttl="3m30s")
    assert info.expires_at == START + timedelta(minutes=3, seconds=30)
    clock.advance("10m")
    assert [f.handled_at for f in journal.fired("tick")] == [
        START + timedelta(minutes=m) for m in (1, 2, 3)
    ]
    assert names(ref) == []
    assert raw_count(db) == 0


def test_no_fire_at_the_expiry_instant_itself(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """expires_at exactly on a tick: that tick does not fire (no fire at or after expiry)."""
    ref = rem.virtual("rem", "k")
    register(ref, "tick", due="1m", period="1m", expires_at=START + timedelta(minutes=3))
    clock.advance("10m")
    assert [f.fire_count for f in journal.fired("tick")] == [1, 2]
    assert names(ref) == []


def test_a_calendar_reminder_expires_too(
    at: Callable[[datetime], tuple[ActorSystem, ManualClock]], journal: Journal
) -> None:
    """A daily cron with expires_at on the 3rd at noon fires on the 1st, 2nd and 3rd at 09:00."""
    system, clock = at(utc(2026, 1, 1))
    ref = system.virtual("rem", "k")
    expiry = datetime(2026, 1, 3, 12, tzinfo=PRAGUE)
    info = register(ref, "cal", cron="0 9 * * *", expires_at=expiry)
    assert info.expires_at == utc(2026, 1, 3, 11)
    clock.advance("7d")
    assert fired_at(journal) == [utc(2026, 1, d, 9) for d in (1, 2, 3)]
    assert names(ref) == []


@pytest.mark.parametrize("kind", ["periodic", "one-shot", "calendar"])
def test_a_reminder_that_expires_while_the_node_is_down_is_deleted_on_load_without_firing(
    rem: ActorSystem,
    make_system: Callable[..., ActorSystem],
    journal: Journal,
    db: Path,
    kind: str,
) -> None:
    """A reminder whose expiry passed while no system ran does not fire at restart, whatever
    its missed-tick policy: it is deleted (and the deletion logged as reminder.expired)."""
    registration: dict[str, Any] = {
        "periodic": {"due": "1m", "period": "1m", "missed": "all"},
        "one-shot": {"due": "1m"},
        "calendar": {"cron": "* * * * *", "missed": "all"},
    }[kind]
    register(rem.virtual("rem", "k"), "r", ttl="5m30s", **registration)
    second = restart(rem, make_system, "10m")
    assert raw_count(db) == 1
    with structlog.testing.capture_logs() as logs:
        second.clock.advance(0)  # type: ignore[attr-defined]
        second.clock.advance("1h")  # type: ignore[attr-defined]
    assert journal.fired() == []
    assert names(second.virtual("rem", "k")) == []
    assert raw_count(db) == 0
    assert [e["reminder"] for e in logs if e["event"] == "reminder.expired"] == ["r"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"due": "1m", "expires_at": datetime(2026, 1, 2)}, r"expires_at .* is a naive datetime"),
        ({"due": "1m", "expires_at": "tomorrow"}, r"expires_at 'tomorrow' is not a datetime"),
        ({"due": "1m", "ttl": "2m", "expires_at": START + timedelta(hours=1)}, r"both given"),
        ({"due": "5m", "ttl": "5m"}, r"at or before its first fire"),
        ({"due": "5m", "expires_at": START - timedelta(days=1)}, r"at or before its first fire"),
        ({"due": "1m", "ttl": "0s"}, r"reminder ttl: duration '0s' must be positive"),
        ({"due": "1m", "ttl": -5}, r"reminder ttl: duration -5 must be finite and non-negative"),
        ({"cron": "0 9 * * *", "ttl": "1h"}, r"at or before its first fire"),
    ],
)
def test_a_bad_expiry_is_a_value_error_and_stores_nothing(
    rem: ActorSystem, db: Path, kwargs: dict[str, Any], expected: str
) -> None:
    """Naive or non-datetime expires_at, both expires_at and ttl, a non-positive ttl, or an
    expiry at or before the first fire: ValueError naming the value; nothing stored."""
    ref = rem.virtual("rem", "k")
    with pytest.raises(ValueError, match=expected):
        register(ref, "r", **kwargs)
    assert raw_count(db) == 0


# -- overwrite=False -------------------------------------------------------------------------------


def test_overwrite_false_refuses_an_existing_reminder_and_keeps_it(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """register(..., overwrite=False) of an existing name raises ReminderExistsError naming the
    actor and the reminder; the stored one is unchanged and still fires. The default still
    replaces."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m", payload="first")
    with pytest.raises(ReminderExistsError, match=r"actor 'rem/k' already has a reminder 'r'") as e:
        register(ref, "r", due="5m", payload="second", overwrite=False)
    assert isinstance(e.value, PlexSpacesError)
    assert isinstance(e.value, ValueError)
    assert (e.value.actor_id, e.value.reminder) == ("rem/k", "r")
    [info] = listed(ref)
    assert (info.payload, info.next_fire_at) == ("first", START + timedelta(minutes=1))
    assert register(ref, "r", due="2m", payload="third").payload == "third"
    clock.advance("5m")
    assert [f.payload for f in journal.fired("r")] == ["third"]


def test_overwrite_false_registers_a_new_name(rem: ActorSystem, clock: ManualClock) -> None:
    """overwrite=False with a name not in use registers it as usual."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "fresh", due="1m", overwrite=False)
    assert info.name == "fresh"
    assert names(ref) == ["fresh"]


def test_a_batch_with_one_existing_name_under_overwrite_false_stores_nothing(
    rem: ActorSystem, db: Path
) -> None:
    """register_reminders is all or nothing: one registration with overwrite=False naming an
    existing reminder raises ReminderExistsError, and the batch's other reminders are not
    stored (the existing one is unchanged)."""
    ref = rem.virtual("rem", "k")
    register(ref, "taken", due="1m", payload=1)
    batch = [
        ReminderRegistration("new-1", due="1m"),
        ReminderRegistration("taken", due="9m", payload=2, overwrite=False),
        ReminderRegistration("new-2", cron="0 9 * * *"),
    ]
    with pytest.raises(ReminderExistsError, match="'taken'"):
        ref.ask(("register-many", batch), timeout=WAIT)
    assert [(i.name, i.payload) for i in listed(ref)] == [("taken", 1)]
    assert raw_count(db) == 1


def test_of_concurrent_overwrite_false_registrations_exactly_one_wins(
    rem: ActorSystem, db: Path
) -> None:
    """Eight threads register the same new name with overwrite=False at once (straight on the
    reminder service, from eight threads): exactly one succeeds, seven get
    ReminderExistsError, and one row is stored."""
    service = rem.reminders
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait(WAIT)
        try:
            service.register("rem", "k", "r", due="1h", payload=index, overwrite=False)
            outcome = "won"
        except ReminderExistsError:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    assert raw_count(db) == 1


def test_a_finished_one_shot_can_be_registered_again_from_its_own_handler_with_overwrite_false(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A reminder whose last fire is being handled counts as gone: registering the name again
    with overwrite=False (as a handler may, to chain) succeeds."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m")
    clock.advance("1m")
    info: ReminderInfo = ref.ask(("get", "r"), timeout=WAIT)
    assert info is None
    register(ref, "r", due="1m", overwrite=False)
    clock.advance("1m")
    assert len(journal.fired("r")) == 2


# -- period forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "max_count", "expected"),
    [
        ("R3/PT1M", None, 3),
        ("R3/PT1M", 3, 3),
        ("@every 1m", 2, 2),
        ("PT1M", 4, 4),
        ("1 minute", 2, 2),
    ],
)
def test_period_forms_set_the_period_and_the_count(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    *,
    period: str,
    max_count: int | None,
    expected: int,
) -> None:
    """ "R3/PT1M" is every minute, 3 times (max_count 3); "@every 1m", ISO-8601 and unit words
    are every minute; each fires `expected` times, a minute apart."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "tick", due="1m", period=period, max_count=max_count)
    assert (info.period, info.max_count) == (timedelta(minutes=1), expected)
    clock.advance("10m")
    assert [f.handled_at for f in journal.fired("tick")] == [
        START + timedelta(minutes=m) for m in range(1, expected + 1)
    ]


def test_r_without_a_count_repeats_without_a_limit(rem: ActorSystem) -> None:
    """ "R/PT1M" is every minute with no max_count."""
    info = register(rem.virtual("rem", "k"), "tick", due="1m", period="R/PT1M")
    assert (info.period, info.max_count) == (timedelta(minutes=1), None)


@pytest.mark.parametrize(
    ("period", "max_count", "expected"),
    [
        ("R5/PT1M", 3, r"period 'R5/PT1M' repeats 5 times but max_count is 3"),
        ("R0/PT1M", None, r"'R0/PT1M' repeats 0 times"),
        ("R5/2026-01-01T00:00:00Z/PT1M", None, r"without an ISO-8601 duration after the '/'"),
        ("@every", None, r"no duration after '@every'"),
        ("@every soon", None, r"'soon' is not understood"),
        ("R5/PT0S", None, r"'PT0S' must be positive"),
        ("R5/PT0.5S", None, r"shorter than the minimum 1s"),
    ],
)
def test_bad_period_forms_are_value_errors(
    rem: ActorSystem, db: Path, period: str, max_count: int | None, expected: str
) -> None:
    """A repeat count that disagrees with max_count, R0, an interval with start or end times, an
    empty or unreadable @every, a zero period or one under min_period: ValueError naming it."""
    with pytest.raises(ValueError, match=expected):
        register(rem.virtual("rem", "k"), "tick", due="1m", period=period, max_count=max_count)
    assert raw_count(db) == 0


def test_a_due_datetime_in_a_zone_still_needs_no_tz(rem: ActorSystem) -> None:
    """A one-shot due at an aware datetime in any zone is accepted without tz, as before."""
    due = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=1)))
    info = register(rem.virtual("rem", "k"), "r", due=due)
    assert info.next_fire_at == utc(2026, 1, 1, 8)
    assert (info.cron, info.tz, info.expires_at) == (None, None, None)
    assert info.next_fire_local == info.next_fire_at


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [("12m", [11]), ("11m", [])],
)
def test_skip_after_downtime_respects_the_expiry_of_the_next_tick(
    rem: ActorSystem,
    make_system: Callable[..., ActorSystem],
    journal: Journal,
    db: Path,
    *,
    ttl: str,
    expected: list[int],
) -> None:
    """missed="skip" after 10.5 minutes down moves to the 11-minute tick only if that tick is
    before the expiry (then it is the last fire); at or after it, the reminder is deleted."""
    register(rem.virtual("rem", "k"), "tick", due="1m", period="1m", missed="skip", ttl=ttl)
    second = restart(rem, make_system, "10m30s")
    second.clock.advance(0)  # type: ignore[attr-defined]
    second.clock.advance("5m")  # type: ignore[attr-defined]
    assert [round((f.handled_at - START).total_seconds() / 60) for f in journal.fired()] == expected
    assert raw_count(db) == 0
