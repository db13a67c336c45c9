"""`ReminderFacet`: durable reminders of virtual actors, mostly on the ManualClock.

Registration and its validation, exact fire times, `ReminderFired` fields, durability across a
restart (a second system on the same SQLite file and the same clock), periodic phase and
`max_count`, replacement and unregistration, per-actor isolation, activation by a fire, the
missed-tick policies after downtime, at-least-once redelivery, undecodable rows, and two real-clock
tests (concurrent registration, 2,000 fires).

`ManualClock.advance` returns once every fire it made was taken out of its mailbox, handled and
acknowledged, so a test reads its journal right after an advance. Registrations go through an
`ask` to the actor, which is also the sync point.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import structlog.testing

from facets.reminder import ReminderFacet, ReminderRegistration
from facets.virtual_actor import VirtualActorFacet
from plexspaces import (
    Actor,
    ActorSystem,
    FacetConfigError,
    FacetError,
    ManualClock,
    ReminderFired,
    ReminderInfo,
    VirtualActorRef,
)
from tests.conftest import START

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""

MS = timedelta(milliseconds=1)
A = TypeVar("A", bound=Actor)


class Boom(Exception):
    """What a handler raises when the journal tells it to fail."""


@dataclass(frozen=True)
class Fire:
    """One `ReminderFired` as a handler saw it."""

    actor_id: str
    name: str
    fire_count: int
    max_count: int | None
    scheduled_at: datetime
    payload: Any
    handled_at: datetime  # the clock's now() inside the handler
    activation: int


class Journal:
    """Shared by a test and its actors: the fires handled, lifecycle events, and gates."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.fires: list[Fire] = []
        self.events: list[tuple[Any, ...]] = []
        self._activations: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()  # fires still to fail, per reminder
        self.holding = threading.Event()  # set once a "hold" handler has begun
        self.gate = threading.Event()  # lets a "hold" handler finish

    def next_activation(self, actor_id: str) -> int:
        with self._changed:
            self._activations[actor_id] += 1
            return self._activations[actor_id]

    def event(self, *entry: Any) -> None:
        with self._changed:
            self.events.append(entry)
            self._changed.notify_all()

    def fire(self, fire: Fire) -> bool:
        """Record `fire`; True if the handler is to fail this time."""
        with self._changed:
            self.fires.append(fire)
            self._changed.notify_all()
            key = (fire.actor_id, fire.name)
            if self.failures[key] > 0:
                self.failures[key] -= 1
                return True
            return False

    def fired(self, name: str | None = None, actor_id: str | None = None) -> list[Fire]:
        with self._changed:
            return [
                f
                for f in self.fires
                if (name is None or f.name == name) and (actor_id is None or f.actor_id == actor_id)
            ]

    def counts(self, name: str | None = None, actor_id: str | None = None) -> list[int]:
        return [f.fire_count for f in self.fired(name, actor_id)]

    def wait_until(self, predicate: Callable[[Journal], bool], timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)


class Reminding(Actor):
    """A virtual actor with `ReminderFacet` (config `reminder_config`) and, if `idle_config` is
    set, `VirtualActorFacet`. It records each `ReminderFired` in its journal (raising `Boom` when
    the journal says so) and runs the facet calls asked of it."""

    journal: ClassVar[Journal]
    reminder_config: ClassVar[Mapping[str, Any] | None] = None
    idle_config: ClassVar[Mapping[str, Any] | None] = None

    def on_start(self) -> None:
        self.activation = self.journal.next_activation(self.ctx.actor_id)
        self.journal.event("on_start", self.ctx.actor_id, self.activation)
        if self.idle_config is not None:
            self.attach_facet(VirtualActorFacet(), priority=100, config=self.idle_config)
        self.reminders = ReminderFacet()
        self.attach_facet(self.reminders, priority=50, config=self.reminder_config)

    def on_stop(self) -> None:
        self.journal.event("on_stop", self.ctx.actor_id, self.activation)

    def on_receive(self, message: Any) -> Any:
        reminders = self.reminders
        match message:
            case ReminderFired():
                fire = Fire(
                    actor_id=self.ctx.actor_id,
                    name=message.reminder_name,
                    fire_count=message.fire_count,
                    max_count=message.max_count,
                    scheduled_at=message.scheduled_at,
                    payload=message.payload,
                    handled_at=self.ctx.clock.now(),
                    activation=self.activation,
                )
                if self.journal.fire(fire):
                    raise Boom(f"handler failed on {message.reminder_name} #{message.fire_count}")
                return None
            case ("register", name, kwargs):
                return reminders.register_reminder(name, **kwargs)
            case ("register-many", registrations):
                return reminders.register_reminders(registrations)
            case ("unregister", name):
                return reminders.unregister_reminder(name)
            case ("get", name):
                return reminders.get_reminder(name)
            case "list":
                return reminders.list_reminders()
            case "activation":
                return self.activation
            case "hold":
                self.journal.holding.set()
                self.journal.gate.wait(WAIT)
                return None
            case "ping":
                return "pong"
        raise AssertionError(f"unexpected message {message!r}")


class Plain(Actor):
    """An actor without facets, for attaching facets from outside."""

    def on_receive(self, message: Any) -> Any:
        return "pong" if message == "ping" else None


def bound(cls: type[A], journal: Journal, **attributes: Any) -> type[A]:
    """A subclass of `cls` bound to `journal`: virtual actors take no constructor arguments."""
    return type(cls.__name__, (cls,), {"journal": journal, **attributes})


def register(ref: VirtualActorRef, name: str, **kwargs: Any) -> ReminderInfo:
    info: ReminderInfo = ref.ask(("register", name, kwargs), timeout=WAIT)
    return info


def listed(ref: VirtualActorRef) -> list[ReminderInfo]:
    infos: list[ReminderInfo] = ref.ask("list", timeout=WAIT)
    return infos


def names(ref: VirtualActorRef) -> list[str]:
    return [info.name for info in listed(ref)]


def restart(
    old: ActorSystem, make_system: Callable[..., ActorSystem], downtime: str | None = None
) -> ActorSystem:
    """Shut `old` down and start its successor on the same store and clock, with the same
    virtual types registered; `downtime` passes on the ManualClock while no system runs."""
    types = old.virtual_types()
    old.shutdown()
    if downtime is not None:
        assert isinstance(old.clock, ManualClock)
        old.clock.advance(downtime)
    new = make_system(storage_url=old.storage_url, clock=old.clock)
    for type_name, cls in types.items():
        new.register_virtual(type_name, cls)
    return new


