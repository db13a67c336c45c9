"""`TimerFacet` on a ManualClock: exact, deterministic timer semantics.

An `ask` is the sync point: `ManualClock.advance` returns once every fire it made was taken out of
its mailbox, so an `ask` sent afterwards is answered after those fires were handled.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import structlog.testing

from facets.timer import TimerFacet, TimerInfo, TimerRegistration
from plexspaces import (
    Actor,
    ActorRef,
    ActorStoppedError,
    ActorSystem,
    FacetConfigError,
    FacetNotAttachedError,
    ManualClock,
    TimerFired,
    parse_duration,
)
from tests.conftest import START

WAIT = 5.0  # seconds any single wait may take before the test fails


class Recorder(Actor):
    """Records every message it does not understand as a command; "log" returns the record."""

    def __init__(self, sink: list[Any] | None = None) -> None:
        super().__init__()
        self.received: list[Any] = []
        # Shared with the test, so what an actor received stays visible after it stopped.
        self.sink = sink if sink is not None else []

    def on_start(self) -> None:
        self.sink.append("started")

    def on_receive(self, message: Any) -> Any:
        match message:
            case "log":
                return list(self.received)
            case ("block", threading.Event() as entered, threading.Event() as release):
                entered.set()
                release.wait(30)
                return None
            case ("advance", ManualClock() as clock, step):
                # Moving time from the actor's own thread keeps the actor busy while its timers
                # fall due: the slow-actor case, deterministically.
                clock.advance(step)
                return None
            case ("call", function):
                return function(self)
            case "fail":
                raise RuntimeError("failure in a tell handler")
        self.received.append(message)
        self.sink.append(message)
        return None


class ObservedTimerFacet(TimerFacet):
    """A TimerFacet that reports when the runtime detached it (its timers are then cancelled)."""

    facet_type = "timer"

    def __init__(self) -> None:
        super().__init__()
        self.detached = threading.Event()

    def on_detach(self) -> None:
        super().on_detach()
        self.detached.set()


def spawn_recorder(
    system: ActorSystem,
    *,
    config: dict[str, Any] | None = None,
    sink: list[Any] | None = None,
    facet: TimerFacet | None = None,
) -> tuple[ActorRef, TimerFacet]:
    ref = system.spawn(Recorder, sink)
    # `facet or TimerFacet()` would not do: a TimerFacet without timers is falsy (it has __len__).
    chosen = facet if facet is not None else TimerFacet()
    timers = ref.attach_facet(chosen, priority=50, config=config or {})
    assert isinstance(timers, TimerFacet)
    return ref, timers


def fires(ref: ActorRef) -> list[TimerFired]:
    return [m for m in ref.ask("log", timeout=WAIT) if isinstance(m, TimerFired)]


def summary(fired: list[TimerFired]) -> list[tuple[str, int, timedelta, Any, int]]:
    return [
        (f.timer_name, f.fire_count, f.scheduled_at - START, f.payload, f.missed) for f in fired
    ]


def sink_fires(sink: list[Any]) -> list[TimerFired]:
    return [m for m in sink if isinstance(m, TimerFired)]


@contextmanager
def fires_waiting_in_mailbox(
    ref: ActorRef, clock: ManualClock, system: ActorSystem, step: str
) -> Iterator[None]:
    """Block the actor, advance `clock` by `step` on another thread, and yield once every deadline
    up to then has run, so their fires wait in the blocked actor's mailbox.

    The advance itself cannot return while a fire waits (it waits for the pick-up), so it runs on
    a helper thread; leaving the block releases the actor and joins that thread.
    """
    entered, release, reached = threading.Event(), threading.Event(), threading.Event()
    ref.tell(("block", entered, release))
    assert entered.wait(WAIT)
    # Armed after the timers under test: at an equal deadline it runs after them, in the same step.
    system.scheduler.call_at(clock.time() + parse_duration(step).total_seconds(), reached.set)
    advancing = threading.Thread(target=clock.advance, args=(step,), name="test-advance")
    advancing.start()
    try:
        assert reached.wait(WAIT)
        yield
    finally:
        release.set()
        advancing.join(WAIT * 3)
    assert not advancing.is_alive()


# -- one-shot timers -----------------------------------------------------------------------------


def test_one_shot_fires_once_after_its_delay_and_is_removed(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot timer fires once, exactly at its delay (not before), and is then removed."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("once", "500ms", payload="p")
    assert [info.name for info in timers.list_timers()] == ["once"]

    clock.advance("499ms")
    assert fires(ref) == []
    clock.advance("1ms")
    assert summary(fires(ref)) == [("once", 1, timedelta(milliseconds=500), "p", 0)]
    assert timers.list_timers() == []
    assert timers.get_timer("once") is None
    assert len(system.scheduler) == 0

    clock.advance("1h")
    assert len(fires(ref)) == 1


def test_one_shot_with_zero_delay_fires_at_the_next_advance(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot with delay 0 does not fire on registration, only at the next advance(0)."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("now", 0)
    assert fires(ref) == []
    clock.advance(0)
    assert summary(fires(ref)) == [("now", 1, timedelta(0), None, 0)]


def test_one_shot_of_thirty_days_fires_in_virtual_time(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A 30-day one-shot fires exactly at 30 days of virtual time."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("month", "30d")
    info = timers.get_timer("month")
    assert info is not None
    assert info.next_fire_at == START + timedelta(days=30)
    clock.advance(timedelta(days=30) - timedelta(microseconds=1))
    assert fires(ref) == []
    clock.advance("1us")
    assert summary(fires(ref)) == [("month", 1, timedelta(days=30), None, 0)]


# -- periodic timers -----------------------------------------------------------------------------


def test_periodic_first_fire_is_one_interval_by_default(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Without due_time a periodic timer first fires after one interval, not at registration."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "2s")
    clock.advance(0)
    clock.advance("1999ms")
    assert fires(ref) == []
    clock.advance("1ms")
    assert summary(fires(ref)) == [("tick", 1, timedelta(seconds=2), None, 0)]


def test_periodic_first_fire_is_at_due_time(system: ActorSystem, clock: ManualClock) -> None:
    """With due_time the first fire is at due_time, then one interval apart."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "1s", due_time="250ms")
    clock.advance("249ms")
    assert fires(ref) == []
    clock.advance("1ms")
    assert summary(fires(ref)) == [("tick", 1, timedelta(milliseconds=250), None, 0)]
    clock.advance("999ms")
    assert len(fires(ref)) == 1
    clock.advance("1ms")
    assert summary(fires(ref))[1] == ("tick", 2, timedelta(milliseconds=1250), None, 0)


