"""The scheduler: one heap of deadlines per actor system, served by one thread or a ManualClock."""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from facets.timer import TimerFacet
from plexspaces import (
    Actor,
    ActorSystem,
    ManualClock,
    ScheduledCall,
    Scheduler,
    SystemClock,
    TimerFired,
)
from tests.conftest import START

WAIT = 5.0  # seconds any single wait may take before the test fails


def _scheduler_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def _wait_until_blocked_in_wait(thread: threading.Thread, limit: float = 2.0) -> None:
    # Best effort: lets `thread` reach its blocking wait, so a test exercises a sleeping scheduler
    # (not one that happens to be awake). A correct scheduler passes either way.
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is not None and frame.f_code.co_name == "wait":
            return
        threading.Event().wait(0.001)


@pytest.fixture
def real_scheduler() -> Iterator[Scheduler]:
    """A stand-alone scheduler on the system clock, closed after the test."""
    scheduler = Scheduler(SystemClock(), name="test-real-scheduler")
    scheduler.start()
    yield scheduler
    scheduler.close()
    assert _scheduler_threads("test-real-scheduler") == []


# -- the real clock: one thread ----------------------------------------------------------------


def test_call_later_runs_on_the_scheduler_thread(real_system: ActorSystem) -> None:
    """call_later and call_at run their function on the system's one scheduler thread."""
    names: list[str] = []
    done = threading.Event()

    def record_then(event: threading.Event | None) -> Callable[[], None]:
        def run() -> None:
            names.append(threading.current_thread().name)
            if event is not None:
                event.set()

        return run

    real_system.scheduler.call_later("10ms", record_then(None))
    real_system.scheduler.call_at(real_system.clock.time() + 0.02, record_then(done))
    assert done.wait(WAIT)
    assert names == [real_system.scheduler.name, real_system.scheduler.name]
    assert names[0] != threading.current_thread().name
    assert len(_scheduler_threads(real_system.scheduler.name)) == 1


def test_calls_run_in_deadline_order_whatever_the_arming_order(real_system: ActorSystem) -> None:
    """Calls armed in reverse order run in deadline order on the real clock."""
    ran: list[int] = []
    done = threading.Event()
    now = real_system.clock.time()
    for index in reversed(range(5)):
        real_system.scheduler.call_at(now + 0.02 + index * 0.01, lambda i=index: ran.append(i))
    real_system.scheduler.call_at(now + 0.1, done.set)
    assert done.wait(WAIT)
    assert ran == [0, 1, 2, 3, 4]


class _Ticker(Actor):
    """Sets `fired` on its first TimerFired."""

    def __init__(self, fired: threading.Event) -> None:
        super().__init__()
        self.fired = fired

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TimerFired):
            self.fired.set()
        return None


def test_one_scheduler_thread_per_system_whatever_the_number_of_timers(
    make_system: Callable[..., ActorSystem],
) -> None:
    """1,000 timers over 10 actors (some firing) add no thread: one scheduler thread per system."""
    first = make_system(name="first")
    second = make_system(name="second")
    fired = [threading.Event() for _ in range(10)]
    refs = [first.spawn(_Ticker, event) for event in fired]
    facets = [ref.attach_facet(TimerFacet(), priority=50) for ref in refs]
    threads_before = set(threading.enumerate())
    assert len(_scheduler_threads(first.scheduler.name)) == 1
    assert len(_scheduler_threads(second.scheduler.name)) == 1

    for facet in facets:
        facet.register_periodic("fast", "10ms")
        for index in range(99):
            facet.register_periodic(f"slow-{index}", "1h")
    assert len(first.scheduler) == 1000
    for event in fired:
        assert event.wait(WAIT)

    assert set(threading.enumerate()) == threads_before
    assert len(_scheduler_threads(first.scheduler.name)) == 1
    assert len(_scheduler_threads(second.scheduler.name)) == 1