def raw_rows(db: Path) -> list[tuple[Any, ...]]:
    """Every row of the reminder table, read with the sqlite3 module (no plexspaces code)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT actor_type, actor_key, name, fire_count, payload FROM plexspaces_reminders "
            "ORDER BY actor_type, actor_key, name"
        ).fetchall()
    connection.close()
    return rows


def raw_count(db: Path) -> int:
    return len(raw_rows(db))


@pytest.fixture
def journal() -> Iterator[Journal]:
    """A journal whose gate opens after the test, so a blocked actor cannot stall shutdown."""
    journal = Journal()
    yield journal
    journal.gate.set()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file the `make_system` systems use."""
    return tmp_path / "plexspaces.db"


@pytest.fixture
def rem(system: ActorSystem, journal: Journal) -> ActorSystem:
    """The ManualClock system with virtual type "rem" served by `Reminding`."""
    system.register_virtual("rem", bound(Reminding, journal))
    return system


# -- firing on time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "due",
    [
        "90s",
        (START + timedelta(seconds=90)).astimezone(timezone(timedelta(hours=2))),
    ],
    ids=["duration", "aware-datetime-in-another-zone"],
)
def test_a_reminder_fires_at_its_due_time_and_not_a_millisecond_before(
    rem: ActorSystem, clock: ManualClock, journal: Journal, due: Any
) -> None:
    """A reminder due as a duration or an aware datetime fires exactly at its due time, not
    earlier; the handler sees now() == scheduled_at == due, in UTC."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "r", due=due)
    due_at = START + timedelta(seconds=90)
    assert info.next_fire_at == due_at
    clock.advance(timedelta(seconds=90) - MS)
    assert journal.fired() == []
    clock.advance(MS)
    [fire] = journal.fired()
    assert fire.scheduled_at == due_at
    assert fire.scheduled_at.utcoffset() == timedelta(0)
    assert fire.handled_at == due_at
    assert clock.now() == due_at


def test_a_due_datetime_in_the_past_fires_at_the_next_advance(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A due datetime in the past fires at the next advance(0), carrying that past time."""
    ref = rem.virtual("rem", "k")
    past = START - timedelta(hours=1)
    register(ref, "late", due=past)
    assert journal.fired() == []
    clock.advance(0)
    [fire] = journal.fired()
    assert (fire.name, fire.fire_count, fire.scheduled_at) == ("late", 1, past)
    assert fire.handled_at == START
    assert names(ref) == []


PAYLOAD = {
    "order": "ord-100",
    "amount": 12.5,
    "items": [1, "two", 3.25, True, False, None, {"nested": [[], {}]}],
    "flags": {"paid": False, "notes": None, "tries": 0},
    "text": "žluťoučký kůň \u2603",
    "big": 2**53 + 1,
    "negative": -7,
}


