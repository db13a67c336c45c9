"""Durable reminders: the one service per actor system that stores, arms and fires them.

Reminders live in a `ReminderStore`. The service keeps only the reminders due within a short
horizon armed in the system's scheduler and loads later ones in batches as time reaches them, so
it never holds or scans the whole table. A fire is recorded in the store (count advanced, next due
time written, in one transaction) before it is delivered, and acknowledged after the actor's
handler returned: delivery is at-least-once, a recorded but unacknowledged fire is delivered again
with the same `fire_count`, and `max_count` is never exceeded.

In a cluster (several nodes on one database) each node claims the reminders it arms with a lease
(`claimed_by`, `claimed_until`), renews its leases every third of the lease, polls for reminders
that nobody holds (registered elsewhere, released, or left by a node that died), and records a
fire only while no other node holds a live claim on it. A node that holds a virtual actor's
activation lease is the only one that claims that actor's reminders, so a reminder never
activates a second copy of an actor that is active elsewhere.

Threads: the scheduler thread only hands due reminders to one reminder worker thread, which does
the store I/O and the delivery (activating the virtual actor if needed), so a slow disk never
delays timers. Acknowledgements run on the actor's thread right after its handler. Under a
`ManualClock` everything runs on the thread that advances time, so tests are deterministic.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ._clock import current_handoff
from ._duration import Duration, parse_duration, positive_duration
from ._errors import ActorActiveElsewhereError
from ._messages import ReminderFired
from ._scheduler import ScheduledCall
from ._store import (
    MISSED_POLICIES,
    ReminderKey,
    ReminderStore,
    StoredReminder,
    UndecodableReminder,
    encode_payload,
)

if TYPE_CHECKING:
    from ._ref import VirtualActorRef
    from ._system import ActorSystem

__all__ = ["MISSED_POLICIES", "ReminderInfo", "ReminderRegistration", "ReminderService"]


_log = structlog.get_logger("plexspaces.reminders")


@dataclass(frozen=True, slots=True)
class ReminderRegistration:
    """One reminder to register, for `ReminderFacet.register_reminders` (the arguments of
    `register_reminder`, as a value)."""

    name: str
    due: Duration | datetime
    period: Duration | None = None
    max_count: int | None = None
    payload: Any = None
    missed: str = "once"


@dataclass(frozen=True, slots=True)
class ReminderInfo:
    """A stored reminder, as `ReminderFacet.list_reminders` reports it.

    Attributes:
        name: the reminder's name.
        fire_count: fires recorded so far (kept across restarts).
        max_count: the most fires it makes, or None.
        next_fire_at: when it fires next (aware UTC); None once its last fire was recorded.
        period: the period of a periodic reminder, None for a one-shot.
        missed: the missed-tick policy ("once", "skip" or "all").
        payload: the JSON payload.
        pending_fire: the `fire_count` of a fire recorded but not yet acknowledged (being
            handled, or to be delivered again after a crash), else None.
    """

    name: str
    fire_count: int
    max_count: int | None
    next_fire_at: datetime | None
    period: timedelta | None
    missed: str
    payload: Any
    pending_fire: int | None = None


def _info(record: StoredReminder) -> ReminderInfo:
    return ReminderInfo(
        name=record.key.name,
        fire_count=record.fire_count,
        max_count=record.max_count,
        next_fire_at=None if record.finished else record.due_at,
        period=record.period,
        missed=record.missed,
        payload=record.payload,
        pending_fire=record.pending_fire,
    )


class _Armed(ScheduledCall):
    """A reminder armed in the scheduler; its identity is the generation of its registration."""

    __slots__ = ("attempt", "record", "service", "watchdog")

    def __init__(self, service: ReminderService, record: StoredReminder) -> None:
        super().__init__()
        self.service = service
        self.record = record
        self.attempt = 0
        self.watchdog: ScheduledCall | None = None

    def run(self) -> None:
        self.service._submit(self._fire)

    def _fire(self) -> None:
        self.service._fire(self)

    def __repr__(self) -> str:
        key = self.record.key
        return f"<reminder {key.actor_type}/{key.actor_key}:{key.name} at {self.when}>"


class ReminderService:
    """Stores, arms and fires the durable reminders of one actor system.

    Created by the system on first use (`ActorSystem.reminders`); `ReminderFacet` is the
    per-actor view of it.
    """

    def __init__(
        self,
        system: ActorSystem,
        store: ReminderStore,
        *,
        horizon: Duration = "30s",
        batch: int = 1000,
        ack_timeout: Duration = "60s",
        retry_delay: Duration = "1s",
        max_retry_delay: Duration = "60s",
    ) -> None:
        self._system = system
        self._store = store
        self._clock = system.clock
        self._scheduler = system.scheduler
        self._horizon = positive_duration(horizon).total_seconds()
        self._batch = batch
        self._ack_timeout = positive_duration(ack_timeout).total_seconds()
        self._retry_delay = positive_duration(retry_delay).total_seconds()
        self._max_retry_delay = positive_duration(max_retry_delay).total_seconds()
        self._node = system.node_id
        self._cluster = system.cluster
        self._lease = system.lease.total_seconds()
        self._poll_interval = system.poll_interval.total_seconds()
        self._lock = threading.RLock()
        self._armed: dict[ReminderKey, _Armed] = {}
        self._served: set[str] = set()
        self._loader: ScheduledCall | None = None
        self._load_failures = 0
        self._cluster_calls: list[ScheduledCall] = []
        self._fires = system._metrics.counter("reminder.fires")
        self._failures = system._metrics.counter("reminder.failures")
        self._tardiness = system._metrics.histogram("reminder.tardiness")
        self._firing = True  # False once shutdown began: no new fires, acknowledgements still land
        self._closed = False
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(
            target=self._serve_work, name=f"{system.name}-reminders", daemon=True
        )
        self._worker.start()
        if self._cluster:
            self._every(self._poll_interval, self._poll)
            self._every(self._lease / 3, self._renew)

    # -- registration (any thread) -----------------------------------------------------------------

    def register(
        self,
        actor_type: str,
        actor_key: str,
        name: str,
        *,
        due: Duration | datetime,
        period: Duration | None = None,
        max_count: int | None = None,
        payload: Any = None,
        missed: str = "once",
        min_period: timedelta = timedelta(seconds=1),
    ) -> ReminderInfo:
        """Store a reminder (replacing one of the same name) and arm it; durable on return."""
        registration = ReminderRegistration(name, due, period, max_count, payload, missed)
        [info] = self.register_many(actor_type, actor_key, [registration], min_period=min_period)
        return info

    def register_many(
        self,
        actor_type: str,
        actor_key: str,
        registrations: Iterable[ReminderRegistration],
        *,
        min_period: timedelta = timedelta(seconds=1),
    ) -> list[ReminderInfo]:
        """Store several reminders of one actor in one transaction and arm them: all of them or,
        if any is refused, none. Durable on return."""
        if isinstance(registrations, ReminderRegistration) or not isinstance(
            registrations, Iterable
        ):
            raise ValueError(
                f"registrations {registrations!r} must be an iterable of ReminderRegistration"
            )
        now = self._clock.now()
        records: list[StoredReminder] = []
        names: set[str] = set()
        for registration in registrations:
            record = self._record_for(actor_type, actor_key, registration, now, min_period)
            if record.key.name in names:
                raise ValueError(
                    f"reminder {record.key.name!r} is registered twice in one batch; each name "
                    "once per call"
                )
            names.add(record.key.name)
            records.append(record)
        horizon = self._clock.time() + self._horizon
        if self._cluster:
            # This node holds the actor (it registers from inside it): it fires what is near.
            lease = self._lease_end()
            records = [
                replace(record, claimed_by=self._node, claimed_until=lease)
                if record.due_at.timestamp() <= horizon
                else record
                for record in records
            ]
        with self._lock:
            # Written and armed under one lock: two registrations of one name racing each other
            # must leave memory and store holding the same one.
            if len(records) == 1:
                self._store.upsert(records[0])
            elif records:
                self._store.upsert_many(records)
            for record in records:
                self._disarm(record.key)
                due = record.due_at.timestamp()
                if due <= horizon:
                    self._arm(record, due)
                else:
                    # Loaded in time by a batch load, like every reminder beyond the horizon.
                    self._schedule_loader(due - self._horizon / 2)
        return [_info(record) for record in records]

    def _record_for(
        self,
        actor_type: str,
        actor_key: str,
        registration: ReminderRegistration,
        now: datetime,
        min_period: timedelta,
    ) -> StoredReminder:
        if not isinstance(registration, ReminderRegistration):
            raise ValueError(f"{registration!r} is not a ReminderRegistration")
        name = registration.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"reminder name {name!r} must be a non-empty string")
        due_at = self._due_at(registration.due, now)
        period_td = self._period(registration.period, min_period)
        max_count = registration.max_count
        if max_count is not None and (
            isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1
        ):
            raise ValueError(f"max_count {max_count!r} must be None or an int of at least 1")
        missed = registration.missed
        if missed not in MISSED_POLICIES:
            raise ValueError(f"missed {missed!r} must be one of {', '.join(MISSED_POLICIES)}")
        key = ReminderKey(actor_type, actor_key, name)
        # Refuse what JSON cannot carry back unchanged, and hand back what the store will.
        payload = json.loads(encode_payload(key, registration.payload))
        return StoredReminder(
            key=key,
            due_at=due_at,
            anchor_at=due_at,
            period=period_td,
            max_count=max_count,
            fire_count=0,
            missed=missed,
            payload=payload,
            pending_fire=None,
            pending_scheduled_at=None,
            finished=False,
            claimed_by=None,
            claimed_until=None,
            created_at=now,
            updated_at=now,
        )

    def unregister(self, actor_type: str, actor_key: str, name: str) -> bool:
        """Delete a reminder; a fire of it still in the mailbox is discarded. If the store
        cannot be reached the error is raised and the reminder stays armed and stored."""
        key = ReminderKey(actor_type, actor_key, name)
        with self._lock:
            deleted = self._store.delete(key)
            self._disarm(key)
        return deleted

    def get(self, actor_type: str, actor_key: str, name: str) -> ReminderInfo | None:
        record = self._store.get(ReminderKey(actor_type, actor_key, name))
        return None if record is None else _info(record)

    def list_actor(self, actor_type: str, actor_key: str) -> list[ReminderInfo]:
        return [_info(record) for record in self._store.list_actor(actor_type, actor_key)]

    def gauges(self) -> dict[str, float]:
        """`reminders.armed` (in the scheduler) and `reminders.stored` (rows in the store)."""
        with self._lock:
            armed = float(len(self._armed))
            closed = self._closed
        gauges = {"reminders.armed": armed}
        if not closed:
            try:
                gauges["reminders.stored"] = float(self._store.count())
            except Exception as error:
                _log.warning("reminder.count_failed", error=repr(error))
        return gauges

    def errors(self) -> list[UndecodableReminder]:
        """Stored rows that could not be decoded: kept, reported here, never fired."""
        return self._store.errors()

    # -- serving -----------------------------------------------------------------------------------

    def serve_type(self, actor_type: str) -> None:
        """Start firing the reminders of a virtual actor type (called when it is registered)."""
        with self._lock:
            if actor_type in self._served:
                return
            self._served.add(actor_type)
            self._schedule_loader(self._clock.time())

    def stop_firing(self) -> None:
        """Fire nothing more (shutdown begins); handlers still running can acknowledge."""
        with self._lock:
            if self._closed:
                return  # the worker is gone; nothing can be in flight
            self._firing = False
            for armed in self._armed.values():
                armed.cancel()
                if armed.watchdog is not None:
                    armed.watchdog.cancel()
            if self._loader is not None:
                self._loader.cancel()
            for call in self._cluster_calls:
                call.cancel()
        # Wait for the fire the worker may be delivering right now.
        if self._worker is not threading.current_thread():
            drained = threading.Event()
            self._work.put(drained.set)
            drained.wait()

    def close(self) -> None:
        """Stop the worker and close the store. Fires recorded but not acknowledged are
        delivered again after a restart."""
        self.stop_firing()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._armed.clear()
        self._work.put(None)
        if self._worker is not threading.current_thread():
            self._worker.join()
        if self._cluster:
            # Hand everything over at once instead of after the lease.
            try:
                self._store.release_claims(self._node)
                self._store.release_activations(self._node)
            except Exception as error:
                _log.warning("reminder.release_failed", node_id=self._node, error=repr(error))
        self._store.close()

    # -- loading -----------------------------------------------------------------------------------

    def _schedule_loader(self, when: float) -> None:
        if not self._firing:
            return
        when = max(when, self._clock.time())
        if self._loader is not None:
            if self._loader.when <= when and not self._loader.cancelled:
                return
            self._loader.cancel()
        self._loader = self._scheduler.call_at(when, lambda: self._submit(self._load))

    def _load(self) -> None:
        with self._lock:
            # This load is under way: a registration meanwhile must schedule its own loader
            # rather than count on this one, whose view of the store may predate it.
            self._loader = None
        now = self._clock.time()
        until_at = _at(now + self._horizon)
        try:
            if not self._load_due(now, include_own=True):
                return
            later = self._store.next_due_at(after=until_at)
        except Exception as error:
            # The store is unavailable: look again after a backoff; nothing is lost meanwhile.
            self._load_failures += 1
            delay = self._backoff(self._load_failures)
            _log.warning("reminder.load_failed", error=repr(error), retry_in_s=delay)
            with self._lock:
                self._schedule_loader(now + delay)
            return
        self._load_failures = 0
        with self._lock:
            if later is not None:
                # Sleep until the next reminder beyond the horizon comes near: a 30-day
                # reminder costs one load, not one per horizon.
                half = self._horizon / 2
                self._schedule_loader(max(now + half, later.timestamp() - half))

    def _load_due(self, now: float, *, include_own: bool) -> bool:
        """Arm every reminder due within the horizon (claimed for this node in a cluster);
        False if firing stopped meanwhile."""
        until_at = _at(now + self._horizon)
        after: tuple[datetime, ReminderKey] | None = None
        while True:
            if self._cluster:
                with self._lock:
                    served = sorted(self._served)
                page = self._store.claim_due(
                    self._node,
                    until=until_at,
                    lease_until=_at(now + self._lease),
                    now=_at(now),
                    limit=self._batch,
                    after=after,
                    actor_types=served,
                    include_own=include_own,
                )
            else:
                page = self._store.due(until_at, self._batch, after=after)
            with self._lock:
                if not self._firing:
                    return False
                for record in page:
                    if record.key.actor_type in self._served and record.key not in self._armed:
                        self._arm_record(record)
            if len(page) < self._batch:
                return True
            after = page[-1].position

    # -- the cluster (worker thread) ---------------------------------------------------------------

    def _every(self, interval: float, work: Callable[[], None]) -> None:
        """Run `work` on the worker every `interval` seconds of the system clock while firing."""

        def tick() -> None:
            self._submit(work)
            with self._lock:
                if self._firing:
                    self._cluster_calls[index] = self._scheduler.call_later(interval, tick)

        with self._lock:
            index = len(self._cluster_calls)
            self._cluster_calls.append(self._scheduler.call_later(interval, tick))

    def _poll(self) -> None:
        # Reminders nobody holds: registered on another node, released, or left by a node whose
        # lease ran out. Own claims are armed already (and reconciled by every horizon load).
        try:
            self._load_due(self._clock.time(), include_own=False)
        except Exception as error:
            _log.warning("reminder.poll_failed", node_id=self._node, error=repr(error))

    def _renew(self) -> None:
        now = self._clock.now()
        until = self._lease_end()
        try:
            self._store.renew_claims(self._node, lease_until=until, now=now)
            self._store.renew_activations(self._node, lease_until=until, now=now)
        except Exception as error:
            _log.warning("reminder.renew_failed", node_id=self._node, error=repr(error))

    def _lease_end(self) -> datetime:
        return _at(self._clock.time() + self._lease)

    def claim_activation(self, ref: VirtualActorRef) -> str:
        """Take the cluster-wide activation lease of a virtual actor for this node; its
        activation id.

        Raises:
            ActorActiveElsewhereError: another node holds the actor's activation.
            StoreUnavailableError: the store cannot be reached.
        """
        activation_id = uuid.uuid4().hex
        holder = self._store.claim_activation(
            ref.actor_type,
            ref.actor_key,
            self._node,
            activation_id=activation_id,
            lease_until=self._lease_end(),
            now=self._clock.now(),
        )
        if holder is not None:
            raise ActorActiveElsewhereError(ref.actor_id, holder)
        return activation_id

    def release_activation(self, ref: VirtualActorRef, activation_id: str) -> None:
        """Drop an activation lease (the activation ended); a failure is logged, and the lease
        then simply runs out."""
        with self._lock:
            if self._closed:
                return  # closing released every lease of the node
        try:
            self._store.release_activation(ref.actor_type, ref.actor_key, activation_id)
        except Exception as error:
            _log.warning(
                "actor.activation_release_failed", actor_id=ref.actor_id, error=repr(error)
            )

    def _backoff(self, attempt: int) -> float:
        return float(min(self._max_retry_delay, self._retry_delay * 2 ** (attempt - 1)))

    def _arm_record(self, record: StoredReminder) -> None:
        if record.pending_fire is not None:
            # Recorded before a crash (or a failed handler) and never acknowledged: deliver it
            # again, with the same fire_count.
            self._arm(record, self._clock.time())
        elif not record.finished:
            self._arm(record, record.due_at.timestamp())

    def _arm(self, record: StoredReminder, when: float) -> None:
        if not self._firing or record.key.actor_type not in self._served:
            return
        armed = _Armed(self, record)
        self._armed[record.key] = armed
        self._scheduler.schedule(armed, when)

    def _disarm(self, key: ReminderKey) -> None:
        armed = self._armed.pop(key, None)
        if armed is not None:
            armed.cancel()
            if armed.watchdog is not None:
                armed.watchdog.cancel()

    # -- firing (worker thread, or the advancing thread on a ManualClock) --------------------------

    def _submit(self, work: Callable[[], None]) -> None:
        if current_handoff() is not None:
            work()  # ManualClock.advance: run inline so the fire is in the mailbox on return
        else:
            self._work.put(work)

    def _serve_work(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            try:
                work()
            except Exception:
                _log.exception("reminder.work_failed")

    def _current(self, armed: _Armed) -> bool:
        with self._lock:
            return not self._closed and self._armed.get(armed.record.key) is armed

    def _fire(self, armed: _Armed) -> None:
        if not self._firing or not self._current(armed):
            return
        record = armed.record
        if record.pending_fire is None:
            try:
                recorded = self._record(armed)
            except Exception as error:
                # The store is unavailable: nothing was recorded; try again after a backoff.
                _log.warning(
                    "reminder.record_failed",
                    actor_id=_actor_id(record.key),
                    reminder=record.key.name,
                    error=repr(error),
                    attempt=armed.attempt + 1,
                )
                self._retry(armed)
                return
            if recorded is None:
                return
            armed.record = record = recorded
        self._deliver(armed)

    def _record(self, armed: _Armed) -> StoredReminder | None:
        """Record the fire due now (or skip missed ticks); the new record, or None if nothing
        is to be delivered."""
        record = armed.record
        now = self._clock.time()
        scheduled = record.due_at.timestamp()
        period = record.period.total_seconds() if record.period is not None else None
        late_by_more_than_a_period = period is not None and now - scheduled > period
        anchor = record.anchor_at.timestamp()
        if late_by_more_than_a_period and record.missed == "skip":
            assert period is not None
            moved = self._store.reschedule(
                record.key,
                expected_fire_count=record.fire_count,
                expected_due_at=record.due_at,
                due_at=_at(_next_tick(anchor, period, now, strictly_after=False)),
                now=_at(now),
                **self._fence(now),
            )
            self._rearm_from_store(armed, moved or self._store.get(record.key))
            return None
        following: float | None = None
        scheduled_at = record.due_at
        if late_by_more_than_a_period and record.missed == "once":
            assert period is not None
            # The one fire stands for every missed tick; it carries the latest of them.
            latest = _next_tick(anchor, period, now, strictly_after=True) - period
            scheduled_at = _at(latest)
        if period is not None and (
            record.max_count is None or record.fire_count + 1 < record.max_count
        ):
            if late_by_more_than_a_period and record.missed == "once":
                following = _next_tick(anchor, period, now, strictly_after=True)
            else:
                following = scheduled + period
        next_due_at = None if following is None else _at_or_none(following)
        recorded = self._store.record_fire(
            record.key,
            expected_fire_count=record.fire_count,
            expected_due_at=record.due_at,
            scheduled_at=scheduled_at,
            next_due_at=next_due_at,
            now=_at(now),
            **self._fence(now),
        )
        if recorded is None:
            # Changed under us (re-registered, deleted, or fired elsewhere): follow the store.
            self._rearm_from_store(armed, self._store.get(record.key))
        return recorded

    def _fence(self, now: float) -> dict[str, Any]:
        """In a cluster, fire only what no other node holds, and hold it while firing."""
        if not self._cluster:
            return {}
        return {"node_id": self._node, "lease_until": _at(now + self._lease)}

    def _held_elsewhere(self, record: StoredReminder) -> bool:
        return (
            self._cluster
            and record.claimed_by is not None
            and record.claimed_by != self._node
            and record.claimed_until is not None
            and record.claimed_until.timestamp() >= self._clock.time()
        )

    def _rearm_from_store(self, armed: _Armed, record: StoredReminder | None) -> None:
        if record is not None and self._held_elsewhere(record):
            # Another node took it over (our lease ran out): it is that node's to fire now.
            _log.info(
                "reminder.taken_over",
                actor_id=_actor_id(record.key),
                reminder=record.key.name,
                by=record.claimed_by,
            )
            record = None
        elif record is not None and record == armed.record:
            # The store refused the change yet holds what we had: never spin on it.
            _log.warning(
                "reminder.store_refused", actor_id=_actor_id(record.key), reminder=record.key.name
            )
            self._retry(armed)
            return
        with self._lock:
            if self._armed.get(armed.record.key) is not armed:
                return
            del self._armed[armed.record.key]
            if record is not None:
                self._arm_record(record)

    def _deliver(self, armed: _Armed) -> None:
        record = armed.record
        assert record.pending_fire is not None
        assert record.pending_scheduled_at is not None
        fired = ReminderFired(
            reminder_name=record.key.name,
            fire_count=record.pending_fire,
            max_count=record.max_count,
            scheduled_at=record.pending_scheduled_at,
            payload=record.payload,
        )
        ref = self._system.virtual(record.key.actor_type, record.key.actor_key)
        with self._lock:
            if armed.watchdog is not None:
                armed.watchdog.cancel()
            armed.watchdog = self._scheduler.call_at(
                self._clock.time() + self._ack_timeout, lambda: self._lost(armed, fired)
            )
        try:
            self._system._deliver_virtual(
                ref,
                fired,
                guard=lambda: self._current(armed),
                done=lambda error: self._handled(armed, fired, error),
            )
        except ActorActiveElsewhereError as error:
            # The node holding the actor fires its reminders: hand this one over.
            _log.info(
                "reminder.handed_over",
                actor_id=ref.actor_id,
                reminder=record.key.name,
                to=error.node_id,
            )
            with self._lock:
                if self._armed.get(record.key) is armed:
                    self._disarm(record.key)
            try:
                self._store.release_claims(self._node, [record.key])
            except Exception as release_error:
                # The claim then runs out after the lease, and the holder takes it.
                _log.warning(
                    "reminder.release_failed",
                    actor_id=_actor_id(record.key),
                    reminder=record.key.name,
                    error=repr(release_error),
                )
        except Exception as error:
            # Activation failed (its on_start raised) or the system is closing: try again later.
            _log.warning(
                "reminder.delivery_failed",
                actor_id=ref.actor_id,
                reminder=record.key.name,
                fire_count=fired.fire_count,
                error=repr(error),
            )
            self._retry(armed)

    def _lost(self, armed: _Armed, fired: ReminderFired) -> None:
        # On the scheduler thread: the fire was never acknowledged (its activation died with it
        # in the mailbox, or the handler is very slow). Deliver it again: at-least-once.
        if not self._current(armed) or armed.record.pending_fire != fired.fire_count:
            return
        _log.warning(
            "reminder.ack_timeout",
            actor_id=_actor_id(armed.record.key),
            facet="reminder",
            reminder=fired.reminder_name,
            fire_count=fired.fire_count,
            waited_s=self._ack_timeout,
        )
        self._submit(armed._fire)

    def _handled(self, armed: _Armed, fired: ReminderFired, error: BaseException | None) -> None:
        # On the actor's thread, after its handler.
        if not self._current(armed):
            return  # replaced or unregistered meanwhile: that registration owns the row now
        if armed.watchdog is not None:
            armed.watchdog.cancel()
            armed.watchdog = None
        if error is not None:
            self._failures.add()
            _log.error(
                "reminder.handler_failed",
                actor_id=_actor_id(armed.record.key),
                facet="reminder",
                reminder=fired.reminder_name,
                fire_count=fired.fire_count,
                exc_info=error,
            )
            self._retry(armed)
            return
        self._acknowledge(armed, fired)

    def _acknowledge(self, armed: _Armed, fired: ReminderFired) -> None:
        # On the actor's thread first, then on the worker while the store is unavailable.
        if not self._current(armed):
            return
        record = armed.record
        try:
            self._store.acknowledge(
                record.key, fired.fire_count, now=self._clock.now(), scheduled_at=fired.scheduled_at
            )
        except Exception as error:
            # Handled but not acknowledged: acknowledge later, never fire again meanwhile.
            armed.attempt += 1
            delay = self._backoff(armed.attempt)
            _log.warning(
                "reminder.ack_failed",
                actor_id=_actor_id(record.key),
                reminder=record.key.name,
                fire_count=fired.fire_count,
                error=repr(error),
                retry_in_s=delay,
            )
            with self._lock:
                if self._armed.get(record.key) is armed and self._firing:
                    self._scheduler.call_later(
                        delay, lambda: self._submit(lambda: self._acknowledge(armed, fired))
                    )
            return
        armed.attempt = 0
        tardiness = self._clock.time() - fired.scheduled_at.timestamp()
        self._fires.add()
        self._tardiness.observe(tardiness)
        _log.debug(
            "reminder.fired",
            actor_id=_actor_id(record.key),
            facet="reminder",
            reminder=fired.reminder_name,
            fire_count=fired.fire_count,
            lateness_ms=round(tardiness * 1000, 3),
        )
        with self._lock:
            if self._armed.get(record.key) is not armed:
                return
            del self._armed[record.key]
            if not record.finished:
                following = record.due_at
                cleared = _replace_pending(record)
                self._arm(cleared, following.timestamp())

    def _retry(self, armed: _Armed) -> None:
        armed.attempt += 1
        delay = self._backoff(armed.attempt)
        with self._lock:
            if self._armed.get(armed.record.key) is armed:
                self._scheduler.schedule(armed, self._clock.time() + delay)

    # -- validation --------------------------------------------------------------------------------

    def _due_at(self, due: Duration | datetime, now: datetime) -> datetime:
        if isinstance(due, datetime):
            if due.tzinfo is None or due.utcoffset() is None:
                raise ValueError(
                    f"due {due!r} is a naive datetime; pass an aware one "
                    "(for example datetime(..., tzinfo=timezone.utc)) or a duration"
                )
            return due.astimezone(UTC)
        try:
            delay = parse_duration(due)
        except ValueError as error:
            raise ValueError(f"reminder due: {error}") from None
        return now + delay

    def _period(self, period: Duration | None, minimum: timedelta) -> timedelta | None:
        if period is None:
            return None
        try:
            value = parse_duration(period)
        except ValueError as error:
            raise ValueError(f"reminder period: {error}") from None
        if value <= timedelta(0) or value < minimum:
            raise ValueError(
                f"reminder period {period!r} is shorter than the minimum "
                f"{minimum.total_seconds():g}s (the facet's min_period)"
            )
        return value


def _actor_id(key: ReminderKey) -> str:
    return f"{key.actor_type}/{key.actor_key}"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _at_or_none(seconds: float) -> datetime | None:
    """The time of a next tick, or None (no next tick) past the last datetime there is."""
    try:
        return _at(seconds)
    except (ValueError, OverflowError, OSError):
        return None


def _next_tick(anchor: float, period: float, now: float, *, strictly_after: bool) -> float:
    """The first tick on the phase `anchor + k * period` at (or strictly after) `now`."""
    ticks = math.ceil((now - anchor) / period)
    when = anchor + ticks * period
    if strictly_after and when <= now:
        when += period
    return when


def _replace_pending(record: StoredReminder) -> StoredReminder:
    return replace(record, pending_fire=None, pending_scheduled_at=None)