def test_earlier_deadline_wakes_a_scheduler_sleeping_on_a_later_one(
    real_system: ActorSystem,
) -> None:
    """A deadline pushed ahead of the one the thread sleeps on (60 s away) runs on time."""
    scheduler = real_system.scheduler
    armed = threading.Event()

    def arm_far_deadline() -> None:
        # Armed from the scheduler thread, so its next wait is on this 60 s deadline.
        scheduler.call_later("60s", lambda: None)
        armed.set()

    scheduler.call_later(0, arm_far_deadline)
    assert armed.wait(WAIT)
    (thread,) = _scheduler_threads(scheduler.name)
    _wait_until_blocked_in_wait(thread)

    woke = threading.Event()
    started = time.monotonic()
    scheduler.call_later("20ms", woke.set)
    assert woke.wait(WAIT), "the scheduler slept through an earlier deadline"
    assert time.monotonic() - started < WAIT
    assert len(scheduler) == 1  # the 60 s call is still armed


def test_cancelled_call_never_runs(real_system: ActorSystem) -> None:
    """A call cancelled before its deadline does not run, while a later call does."""
    cancelled_ran = threading.Event()
    done = threading.Event()
    call = real_system.scheduler.call_later("20ms", cancelled_ran.set)
    call.cancel()
    real_system.scheduler.call_later("60ms", done.set)
    assert done.wait(WAIT)
    assert not cancelled_ran.is_set()


def test_raising_callback_does_not_kill_the_thread(real_system: ActorSystem) -> None:
    """After a callback raises (and is logged), the scheduler thread still runs later calls."""
    done = threading.Event()

    def explode() -> None:
        raise RuntimeError("boom on the scheduler thread")

    with capture_logs() as logs:
        real_system.scheduler.call_later("5ms", explode)
        real_system.scheduler.call_later("30ms", done.set)
        assert done.wait(WAIT)
    assert [e["event"] for e in logs if e["event"] == "scheduler.call_failed"] == [
        "scheduler.call_failed"
    ]
    assert len(_scheduler_threads(real_system.scheduler.name)) == 1


def test_close_is_idempotent_joins_the_thread_and_refuses_new_calls() -> None:
    """close() twice is fine; the thread is joined by the first; schedule() then returns False."""
    scheduler = Scheduler(SystemClock(), name="test-close-scheduler")
    scheduler.start()
    try:
        assert len(_scheduler_threads("test-close-scheduler")) == 1
        pending_ran = threading.Event()
        scheduler.call_later("1h", pending_ran.set)
        assert len(scheduler) == 1
    finally:
        scheduler.close()
    assert _scheduler_threads("test-close-scheduler") == []
    assert scheduler.closed
    assert len(scheduler) == 0
    scheduler.close()
    assert scheduler.closed

    class Never(ScheduledCall):
        def run(self) -> None:
            raise AssertionError("a closed scheduler ran a call")

    assert scheduler.schedule(Never(), time.time()) is False
    assert len(scheduler) == 0


def test_close_from_a_scheduled_call_ends_the_thread(real_scheduler: Scheduler) -> None:
    """A call may close its own scheduler: no deadlock, and the thread then ends."""
    (thread,) = _scheduler_threads(real_scheduler.name)
    closed = threading.Event()

    def close_self() -> None:
        real_scheduler.close()
        closed.set()

    real_scheduler.call_later(0, close_self)
    assert closed.wait(WAIT)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert real_scheduler.closed


# -- heap bookkeeping (ManualClock, no thread) ---------------------------------------------------


def test_len_counts_armed_calls_and_reflects_cancellations(
    system: ActorSystem, clock: ManualClock
) -> None:
    """len(scheduler) counts calls still to run: cancelled (once) and run calls drop out."""
    scheduler = system.scheduler
    assert len(scheduler) == 0
    calls = [scheduler.call_later(f"{n}s", lambda: None) for n in range(1, 6)]
    assert len(scheduler) == 5
    calls[1].cancel()
    calls[3].cancel()
    assert len(scheduler) == 3
    calls[3].cancel()  # cancelling again changes nothing
    assert len(scheduler) == 3
    clock.advance("1s")  # calls[0] runs
    assert len(scheduler) == 2
    clock.advance("10s")
    assert len(scheduler) == 0
    calls[4].cancel()  # cancelling a call that already ran changes nothing
    assert len(scheduler) == 0


def test_call_later_deadline_is_now_plus_delay(system: ActorSystem, clock: ManualClock) -> None:
    """call_later arms at clock time plus the delay; call_at at the given time."""
    clock.advance("1s")
    later = system.scheduler.call_later("1h30m", lambda: None)
    at = system.scheduler.call_at(START.timestamp() + 42, lambda: None)
    assert later.when == clock.time() + 5400
    assert at.when == START.timestamp() + 42