def test_a_batch_of_reminders_is_stored_in_one_call_and_each_fires(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """register_reminders stores every registration (replacing an existing name), returns their
    infos in order, and each fires as if registered alone."""
    ref = rem.virtual("rem", "k")
    register(ref, "b", due="1h")
    infos = ref.ask(
        (
            "register-many",
            [
                ReminderRegistration("a", due="1s", payload={"n": 1}),
                ReminderRegistration("b", due="2s", period="2s", max_count=2),
                ReminderRegistration("c", due=START + timedelta(seconds=3)),
            ],
        )
    )
    assert [(info.name, info.next_fire_at) for info in infos] == [
        ("a", START + timedelta(seconds=1)),
        ("b", START + timedelta(seconds=2)),
        ("c", START + timedelta(seconds=3)),
    ]
    assert ref.ask(("register-many", [])) == []
    clock.advance("4s")
    fired = sorted((fire.name, fire.fire_count) for fire in journal.fired())
    assert fired == [("a", 1), ("b", 1), ("b", 2), ("c", 1)]
    assert names(ref) == []


@pytest.mark.parametrize(
    ("registrations", "message"),
    [
        (
            [ReminderRegistration("ok", due="1s"), ReminderRegistration("bad", due="5")],
            "'5'",
        ),
        (
            [ReminderRegistration("ok", due="1s"), ReminderRegistration("ok", due="2s")],
            "'ok' is registered twice in one batch",
        ),
        ([ReminderRegistration("ok", due="1s"), ("bad", "1s")], "is not a ReminderRegistration"),
        (ReminderRegistration("ok", due="1s"), "must be an iterable of ReminderRegistration"),
        (
            [
                ReminderRegistration("ok", due="1s"),
                ReminderRegistration("p", due="1s", payload={1}),
            ],
            "payload of reminder",
        ),
    ],
    ids=["bad-due", "repeated-name", "not-a-registration", "not-iterable", "bad-payload"],
)
def test_a_batch_with_one_bad_registration_stores_nothing(
    rem: ActorSystem, clock: ManualClock, journal: Journal, registrations: Any, message: str
) -> None:
    ref = rem.virtual("rem", "k")
    with pytest.raises(ValueError, match=re.escape(message)):
        ref.ask(("register-many", registrations))
    assert names(ref) == []
    clock.advance("10s")
    assert journal.fired() == []
    register(ref, "after", due="1s")
    clock.advance("1s")
    assert [fire.name for fire in journal.fired()] == ["after"]


def test_a_periodic_reminder_whose_next_tick_is_past_the_last_datetime_ends_after_its_fire(
    make_system: Callable[..., ActorSystem], journal: Journal
) -> None:
    """Near datetime.max a next tick cannot be represented: the fire is the last one, the
    reminder is deleted, and nothing is stuck retrying."""
    clock = ManualClock(start=datetime(9999, 12, 31, 23, 0, tzinfo=UTC))
    system = make_system(clock=clock)
    system.register_virtual("rem", bound(Reminding, journal))
    ref = system.virtual("rem", "k")
    register(ref, "edge", due="30m", period="1h")
    clock.advance("30m")
    assert [(fire.name, fire.fire_count) for fire in journal.fired()] == [("edge", 1)]
    assert names(ref) == []


def test_reminder_fired_carries_name_counts_schedule_and_the_json_payload(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """ReminderFired has reminder_name, fire_count from 1, max_count, scheduled_at and the
    payload as it comes back from JSON (nested dict/list/str/int/float/bool/None)."""
    ref = rem.virtual("rem", "k")
    register(ref, "bounded", due="1m", period="1m", max_count=2, payload=PAYLOAD)
    register(ref, "endless", due="1m", period="1m", payload=[1, None])
    clock.advance("2m")
    bounded = journal.fired("bounded")
    assert [(f.fire_count, f.max_count) for f in bounded] == [(1, 2), (2, 2)]
    assert [f.scheduled_at for f in bounded] == [START + timedelta(minutes=m) for m in (1, 2)]
    for fire in bounded:
        assert fire.payload == PAYLOAD
        assert json.dumps(fire.payload, sort_keys=True) == json.dumps(PAYLOAD, sort_keys=True)
        assert fire.payload["big"] == 2**53 + 1  # exact, not through a float
    assert [(f.fire_count, f.max_count, f.payload) for f in journal.fired("endless")] == [
        (1, None, [1, None]),
        (2, None, [1, None]),
    ]


def test_the_payload_is_the_json_value_stored_at_registration(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """The payload is stored when register_reminder returns: a tuple comes back as a list, and
    changing the caller's object afterwards changes nothing."""
    ref = rem.virtual("rem", "k")
    payload: dict[str, Any] = {"pair": (1, 2), "list": ["a"]}
    register(ref, "r", due="1s", payload=payload)
    payload["list"].append("changed later")
    payload["extra"] = True
    stored = {"pair": [1, 2], "list": ["a"]}
    get = ref.ask(("get", "r"), timeout=WAIT)
    assert get.payload == stored
    clock.advance("1s")
    [fire] = journal.fired()
    assert fire.payload == stored
    assert isinstance(fire.payload["pair"], list)


@pytest.mark.parametrize(
    ("payload", "stored"),
    [
        ({"n": 1, "s": "x", "f": 0.5, "b": True, "none": None}, None),
        ((1, "a", None), [1, "a", None]),
        ([1, 2.5], None),
        ("text", None),
        (7, None),
    ],
    ids=["flat-dict", "flat-tuple", "flat-list", "str", "int"],
)
def test_a_flat_payload_is_stored_as_json_hands_it_back(
    rem: ActorSystem, clock: ManualClock, journal: Journal, payload: Any, stored: Any
) -> None:
    """Scalars and short lists or dicts of scalars (stored without walking the value) come back
    as JSON hands them back, a tuple as a list, and are copies: changing the caller's object
    after registering changes nothing stored."""
    expected = payload if stored is None else stored
    expected = json.loads(json.dumps(expected))
    ref = rem.virtual("rem", "k")
    info = register(ref, "r", due="1s", payload=payload)
    if isinstance(payload, dict):
        payload["later"] = 1
    elif isinstance(payload, list):
        payload.append("later")
    assert info.payload == expected
    assert type(info.payload) is type(expected)
    clock.advance("1s")
    [fire] = journal.fired()
    assert fire.payload == expected
    assert type(fire.payload) is type(expected)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"f": float("nan")}, "NaN"),
        ({"f": float("inf")}, "inf"),
        ({1: "a"}, "dict key 1"),
        ([float("-inf")], "inf"),
    ],
    ids=["nan-in-dict", "inf-in-dict", "int-key", "inf-in-list"],
)
def test_a_flat_payload_json_would_change_is_refused(
    rem: ActorSystem, payload: Any, problem: str
) -> None:
    """The quick path for flat payloads refuses what the full check refuses, naming it."""
    ref = rem.virtual("rem", "k")
    with pytest.raises(ValueError, match=problem):
        register(ref, "r", due="1s", payload=payload)
    assert rem.reminders.list_actor("rem", "k") == []


# -- durability ------------------------------------------------------------------------------------