def test_periodic_due_time_zero_fires_at_the_next_advance_zero(
    system: ActorSystem, clock: ManualClock
) -> None:
    """due_time=0 fires at the next advance(0), not on registration, then every interval."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "1s", due_time=0)
    assert fires(ref) == []
    clock.advance(0)
    assert summary(fires(ref)) == [("tick", 1, timedelta(0), None, 0)]
    clock.advance("1s")
    assert [f.scheduled_at - START for f in fires(ref)] == [timedelta(0), timedelta(seconds=1)]


def test_periodic_is_fixed_rate_on_the_original_phase(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Tick n is due at start + due_time + (n-1) * interval exactly, however time is advanced."""
    ref, timers = spawn_recorder(system)
    due, interval = timedelta(milliseconds=70), timedelta(milliseconds=100)
    timers.register_periodic("tick", interval, due_time=due)
    for step_ms in [33, 1, 250, 7, 99, 101, 0, 1000, 3, 17, 389, 2000, 1]:
        clock.advance(timedelta(milliseconds=step_ms))
    elapsed = clock.now() - START
    expected_ticks = (elapsed - due) // interval + 1
    fired = fires(ref)
    assert len(fired) == expected_ticks == 39
    for n, fire in enumerate(fired, start=1):
        assert fire.fire_count == n
        assert fire.scheduled_at == START + due + (n - 1) * interval
        assert fire.missed == 0


