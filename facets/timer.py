"""`TimerFacet`: non-durable, in-memory timers that put `TimerFired` into the actor's mailbox.

Timers live in the system's one scheduler. They are lost when the actor stops, fails or is
deactivated, and they never activate an actor. A slow actor is not flooded: at most one fire per
timer waits in its mailbox; ticks that fall due meanwhile are coalesced into it (it carries the
latest, and counts the others in `TimerFired.missed`).
Re-registering a name replaces the timer (unless `overwrite=False`, which refuses), and a fire
of the old one still in the mailbox is discarded. A periodic timer may run at a fixed delay, stop
after `max_count` ticks, or expire.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
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
    Scheduler,
    SystemShutdownError,
    TimerExistsError,
    TimerFired,
    duration_seconds,
    positive_duration,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["TimerFacet", "TimerInfo", "TimerRegistration"]

DEFAULT_MIN_INTERVAL = timedelta(milliseconds=1)
# How many period strings a facet keeps checked (a program uses a few; one that makes them up
# as it goes must not grow the cache without bound).
_PERIODS_KEPT = 64


@dataclass(frozen=True, slots=True)
class TimerRegistration:
    """A timer to register with `TimerFacet.register_timer` (or many with `register_timers`).

    A periodic timer needs `interval` (its period) and fires first at `due_time` (default: one
    interval); `fixed_delay`, `max_count`, `expires_at` and `ttl` apply to it as in
    `TimerFacet.register_periodic`. A one-shot timer needs `due_time` (its delay) and takes none
    of those. `overwrite=False` refuses a name already registered (`TimerExistsError`).
    """

    name: str
    interval: Duration | None = None
    due_time: Duration | None = None
    periodic: bool = False
    payload: Any = None
    fixed_delay: bool = False
    max_count: int | None = None
    expires_at: datetime | None = None
    ttl: Duration | None = None
    overwrite: bool = True


@dataclass(frozen=True, slots=True)
class TimerInfo:
    """A registered timer, as `TimerFacet.list_timers` reports it.

    `fire_count` is the number of the last tick that fell due (ticks coalesced into a waiting
    fire count too); `max_count` and `expires_at` are None when not set.
    """

    name: str
    periodic: bool
    interval: timedelta | None
    next_fire_at: datetime
    fire_count: int
    payload: Any
    fixed_delay: bool = False
    max_count: int | None = None
    expires_at: datetime | None = None


_Options = tuple[bool, int | None, float | None]
"""A periodic timer's options: fixed delay, max count, expiry (POSIX seconds). None when unset,
so a plain timer carries no tuple of its own."""

_Entry = tuple[float, int, int, str, float | None]
"""A timer's entry in the scheduler's heap (the scheduler's keyed entry, see
`Scheduler.add_owner`): due time, sequence, the facet's owner id, name, period. Plain values
only, so the garbage collector untracks it: armed timers cost it nothing."""

_Request = tuple[str, float | None, float, Any, _Options | None, float | None, bool]
"""One registration of a batch, checked and parsed: name, period, delay (seconds from the time
of arming), payload, options, ttl (seconds) and overwrite."""


class _Timer:
    """The richer state of one registered timer, made only when it is needed: when the timer
    has a payload or options, when it is moved later, or at its first fire. A plain timer
    armed and not yet due is nothing but its entry in the scheduler's heap and its name in the
    facet's map.

    Everything here changes under the facet's lock (which is the scheduler's). The ticks are
    counted by one firing at a time (`TimerFacet._run`): a timer has at most one entry in the
    heap, and re-arms itself while firing, or, with a fixed delay, once its fire was handled.
    `waiting` is the fire in the mailbox, `coalesced` and `latest` the ticks that fell due
    while it waited, and `final` says the last fire is made: the timer goes once that fire
    leaves the mailbox. `cancelled` is set when the registration is replaced or dropped, so a
    fire of it still in the mailbox is discarded.
    """

    __slots__ = (
        "cancelled",
        "coalesced",
        "facet",
        "final",
        "first",
        "latest",
        "missed",
        "name",
        "options",
        "payload",
        "period",
        "ticks",
        "waiting",
        "when",
    )

    def __init__(  # noqa: PLR0917 (made on hot paths, where keywords cost)
        self,
        facet: TimerFacet,
        name: str,
        period: float | None,
        payload: Any,
        first: float,
        options: _Options | None,
    ) -> None:
        self.facet = facet
        self.name = name
        self.period = period
        self.options = options
        self.payload = payload
        # The due time of the first tick (the phase of a fixed rate), and of the last tick
        # taken from the heap.
        self.first = first
        self.when = first
        self.ticks = 0
        self.missed = 0  # ticks the scheduler itself skipped, reported by the next fire
        self.waiting: TimerFired | None = None
        self.coalesced = 0
        self.latest = (0, 0.0)
        self.final = False
        self.cancelled = False

    def _next(self, tick: int, period: float) -> tuple[float | None, int, bool]:
        """After `tick` of a periodic timer: when the next is due on the fixed rate (None: none,
        or one armed once this fire is handled, with a fixed delay), how many ticks the
        scheduler skipped before it, and whether `tick` is the last."""
        fixed_delay, max_count, expiry = self.options or (False, None, None)
        if max_count is not None and tick >= max_count:
            return None, 0, True
        if fixed_delay:
            return None, 0, False
        skipped = 0
        following = self.first + tick * period
        now = self.facet._clock.time()
        if following < now - period:
            # The scheduler itself fell more than a tick behind (a stalled process): count the
            # ticks in between as missed instead of running them back to back.
            skipped = int((now - self.first) // period) - tick
            if max_count is not None:
                skipped = min(skipped, max_count - 1 - tick)
            skipped = max(skipped, 0)
            following = self.first + (tick + skipped) * period
        if expiry is not None and following >= expiry:
            return None, 0, True
        return following, skipped, False

    def _picked_up(self) -> TimerFired | bool:
        # On the actor's thread, as the fire leaves the mailbox: a fire of a replaced or
        # cancelled timer is discarded here (the generation check). A fire that waited while
        # later ticks fell due stands for them: it becomes the latest tick, counting the others.
        facet = self.facet
        with facet._lock:
            fired, self.waiting = self.waiting, None
            coalesced, self.coalesced = self.coalesced, 0
            tick, when = self.latest
            if self.final:
                facet._forget_locked(self)
            cancelled = self.cancelled
        if cancelled or fired is None:
            return False
        if coalesced:
            fired = dataclasses.replace(
                fired,
                fire_count=tick,
                scheduled_at=datetime.fromtimestamp(when, UTC),
                missed=fired.missed + coalesced,
            )
        # The fire as handled describes itself: its own tick and due time, whatever ticks
        # came while it waited.
        facet._picked_up(self, fired.scheduled_at.timestamp(), fired.fire_count)
        return fired

    def _handled(self) -> None:
        # On the actor's thread once a fixed-delay timer's fire was handled: the next tick is
        # one interval from now, or none if that would be at or after the expiry.
        facet = self.facet
        period, options = self.period, self.options
        assert period is not None
        assert options is not None
        with facet._lock:
            if self.cancelled or facet._entries.get(self.name) is not self:
                return
            following = facet._clock.time() + period
            expiry = options[2]
            if expiry is not None and following >= expiry:
                facet._forget_locked(self)
                return
            # Nothing is armed on a closed scheduler: nothing to do then.
            facet._push_locked(self.name, following, period)

    def info(self, entry: object) -> TimerInfo:
        """This timer as listed; `entry` is what the facet's map holds for it."""
        period = self.period
        fixed_delay, max_count, expiry = self.options or (False, None, None)
        # Before its first tick a timer may have been moved later than its place in the heap.
        due = (self.ticks and (entry[0] if type(entry) is tuple else self.when)) or self.first
        return TimerInfo(
            name=self.name,
            periodic=period is not None,
            interval=None if period is None else timedelta(seconds=period),
            next_fire_at=datetime.fromtimestamp(due, UTC),
            fire_count=self.ticks,
            payload=self.payload,
            fixed_delay=fixed_delay,
            max_count=max_count,
            expires_at=None if expiry is None else datetime.fromtimestamp(expiry, UTC),
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
        # name -> the timer's entry in the scheduler's heap while it is armed there, or its
        # `_Timer` while it is out of the heap (firing, its last fire waiting in the mailbox, or
        # a fixed delay waiting for the handler). Every registered name is here, and only here
        # for a plain timer not yet due: a million of them cost a heap tuple and a slot each.
        self._entries: dict[str, _Entry | _Timer] = {}
        # name -> the richer state of a timer that has a payload, options or a fire behind it.
        self._timers: dict[str, _Timer] = {}
        # Periods already checked against min_interval, by the string that gave them.
        self._periods: dict[str, float] = {}
        # Until attached, a lock of its own; then the scheduler's (see on_attach).
        self._lock = threading.Lock()
        self._owner = 0
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
        self._periods.clear()  # checked against the default min_interval
        # The facet's state is guarded by the scheduler's lock: arming a timer takes one lock,
        # and whether a heap entry is still a timer's current one reads the same for both.
        self._owner = self._scheduler.add_owner(self._entries, self._taken, self._run)
        self._lock = self._scheduler.lock
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
        fixed_delay: bool = False,
        max_count: int | None = None,
        expires_at: datetime | None = None,
        ttl: Duration | None = None,
        overwrite: bool = True,
    ) -> None:
        """Fire `TimerFired` every `interval`, first at `due_time` (default: one interval).

        By default fixed rate on the original phase: tick n is due at `due_time + (n - 1) *
        interval` whatever the lateness of earlier ticks. With `fixed_delay=True` each tick is
        due one interval after the previous fire was handled instead (its handler returned), so
        a slow handler stretches the period rather than being caught up with.

        `max_count`: at most that many ticks (`fire_count` never exceeds it), then the timer is
        removed. `expires_at` (an aware datetime) or `ttl` (a duration from now): no tick at or
        after that instant; the timer is removed after its last tick before it. `overwrite`:
        replace a timer of the same name (the default), or refuse with `TimerExistsError`.

        Raises:
            ValueError: empty name, non-positive or too short interval, negative due_time, a
                duration longer than `MAX_DURATION` (about 100 years), a value that is not a
                duration, a `max_count` that is not a positive int, an `expires_at` that is
                not an aware datetime, both `expires_at` and `ttl`, or an expiry at or before
                the first tick. Nothing is registered.
            TimerExistsError: `overwrite=False` and a timer of that name is registered.
        """
        period = self._periods.get(interval) if type(interval) is str else None
        if period is None:
            period = self._period(interval)
        first = period if due_time is None else self._seconds(due_time, "due_time")
        if fixed_delay is False and max_count is None and expires_at is None and ttl is None:
            options: _Options | None = None
            ttl_seconds: float | None = None
        else:
            options, ttl_seconds = self._options(name, fixed_delay, max_count, expires_at, ttl)
        if overwrite is not True:
            overwrite = _flag(overwrite, name)
        self._arm(name, period, first, payload, options, ttl_seconds, overwrite)

    def register_one_shot(
        self, name: str, delay: Duration, *, payload: Any = None, overwrite: bool = True
    ) -> None:
        """Fire `TimerFired` once, after `delay`; the timer is then removed.

        `overwrite=False` refuses a name already registered (`TimerExistsError`) instead of
        replacing that timer.

        Raises:
            ValueError: empty name, negative delay, a delay longer than `MAX_DURATION` (about
                100 years), or a value that is not a duration. Nothing is registered.
            TimerExistsError: `overwrite=False` and a timer of that name is registered.
        """
        try:
            seconds = duration_seconds(delay)
        except ValueError as error:
            raise ValueError(f"timer delay: {error}") from None
        if overwrite is not True:
            overwrite = _flag(overwrite, name)
        self._arm(name, None, seconds, payload, None, None, overwrite)

    def register_timer(self, registration: TimerRegistration) -> None:
        """Register a timer described by a `TimerRegistration`."""
        self._check_registration(registration)
        if registration.periodic:
            assert registration.interval is not None
            self.register_periodic(
                registration.name,
                registration.interval,
                due_time=registration.due_time,
                payload=registration.payload,
                fixed_delay=registration.fixed_delay,
                max_count=registration.max_count,
                expires_at=registration.expires_at,
                ttl=registration.ttl,
                overwrite=registration.overwrite,
            )
            return
        assert registration.due_time is not None
        self.register_one_shot(
            registration.name,
            registration.due_time,
            payload=registration.payload,
            overwrite=registration.overwrite,
        )

    def register_timers(self, registrations: Iterable[TimerRegistration]) -> None:
        """Register many timers at once: all of them, or none if one is refused.

        The same as `register_timer` for each, in order (a later registration of a name replaces
        an earlier one), but each distinct duration is parsed once and the facet's and the
        scheduler's locks are taken once for the whole batch: the way to arm thousands.

        Raises:
            TypeError: an item is not a `TimerRegistration`.
            ValueError: what `register_timer` raises, for the first bad item; none is armed.
            TimerExistsError: an item has `overwrite=False` and its name is registered (or comes
                earlier in the batch); none is armed.
        """
        # Each distinct duration string is parsed once per batch (periods once per facet).
        seconds: dict[str, float] = {}
        periods = self._periods
        items = registrations if type(registrations) is list else list(registrations)
        if not items:
            return
        # Per item, None for the common one (a plain periodic timer by a period string already
        # checked), read again in the loop below rather than copied; anything else is checked
        # and parsed here, by _prepare.
        requests: list[_Request | None] = [None] * len(items)
        checked = False  # whether an item needs the checks against the registered timers
        for index, registration in enumerate(items):
            if (
                type(registration) is TimerRegistration
                and registration.periodic
                and registration.due_time is None
                and registration.fixed_delay is False
                and registration.max_count is None
                and registration.expires_at is None
                and registration.ttl is None
                and registration.overwrite is True
                and type(name := registration.name) is str
                and name
                and type(interval := registration.interval) is str
                and interval in periods
            ):
                continue
            request = requests[index] = self._prepare(registration, seconds)
            checked = checked or request[4] is not None or not request[6]
        with self._lock:
            ctx = self._attached_context()
            now = self._clock.time()
            if checked:
                self._refuse_locked(ctx, items, requests, now)
            scheduler = self._scheduler
            if scheduler.closed:
                raise SystemShutdownError(
                    f"actor system {ctx.system.name!r} is shut down; {len(items)} timer(s) "
                    "were not registered"
                )
            owner = self._owner
            sequence = scheduler.sequence
            entries = self._entries
            timers = self._timers
            made: list[_Entry] = []
            replaced = 0
            period: float | None
            entry: _Entry
            for registration, ready in zip(items, requests, strict=True):
                if ready is None:
                    name = registration.name
                    interval = registration.interval
                    # Checked above; the cache may have been emptied since (it is bounded).
                    every = periods.get(interval) or self._period(interval)
                    entry = (now + every, next(sequence), owner, name, every)
                    period = every
                    payload = registration.payload
                    options = None
                else:
                    name, period, delay, payload, options, ttl, _ = ready
                    entry = (now + delay, next(sequence), owner, name, period)
                    options = _expiring(options, ttl, now)
                made.append(entry)
                old = entries.get(name)
                entries[name] = entry
                if old is not None:
                    if type(old) is tuple:
                        replaced += 1
                    self._drop_state_locked(name)
                if payload is not None or options is not None:
                    timers[name] = _Timer(self, name, period, payload, entry[0], options)
            scheduler.push_many_locked(made)
            # Entries of this batch replaced by later ones of it are stale as well.
            scheduler.discard_locked(replaced)

    def _refuse_locked(
        self,
        ctx: ActorContext,
        items: list[TimerRegistration],
        requests: list[_Request | None],
        now: float,
    ) -> None:
        # The refusals of a batch, before anything of it is armed, so that a refused batch arms
        # none: a name already registered (or earlier in the batch) with overwrite=False, or an
        # expiry at or before the first tick.
        named: set[str] = set()
        for registration, request in zip(items, requests, strict=True):
            if request is None:
                named.add(registration.name)
                continue
            name, _, delay, _, options, ttl, overwrite = request
            if not overwrite and (name in self._entries or name in named):
                raise self._exists(ctx, name)
            named.add(name)
            _check_expiry(name, now + delay, _expiring(options, ttl, now))

    def _prepare(self, registration: TimerRegistration, seconds: dict[str, float]) -> _Request:
        # One item of a batch, checked and parsed, with the batch's cache of parsed strings.
        self._check_registration(registration)
        name = registration.name
        if type(name) is not str or not name:
            raise ValueError(f"timer name {name!r} must be a non-empty string")
        interval, due_time = registration.interval, registration.due_time
        period: float | None = None
        options: _Options | None = None
        ttl: float | None = None
        if registration.periodic:
            assert interval is not None
            period = self._period(interval)
            if (
                registration.fixed_delay is not False
                or registration.max_count is not None
                or registration.expires_at is not None
                or registration.ttl is not None
            ):
                options, ttl = self._options(
                    name,
                    registration.fixed_delay,
                    registration.max_count,
                    registration.expires_at,
                    registration.ttl,
                )
        what = "delay" if period is None else "due_time"
        if due_time is None:
            assert period is not None
            delay = period
        elif type(due_time) is str:
            found = seconds.get(due_time)
            delay = found if found is not None else self._seconds(due_time, what)
            seconds[due_time] = delay
        else:
            delay = self._seconds(due_time, what)
        overwrite = _flag(registration.overwrite, name)
        return (name, period, delay, registration.payload, options, ttl, overwrite)

    def unregister_timer(self, name: str) -> bool:
        """Cancel the timer `name`; a fire of it still in the mailbox is discarded.

        Returns False if there was nothing to cancel: no such timer, or a one-shot whose fire the
        actor has already taken out of its mailbox.
        """
        with self._lock:
            old = self._entries.pop(name, None)
            if old is None:
                return False
            self._drop_state_locked(name)
            if type(old) is tuple:
                self._scheduler.discard_locked(1)
        return True

    def unregister_all(self) -> int:
        """Cancel every timer of this facet (fires still in the mailbox are discarded, as by
        `unregister_timer`); returns how many were cancelled. The facet stays attached."""
        with self._lock:
            entries = self._entries
            count = len(entries)
            if not count:
                return 0
            in_heap = sum(1 for value in entries.values() if type(value) is tuple)
            entries.clear()
            for timer in self._timers.values():
                timer.cancelled = True
            self._timers.clear()
            self._scheduler.discard_locked(in_heap)
        return count

    def list_timers(self) -> list[TimerInfo]:
        """The registered timers, soonest first."""
        with self._lock:
            infos = [
                info
                for name, entry in self._entries.items()
                if (info := self._info_locked(name, entry)) is not None
            ]
        return sorted(infos, key=lambda info: info.next_fire_at)

    def get_timer(self, name: str) -> TimerInfo | None:
        """The timer `name`, or None (also once a one-shot has fired)."""
        with self._lock:
            entry = self._entries.get(name)
            return None if entry is None else self._info_locked(name, entry)

    def __len__(self) -> int:
        """How many timers `list_timers()` would list."""
        with self._lock:
            return len(self._entries) - sum(1 for timer in self._timers.values() if timer.final)

    def __bool__(self) -> bool:
        # A facet with no timers is still a facet: `facet or TimerFacet()` must not replace it.
        return True

    # -- internals ---------------------------------------------------------------------------------

    def _arm(  # noqa: PLR0917 (the hot path of every registration; keywords cost)
        self,
        name: str,
        period: float | None,
        delay: float,
        payload: Any,
        options: _Options | None,
        ttl: float | None,
        overwrite: bool,
    ) -> None:
        # One registration: the checks, the entry and its scheduling under the one lock, so a
        # concurrent replace or cancel sees either the old timer or the new one. A hot path (a
        # million timers armed, or a timeout re-armed by every message), hence the inlined
        # checks and no object for a plain timer.
        if type(name) is not str or not name:
            raise ValueError(f"timer name {name!r} must be a non-empty string")
        with self._lock:
            if not self._attached:
                self._attached_context()  # raises: why this facet arms nothing
            now = self._clock.time()
            first = now + delay
            entries = self._entries
            old = entries.get(name)
            if old is not None:
                if not overwrite:
                    raise self._exists(self._attached_context(), name)
                timer = self._timers.get(name)
                if (
                    type(old) is tuple
                    and options is None
                    and old[4] == period
                    and first >= old[0]
                    and not self._scheduler.closed
                    and (timer is None or (timer.ticks == 0 and timer.options is None))
                ):
                    # Moved rather than replaced, which is the same for a timer of the same
                    # kind that never ticked, moved later: no new heap entry, no stale one.
                    # Its entry stays where it is, and when it comes up early it is put back
                    # at the new time (see _run).
                    if timer is None:
                        if first != old[0] or payload is not None:
                            self._timers[name] = _Timer(self, name, period, payload, first, None)
                    else:
                        timer.first = first
                        timer.payload = payload
                    return
            if options is not None:
                options = _expiring(options, ttl, now)
                _check_expiry(name, first, options)
            entry = self._scheduler.push_locked(self._owner, name, first, period)
            if entry is None:
                raise SystemShutdownError(
                    f"actor system {self._attached_context().system.name!r} is shut down; "
                    f"timer {name!r} was not registered"
                )
            entries[name] = entry
            if old is not None:
                self._drop_state_locked(name)
                if type(old) is tuple:
                    self._scheduler.discard_locked(1)
            if payload is not None or options is not None:
                self._timers[name] = _Timer(self, name, period, payload, first, options)

    def _push_locked(self, name: str, when: float, period: float | None) -> None:
        # Arm the next entry of a registered timer (nothing on a closed scheduler).
        entry = self._scheduler.push_locked(self._owner, name, when, period)
        if entry is not None:
            self._entries[name] = entry

    def _drop_state_locked(self, name: str) -> None:
        # The registration of `name` is replaced or dropped: a fire of it still in the mailbox
        # is discarded when it comes out.
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancelled = True

    def _taken(self, entry: _Entry) -> None:
        # Under the lock, as the scheduler takes the current entry of a timer out of the heap:
        # the map now holds the timer itself (made here for a plain timer's first fire), so the
        # entry is no longer current and a replacement meanwhile needs no stale count.
        when, _, _, name, period = entry
        timer = self._timers.get(name)
        if timer is None:
            timer = self._timers[name] = _Timer(self, name, period, None, when, None)
        self._entries[name] = timer

    def _run(self, entry: _Entry) -> None:
        # On the scheduler thread (or in ManualClock.advance), after _taken, never twice at once
        # for one timer: the only writer of ticks and missed.
        when, _, _, name, period = entry
        with self._lock:
            timer = self._timers.get(name)
            if timer is None or self._entries.get(name) is not timer:
                return  # replaced or cancelled since it was taken from the heap
            if timer.ticks == 0 and timer.first > when:
                # Registered again for later while it waited in the heap (a sliding timeout):
                # back into the heap at the new time, and nothing fires now.
                self._push_locked(name, timer.first, period)
                return
            timer.when = when
            tick = timer.ticks = timer.ticks + 1
            if period is None:
                following, skipped, last = None, 0, True
            else:
                following, skipped, last = timer._next(tick, period)
            if timer.waiting is not None:
                # This tick, and those the scheduler skipped since the last one (when it fell
                # behind), fell due while the fire waited: it stands for all of them.
                timer.coalesced += 1 + timer.missed
                timer.missed = 0
                timer.latest = (tick, when)
                fired = None
            else:
                fired = timer.waiting = TimerFired(
                    name, tick, datetime.fromtimestamp(when, UTC), timer.payload, timer.missed
                )
                timer.missed = 0
            if last:
                # A fired last tick stays registered (hidden from listings) until its fire
                # leaves the mailbox, so unregistering or replacing it meanwhile still discards
                # that fire.
                timer.final = True
            if skipped:
                timer.ticks += skipped
                timer.missed += skipped
            if following is not None:
                self._push_locked(name, following, period)
            options = timer.options
        if fired is not None:
            handled = timer._handled if (options is not None and options[0] and not last) else None
            if not self._deliver(fired, timer._picked_up, handled):
                # The actor is gone (the ActorDeadError race): the timer dies with it.
                self._forget(timer)

    def _info_locked(self, name: str, entry: _Entry | _Timer) -> TimerInfo | None:
        timer = self._timers.get(name)
        if timer is not None:
            return None if timer.final else timer.info(entry)
        assert type(entry) is tuple
        period = entry[4]
        return TimerInfo(
            name=name,
            periodic=period is not None,
            interval=None if period is None else timedelta(seconds=period),
            next_fire_at=datetime.fromtimestamp(entry[0], UTC),
            fire_count=0,
            payload=None,
        )

    def _attached_context(self) -> ActorContext:
        # Under the lock: the context of an attached facet, else the error that says why not.
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
        return ctx

    @staticmethod
    def _exists(ctx: ActorContext, name: str) -> TimerExistsError:
        return TimerExistsError(
            f"actor {ctx.actor_id!r} already has a timer {name!r}; unregister it first, or "
            "register with overwrite=True to replace it"
        )

    def _options(
        self,
        name: str,
        fixed_delay: bool,
        max_count: int | None,
        expires_at: datetime | None,
        ttl: Duration | None,
    ) -> tuple[_Options | None, float | None]:
        """A periodic timer's options (None when all are unset) and its ttl in seconds."""
        if fixed_delay is not True and fixed_delay is not False:
            raise ValueError(f"timer {name!r}: fixed_delay {fixed_delay!r} must be True or False")
        if max_count is not None and (type(max_count) is not int or max_count < 1):
            raise ValueError(
                f"timer {name!r}: max_count {max_count!r} must be a positive int (at most that "
                "many ticks), or None"
            )
        if expires_at is not None and ttl is not None:
            raise ValueError(
                f"timer {name!r} takes expires_at ({expires_at!r}) or ttl ({ttl!r}), not both"
            )
        expiry: float | None = None
        if expires_at is not None:
            if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
                raise ValueError(
                    f"timer {name!r}: expires_at {expires_at!r} must be an aware datetime "
                    "(for example datetime(2026, 1, 1, tzinfo=timezone.utc))"
                )
            expiry = expires_at.timestamp()
        ttl_seconds = None if ttl is None else self._seconds(ttl, "ttl")
        if not fixed_delay and max_count is None and expiry is None and ttl_seconds is None:
            return None, None
        return (fixed_delay, max_count, expiry), ttl_seconds

    @staticmethod
    def _check_registration(registration: TimerRegistration) -> None:
        if not isinstance(registration, TimerRegistration):
            raise TypeError(f"register_timer needs a TimerRegistration, got {registration!r}")
        name = registration.name
        if registration.periodic:
            if registration.interval is None:
                raise ValueError(f"periodic timer {name!r} needs an interval (its period)")
            return
        if registration.interval is not None:
            raise ValueError(
                f"one-shot timer {name!r} takes due_time (its delay), not interval "
                f"{registration.interval!r}; set periodic=True for a repeating timer"
            )
        if registration.due_time is None:
            raise ValueError(f"one-shot timer {name!r} needs due_time (its delay)")
        for option, unset in (
            ("fixed_delay", registration.fixed_delay is False),
            ("max_count", registration.max_count is None),
            ("expires_at", registration.expires_at is None),
            ("ttl", registration.ttl is None),
        ):
            if not unset:
                raise ValueError(
                    f"one-shot timer {name!r} takes no {option} "
                    f"({getattr(registration, option)!r}); it applies to periodic timers"
                )

    def _period(self, interval: Duration) -> float:
        seconds = self._seconds(interval, "interval")
        if seconds <= 0:
            raise ValueError(f"timer interval {interval!r} must be positive")
        if seconds < self._min_period:
            raise ValueError(
                f"timer interval {interval!r} is shorter than this facet's min_interval "
                f"({self._min_period * 1000:g}ms)"
            )
        if type(interval) is str:
            periods = self._periods
            if len(periods) >= _PERIODS_KEPT:
                periods.clear()  # the few strings in use come back at once
            periods[interval] = seconds
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

    def _deliver(
        self,
        fired: TimerFired,
        picked_up: Callable[[], object],
        handled: Callable[[], object] | None,
    ) -> bool:
        ctx = self._ctx
        return ctx is not None and ctx.deliver(fired, guard=picked_up, handled=handled)

    def _forget(self, timer: _Timer) -> None:
        with self._lock:
            self._forget_locked(timer)

    def _forget_locked(self, timer: _Timer) -> None:
        # The timer is done (its last fire left the mailbox, or its actor is gone): its name is
        # free, unless it was registered again meanwhile.
        name = timer.name
        if self._timers.get(name) is not timer:
            return
        del self._timers[name]
        entry = self._entries.pop(name, None)
        if type(entry) is tuple:
            self._scheduler.discard_locked(1)

    def _cancel_all(self) -> None:
        with self._lock:
            self._attached = False
            for timer in self._timers.values():
                timer.cancelled = True
            self._timers.clear()
            if self._owner:
                self._scheduler.remove_owner_locked(self._owner)
            else:
                self._entries.clear()


def _expiring(options: _Options | None, ttl: float | None, now: float) -> _Options | None:
    """`options` with a ttl turned into its expiry, counted from `now`."""
    if options is None or ttl is None:
        return options
    return (options[0], options[1], now + ttl)


def _check_expiry(name: str, first: float, options: _Options | None) -> None:
    expiry = None if options is None else options[2]
    if expiry is not None and first >= expiry:
        raise ValueError(
            f"timer {name!r} expires at {datetime.fromtimestamp(expiry, UTC).isoformat()}, "
            f"not after its first tick at {datetime.fromtimestamp(first, UTC).isoformat()}"
            ": it would never fire"
        )


def _flag(overwrite: object, name: str) -> bool:
    if overwrite is not True and overwrite is not False:
        raise ValueError(f"timer {name!r}: overwrite {overwrite!r} must be True or False")
    return overwrite