def test_a_reminder_is_durable_when_register_returns(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """A reminder registered and never advanced to survives a shutdown: the next system on the
    same file lists it (activating the actor) and fires it at its time."""
    register(rem.virtual("rem", "k"), "r", due="10m", payload={"n": 1})
    second = restart(rem, make_system)
    ref = second.virtual("rem", "k")
    [info] = listed(ref)
    assert (info.name, info.fire_count, info.next_fire_at, info.payload) == (
        "r",
        0,
        START + timedelta(minutes=10),
        {"n": 1},
    )
    clock.advance(timedelta(minutes=10) - MS)
    assert journal.fired() == []
    clock.advance(MS)
    [fire] = journal.fired()
    assert (fire.fire_count, fire.scheduled_at, fire.payload) == (
        1,
        START + timedelta(minutes=10),
        {"n": 1},
    )


def test_a_30_day_reminder_fires_at_exactly_30_days_in_well_under_a_second(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A reminder due in 30 days fires at exactly registration + 30d under the ManualClock,
    without the test taking real time."""
    began = time.monotonic()
    ref = rem.virtual("rem", "k")
    assert ref.ask("ping", timeout=WAIT) == "pong"
    clock.advance("1m")  # the reminder service's first load is done: nothing else is pending
    registered = clock.now()
    register(ref, "renewal", due="30d", payload="renew")
    clock.advance(timedelta(days=30) - MS)
    assert journal.fired() == []
    clock.advance("1ms")
    [fire] = journal.fired()
    assert fire.scheduled_at == fire.handled_at == registered + timedelta(days=30)
    assert clock.now() == registered + timedelta(days=30)
    assert time.monotonic() - began < 5.0


def test_a_reminder_resumes_with_the_remaining_time_after_a_restart(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """A reminder due in 10 minutes, 4 minutes of which passed before a shutdown, fires 6
    minutes after the restart: at its original due time."""
    register(rem.virtual("rem", "k"), "r", due="10m")
    clock.advance("4m")
    second = restart(rem, make_system)
    clock.advance(timedelta(minutes=5, seconds=59))
    assert journal.fired() == []
    clock.advance("1s")
    [fire] = journal.fired()
    assert fire.scheduled_at == fire.handled_at == START + timedelta(minutes=10)
    assert second.virtual("rem", "k").is_alive()


# -- periodic reminders and max_count --------------------------------------------------------------


def test_a_periodic_reminder_keeps_a_fixed_phase(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Fire n of a periodic reminder is scheduled at due + (n-1) * period and handled then."""
    ref = rem.virtual("rem", "k")
    register(ref, "tick", due="10s", period="5s")
    clock.advance("9s")
    assert journal.fired() == []
    clock.advance("21s")
    fires = journal.fired("tick")
    assert [f.fire_count for f in fires] == [1, 2, 3, 4, 5]
    for fire in fires:
        expected = START + timedelta(seconds=10 + 5 * (fire.fire_count - 1))
        assert fire.scheduled_at == fire.handled_at == expected
    [info] = listed(ref)
    assert (info.fire_count, info.next_fire_at) == (5, START + timedelta(seconds=35))


def test_fire_count_continues_across_a_restart(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """A periodic reminder restarted between fires 2 and 3 goes on with fire_count 3, on its
    original phase."""
    register(rem.virtual("rem", "k"), "tick", due="1m", period="1m")
    clock.advance("2m")
    assert journal.counts("tick") == [1, 2]
    second = restart(rem, make_system)
    assert [i.fire_count for i in listed(second.virtual("rem", "k"))] == [2]
    clock.advance("1m")
    fires = journal.fired("tick")
    assert [f.fire_count for f in fires] == [1, 2, 3]
    assert fires[-1].scheduled_at == START + timedelta(minutes=3)


def test_max_count_is_never_exceeded_across_restarts(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
    db: Path,
) -> None:
    """A reminder with max_count 3 restarted after each fire fires exactly 3 times in all, then
    is deleted."""
    register(rem.virtual("rem", "k"), "tick", due="1m", period="1m", max_count=3)
    current = rem
    for fires in (1, 2, 3):
        clock.advance("1m")
        assert journal.counts("tick") == list(range(1, fires + 1))
        current = restart(current, make_system)
    clock.advance("1h")
    assert journal.counts("tick") == [1, 2, 3]
    assert {f.max_count for f in journal.fired()} == {3}
    assert names(current.virtual("rem", "k")) == []
    assert raw_count(db) == 0


@pytest.mark.parametrize(
    ("kwargs", "fires"),
    [({"due": "1m"}, 1), ({"due": "1m", "period": "1m", "max_count": 2}, 2)],
    ids=["one-shot", "max_count"],
)
def test_a_reminder_that_fired_for_the_last_time_is_deleted(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    db: Path,
    *,
    kwargs: dict[str, Any],
    fires: int,
) -> None:
    """After its last fire (a one-shot, or max_count reached) a reminder is no longer listed,
    get_reminder returns None and its row is gone."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", **kwargs)
    register(ref, "other", due="1h")
    clock.advance("5m")
    assert journal.counts("r") == list(range(1, fires + 1))
    assert names(ref) == ["other"]
    assert ref.ask(("get", "r"), timeout=WAIT) is None
    assert [row[2] for row in raw_rows(db)] == ["other"]


# -- replacing and unregistering -------------------------------------------------------------------


def test_re_registering_a_name_replaces_it_and_resets_its_counts(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Registering an existing name replaces due, period, payload and max_count, and counts
    start again from 1; the old schedule never fires again."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m", period="1m", payload="old")
    clock.advance("2m")
    assert journal.counts("r") == [1, 2]
    info = register(ref, "r", due="30s", period="2m", max_count=2, payload="new")
    assert (info.fire_count, info.max_count, info.next_fire_at, info.payload) == (
        0,
        2,
        START + timedelta(minutes=2, seconds=30),
        "new",
    )
    clock.advance("10m")
    replaced = journal.fired("r")[2:]
    assert [(f.fire_count, f.scheduled_at, f.payload) for f in replaced] == [
        (1, START + timedelta(minutes=2, seconds=30), "new"),
        (2, START + timedelta(minutes=4, seconds=30), "new"),
    ]
    assert names(ref) == []


def test_unregister_returns_true_then_false_and_the_reminder_never_fires(
    rem: ActorSystem, clock: ManualClock, journal: Journal, db: Path
) -> None:
    """unregister_reminder deletes a reminder durably (True), a second call finds none (False),
    and it never fires."""
    ref = rem.virtual("rem", "k")
    register(ref, "gone", due="1m", period="1m")
    register(ref, "kept", due="1m")
    assert ref.ask(("unregister", "gone"), timeout=WAIT) is True
    assert ref.ask(("unregister", "gone"), timeout=WAIT) is False
    assert ref.ask(("unregister", "never-registered"), timeout=WAIT) is False
    assert [row[2] for row in raw_rows(db)] == ["kept"]
    clock.advance("5m")
    assert [f.name for f in journal.fired()] == ["kept"]


@pytest.mark.parametrize("how", ["unregister", "re-register"])
def test_a_fire_already_in_the_mailbox_of_a_removed_registration_is_discarded(
    make_system: Callable[..., ActorSystem], journal: Journal, db: Path, how: str
) -> None:
    """A fire recorded and queued behind a busy handler is discarded if its reminder is
    unregistered (or replaced) before the actor takes it out of the mailbox."""
    # handoff_timeout=0: advance() does not wait for the blocked actor to take the fire.
    clock = ManualClock(start=START, handoff_timeout=0)
    system = make_system(clock=clock)
    system.register_virtual("rem", bound(Reminding, journal))
    ref = system.virtual("rem", "k")
    register(ref, "r", due="1m", payload="first")
    ref.tell("hold")
    assert journal.holding.wait(WAIT)
    clock.advance("1m")  # the fire is recorded and waits in the mailbox behind "hold"
    facet = system.facet_service.get_facet(ref.actor_id, ReminderFacet)
    if how == "unregister":
        assert facet.unregister_reminder("r") is True
    else:
        facet.register_reminder("r", due="10m", payload="second")
    journal.gate.set()
    assert ref.ask("ping", timeout=WAIT) == "pong"
    assert journal.fired() == []
    if how == "unregister":
        assert raw_count(db) == 0
    else:
        assert [(row[2], row[3]) for row in raw_rows(db)] == [("r", 0)]
        clock.advance("10m")
        assert ref.ask("ping", timeout=WAIT) == "pong"  # advance() did not wait (timeout 0)
        assert [(f.fire_count, f.payload) for f in journal.fired()] == [(1, "second")]


# -- isolation and activation ----------------------------------------------------------------------


def test_each_actor_sees_only_its_own_reminders(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Two keys of one type and a key of another type, each with a reminder of the same name:
    each facet lists, gets and unregisters only its own, and each fire reaches its own actor."""
    rem.register_virtual("other", bound(Reminding, journal))
    refs = {
        "rem/a": rem.virtual("rem", "a"),
        "rem/b": rem.virtual("rem", "b"),
        "other/a": rem.virtual("other", "a"),
    }
    for actor_id, ref in refs.items():
        register(ref, "shared", due="1m", payload=actor_id)
        register(ref, f"only-{actor_id}", due="2m", payload=actor_id)
    for actor_id, ref in refs.items():
        assert sorted(names(ref)) == sorted(["shared", f"only-{actor_id}"])
        assert ref.ask(("get", "shared"), timeout=WAIT).payload == actor_id
        for other in refs:
            if other != actor_id:
                assert ref.ask(("get", f"only-{other}"), timeout=WAIT) is None
                assert ref.ask(("unregister", f"only-{other}"), timeout=WAIT) is False
    assert refs["rem/a"].ask(("unregister", "shared"), timeout=WAIT) is True
    assert names(refs["rem/b"]) == ["shared", "only-rem/b"]
    assert names(refs["other/a"]) == ["shared", "only-other/a"]
    clock.advance("2m")
    assert sorted((f.actor_id, f.name, f.payload) for f in journal.fired()) == [
        ("other/a", "only-other/a", "other/a"),
        ("other/a", "shared", "other/a"),
        ("rem/a", "only-rem/a", "rem/a"),
        ("rem/b", "only-rem/b", "rem/b"),
        ("rem/b", "shared", "rem/b"),
    ]


@pytest.mark.parametrize("deactivation", ["idle-timeout", "stop"])
def test_a_reminder_activates_an_inactive_virtual_actor(
    system: ActorSystem, clock: ManualClock, journal: Journal, deactivation: str
) -> None:
    """A reminder firing for a deactivated virtual actor activates it: on_start runs again and
    the new activation handles the fire."""
    system.register_virtual("rem", bound(Reminding, journal, idle_config={"idle_timeout": "1m"}))
    ref = system.virtual("rem", "k")
    register(ref, "wake", due="10m")
    if deactivation == "stop":
        assert ref.stop(timeout=WAIT) is True
    else:
        clock.advance("1m")
        assert journal.wait_until(lambda j: ("on_stop", "rem/k", 1) in j.events)
    assert ref.wait_stopped(WAIT)
    assert not ref.is_alive()
    clock.advance(START + timedelta(minutes=10) - clock.now())
    [fire] = journal.fired()
    assert (fire.name, fire.activation) == ("wake", 2)
    assert fire.handled_at == START + timedelta(minutes=10)
    assert [e for e in journal.events if e[0] == "on_start"] == [
        ("on_start", "rem/k", 1),
        ("on_start", "rem/k", 2),
    ]
    assert ref.ask("activation", timeout=WAIT) == 2


# -- missed ticks after downtime -------------------------------------------------------------------


def _down_for(
    downtime: str,
    system: ActorSystem,
    make_system: Callable[..., ActorSystem],
    **kwargs: Any,
) -> tuple[ActorSystem, ManualClock]:
    """Register a 1-minute periodic "tick" (first due at start + 1m), shut the system down at
    once, let `downtime` pass with no system running, and start the next system."""
    register(system.virtual("rem", "k"), "tick", due="1m", period="1m", **kwargs)
    new = restart(system, make_system, downtime)
    assert isinstance(new.clock, ManualClock)
    return new, new.clock


def minutes(*values: float) -> list[datetime]:
    return [START + timedelta(minutes=v) for v in values]


def test_missed_once_fires_one_fire_at_restart_then_keeps_the_phase(
    rem: ActorSystem, journal: Journal, make_system: Callable[..., ActorSystem]
) -> None:
    """missed="once": after 10.5 minutes of downtime, one fire at restart (carrying the latest
    missed tick), then the next tick on the original phase."""
    _, clock = _down_for("10m30s", rem, make_system, missed="once")
    clock.advance(0)
    fires = journal.fired("tick")
    assert [(f.fire_count, f.scheduled_at, f.handled_at) for f in fires] == [
        (1, *minutes(10, 10.5))
    ]
    clock.advance(timedelta(seconds=30) - MS)
    assert len(journal.fired()) == 1
    clock.advance(MS)
    clock.advance("1m")
    fires = journal.fired("tick")
    assert [(f.fire_count, f.scheduled_at) for f in fires[1:]] == list(
        zip([2, 3], minutes(11, 12), strict=True)
    )


def test_missed_skip_fires_nothing_at_restart_and_goes_on_at_the_next_tick(
    rem: ActorSystem, journal: Journal, make_system: Callable[..., ActorSystem]
) -> None:
    """missed="skip": after 10.5 minutes of downtime nothing fires at restart; the next fire is
    the next tick on the original phase, with fire_count 1."""
    _, clock = _down_for("10m30s", rem, make_system, missed="skip")
    clock.advance(0)
    clock.advance(timedelta(seconds=30) - MS)
    assert journal.fired() == []
    clock.advance(MS)
    clock.advance("1m")
    fires = journal.fired("tick")
    assert [(f.fire_count, f.scheduled_at, f.handled_at) for f in fires] == [
        (1, *minutes(11, 11)),
        (2, *minutes(12, 12)),
    ]


def test_missed_all_fires_every_missed_tick_in_order(
    rem: ActorSystem, journal: Journal, make_system: Callable[..., ActorSystem]
) -> None:
    """missed="all": after 10.5 minutes of downtime the 10 missed ticks fire at restart, in
    order, fire_count 1..10 with their own scheduled times; then the phase goes on."""
    _, clock = _down_for("10m30s", rem, make_system, missed="all")
    clock.advance(0)
    fires = journal.fired("tick")
    assert [f.fire_count for f in fires] == list(range(1, 11))
    assert [f.scheduled_at for f in fires] == minutes(*range(1, 11))
    assert {f.handled_at for f in fires} == {START + timedelta(minutes=10, seconds=30)}
    clock.advance("30s")
    last = journal.fired("tick")[-1]
    assert (last.fire_count, last.scheduled_at) == (11, START + timedelta(minutes=11))


def test_missed_all_stops_at_max_count(
    rem: ActorSystem, journal: Journal, make_system: Callable[..., ActorSystem], db: Path
) -> None:
    """missed="all" with max_count 4: only 4 of the 10 missed ticks fire, then it is deleted."""
    second, clock = _down_for("10m30s", rem, make_system, missed="all", max_count=4)
    clock.advance(0)
    clock.advance("1h")
    fires = journal.fired("tick")
    assert [(f.fire_count, f.max_count) for f in fires] == [(n, 4) for n in range(1, 5)]
    assert [f.scheduled_at for f in fires] == minutes(1, 2, 3, 4)
    assert names(second.virtual("rem", "k")) == []
    assert raw_count(db) == 0


@pytest.mark.parametrize("missed", ["once", "skip", "all"])
def test_an_overdue_one_shot_fires_once_at_restart_whatever_the_policy(
    rem: ActorSystem, journal: Journal, make_system: Callable[..., ActorSystem], missed: str
) -> None:
    """A one-shot that fell due during a long downtime fires once at restart, carrying its
    original due time, and is then deleted (missed policies are about periodic ticks)."""
    register(rem.virtual("rem", "k"), "once-only", due="10m", missed=missed)
    second = restart(rem, make_system, downtime="3h")
    clock = second.clock
    assert isinstance(clock, ManualClock)
    clock.advance(0)
    fires = journal.fired()
    assert [(f.fire_count, f.scheduled_at, f.handled_at) for f in fires] == [
        (1, START + timedelta(minutes=10), START + timedelta(hours=3))
    ]
    clock.advance("1d")
    assert len(journal.fired()) == 1
    assert names(second.virtual("rem", "k")) == []


@pytest.mark.parametrize("missed", ["once", "skip", "all"])
@pytest.mark.parametrize(
    ("downtime", "ticks"),
    [("1m30s", [1]), ("2m", [1, 2])],
    ids=["half-a-period-late", "exactly-one-period-late"],
)
def test_a_tick_at_most_one_period_late_is_not_missed(
    rem: ActorSystem,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
    *,
    missed: str,
    downtime: str,
    ticks: list[int],
) -> None:
    """A tick is missed only when more than one period late: after a shorter downtime every
    policy fires the late tick normally (with its own scheduled time), then goes on."""
    _, clock = _down_for(downtime, rem, make_system, missed=missed)
    clock.advance(0)
    fires = journal.fired("tick")
    assert [(f.fire_count, f.scheduled_at) for f in fires] == list(
        zip(range(1, len(ticks) + 1), minutes(*ticks), strict=True)
    )
    clock.advance("1m")
    last = journal.fired("tick")[-1]
    assert (last.fire_count, last.scheduled_at) == (len(ticks) + 1, minutes(ticks[-1] + 1)[0])


# -- at-least-once ---------------------------------------------------------------------------------


def test_a_failing_handler_gets_the_same_fire_again_with_backoff(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A handler that raises leaves its fire unacknowledged: it is logged, delivered again with
    the same fire_count after 1 s, then 2 s (doubling), the actor stays up, and once handled the
    next tick follows on the original phase."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m", period="10m", payload="p")
    journal.failures[("rem/k", "r")] = 2
    with structlog.testing.capture_logs() as logs:
        clock.advance("1m")
    failed = [e for e in logs if e["event"] == "reminder.handler_failed"]
    assert [(e["reminder"], e["fire_count"], e["log_level"]) for e in failed] == [("r", 1, "error")]
    assert ref.ask("ping", timeout=WAIT) == "pong"
    assert ref.ask("activation", timeout=WAIT) == 1
    clock.advance(timedelta(seconds=1) - MS)
    assert len(journal.fired()) == 1
    clock.advance(MS)  # first retry, after 1 s: fails again
    clock.advance(timedelta(seconds=2) - MS)
    assert len(journal.fired()) == 2
    clock.advance(MS)  # second retry, 2 s later: handled
    fires = journal.fired("r")
    assert [(f.fire_count, f.scheduled_at, f.handled_at, f.payload) for f in fires] == [
        (1, START + timedelta(minutes=1), START + timedelta(minutes=1), "p"),
        (1, START + timedelta(minutes=1), START + timedelta(minutes=1, seconds=1), "p"),
        (1, START + timedelta(minutes=1), START + timedelta(minutes=1, seconds=3), "p"),
    ]
    clock.advance("1h")
    assert len(journal.fired()) == 3 + 6  # acknowledged: no more retries, only the ticks
    later = journal.fired("r")[3:]
    assert [(f.fire_count, f.scheduled_at) for f in later] == [
        (n, START + timedelta(minutes=1 + 10 * (n - 1))) for n in range(2, 8)
    ]
    assert {f.activation for f in journal.fired()} == {1}


@pytest.mark.parametrize(
    "kwargs", [{"due": "1m"}, {"due": "1m", "period": "1m"}], ids=["one-shot", "periodic"]
)
def test_an_unacknowledged_fire_is_delivered_again_after_a_restart(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
    *,
    db: Path,
    kwargs: dict[str, Any],
) -> None:
    """A fire recorded but never acknowledged before a shutdown is delivered again at restart
    with the same fire_count and scheduled_at; once handled it is acknowledged."""
    register(rem.virtual("rem", "k"), "r", **kwargs)
    journal.failures[("rem/k", "r")] = 1
    clock.advance("1m")  # handled with an error: recorded, not acknowledged
    assert [row[3] for row in raw_rows(db)] == [1]
    second = restart(rem, make_system)
    clock.advance(0)
    fires = journal.fired("r")
    assert [(f.fire_count, f.scheduled_at, f.activation) for f in fires] == [
        (1, START + timedelta(minutes=1), 1),
        (1, START + timedelta(minutes=1), 2),
    ]
    assert fires[1].handled_at == START + timedelta(minutes=1)
    clock.advance("1m")
    if "period" in kwargs:
        assert journal.counts("r") == [1, 1, 2]
    else:
        assert journal.counts("r") == [1, 1]
        assert names(second.virtual("rem", "k")) == []
        assert raw_count(db) == 0


# -- validation ------------------------------------------------------------------------------------

NAIVE = datetime(2026, 1, 1, 12, 0)  # naive on purpose


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque object>"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("", {"due": "1m"}, re.escape("''")),
        (None, {"due": "1m"}, "None"),
        (5, {"due": "1m"}, "5"),
        ("keep", {"due": "-5s"}, re.escape("'-5s'")),
        ("keep", {"due": -1}, "-1"),
        ("keep", {"due": NAIVE}, re.escape(repr(NAIVE))),
        ("keep", {"due": "soon"}, re.escape("'soon'")),
        ("keep", {"due": "1m", "period": "0s"}, re.escape("'0s'")),
        ("keep", {"due": "1m", "period": "500ms"}, re.escape("'500ms'")),
        ("keep", {"due": "1m", "period": "5"}, re.escape("'5'")),
        ("keep", {"due": "1m", "max_count": 0}, "max_count 0"),
        ("keep", {"due": "1m", "max_count": -1}, "max_count -1"),
        ("keep", {"due": "1m", "max_count": True}, "max_count True"),
        ("keep", {"due": "1m", "max_count": "3"}, re.escape("max_count '3'")),
        ("keep", {"due": "1m", "payload": {1, 2}}, re.escape("{1, 2}")),
        ("keep", {"due": "1m", "payload": float("nan")}, "nan"),
        ("keep", {"due": "1m", "payload": {"x": [math.inf]}}, "inf"),
        ("keep", {"due": "1m", "payload": _Opaque()}, "<opaque object>"),
        ("keep", {"due": "1m", "payload": {1: "a"}}, "dict key 1"),
        ("keep", {"due": "1m", "missed": "sometimes"}, re.escape("'sometimes'")),
    ],
    ids=[
        "empty-name",
        "none-name",
        "int-name",
        "negative-due",
        "negative-number-due",
        "naive-datetime",
        "garbage-due",
        "zero-period",
        "period-below-min",
        "unitless-period",
        "max-count-0",
        "max-count-negative",
        "max-count-bool",
        "max-count-str",
        "set-payload",
        "nan-payload",
        "nested-inf-payload",
        "object-payload",
        "int-key-payload",
        "unknown-missed-policy",
    ],
)
def test_an_invalid_registration_is_a_value_error_naming_the_value_and_stores_nothing(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    db: Path,
    *,
    name: Any,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    """A bad name, due, period, max_count, payload or missed policy is a ValueError naming the
    value; nothing is stored and an existing reminder of that name is left as it was."""
    ref = rem.virtual("rem", "k")
    register(ref, "keep", due="1m", payload="original")
    before_listed = listed(ref)
    before_rows = raw_rows(db)
    with pytest.raises(ValueError, match=match):
        register(ref, name, **kwargs)
    assert listed(ref) == before_listed
    assert raw_rows(db) == before_rows
    clock.advance("1h")
    assert [(f.name, f.payload) for f in journal.fired()] == [("keep", "original")]


def test_min_period_config_allows_shorter_periods(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """With config min_period "100ms" a "500ms" period (refused by default) is accepted and
    keeps its phase; below the configured minimum is still refused."""
    system.register_virtual(
        "rem", bound(Reminding, journal, reminder_config={"min_period": "100ms"})
    )
    ref = system.virtual("rem", "k")
    register(ref, "fast", due="500ms", period="500ms", max_count=4)
    with pytest.raises(ValueError, match=re.escape("'50ms'")):
        register(ref, "too-fast", due="1s", period="50ms")
    clock.advance("10s")
    assert [(f.fire_count, f.scheduled_at) for f in journal.fired()] == [
        (n, START + timedelta(milliseconds=500 * n)) for n in range(1, 5)
    ]


def test_reminder_facet_on_a_spawned_actor_is_a_facet_error(rem: ActorSystem) -> None:
    """Attaching ReminderFacet to a plainly spawned actor raises FacetError saying it needs a
    virtual actor; the actor goes on without it."""
    ref = rem.spawn(Plain, actor_id="plain")
    with pytest.raises(FacetError, match=r"needs a virtual actor.*'plain'.*register_virtual"):
        ref.attach_facet(ReminderFacet())
    assert rem.facet_service.list_facets("plain") == []
    assert ref.ask("ping", timeout=WAIT) == "pong"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"min_perod": "1s"}, r"no config key 'min_perod'.*min_period"),
        ({"min_period": "fast"}, r"'min_period'.*'fast'"),
        ({"min_period": "0s"}, r"'min_period'.*'0s'"),
    ],
    ids=["unknown-key", "bad-duration", "zero"],
)
def test_a_bad_reminder_facet_config_is_a_facet_config_error(
    system: ActorSystem, config: dict[str, Any], match: str
) -> None:
    """An unknown config key, or a min_period that is not a positive duration, raises
    FacetConfigError naming the key."""
    system.register_virtual("plain", Plain)
    ref = system.virtual("plain", "k")
    with pytest.raises(FacetConfigError, match=match):
        ref.attach_facet(ReminderFacet(), config=config)
    assert system.facet_service.list_facets(ref.actor_id) == []