@pytest.mark.parametrize("delay", ["-1s", "soon", None, -1])
def test_call_later_rejects_bad_delays(system: ActorSystem, delay: object) -> None:
    """A bad delay is a ValueError naming it, and nothing is armed."""
    with pytest.raises(ValueError) as raised:
        system.scheduler.call_later(delay, lambda: None)  # type: ignore[arg-type]
    assert repr(delay) in str(raised.value)
    assert len(system.scheduler) == 0


def test_equal_deadlines_run_in_arming_order(system: ActorSystem, clock: ManualClock) -> None:
    """Calls with the same deadline run in the order they were armed."""
    ran: list[int] = []
    for index in range(50):
        system.scheduler.call_later("1s", lambda i=index: ran.append(i))
    clock.advance("1s")
    assert ran == list(range(50))


def test_a_scheduled_call_can_rearm_itself(system: ActorSystem, clock: ManualClock) -> None:
    """A ScheduledCall subclass re-armed from its own run() runs again at its new deadline."""
    scheduler = system.scheduler
    ran: list[datetime] = []

    class Thrice(ScheduledCall):
        def run(self) -> None:
            ran.append(clock.now())
            if len(ran) < 3:
                assert scheduler.schedule(self, self.when + 1.0)

    assert scheduler.schedule(Thrice(), clock.time() + 1.0)
    clock.advance("10s")
    assert ran == [START + timedelta(seconds=n) for n in (1, 2, 3)]
    assert len(scheduler) == 0


def test_a_cancelled_call_cannot_be_armed(system: ActorSystem, clock: ManualClock) -> None:
    """schedule() of an already cancelled call returns False and arms nothing."""
    ran: list[int] = []
    call = system.scheduler.call_later("1s", lambda: ran.append(1))
    call.cancel()
    assert system.scheduler.schedule(call, clock.time() + 2) is False
    assert len(system.scheduler) == 0
    clock.advance("5s")
    assert ran == []


