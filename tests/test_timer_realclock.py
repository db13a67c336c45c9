"""`TimerFacet` on the real clock: wide bounds, events with timeouts, never a sleep."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from structlog.testing import capture_logs

from facets.timer import TimerFacet
from plexspaces import Actor, ActorRef, ActorSystem, TimerFired

WAIT = 5.0  # seconds any single wait may take before the test fails
ONE_MICROSECOND = timedelta(microseconds=1)


class Watcher(Actor):
    """Records each TimerFired with the time it was handled; sets `done` once `until` holds."""

    def __init__(
        self,
        done: threading.Event | None = None,
        until: Callable[[list[TimerFired]], bool] | None = None,
        sink: list[TimerFired] | None = None,
        linger: str | None = None,
    ) -> None:
        super().__init__()
        self.linger = linger
        self.done = done
        self.until = until
        self.sink = sink
        self.fired: list[TimerFired] = []
        self.handled_at: list[datetime] = []

    def on_stop(self) -> None:
        if self.linger is not None:
            # A slow on_stop: the actor no longer takes messages but its timers are still armed
            # (facets are released after on_stop), so their fires meet a dead actor meanwhile.
            lingered = threading.Event()
            self.ctx.system.scheduler.call_later(self.linger, lingered.set)
            lingered.wait(WAIT)

    def on_receive(self, message: Any) -> Any:
        match message:
            case TimerFired():
                self.fired.append(message)
                self.handled_at.append(self.ctx.clock.now())
                if self.sink is not None:
                    self.sink.append(message)
                if self.done is not None and self.until is not None and self.until(self.fired):
                    self.done.set()
            case ("block", threading.Event() as release):
                release.wait(30)
            case "log":
                return list(zip(self.fired, self.handled_at, strict=True))
        return None


def spawn_watcher(system: ActorSystem, **kwargs: Any) -> tuple[ActorRef, TimerFacet]:
    ref = system.spawn(Watcher, **kwargs)
    timers = ref.attach_facet(TimerFacet(), priority=50)
    assert isinstance(timers, TimerFacet)
    return ref, timers


def assert_every_tick_accounted_for(fired: list[TimerFired]) -> None:
    previous = 0
    for fire in fired:
        assert fire.fire_count == previous + 1 + fire.missed, fired
        previous = fire.fire_count


def test_one_shot_fires_after_its_delay(real_system: ActorSystem) -> None:
    """A 50 ms one-shot fires once, within 2 s, and not before 50 ms of clock time passed."""
    done = threading.Event()
    ref, timers = spawn_watcher(real_system, done=done, until=lambda fired: len(fired) >= 1)
    registered_at = real_system.clock.now()
    timers.register_one_shot("once", "50ms", payload="p")
    assert done.wait(2.0)
    ((fire, handled_at),) = ref.ask("log", timeout=WAIT)
    assert (fire.timer_name, fire.fire_count, fire.payload, fire.missed) == ("once", 1, "p", 0)
    assert fire.scheduled_at >= registered_at + timedelta(milliseconds=50) - ONE_MICROSECOND
    assert handled_at >= fire.scheduled_at - ONE_MICROSECOND
    assert handled_at - registered_at >= timedelta(milliseconds=50) - ONE_MICROSECOND
    assert timers.get_timer("once") is None
    assert len(real_system.scheduler) == 0


def test_periodic_fires_repeatedly_at_a_fixed_rate(real_system: ActorSystem) -> None:
    """A 20 ms periodic timer fires at least 3 times within 2 s, its ticks 20 ms apart."""
    done = threading.Event()
    ref, timers = spawn_watcher(real_system, done=done, until=lambda fired: len(fired) >= 3)
    registered_at = real_system.clock.now()
    timers.register_periodic("tick", "20ms")
    assert done.wait(2.0)
    timers.unregister_timer("tick")
    log = ref.ask("log", timeout=WAIT)
    fired = [fire for fire, _ in log]
    assert len(fired) >= 3
    assert_every_tick_accounted_for(fired)
    first_due = fired[0].scheduled_at - (fired[0].fire_count - 1) * timedelta(milliseconds=20)
    assert abs(first_due - (registered_at + timedelta(milliseconds=20))) < timedelta(
        milliseconds=20
    )
    for fire, handled_at in log:
        expected = first_due + (fire.fire_count - 1) * timedelta(milliseconds=20)
        assert abs(fire.scheduled_at - expected) <= ONE_MICROSECOND
        assert handled_at >= fire.scheduled_at - ONE_MICROSECOND


def test_blocked_actor_is_not_flooded(real_system: ActorSystem) -> None:
    """While an actor is blocked, a 5 ms timer queues at most one fire; later fires count misses."""
    caught_up = threading.Event()
    ref, timers = spawn_watcher(
        real_system, done=caught_up, until=lambda fired: any(f.missed > 0 for f in fired)
    )
    release = threading.Event()
    ref.tell(("block", release))
    real_system.scheduler.call_later("300ms", release.set)
    timers.register_periodic("tick", "5ms")
    assert caught_up.wait(WAIT)
    timers.unregister_timer("tick")
    fired = [fire for fire, _ in ref.ask("log", timeout=WAIT)]

    first_late = next(index for index, fire in enumerate(fired) if fire.missed > 0)
    # Roughly 60 ticks fell due during the 300 ms block. One fire waited in the mailbox (one more
    # may slip in as the block ends); the rest were counted, not queued.
    assert first_late <= 2, fired[: first_late + 1]
    assert fired[first_late].missed >= 10, fired[: first_late + 1]
    assert_every_tick_accounted_for(fired)


def test_stopping_actors_while_their_timers_fire_is_clean(real_system: ActorSystem) -> None:
    """Actors stopped while 1 ms timers fire into them: no error logged, no timer left, no fire."""
    # Half the actors have a slow on_stop, so fires meet an actor that no longer takes messages
    # while its timers are still armed: the ActorDeadError race.
    count, per_actor = 20, 5
    sink: list[TimerFired] = []
    with capture_logs() as logs:
        events = [threading.Event() for _ in range(count)]
        watchers = [
            spawn_watcher(
                real_system,
                done=event,
                until=lambda fired: len(fired) >= 3,
                sink=sink,
                linger="20ms" if index % 2 else None,
            )
            for index, event in enumerate(events)
        ]
        for _, timers in watchers:
            for index in range(per_actor):
                timers.register_periodic(f"t{index}", "1ms")
        for event in events:
            assert event.wait(WAIT)

        def stop_all(refs: list[ActorRef]) -> None:
            for ref in refs:
                ref.stop()

        refs = [ref for ref, _ in watchers]
        stoppers = [
            threading.Thread(target=stop_all, args=(refs[part::4],), name=f"test-stopper-{part}")
            for part in range(4)
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(WAIT * 4)
        assert not any(stopper.is_alive() for stopper in stoppers)

        delivered = len(sink)
        # 50 ms of 1 ms ticks would have fired had any timer survived; nothing may arrive.
        settled = threading.Event()
        real_system.scheduler.call_later("50ms", settled.set)
        assert settled.wait(WAIT)

    assert len(sink) == delivered
    assert len(real_system.scheduler) == 0
    assert all(timers.list_timers() == [] for _, timers in watchers)
    assert real_system.actor_ids() == []
    problems = [e for e in logs if e["log_level"] in ("error", "critical", "warning")]
    assert problems == []