def test_every_tick_of_one_long_advance_is_delivered(
    system: ActorSystem, clock: ManualClock
) -> None:
    """One advance over ten intervals delivers ten fires: each is handed over before time moves."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "1s")
    clock.advance("10s")
    assert [(f.fire_count, f.scheduled_at - START, f.missed) for f in fires(ref)] == [
        (n, timedelta(seconds=n), 0) for n in range(1, 11)
    ]


def test_fire_count_and_next_fire_at_follow_the_ticks(
    system: ActorSystem, clock: ManualClock
) -> None:
    """fire_count counts ticks and next_fire_at moves on one interval per tick."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "5s", payload={"k": 1})
    info = timers.get_timer("tick")
    assert info == TimerInfo(
        name="tick",
        periodic=True,
        interval=timedelta(seconds=5),
        next_fire_at=START + timedelta(seconds=5),
        fire_count=0,
        payload={"k": 1},
    )
    for n in range(1, 4):
        clock.advance("5s")
        info = timers.get_timer("tick")
        assert info is not None
        assert info.fire_count == n
        assert info.next_fire_at == START + timedelta(seconds=5 * (n + 1))
    assert [f.fire_count for f in fires(ref)] == [1, 2, 3]


def test_payload_is_delivered_as_given(system: ActorSystem, clock: ManualClock) -> None:
    """The payload object given at registration is the one in every TimerFired."""
    ref, timers = spawn_recorder(system)
    payload = {"order": "ord-100", "items": [1, 2]}
    timers.register_periodic("p", "1s", payload=payload)
    timers.register_one_shot("o", "1s", payload=payload)
    clock.advance("2s")
    fired = fires(ref)
    assert len(fired) == 3
    assert all(f.payload is payload for f in fired)


def test_timer_fired_is_a_frozen_dataclass_with_aware_utc_time(
    system: ActorSystem, clock: ManualClock
) -> None:
    """TimerFired is immutable and its scheduled_at is an aware UTC datetime."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("o", "1s")
    clock.advance("1s")
    (fired,) = fires(ref)
    assert dataclasses.is_dataclass(fired)
    assert fired.scheduled_at.utcoffset() == timedelta(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fired.fire_count = 2  # type: ignore[misc]


def test_one_scheduler_entry_per_timer(system: ActorSystem, clock: ManualClock) -> None:
    """Each timer holds one scheduler entry however often it fires; a fired one-shot holds none."""
    _, timers = spawn_recorder(system)
    timers.register_periodic("a", "1s")
    timers.register_periodic("b", "3s")
    timers.register_one_shot("c", "2s")
    assert len(system.scheduler) == 3
    clock.advance("10s")
    assert len(system.scheduler) == 2
    assert len(timers) == 2


def test_timers_of_two_actors_are_independent(system: ActorSystem, clock: ManualClock) -> None:
    """Two actors may use the same timer name; unregistering one leaves the other."""
    ref_a, timers_a = spawn_recorder(system)
    ref_b, timers_b = spawn_recorder(system)
    timers_a.register_periodic("t", "1s", payload="a")
    timers_b.register_periodic("t", "1s", payload="b")
    assert timers_a.unregister_timer("t") is True
    clock.advance("2s")
    assert fires(ref_a) == []
    assert [f.payload for f in fires(ref_b)] == ["b", "b"]


def test_timers_can_be_registered_from_the_actors_own_thread(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A handler may register timers on its own facet (found by class) while it runs."""
    ref, _ = spawn_recorder(system)

    def register(actor: Actor) -> None:
        actor.facet(TimerFacet).register_one_shot("inner", "1s", payload="from-handler")

    ref.ask(("call", register), timeout=WAIT)
    clock.advance("1s")
    assert summary(fires(ref)) == [("inner", 1, timedelta(seconds=1), "from-handler", 0)]


# -- register_timer ------------------------------------------------------------------------------