# -- undecodable rows ------------------------------------------------------------------------------


def test_an_undecodable_row_is_kept_reported_and_never_fired(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
    db: Path,
) -> None:
    """A stored row with a broken payload does not stop the system: reminder_errors() reports
    it with its key, it never fires, it is never deleted (not by firing, not by a restart), and
    the other reminders keep firing."""
    ref = rem.virtual("rem", "k")
    register(ref, "good", due="1m", period="1m", max_count=3)
    rem.shutdown()
    due_us = int((START + timedelta(seconds=30)).timestamp() * 1_000_000)
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO plexspaces_reminders (actor_type, actor_key, name, due_us, anchor_us, "
            "period_us, max_count, fire_count, missed, payload, pending_fire, "
            "pending_scheduled_us, finished, claimed_by, claimed_until_us, created_us, "
            "updated_us) VALUES ('rem', 'k', 'broken', ?, ?, NULL, NULL, 0, 'once', "
            "'{not json', NULL, NULL, 0, NULL, NULL, ?, ?)",
            (due_us, due_us, due_us, due_us),
        )
    connection.close()
    assert raw_count(db) == 2

    second = make_system(clock=clock)
    second.register_virtual("rem", bound(Reminding, journal))
    errors = second.reminder_errors()
    assert [(e.key.actor_type, e.key.actor_key, e.key.name) for e in errors] == [
        ("rem", "k", "broken")
    ]
    assert "payload" in errors[0].error
    clock.advance("2m")
    assert [(f.name, f.fire_count) for f in journal.fired()] == [("good", 1), ("good", 2)]
    assert names(second.virtual("rem", "k")) == ["good"]
    assert sorted(row[2] for row in raw_rows(db)) == ["broken", "good"]

    third = restart(second, make_system)
    assert [e.key.name for e in third.reminder_errors()] == ["broken"]
    clock.advance("5m")
    assert [(f.name, f.fire_count) for f in journal.fired()] == [
        ("good", 1),
        ("good", 2),
        ("good", 3),
    ]
    assert [row[2] for row in raw_rows(db)] == ["broken"]
    assert [e.key.name for e in third.reminder_errors()] == ["broken"]


