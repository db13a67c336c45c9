"""`TimerFacet`: non-durable, in-memory timers that put `TimerFired` into the actor's mailbox.

Timers live in the system's one scheduler. They are lost when the actor stops, fails or is
deactivated, and they never activate an actor. A slow actor is not flooded: at most one fire per
timer waits in its mailbox; ticks that fall due meanwhile are coalesced into it (it carries the
latest, and counts the others in `TimerFired.missed`).
Re-registering a name replaces the timer, and a fire of the old one still in the mailbox is
discarded.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from plexspaces import (
    ActorContext,
    ActorStoppedError,
    Clock,
    ConfigSpec,
    Duration,
    Facet,
    FacetNotAttachedError,
    LatencyHistogram,
    MetricCounter,
    ScheduledCall,
    Scheduler,
    SystemShutdownError,
    TimerFired,
    duration_seconds,
    positive_duration,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["TimerFacet", "TimerInfo", "TimerRegistration"]

DEFAULT_MIN_INTERVAL = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class TimerRegistration:
    """A timer to register with `TimerFacet.register_timer`.

    A periodic timer needs `interval` (its period) and fires first at `due_time` (default: one
    interval). A one-shot timer needs `due_time` (its delay) and takes no `interval`.
    """

    name: str
    interval: Duration | None = None
    due_time: Duration | None = None
    periodic: bool = False
    payload: Any = None


@dataclass(frozen=True, slots=True)
class TimerInfo:
    """A registered timer, as `TimerFacet.list_timers` reports it."""

    name: str
    periodic: bool
    interval: timedelta | None
    next_fire_at: datetime
    fire_count: int
    payload: Any


class _Timer(ScheduledCall):
    """One registered timer; also its own entry in the scheduler's heap.

    What threads share, and how:

    - `ticks` and `missed` are written only by `run()`, which one thread at a time calls (the
      scheduler's thread, or the thread in `ManualClock.advance`; a timer is in the heap at most
      once and re-arms itself as `run()`'s last step, so runs never overlap). Other threads only
      read `ticks` (listings), and reading one attribute is atomic.
    - `waiting` (the fire in the mailbox), `coalesced` and `latest` (the ticks that fell due
      while it waited) are read and written under the facet's lock, by `run()` and by the
      actor's thread as the fire leaves the mailbox.
    - `fired_at` is written by `run()` when it puts a fire in the mailbox and by the actor's
      thread when a waiting fire stands for later ticks; it is only read for listings.
    """

    __slots__ = (
        "coalesced",
        "facet",
        "fired_at",
        "first",
        "latest",
        "missed",
        "name",
        "payload",
        "period",
        "ticks",
        "waiting",
    )

    def __init__(self, facet: TimerFacet, name: str, period: float | None, payload: Any) -> None:
        # ScheduledCall's fields set inline: this runs once per registration, a hot path.
        self.when = 0.0
        self.cancelled = False
        self._queued = False
        self._counted = False
        self._scheduler = None
        self.facet = facet
        self.name = name
        self.period = period
        self.payload = payload
        self.first = 0.0
        self.ticks = 0
        self.missed = 0  # ticks the scheduler itself skipped, reported by the next fire
        # The fire waiting in the mailbox, the ticks that fell due since (coalesced into it)
        # and the latest of them (tick number, due time). Guarded by the facet's lock.
        self.waiting: TimerFired | None = None
        self.coalesced = 0
        self.latest = (0, 0.0)
        self.fired_at = 0.0

    def run(self) -> None:
        # On the scheduler thread (or in ManualClock.advance), never twice at once: the only
        # writer of ticks and missed, so their read-modify-writes cannot lose an update.
        self.ticks += 1
        with self.facet._lock:
            if self.waiting is not None:
                self.coalesced += 1
                self.latest = (self.ticks, self.when)
                fired = None
            else:
                self.fired_at = self.when
                fired = self.waiting = TimerFired(
                    self.name,
                    self.ticks,
                    datetime.fromtimestamp(self.when, UTC),
                    self.payload,
                    self.missed,
                )
                self.missed = 0
        if fired is not None and not self.facet._deliver(fired, self._picked_up):
            # The actor is gone (the ActorDeadError race): the timer dies with it.
            self.facet._forget(self)
            return
        period = self.period
        if period is None:
            # A fired one-shot stays registered (hidden from listings) until its fire leaves the
            # mailbox, so unregistering or replacing it meanwhile still discards that fire.
            return
        following = self.first + self.ticks * period
        now = self.facet._clock.time()
        if following < now - period:
            # The scheduler itself fell more than a tick behind (a stalled process): count the
            # ticks in between as missed instead of running them back to back (run() owns
            # ticks and missed: see the class docstring).
            skipped = int((now - self.first) // period) - self.ticks
            if skipped > 0:
                self.ticks += skipped
                self.missed += skipped
                following = self.first + self.ticks * period
        self.facet._scheduler.schedule(self, following)

    def _picked_up(self) -> TimerFired | bool:
        # On the actor's thread, as the fire leaves the mailbox: a fire of a replaced or
        # cancelled timer is discarded here (the generation check). A fire that waited while
        # later ticks fell due stands for them: it becomes the latest tick, counting the others.
        with self.facet._lock:
            fired, self.waiting = self.waiting, None
            coalesced, self.coalesced = self.coalesced, 0
            tick, when = self.latest
        if self.period is None:
            self.facet._forget(self)
        if self.cancelled or fired is None:
            return False
        if coalesced:
            self.fired_at = when
            fired = dataclasses.replace(
                fired,
                fire_count=tick,
                scheduled_at=datetime.fromtimestamp(when, UTC),
                missed=fired.missed + coalesced,
            )
        # The fire as handled describes itself: its own tick and due time, whatever ticks
        # came while it waited.
        self.facet._picked_up(self, fired.scheduled_at.timestamp(), fired.fire_count)
        return fired

    @property
    def in_flight(self) -> bool:
        """A one-shot that fired and whose fire still waits in the mailbox."""
        return self.period is None and self.ticks > 0

    def info(self) -> TimerInfo:
        return TimerInfo(
            name=self.name,
            periodic=self.period is not None,
            interval=None if self.period is None else timedelta(seconds=self.period),
            next_fire_at=datetime.fromtimestamp(self.when, UTC),
            fire_count=self.ticks,
            payload=self.payload,
        )

    def __repr__(self) -> str:
        return f"<timer {self.name!r} of {self.facet.facet_ctx!r} at {self.when}>"


class TimerFacet(Facet):
    """In-memory timers for one actor.

    Config:
        min_interval: the shortest period a periodic timer may have (duration, default "1ms").

    Methods may be called from the actor's thread or any other (for example through
    `ctx.facet_service.get_facet(actor_id, "timer")`).
    """

    facet_type = "timer"
    config_schema: ClassVar[dict[str, ConfigSpec]] = {"min_interval": positive_duration}

    _scheduler: Scheduler
    _clock: Clock
    _fires: MetricCounter
    _lateness: LatencyHistogram
    _log: FilteringBoundLogger

    def __init__(self) -> None:
        super().__init__()
        self._ctx: ActorContext | None = None
        self._timers: dict[str, _Timer] = {}
        self._lock = threading.Lock()
        self._attached = False
        self._min_period = DEFAULT_MIN_INTERVAL.total_seconds()

    # -- facet lifecycle -------------------------------------------------------------------------

    def on_attach(self, ctx: ActorContext, config: Mapping[str, Any]) -> None:
        self._ctx = ctx
        self._scheduler = ctx.scheduler
        self._clock = ctx.clock
        self._fires = ctx.metrics.counter("timer.fires")
        self._lateness = ctx.metrics.histogram("timer.lateness")
        self._log = self.facet_log or ctx.log.bind(facet=self.facet_type)
        self._min_period = config.get("min_interval", DEFAULT_MIN_INTERVAL).total_seconds()
        self._attached = True

    def on_deactivate(self) -> None:
        self._cancel_all()

    def on_detach(self) -> None:
        self._cancel_all()

    # -- registration ----------------------------------------------------------------------------

    def register_periodic(
        self,
        name: str,
        interval: Duration,
        *,
        due_time: Duration | None = None,
        payload: Any = None,
    ) -> None:
        """Fire `TimerFired` every `interval`, first at `due_time` (default: one interval).

        Fixed rate on the original phase: tick n is due at `due_time + (n - 1) * interval`
        whatever the lateness of earlier ticks. Replaces a timer of the same name.

        Raises:
            ValueError: empty name, non-positive or too short interval, negative due_time, a
                duration longer than `MAX_DURATION` (about 100 years), or a value that is not a
                duration. Nothing is registered.
        """
        period = self._period(interval)
        first = period if due_time is None else self._seconds(due_time, "due_time")
        self._arm(name, period, first, payload)

    def register_one_shot(self, name: str, delay: Duration, *, payload: Any = None) -> None:
        """Fire `TimerFired` once, after `delay`; the timer is then removed.

        Raises:
            ValueError: empty name, negative delay, a delay longer than `MAX_DURATION` (about
                100 years), or a value that is not a duration. Nothing is registered.
        """
        self._arm(name, None, self._seconds(delay, "delay"), payload)

    def register_timer(self, registration: TimerRegistration) -> None:
        """Register a timer described by a `TimerRegistration`."""
        if not isinstance(registration, TimerRegistration):
            raise TypeError(f"register_timer needs a TimerRegistration, got {registration!r}")
        if registration.periodic:
            if registration.interval is None:
                raise ValueError(
                    f"periodic timer {registration.name!r} needs an interval (its period)"
                )
            self.register_periodic(
                registration.name,
                registration.interval,
                due_time=registration.due_time,
                payload=registration.payload,
            )
            return
        if registration.interval is not None:
            raise ValueError(
                f"one-shot timer {registration.name!r} takes due_time (its delay), not interval "
                f"{registration.interval!r}; set periodic=True for a repeating timer"
            )
        if registration.due_time is None:
            raise ValueError(f"one-shot timer {registration.name!r} needs due_time (its delay)")
        self.register_one_shot(
            registration.name, registration.due_time, payload=registration.payload
        )

    def unregister_timer(self, name: str) -> bool:
        """Cancel the timer `name`; a fire of it still in the mailbox is discarded.

        Returns False if there was nothing to cancel: no such timer, or a one-shot whose fire the
        actor has already taken out of its mailbox.
        """
        with self._lock:
            timer = self._timers.pop(name, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def list_timers(self) -> list[TimerInfo]:
        """The registered timers, soonest first."""
        with self._lock:
            timers = [timer for timer in self._timers.values() if not timer.in_flight]
        return sorted((timer.info() for timer in timers), key=lambda info: info.next_fire_at)

    def get_timer(self, name: str) -> TimerInfo | None:
        """The timer `name`, or None (also once a one-shot has fired)."""
        timer = self._timers.get(name)
        return None if timer is None or timer.in_flight else timer.info()

    def __len__(self) -> int:
        """How many timers `list_timers()` would list."""
        with self._lock:
            return sum(1 for timer in self._timers.values() if not timer.in_flight)

    def __bool__(self) -> bool:
        # A facet with no timers is still a facet: `facet or TimerFacet()` must not replace it.
        return True

    # -- internals ---------------------------------------------------------------------------------

    def _arm(self, name: str, period: float | None, delay: float, payload: Any) -> None:
        if type(name) is not str or not name:
            raise ValueError(f"timer name {name!r} must be a non-empty string")
        timer = _Timer(self, name, period, payload)
        with self._lock:
            ctx = self._ctx
            if ctx is None:
                self.require_context()  # never attached: FacetNotAttachedError
            if not self._attached or ctx is None:
                owner = ctx.actor_id if ctx is not None else None
                if ctx is not None and ctx.ref.is_alive():
                    raise FacetNotAttachedError(
                        f"this TimerFacet was detached from actor {owner!r}; attach a new one"
                    )
                raise ActorStoppedError(
                    f"actor {owner!r} is no longer running; its timers were cancelled"
                )
            first = self._clock.time() + delay
            timer.first = first
            if not self._scheduler.schedule(timer, first):
                raise SystemShutdownError(
                    f"actor system {ctx.system.name!r} is shut down; timer {name!r} "
                    "was not registered"
                )
            replaced = self._timers.get(name)
            self._timers[name] = timer
        if replaced is not None:
            replaced.cancel()

    def _period(self, interval: Duration) -> float:
        seconds = self._seconds(interval, "interval")
        if seconds <= 0:
            raise ValueError(f"timer interval {interval!r} must be positive")
        if seconds < self._min_period:
            raise ValueError(
                f"timer interval {interval!r} is shorter than this facet's min_interval "
                f"({self._min_period * 1000:g}ms)"
            )
        return seconds

    @staticmethod
    def _seconds(value: Duration, what: str) -> float:
        # duration_seconds refuses what no datetime or scheduler deadline could hold (beyond
        # MAX_DURATION) before anything is armed; the message says which argument it was.
        try:
            return duration_seconds(value)
        except ValueError as error:
            raise ValueError(f"timer {what}: {error}") from None

    def _picked_up(self, timer: _Timer, fired_at: float, fire_count: int) -> None:
        lateness = self._clock.time() - fired_at
        self._fires.add()
        self._lateness.observe(lateness)
        self._log.debug(
            "timer.fired", timer=timer.name, fire_count=fire_count, lateness_ms=lateness * 1000
        )

    def facet_metrics(self) -> Mapping[str, float]:
        """`armed`: the timers registered on this actor (as `len()` counts them)."""
        return {"armed": float(len(self))}

    def _deliver(self, fired: TimerFired, picked_up: Callable[[], object]) -> bool:
        ctx = self._ctx
        return ctx is not None and ctx.deliver(fired, guard=picked_up)

    def _forget(self, timer: _Timer) -> None:
        with self._lock:
            if self._timers.get(timer.name) is timer:
                del self._timers[timer.name]

    def _cancel_all(self) -> None:
        with self._lock:
            self._attached = False
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
