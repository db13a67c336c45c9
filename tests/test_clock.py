"""`ManualClock`: virtual time that moves only when a test advances it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from structlog.testing import capture_logs

from facets.timer import TimerFacet
from plexspaces import Actor, ActorSystem, Clock, ManualClock, SystemClock, TimerFired
from tests.conftest import START


def test_default_start_is_aware_utc_now() -> None:
    """Without a start, a ManualClock starts at the current time, aware and in UTC."""
    before = datetime.now(UTC)
    clock = ManualClock()
    after = datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    # The default start is truncated to the millisecond, so it may read up to 1 ms early.
    assert before - timedelta(milliseconds=1) <= now <= after


def test_time_stands_still_until_advanced() -> None:
    """Reading a ManualClock twice gives the same time when nothing advanced it."""
    clock = ManualClock(start=START)
    assert clock.now() == clock.now() == START
    assert clock.time() == START.timestamp()


def test_given_start_is_now() -> None:
    """`now()` starts at exactly the given aware start."""
    clock = ManualClock(start=START)
    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


def test_start_in_another_zone_is_the_same_instant_in_utc() -> None:
    """An aware start in another zone means the same instant; `now()` reports it in UTC."""
    plus_two = timezone(timedelta(hours=2))
    clock = ManualClock(start=datetime(2026, 1, 1, 2, 0, tzinfo=plus_two))
    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "start",
    [datetime(2026, 1, 1), datetime(2026, 1, 1, 12, 30, 5, 17), "2026-01-01T00:00:00Z", 0],
)
def test_start_must_be_an_aware_datetime(start: object) -> None:
    """A naive datetime (or anything but a datetime) as start is a ValueError naming it."""
    with pytest.raises(ValueError) as raised:
        ManualClock(start=start)  # type: ignore[arg-type]
    assert repr(start) in str(raised.value)


def test_manual_clock_is_a_clock() -> None:
    """ManualClock and SystemClock both implement the Clock seam."""
    assert isinstance(ManualClock(start=START), Clock)
    assert isinstance(SystemClock(), Clock)


def test_now_is_exact_after_advance(clock: ManualClock) -> None:
    """`now()` is the start plus exactly what was advanced."""
    clock.advance("3s")
    assert clock.now() == START + timedelta(seconds=3)
    clock.advance(1.5)
    assert clock.now() == START + timedelta(seconds=4.5)
    clock.advance(timedelta(days=30))
    assert clock.now() == START + timedelta(days=30, seconds=4.5)
    clock.advance("250us")
    assert clock.now() == START + timedelta(days=30, seconds=4.5, microseconds=250)


def test_many_small_advances_do_not_drift(clock: ManualClock) -> None:
    """Ten thousand 1 ms advances land on exactly ten seconds (no float drift)."""
    for _ in range(10_000):
        clock.advance("1ms")
    assert clock.now() == START + timedelta(seconds=10)
    for _ in range(1000):
        clock.advance("1us")
    assert clock.now() == START + timedelta(seconds=10, milliseconds=1)


def test_advance_zero_is_allowed_and_keeps_time(clock: ManualClock) -> None:
    """`advance(0)` is not an error and does not move time."""
    clock.advance(0)
    clock.advance("0s")
    clock.advance(timedelta(0))
    assert clock.now() == START


@pytest.mark.parametrize("step", [-1, "-1s", timedelta(seconds=-1), "soon", None, "5"])
def test_advance_rejects_bad_durations_and_keeps_time(clock: ManualClock, step: object) -> None:
    """A negative or malformed step is a ValueError and time does not move."""
    with pytest.raises(ValueError) as raised:
        clock.advance(step)  # type: ignore[arg-type]
    assert repr(step) in str(raised.value)
    assert clock.now() == START


def test_advance_runs_calls_in_due_order_across_two_systems(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """Two systems on one clock: advance runs all their calls in due order, each at its deadline."""
    first = make_system(clock=clock, name="first")
    second = make_system(clock=clock, name="second")
    ran: list[tuple[str, datetime, datetime]] = []

    def arm(system: ActorSystem, offset_ms: int) -> None:
        deadline = START + timedelta(milliseconds=offset_ms)
        system.scheduler.call_at(
            deadline.timestamp(), lambda: ran.append((system.name, deadline, clock.now()))
        )

    for system, offset in [
        (first, 3000),
        (second, 2000),
        (first, 1000),
        (second, 4000),
        (first, 2500),
        (second, 1),
        (first, 5000),
    ]:
        arm(system, offset)

    clock.advance("5s")

    assert [(name, deadline - START) for name, deadline, _ in ran] == [
        ("second", timedelta(milliseconds=1)),
        ("first", timedelta(seconds=1)),
        ("second", timedelta(seconds=2)),
        ("first", timedelta(seconds=2.5)),
        ("first", timedelta(seconds=3)),
        ("second", timedelta(seconds=4)),
        ("first", timedelta(seconds=5)),
    ]
    assert all(now == deadline for _, deadline, now in ran)
    assert clock.now() == START + timedelta(seconds=5)


def test_advance_stops_at_its_target(system: ActorSystem, clock: ManualClock) -> None:
    """A call due exactly at the target runs; one due 1 us later waits for the next advance."""
    ran: list[datetime] = []
    system.scheduler.call_at(clock.time() + 2, lambda: ran.append(clock.now()))
    system.scheduler.call_at(clock.time() + 2.000001, lambda: ran.append(clock.now()))
    clock.advance("2s")
    assert ran == [START + timedelta(seconds=2)]
    clock.advance("1us")
    assert ran == [START + timedelta(seconds=2), START + timedelta(seconds=2, microseconds=1)]


def test_calls_run_on_the_advancing_thread_without_scheduler_thread(
    system: ActorSystem, clock: ManualClock
) -> None:
    """On a ManualClock nothing runs until advance, which runs due calls itself."""
    ran: list[str] = []
    system.scheduler.call_later("1ms", lambda: ran.append(threading.current_thread().name))
    assert not any(t.name == system.scheduler.name for t in threading.enumerate())
    assert ran == []
    clock.advance("1ms")
    assert ran == [threading.current_thread().name]


def test_entries_already_due_fire_at_the_next_advance_not_before(
    system: ActorSystem, clock: ManualClock
) -> None:
    """An entry already due waits for the next advance (even advance(0)); time never goes back."""
    ran: list[datetime] = []
    system.scheduler.call_at(clock.time() - 60, lambda: ran.append(clock.now()))
    system.scheduler.call_at(clock.time(), lambda: ran.append(clock.now()))
    assert ran == []
    clock.advance(0)
    assert ran == [START, START]
    assert clock.now() == START


def test_call_armed_during_advance_and_due_within_it_runs_in_the_same_advance(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A callback that arms another call due before the target gets it run in the same advance."""
    ran: list[tuple[str, datetime]] = []

    def first() -> None:
        ran.append(("first", clock.now()))
        system.scheduler.call_later("1s", second)
        system.scheduler.call_later("10s", too_late)

    def second() -> None:
        ran.append(("second", clock.now()))

    def too_late() -> None:
        ran.append(("too_late", clock.now()))

    system.scheduler.call_later("1s", first)
    clock.advance("3s")
    assert ran == [
        ("first", START + timedelta(seconds=1)),
        ("second", START + timedelta(seconds=2)),
    ]
    clock.advance("8s")
    assert ran[-1] == ("too_late", START + timedelta(seconds=11))