def test_register_timer_periodic(system: ActorSystem, clock: ManualClock) -> None:
    """A periodic TimerRegistration registers a periodic timer with its due_time and payload."""
    ref, timers = spawn_recorder(system)
    timers.register_timer(
        TimerRegistration("beat", interval="2s", due_time="500ms", periodic=True, payload=7)
    )
    info = timers.get_timer("beat")
    assert info is not None
    assert info.periodic is True
    assert info.interval == timedelta(seconds=2)
    clock.advance("4500ms")
    assert summary(fires(ref)) == [
        ("beat", 1, timedelta(milliseconds=500), 7, 0),
        ("beat", 2, timedelta(milliseconds=2500), 7, 0),
        ("beat", 3, timedelta(milliseconds=4500), 7, 0),
    ]


def test_register_timer_periodic_defaults_due_time_to_one_interval(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A periodic TimerRegistration without due_time first fires after one interval."""
    ref, timers = spawn_recorder(system)
    timers.register_timer(TimerRegistration("beat", interval="1s", periodic=True))
    clock.advance("999ms")
    assert fires(ref) == []
    clock.advance("1ms")
    assert summary(fires(ref)) == [("beat", 1, timedelta(seconds=1), None, 0)]


def test_register_timer_one_shot(system: ActorSystem, clock: ManualClock) -> None:
    """A one-shot TimerRegistration fires once after its due_time and is removed."""
    ref, timers = spawn_recorder(system)
    timers.register_timer(TimerRegistration("once", due_time="3s", payload="x"))
    info = timers.get_timer("once")
    assert info is not None
    assert info.periodic is False
    assert info.interval is None
    clock.advance("10s")
    assert summary(fires(ref)) == [("once", 1, timedelta(seconds=3), "x", 0)]
    assert timers.get_timer("once") is None


@pytest.mark.parametrize(
    ("registration", "error"),
    [
        (TimerRegistration("p", periodic=True), ValueError),
        (TimerRegistration("p", due_time="1s", periodic=True), ValueError),
        (TimerRegistration("o", interval="1s"), ValueError),
        (TimerRegistration("o", interval="1s", due_time="1s"), ValueError),
        (TimerRegistration("o"), ValueError),
        (TimerRegistration("", due_time="1s"), ValueError),
        (TimerRegistration("p", interval="0s", periodic=True), ValueError),
        (TimerRegistration("o", due_time="-1s"), ValueError),
        ("p", TypeError),
        (None, TypeError),
        ({"name": "p", "interval": "1s", "periodic": True}, TypeError),
    ],
    ids=[
        "periodic-without-interval",
        "periodic-with-only-due-time",
        "one-shot-with-interval",
        "one-shot-with-interval-and-due-time",
        "one-shot-without-due-time",
        "empty-name",
        "zero-interval",
        "negative-due-time",
        "a-string",
        "none",
        "a-dict",
    ],
)
def test_register_timer_rejects_inconsistent_registrations(
    system: ActorSystem, registration: Any, error: type[Exception]
) -> None:
    """A registration that is not a TimerRegistration or is inconsistent raises; nothing changes."""
    _, timers = spawn_recorder(system)
    timers.register_periodic("keep", "1s")
    before = timers.list_timers()
    with pytest.raises(error):
        timers.register_timer(registration)
    assert timers.list_timers() == before
    assert len(system.scheduler) == 1


# -- replacing and cancelling --------------------------------------------------------------------


def test_reregistering_a_name_replaces_the_timer(system: ActorSystem, clock: ManualClock) -> None:
    """Registering an existing name replaces the timer: the old schedule never fires again."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("t", "1s", payload="old")
    clock.advance("1s")
    timers.register_periodic("t", "5s", payload="new")
    assert [info.name for info in timers.list_timers()] == ["t"]
    assert len(system.scheduler) == 1
    clock.advance("5s")
    assert summary(fires(ref)) == [
        ("t", 1, timedelta(seconds=1), "old", 0),
        ("t", 1, timedelta(seconds=6), "new", 0),
    ]


def test_reregistering_discards_the_old_timers_fire_in_the_mailbox(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A replaced periodic timer's fire still in the mailbox is discarded; the new one's arrive."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("t", "1s", payload="old")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        timers.register_periodic("t", "1s", payload="new")
    assert fires(ref) == []
    clock.advance("2s")
    assert summary(fires(ref)) == [
        ("t", 1, timedelta(seconds=2), "new", 0),
        ("t", 2, timedelta(seconds=3), "new", 0),
    ]


def test_reregistering_a_fired_one_shot_discards_its_fire_in_the_mailbox(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot replaced while its fire still waits in the mailbox: that fire is discarded."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("t", "1s", payload="old")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        timers.register_one_shot("t", "1s", payload="new")
    assert fires(ref) == []
    clock.advance("1s")
    assert summary(fires(ref)) == [("t", 1, timedelta(seconds=2), "new", 0)]


def test_unregister_returns_whether_a_timer_was_registered(
    system: ActorSystem, clock: ManualClock
) -> None:
    """unregister_timer is True for a registered name, then False; the timer no longer fires."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s")
    timers.register_one_shot("o", "1s")
    assert timers.unregister_timer("p") is True
    assert timers.unregister_timer("p") is False
    assert timers.unregister_timer("never") is False
    assert [info.name for info in timers.list_timers()] == ["o"]
    assert len(system.scheduler) == 1
    clock.advance("5s")
    assert [f.timer_name for f in fires(ref)] == ["o"]
    assert timers.unregister_timer("o") is False  # a fired one-shot is gone
    assert len(system.scheduler) == 0


def test_unregister_discards_a_fire_already_in_the_mailbox(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A fire of an unregistered periodic timer still in the mailbox never reaches the actor."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("t", "1s")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        assert timers.unregister_timer("t") is True
    assert fires(ref) == []
    clock.advance("5s")
    assert fires(ref) == []
    assert len(system.scheduler) == 0


def test_unregister_discards_a_one_shot_fire_already_in_the_mailbox(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Unregistering a one-shot whose fire waits in the mailbox cancels (True) and discards it."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("timeout", "1s")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        assert timers.unregister_timer("timeout") is True
    assert fires(ref) == []


# -- a slow actor is not flooded -----------------------------------------------------------------


def test_busy_actor_gets_at_most_one_waiting_fire_per_timer(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A busy actor gets one waiting fire per timer; when it is handled it stands for the ticks
    that fell due meanwhile: it carries the latest one and counts the others as missed."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("fast", "1s")
    timers.register_periodic("slow", "3s")

    # The actor itself advances ten seconds, so it is busy while 10 + 3 ticks fall due.
    ref.ask(("advance", clock, "10s"), timeout=WAIT)
    assert sorted(summary(fires(ref))) == [
        ("fast", 10, timedelta(seconds=10), None, 9),
        ("slow", 3, timedelta(seconds=9), None, 2),
    ]
    fast, slow = timers.get_timer("fast"), timers.get_timer("slow")
    assert fast is not None
    assert slow is not None
    assert (fast.fire_count, fast.next_fire_at) == (10, START + timedelta(seconds=11))
    assert (slow.fire_count, slow.next_fire_at) == (3, START + timedelta(seconds=12))

    # Then each timer goes on on its original phase, one fire per tick.
    clock.advance("1s")
    assert summary(fires(ref))[2:] == [("fast", 11, timedelta(seconds=11), None, 0)]
    clock.advance("1s")
    assert sorted(summary(fires(ref))[3:]) == [
        ("fast", 12, timedelta(seconds=12), None, 0),
        ("slow", 4, timedelta(seconds=12), None, 0),
    ]


def test_advance_does_not_wait_on_an_actor_blocked_in_a_handler(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Advancing time while the actor is blocked in a handler returns without waiting for it
    (no hand-off timeout, no warning); the one fire that waited then stands for every tick that
    fell due meanwhile: it is the latest tick and counts the others as missed."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("tick", "1s")
    entered, release = threading.Event(), threading.Event()
    ref.tell(("block", entered, release))
    assert entered.wait(WAIT)
    advanced = threading.Event()

    def advance() -> None:
        clock.advance("5s")
        advanced.set()

    with structlog.testing.capture_logs() as logs:
        threading.Thread(target=advance, daemon=True).start()
        # Bounded well below the default hand-off timeout (10 s), which the clock used to wait.
        assert advanced.wait(WAIT / 2)
    release.set()
    assert [entry for entry in logs if entry["event"] == "clock.handoff_timeout"] == []
    assert summary(fires(ref)) == [("tick", 5, timedelta(seconds=5), None, 4)]
    clock.advance("1s")
    assert summary(fires(ref))[1:] == [("tick", 6, timedelta(seconds=6), None, 0)]


def test_every_tick_is_delivered_or_counted_as_missed(
    system: ActorSystem, clock: ManualClock
) -> None:
    """For delivered fires, fire_count advances by exactly 1 + missed: no tick is lost."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("t", "100ms")
    for step in ["1s", "250ms", "3s", "100ms", "0s", "2s"]:
        ref.ask(("advance", clock, step), timeout=WAIT)
        clock.advance("100ms")
    fired = fires(ref)
    previous = 0
    for fire in fired:
        assert fire.fire_count == previous + 1 + fire.missed
        assert fire.scheduled_at == START + fire.fire_count * timedelta(milliseconds=100)
        previous = fire.fire_count
    info = timers.get_timer("t")
    assert info is not None
    assert previous == info.fire_count == 69
    assert any(fire.missed > 0 for fire in fired)


# -- list_timers ---------------------------------------------------------------------------------


def test_list_timers_reports_each_timer_soonest_first(
    system: ActorSystem, clock: ManualClock
) -> None:
    """list_timers gives name, kind, next fire and count of every timer, soonest first."""
    _, timers = spawn_recorder(system)
    assert timers.list_timers() == []
    timers.register_periodic("c", "3s", payload="c")
    timers.register_periodic("a", "4s", due_time="1s")
    timers.register_one_shot("b", "2s")
    listed = timers.list_timers()
    assert [(i.name, i.periodic, i.next_fire_at - START, i.fire_count) for i in listed] == [
        ("a", True, timedelta(seconds=1), 0),
        ("b", False, timedelta(seconds=2), 0),
        ("c", True, timedelta(seconds=3), 0),
    ]
    clock.advance("1s")
    assert [(i.name, i.next_fire_at - START, i.fire_count) for i in timers.list_timers()] == [
        ("b", timedelta(seconds=2), 0),
        ("c", timedelta(seconds=3), 0),
        ("a", timedelta(seconds=5), 1),
    ]
    assert timers.list_timers()[1].payload == "c"
    assert timers.list_timers()[1].interval == timedelta(seconds=3)


# -- every way out -------------------------------------------------------------------------------


def test_timers_stop_when_the_actor_stops(system: ActorSystem, clock: ManualClock) -> None:
    """After stop() returns, the actor's timers are cancelled and nothing more is delivered."""
    sink: list[Any] = []
    ref, timers = spawn_recorder(system, sink=sink)
    timers.register_periodic("p", "1s")
    timers.register_one_shot("o", "2s")
    clock.advance("1s")
    assert len(fires(ref)) == 1
    assert len(system.scheduler) == 2

    ref.stop()
    assert len(system.scheduler) == 0
    assert timers.list_timers() == []
    clock.advance("10s")
    assert len(sink_fires(sink)) == 1


def test_timers_stop_when_a_tell_handler_fails(system: ActorSystem, clock: ManualClock) -> None:
    """A failure in a tell handler ends the actor and cancels its timers."""
    sink: list[Any] = []
    facet = ObservedTimerFacet()
    ref, timers = spawn_recorder(system, sink=sink, facet=facet)
    timers.register_periodic("p", "1s")
    timers.register_one_shot("o", "5s")
    ref.tell("fail")
    assert facet.detached.wait(WAIT)
    assert len(system.scheduler) == 0
    assert timers.list_timers() == []
    clock.advance("10s")
    assert sink_fires(sink) == []
    assert not ref.is_alive()


def test_timers_stop_when_on_start_fails(system: ActorSystem, clock: ManualClock) -> None:
    """Timers registered in an on_start that then raises are cancelled before spawn raises."""
    armed: list[TimerFacet] = []

    class FailsAfterArming(Actor):
        def on_start(self) -> None:
            timers = self.attach_facet(TimerFacet(), priority=50)
            timers.register_periodic("p", "1s", due_time=0)
            timers.register_one_shot("o", "1s")
            armed.append(timers)
            raise RuntimeError("on_start failed after arming timers")

    with pytest.raises(RuntimeError, match="on_start failed"):
        system.spawn(FailsAfterArming)
    assert len(system.scheduler) == 0
    assert armed[0].list_timers() == []
    assert system.actor_ids() == []
    clock.advance("5s")


def test_timers_stop_at_system_shutdown(system: ActorSystem, clock: ManualClock) -> None:
    """System shutdown cancels every actor's timers; advancing the clock delivers nothing."""
    sink: list[Any] = []
    facets = [spawn_recorder(system, sink=sink)[1] for _ in range(3)]
    for timers in facets:
        timers.register_periodic("p", "1s")
        timers.register_one_shot("o", "2s")
    system.shutdown()
    assert all(timers.list_timers() == [] for timers in facets)
    assert len(system.scheduler) == 0
    clock.advance("10s")
    assert sink_fires(sink) == []


def test_timers_stop_when_the_facet_is_detached(system: ActorSystem, clock: ManualClock) -> None:
    """Detaching the TimerFacet cancels its timers; the actor runs on and receives no fire."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s")
    timers.register_one_shot("o", "2s")
    clock.advance("1s")
    assert ref.detach_facet("timer") is True
    assert len(system.scheduler) == 0
    assert timers.list_timers() == []
    clock.advance("10s")
    assert len(fires(ref)) == 1
    assert ref.is_alive()


def test_registering_on_a_stopped_actors_facet_raises_actor_stopped(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A TimerFacet whose actor has stopped refuses new timers with ActorStoppedError."""
    ref, timers = spawn_recorder(system)
    ref.stop()
    with pytest.raises(ActorStoppedError):
        timers.register_periodic("p", "1s")
    with pytest.raises(ActorStoppedError):
        timers.register_one_shot("o", "1s")
    assert timers.list_timers() == []
    assert len(system.scheduler) == 0


def test_registering_on_a_detached_facet_raises_not_attached(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A detached TimerFacet refuses new timers with FacetNotAttachedError."""
    ref, timers = spawn_recorder(system)
    ref.detach_facet("timer")
    with pytest.raises(FacetNotAttachedError):
        timers.register_one_shot("o", "1s")
    assert len(system.scheduler) == 0


def test_timers_never_activate_a_stopped_actor(system: ActorSystem, clock: ManualClock) -> None:
    """Advancing past a stopped actor's timers does not start it again."""
    sink: list[Any] = []
    ref, timers = spawn_recorder(system, sink=sink)
    timers.register_periodic("p", "1s", due_time=0)
    ref.stop()
    clock.advance(0)
    clock.advance("1h")
    assert sink.count("started") == 1
    assert sink_fires(sink) == []
    assert not ref.is_alive()
    assert system.lookup(ref.actor_id) is None
    assert system.actor_ids() == []


# -- bad input -----------------------------------------------------------------------------------

_BAD_REGISTRATIONS = [
    # (method, args, kwargs, the bad value)
    ("register_periodic", ("", "1s"), {}, ""),
    ("register_periodic", (5, "1s"), {}, 5),
    ("register_periodic", (None, "1s"), {}, None),
    ("register_one_shot", ("", "1s"), {}, ""),
    ("register_one_shot", (b"keep", "1s"), {}, b"keep"),
    ("register_periodic", ("keep", 0), {}, 0),
    ("register_periodic", ("keep", "0s"), {}, "0s"),
    ("register_periodic", ("keep", timedelta(0)), {}, timedelta(0)),
    ("register_periodic", ("keep", -1), {}, -1),
    ("register_periodic", ("keep", "-1s"), {}, "-1s"),
    ("register_periodic", ("keep", timedelta(seconds=-1)), {}, timedelta(seconds=-1)),
    ("register_periodic", ("keep", "500us"), {}, "500us"),
    ("register_periodic", ("keep", "5"), {}, "5"),
    ("register_periodic", ("keep", "soon"), {}, "soon"),
    ("register_periodic", ("keep", None), {}, None),
    ("register_periodic", ("keep", [1]), {}, [1]),
    ("register_periodic", ("keep", True), {}, True),
    ("register_periodic", ("keep", math.inf), {}, math.inf),
    ("register_periodic", ("keep", "1s"), {"due_time": "-1s"}, "-1s"),
    ("register_periodic", ("keep", "1s"), {"due_time": "later"}, "later"),
    ("register_one_shot", ("keep", "-1s"), {}, "-1s"),
    ("register_one_shot", ("keep", -0.5), {}, -0.5),
    ("register_one_shot", ("keep", None), {}, None),
    ("register_one_shot", ("keep", "5"), {}, "5"),
    ("register_one_shot", ("keep", math.nan), {}, math.nan),
]


@pytest.mark.parametrize(
    "case", _BAD_REGISTRATIONS, ids=[f"{m}-{bad!r}" for m, _, _, bad in _BAD_REGISTRATIONS]
)
def test_bad_registration_raises_value_error_and_changes_nothing(
    system: ActorSystem,
    clock: ManualClock,
    case: tuple[str, tuple[Any, ...], dict[str, Any], object],
) -> None:
    """A bad name, interval or delay is a ValueError naming it; the existing timer is unchanged."""
    method, args, kwargs, bad = case
    ref, timers = spawn_recorder(system)
    timers.register_periodic("keep", "1s", payload="kept")
    before = timers.list_timers()
    with pytest.raises(ValueError) as raised:
        getattr(timers, method)(*args, **kwargs)
    assert repr(bad) in str(raised.value)
    assert timers.list_timers() == before
    assert len(system.scheduler) == 1
    clock.advance("1s")
    assert summary(fires(ref)) == [("keep", 1, timedelta(seconds=1), "kept", 0)]


def test_min_interval_config_sets_the_shortest_period(system: ActorSystem) -> None:
    """With min_interval "10ms" a 5 ms period is refused and 10 ms accepted; one-shots are free."""
    _, timers = spawn_recorder(system, config={"min_interval": "10ms"})
    for too_short in ["5ms", "9999us", 0.009]:
        with pytest.raises(ValueError) as raised:
            timers.register_periodic("p", too_short)
        assert repr(too_short) in str(raised.value)
    assert timers.list_timers() == []
    timers.register_periodic("p", "10ms")
    timers.register_one_shot("o", "1ms")
    assert sorted(info.name for info in timers.list_timers()) == ["o", "p"]


def test_default_min_interval_is_one_millisecond(system: ActorSystem, clock: ManualClock) -> None:
    """By default a 1 ms period is accepted and fires every millisecond."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1ms")
    clock.advance("5ms")
    assert [f.fire_count for f in fires(ref)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("value", ["0s", "-1ms", "fast", None, 0])
def test_bad_min_interval_config_is_refused(system: ActorSystem, value: object) -> None:
    """A min_interval that is not a positive duration is a config error naming the key."""
    ref = system.spawn(Recorder)
    with pytest.raises(FacetConfigError) as raised:
        ref.attach_facet(TimerFacet(), config={"min_interval": value})
    assert "min_interval" in str(raised.value)


@pytest.mark.parametrize(
    "use",
    [
        lambda timers: timers.register_periodic("p", "1s"),
        lambda timers: timers.register_one_shot("o", "1s"),
        lambda timers: timers.register_timer(TimerRegistration("o", due_time="1s")),
    ],
    ids=["register_periodic", "register_one_shot", "register_timer"],
)
def test_a_facet_never_attached_raises_not_attached(use: Callable[[TimerFacet], None]) -> None:
    """Registering on a TimerFacet that was never attached raises FacetNotAttachedError."""
    timers = TimerFacet()
    with pytest.raises(FacetNotAttachedError):
        use(timers)
    assert timers.list_timers() == []