# -- real clock ------------------------------------------------------------------------------------


def test_a_past_due_datetime_fires_at_once_on_the_real_clock(
    real_system: ActorSystem, journal: Journal
) -> None:
    """On the real clock a reminder due at a datetime an hour ago fires at once, carrying that
    time, and is then deleted."""
    real_system.register_virtual("rem", bound(Reminding, journal))
    ref = real_system.virtual("rem", "k")
    past = real_system.clock.now() - timedelta(hours=1)
    register(ref, "late", due=past)
    assert journal.wait_until(lambda j: len(j.fires) == 1)
    [fire] = journal.fired()
    assert (fire.name, fire.fire_count, fire.scheduled_at) == ("late", 1, past)
    assert names(ref) == []


def test_concurrent_registrations_from_8_threads_all_land(
    real_system: ActorSystem, journal: Journal, db: Path
) -> None:
    """8 threads registering 50 reminders each on 40 virtual keys at once all succeed (no
    "database is locked"), and every reminder is listed by its own actor."""
    real_system.register_virtual("rem", bound(Reminding, journal))
    refs = [real_system.virtual("rem", f"k{i}") for i in range(40)]
    for ref in refs:
        assert ref.ask("ping", timeout=WAIT) == "pong"
    facets = [real_system.facet_service.get_facet(ref.actor_id, ReminderFacet) for ref in refs]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        start.wait(WAIT)
        try:
            for n in range(50):
                index = (thread * 50 + n) % 40
                facets[index].register_reminder(
                    f"t{thread}-n{n}", due="1h", period="1h", payload=[thread, n]
                )
        except BaseException as error:
            errors.append(error)

    with structlog.testing.capture_logs() as logs:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    listed_by_key = {ref.actor_key: listed(ref) for ref in refs}
    assert sum(len(infos) for infos in listed_by_key.values()) == 400
    for index, ref in enumerate(refs):
        expected = {f"t{t}-n{n}" for t in range(8) for n in range(50) if (t * 50 + n) % 40 == index}
        assert {info.name for info in listed_by_key[ref.actor_key]} == expected
        for info in listed_by_key[ref.actor_key]:
            thread, n = info.payload
            assert info.name == f"t{thread}-n{n}"
    assert raw_count(db) == 400