def test_cancelled_calls_are_compacted_out_of_the_heap(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Cancelling 10,000 armed calls frees their heap slots without waiting for their deadlines."""
    scheduler = system.scheduler
    calls = [scheduler.call_later("1h", lambda: None) for _ in range(10_000)]
    assert len(scheduler) == 10_000
    for call in calls:
        call.cancel()
    assert len(scheduler) == 0
    assert len(scheduler._heap) < 2_500  # internal: compaction, not lazy dropping, freed them
    clock.advance("2h")
    assert len(scheduler._heap) == 0


class _Noop(ScheduledCall):
    """A call that can be weakly referenced (no __slots__), to watch it being freed."""

    def run(self) -> None:
        pass


def test_compaction_frees_cancelled_calls_while_the_thread_sleeps(
    real_system: ActorSystem,
) -> None:
    """On the real clock, compaction frees cancelled calls at once, not at the next wake-up."""
    scheduler = real_system.scheduler
    calls = [_Noop() for _ in range(10_000)]
    refs = [weakref.ref(call) for call in calls]
    far = real_system.clock.time() + 3600
    for index, call in enumerate(calls):
        assert scheduler.schedule(call, far + index)
    (thread,) = _scheduler_threads(scheduler.name)
    _wait_until_blocked_in_wait(thread)  # asleep until the first deadline, an hour away

    for call in calls:
        call.cancel()
    del calls, call
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert len(scheduler) == 0
    assert len(scheduler._heap) < 2_500  # internal: compaction ran
    assert alive <= len(scheduler._heap), f"{alive} of 10,000 cancelled calls still in memory"


def test_compaction_keeps_every_live_call_in_order(system: ActorSystem, clock: ManualClock) -> None:
    """After heavy cancellation and compaction the remaining calls all run, in deadline order."""
    scheduler = system.scheduler
    ran: list[int] = []
    calls = [
        scheduler.call_at(clock.time() + 1 + index * 0.001, lambda i=index: ran.append(i))
        for index in range(10_000)
    ]
    for index, call in enumerate(calls):
        if index % 10:
            call.cancel()
    assert len(scheduler) == 1_000
    assert len(scheduler._heap) < 5_000  # internal: compaction ran
    clock.advance("20s")
    assert ran == list(range(0, 10_000, 10))
    assert len(scheduler) == 0


# -- keyed entries: owners with many deadlines ---------------------------------------------------


class Idle(Actor):
    """An actor that only hosts timers."""


def test_keyed_entries_run_through_their_owner_and_stale_ones_are_dropped(
    manual_clock: ManualClock,
) -> None:
    """A keyed entry that is still its owner's current one is taken (under the lock) and run; one
    replaced or dropped meanwhile never runs, and len() counts only current ones."""
    scheduler = Scheduler(manual_clock, name="keyed")
    scheduler.start()
    current: dict[str, Any] = {}
    taken: list[str] = []
    ran: list[tuple[str, float]] = []

    def take(entry: Any) -> None:
        taken.append(entry[3])
        current[entry[3]] = "taken"

    owner = scheduler.add_owner(current, take, lambda entry: ran.append((entry[3], entry[0])))
    now = manual_clock.time()
    with scheduler.lock:
        for name, delay in (("a", 1), ("b", 2), ("c", 3)):
            entry = scheduler.push_locked(owner, name, now + delay, None)
            current[name] = entry
        # "b" replaced by a later entry, "c" dropped: their first entries are stale.
        current["b"] = scheduler.push_locked(owner, "b", now + 4, None)
        scheduler.discard_locked(1)
        del current["c"]
        scheduler.discard_locked(1)
    assert len(scheduler) == 2
    manual_clock.advance("5s")
    assert ran == [("a", now + 1), ("b", now + 4)]
    assert taken == ["a", "b"]
    assert len(scheduler) == 0
    assert scheduler._heap == []  # internal: every stale entry was dropped as it came up
    scheduler.close()


def test_removing_an_owner_makes_its_entries_stale(manual_clock: ManualClock) -> None:
    """Once its owner is removed, none of its entries runs and len() no longer counts them."""
    scheduler = Scheduler(manual_clock, name="keyed-removed")
    scheduler.start()
    current: dict[str, Any] = {}
    ran: list[Any] = []
    owner = scheduler.add_owner(current, lambda entry: None, ran.append)
    with scheduler.lock:
        for index in range(3):
            name = f"t{index}"
            current[name] = scheduler.push_locked(owner, name, manual_clock.time() + 1, 1.0)
    assert len(scheduler) == 3
    with scheduler.lock:
        scheduler.remove_owner_locked(owner)
    assert current == {}
    assert len(scheduler) == 0
    manual_clock.advance("2s")
    assert ran == []
    scheduler.close()


def test_armed_timers_add_no_objects_for_the_garbage_collector(
    system: ActorSystem, clock: ManualClock
) -> None:
    """10,000 plain periodic timers add (almost) no GC-tracked objects: their heap entries hold
    plain values only, so the collector untracks them and has nothing to walk per timer."""
    timers = system.spawn(Idle).attach_facet(TimerFacet())
    names = [f"t{index}" for index in range(10_000)]
    gc.collect()
    before = len(gc.get_objects())
    for name in names:
        timers.register_periodic(name, "1h")
    gc.collect()
    assert len(system.scheduler) == 10_000
    assert len(gc.get_objects()) - before < 100


def test_replaced_and_unregistered_timers_are_compacted_and_never_fire(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Replacing 10,000 timers (earlier, so not a move) and then unregistering most of them keeps
    len(scheduler) exact, frees their stale heap entries without waiting for their deadlines, and
    only the timers still registered fire."""

    class Counting(Actor):
        def __init__(self) -> None:
            super().__init__()
            self.fired: list[str] = []

        def on_receive(self, message: Any) -> Any:
            if isinstance(message, TimerFired):
                self.fired.append(message.timer_name)
                return None
            return sorted(self.fired)

    ref = system.spawn(Counting)
    timers = ref.attach_facet(TimerFacet())
    scheduler = system.scheduler
    names = [f"t{index}" for index in range(10_000)]
    for name in names:
        timers.register_one_shot(name, "2h")
    for name in names:
        timers.register_one_shot(name, "1h")  # earlier: a replacement, the old entry is stale
    assert len(scheduler) == 10_000
    for name in names[10:]:
        assert timers.unregister_timer(name)
    assert len(scheduler) == 10
    assert len(scheduler._heap) < 5_000  # internal: compaction, not lazy dropping, freed them
    clock.advance("3h")
    assert ref.ask("fired") == sorted(names[:10])
    assert len(scheduler) == 0
    assert scheduler._heap == []