def test_call_armed_during_advance_for_now_runs_in_the_same_advance(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A call armed by a callback for the current virtual time runs before advance returns."""
    ran: list[datetime] = []

    def first() -> None:
        system.scheduler.call_later(0, lambda: ran.append(clock.now()))

    system.scheduler.call_later("1s", first)
    clock.advance("1s")
    assert ran == [START + timedelta(seconds=1)]


def test_raising_callback_is_logged_and_later_calls_still_run(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A callback that raises is logged as scheduler.call_failed; the calls after it still run."""
    ran: list[datetime] = []

    def explode() -> None:
        raise RuntimeError("boom in a scheduled call")

    system.scheduler.call_later("1s", explode)
    system.scheduler.call_later("1s", lambda: ran.append(clock.now()))
    system.scheduler.call_later("2s", lambda: ran.append(clock.now()))
    with capture_logs() as logs:
        clock.advance("2s")
    assert ran == [START + timedelta(seconds=1), START + timedelta(seconds=2)]
    failures = [entry for entry in logs if entry["event"] == "scheduler.call_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["scheduler"] == system.scheduler.name


def test_shut_down_system_runs_nothing_on_advance(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """Once a system is shut down, advancing the shared clock runs none of its calls."""
    gone = make_system(clock=clock, name="gone")
    alive = make_system(clock=clock, name="alive")
    ran: list[str] = []
    gone.scheduler.call_later("1s", lambda: ran.append("gone"))
    alive.scheduler.call_later("1s", lambda: ran.append("alive"))
    gone.shutdown()
    clock.advance("1s")
    assert ran == ["alive"]


def test_repr_shows_virtual_time(clock: ManualClock) -> None:
    """The repr of a ManualClock names its current virtual time."""
    clock.advance("1h")
    assert "2026-01-01T01:00:00" in repr(clock)


class _Blockable(Actor):
    """Holds a 1 s periodic timer; a "block" message parks the actor on a gate."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.fires = 0

    def on_start(self) -> None:
        self.attach_facet(TimerFacet()).register_periodic("tick", "1s")

    def on_receive(self, message: object) -> object:
        if message == "block":
            self.gate.wait()
        elif isinstance(message, TimerFired):
            self.fires += 1
        return self.fires


@pytest.mark.parametrize(
    ("handoff_timeout", "warnings"),
    [("50ms", ["clock.handoff_timeout"]), (0, [])],
)
def test_handoff_timeout_bounds_the_wait_for_a_blocked_actor(
    make_system, handoff_timeout, warnings
) -> None:
    """advance() waits at most handoff_timeout for a busy actor's pick-up (warning when it gives
    up); 0 never waits nor warns. Either way the busy actor's later ticks are coalesced."""
    gate = threading.Event()
    clock = ManualClock(start=START, handoff_timeout=handoff_timeout)
    system = make_system(clock=clock)
    ref = system.spawn(_Blockable, gate)
    ref.tell("block")
    try:
        with capture_logs() as logs:
            clock.advance("3s")
    finally:
        gate.set()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == warnings
    assert clock.now() == START + timedelta(seconds=3)
    # The first fire waited in the mailbox; the ticks after it were coalesced, not queued.
    assert ref.ask("count", timeout=5) == 1


def test_a_deadline_between_two_microseconds_runs_and_advance_returns(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """10 s / 3 is no whole number of microseconds: the call runs at the first microsecond not
    before it, and advance() does not step to it for ever (it once did, in a cluster, whose
    lease renewals run every lease / 3)."""
    system = make_system(clock=clock)
    ran: list[float] = []
    for n in range(1, 7):
        system.scheduler.call_at(START.timestamp() + n * 10 / 3, lambda: ran.append(clock.time()))
    finished = threading.Event()

    def advance() -> None:
        clock.advance("20s")
        finished.set()

    worker = threading.Thread(target=advance, daemon=True)
    worker.start()
    assert finished.wait(10), "advance() never returned"
    assert len(ran) == 6
    for n, at in enumerate(ran, start=1):
        due = START.timestamp() + n * 10 / 3
        assert due <= at < due + 2e-6
    assert clock.now() == START + timedelta(seconds=20)