@pytest.mark.slow
def test_2000_reminders_on_the_real_clock_each_fire_exactly_once(
    real_system: ActorSystem, journal: Journal, db: Path
) -> None:
    """2,000 one-shot reminders due over 2 s across 100 keys on the real clock all fire exactly
    once and are deleted; prints the p50/p99 lateness."""
    real_system.register_virtual("rem", bound(Reminding, journal))
    refs = [real_system.virtual("rem", f"k{i}") for i in range(100)]
    for ref in refs:
        assert ref.ask("ping", timeout=WAIT) == "pong"
    facets = [real_system.facet_service.get_facet(ref.actor_id, ReminderFacet) for ref in refs]
    base = real_system.clock.now() + timedelta(seconds=1)
    began = time.monotonic()
    for n in range(2000):
        facets[n % 100].register_reminder(f"r{n}", due=base + n * MS)
    registered_in = time.monotonic() - began
    assert journal.wait_until(lambda j: len(j.fires) >= 2000, timeout=30.0), len(journal.fires)
    for ref in refs:  # every handled fire is acknowledged by the time its actor answers
        assert ref.ask("ping", timeout=WAIT) == "pong"
    fires = journal.fired()
    per_reminder = Counter((f.actor_id, f.name) for f in fires)
    assert len(per_reminder) == 2000
    assert set(per_reminder.values()) == {1}
    assert all(f.fire_count == 1 and f.max_count is None for f in fires)
    for fire in fires:
        n = int(fire.name[1:])
        assert fire.actor_id == f"rem/k{n % 100}"
        assert fire.scheduled_at == base + n * MS
    assert raw_count(db) == 0
    lateness = sorted((f.handled_at - f.scheduled_at).total_seconds() * 1000 for f in fires)
    assert lateness[0] >= 0  # never early
    p50 = statistics.median(lateness)
    p99 = lateness[int(len(lateness) * 0.99) - 1]
    print(
        f"\n2000 reminders: registered in {registered_in * 1000:.0f} ms; lateness p50 "
        f"{p50:.1f} ms, p99 {p99:.1f} ms, max {lateness[-1]:.1f} ms"
    )


def test_a_fire_awaiting_its_acknowledgement_shows_as_pending(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """ReminderInfo.pending_fire names a fire recorded but not yet acknowledged, then clears."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m", period="10m")
    journal.failures[("rem/k", "r")] = 1
    clock.advance("1m")  # recorded and delivered; the handler fails: not acknowledged
    (info,) = rem.reminders.list_actor("rem", "k")
    assert (info.fire_count, info.pending_fire) == (1, 1)
    clock.advance("1s")  # the retry is handled and acknowledged
    (info,) = rem.reminders.list_actor("rem", "k")
    assert (info.fire_count, info.pending_fire) == (1, None)


def test_the_registered_info_carries_the_payload_as_fires_will(rem: ActorSystem) -> None:
    """register_reminder returns the payload as JSON hands it back (a tuple becomes a list)."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "r", due="1m", payload={"items": (1, 2)})
    assert info.payload == {"items": [1, 2]}
    assert ref.ask(("get", "r"), timeout=WAIT).payload == info.payload
