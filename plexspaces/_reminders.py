"""Durable reminders: the fire pipeline of an actor system (arm, batch-record, deliver,
batch-acknowledge).

Reminders live in a `ReminderStore`. The service keeps only the reminders due within a short
horizon armed in the system's scheduler, and loads later ones page by page as time reaches them,
so it never holds or scans the whole table.

A fire goes through four steps:

1. **Due.** The scheduler thread hands each reminder that came due to the fire thread's queue,
   and does nothing else, so a slow disk never delays timers.
2. **Record.** The fire thread takes whatever queued up meanwhile (up to `batch`) and records
   all of it in one transaction (`ReminderStore.record_fires`): each fire's count advanced and
   next due time written by its own compare-and-set, fenced in a cluster. A lone fire is written
   at once; under load the batches grow by themselves while the previous one is written.
3. **Deliver.** Each recorded fire goes into its actor's mailbox. An actor that is not active is
   activated on an activation thread, so a slow `on_start` holds up only that actor's fires. An
   actor has at most `max_in_flight` fires delivered and not yet handled; further due fires of
   it wait, unrecorded, until it catches up, so a flood for a slow actor does not grow memory.
4. **Acknowledge.** After the handler returns, the actor's thread queues the acknowledgement;
   the fire thread writes every acknowledgement queued meanwhile in one transaction
   (`ReminderStore.acknowledge_fires`), then arms each reminder's next tick.

Delivery is at-least-once: a fire recorded but not acknowledged (a crash, a failed handler, an
acknowledgement that never came) is delivered again with the same `fire_count`, and `max_count`
is never exceeded. No store I/O runs under a lock that senders, the scheduler or metrics take.

A handler that raises is a failed delivery: the fire thread counts it in the store (with the
error) and delivers the fire again after the reminder's `RetryPolicy` backoff. Once the policy's
`max_attempts` deliveries failed, the fire becomes a dead letter (kept in the store, in the same
transaction that clears it from the reminder) and the reminder goes on with its next tick. A
re-drive (`retry_dead_letter`, or `plexspaces reminders retry` from another process) marks the
letter in the store; a node serving its actor type takes it, delivers it once more and deletes it
when the handler returns, or puts it back with the new error.

Under a `ManualClock` the same steps run: the fires that came due at one instant are recorded as
one batch on the thread that advances time, at the end of the step, and the hand-off waits until
each was handled and acknowledged, so tests are deterministic.

Cluster concerns (claims, fencing, leases, polls, hand-over) live in `ClusterNode`.
"""

from __future__ import annotations

import builtins
import math
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast
from zoneinfo import ZoneInfo

import structlog

from ._calendar import calendar_schedule
from ._clock import current_handoff
from ._duration import Duration, positive_duration
from ._errors import ActorActiveElsewhereError
from ._messages import ReminderFired
from ._ref import VirtualActorRef
from ._registration import ReminderInfo, ReminderRegistration, info_of, new_record
from ._retry import RetryPolicy
from ._scheduler import ScheduledCall
from ._store import (
    DeadLetter,
    FireChange,
    FireFailure,
    ReminderKey,
    ReminderStore,
    StoredReminder,
    UndecodableReminder,
)
from ._store.records import bucket_of

if TYPE_CHECKING:
    from ._actor import Done
    from ._cluster import ClusterNode
    from ._system import ActorSystem

__all__ = ["ReminderService"]


_log = structlog.get_logger("plexspaces.reminders")

_ONE_MICROSECOND: Final = timedelta(microseconds=1)
_REGISTER_STRIPES: Final = 64
_FLUSH_TIMEOUT: Final = 60.0
"""Seconds a shutdown waits for the fire thread to finish what was queued before it."""
_LOAD_PAGE: Final = 1000
"""Rows a load reads at a time; each page is armed as soon as it is read."""
_MAX_TOTAL_IN_FLIGHT: Final = 20_000
"""Fires of all actors together delivered and not yet handled, at most."""
_VIEW_PAGE: Final = 1000
"""Reminders a whole-type cancel reads and deletes at a time."""
_REDRIVE_PAGE: Final = 100
"""Re-drives a node takes from the store at a time."""
_REDRIVE_BACKOFF: Final = 60
"""While no re-drive is asked for, the look for one backs off to this many poll intervals."""
_ACTIVATION_THREADS: Final = 8
"""Virtual actors activated for fires at once; each activation holds one thread while its
on_start runs, and every other fire goes on meanwhile."""


class _Unknown:
    """The store could not say (it is unavailable)."""


_UNKNOWN: Final = _Unknown()


class _Armed(ScheduledCall):
    """A reminder armed in the scheduler; its identity is the generation of its registration.

    `record` is the reminder as stored (after its fire is recorded, with the pending fire).
    `in_flight` is set while a delivered fire waits for its handler (it counts towards the
    actor's bound). Threads hand a reminder on rather than share it: the fire thread records
    and delivers it, one actor thread handles it, the fire thread acknowledges it. `record`,
    `in_flight` and `attempt` change under the service lock (or on the fire thread before the
    fire is handed on); `answered` is one attribute write by the handling thread, read by the
    watchdog.
    """

    __slots__ = ("answered", "attempt", "in_flight", "record", "service")

    def __init__(self, service: ReminderService, record: StoredReminder) -> None:
        super().__init__()
        self.service = service
        self.record = record
        self.attempt = 0
        self.in_flight = False
        # The fire_count of the last delivered fire whose handler returned (its acknowledgement
        # is queued), so the watchdog does not deliver it again.
        self.answered: int | None = None

    def run(self) -> None:
        self.service._due(self)

    def __repr__(self) -> str:
        key = self.record.key
        return f"<reminder {key.actor_type}/{key.actor_key}:{key.name} at {self.when}>"


class _Ack:
    """A handled fire waiting to be acknowledged, or (with `error`) a failed delivery waiting
    to be counted. `settled` turns true once that was attempted; `written` is set then too (only
    for a fire delivered inside `ManualClock.advance`, whose hand-off waits for it)."""

    __slots__ = ("armed", "error", "fired", "settled", "written")

    def __init__(
        self,
        armed: _Armed,
        fired: ReminderFired,
        written: threading.Event | None,
        error: BaseException | None = None,
    ):
        self.armed = armed
        self.fired = fired
        self.settled = False
        self.written = written
        self.error = error


class _Redrives:
    """Re-drives of dead letters on this node: those it delivers right now (taken, not yet
    answered, by dead letter id), the timer of its next look for more, and how long after the
    last look that comes. Changed under the service lock."""

    __slots__ = ("delay", "taken", "timer")

    def __init__(self, delay: float) -> None:
        self.taken: set[int] = set()
        self.timer: ScheduledCall | None = None
        self.delay = delay


class _Stop:
    """Tells the fire thread to end."""


_STOP: Final = _Stop()


class ReminderService:
    """Stores, arms and fires the durable reminders of one actor system.

    Created by the system on first use (`ActorSystem.reminders`); `ReminderFacet` is the
    per-actor view of it.

    Args:
        system: the actor system whose virtual actors the reminders belong to.
        store: where reminders live.
        node: this node among the nodes sharing the store (claims, fencing, leases).
        horizon: reminders due within this much time are kept armed in the scheduler.
        batch: the most fires recorded (or acknowledged) in one transaction. Larger batches
            make fewer transactions and deliver more fires per actor wake-up under a backlog;
            a lone fire is still written at once.
        max_in_flight: the most fires of one actor that are delivered but not yet handled;
            more due fires of that actor wait, unrecorded, until it catches up.
        ack_timeout: a fire not acknowledged this long after delivery is delivered again.
        retry_delay, max_retry_delay: the backoff for work that failed on the store, and for a
            handler that raised when its reminder has no `RetryPolicy` of its own.
        dead_letter_poll: while the store holds dead letters, how often to look for re-drives
            asked for by another process (`plexspaces reminders retry`), backing off to 60 times
            that while nobody asks.
    """

    def __init__(
        self,
        system: ActorSystem,
        store: ReminderStore,
        node: ClusterNode,
        *,
        horizon: Duration = "30s",
        batch: int = 4000,
        max_in_flight: int = 1000,
        ack_timeout: Duration = "60s",
        retry_delay: Duration = "1s",
        max_retry_delay: Duration = "60s",
        dead_letter_poll: Duration = "1s",
    ) -> None:
        self._system = system
        self._store = store
        self._node = node
        self._clock = system.clock
        self._scheduler = system.scheduler
        self._horizon = positive_duration(horizon).total_seconds()
        self._batch = _positive_int(batch, "batch")
        self._max_in_flight = _positive_int(max_in_flight, "max_in_flight")
        self._ack_timeout = positive_duration(ack_timeout).total_seconds()
        self._retry_delay = positive_duration(retry_delay).total_seconds()
        self._max_retry_delay = positive_duration(max_retry_delay).total_seconds()
        self._default_retry = RetryPolicy(None, retry_delay, max_retry_delay)
        self._dead_letter_poll = positive_duration(dead_letter_poll).total_seconds()
        self._redrives = _Redrives(self._dead_letter_poll)
        # Guards the armed reminders, the in-flight counts and the activation queues. Never held
        # while the store is used: senders, the scheduler and metrics take it.
        self._lock = threading.RLock()
        self._armed: dict[ReminderKey, _Armed] = {}
        self._in_flight: dict[str, int] = {}
        self._parked: dict[str, deque[_Armed]] = {}
        # All actors together have at most this many fires in flight (a node with many actors
        # would otherwise hold the per-actor bound times the actors); beyond it, due fires wait
        # here in due order, unrecorded.
        self._max_total_in_flight = _MAX_TOTAL_IN_FLIGHT
        self._total_in_flight = 0
        self._parked_any: deque[_Armed] = deque()
        self._activating: dict[str, list[tuple[_Armed, ReminderFired]]] = {}
        # Delivered fires awaiting their handler, in delivery order, with the time by which it
        # must have answered; one scheduler call watches the earliest of them (one timer, not
        # one per fire: arming and cancelling a timer per fire cost more than recording it).
        # Its own lock, held only for a dict operation, so an actor thread answering a fire
        # never waits for the fire thread's batch under `_lock` (taken after `_lock`, never
        # before it).
        self._deadlines: OrderedDict[_Armed, tuple[float, ReminderFired]] = OrderedDict()
        self._deadlines_lock = threading.Lock()
        self._watch: ScheduledCall | None = None
        self._served: set[str] = set()
        self._loader: ScheduledCall | None = None
        self._load_failures = 0
        # One lock per stripe of actors orders a registration's store write and its arming
        # against another registration of the same actor, without holding `_lock` over I/O.
        self._register_locks = [threading.Lock() for _ in range(_REGISTER_STRIPES)]
        self._fires = system._metrics.counter("reminder.fires")
        self._failures = system._metrics.counter("reminder.failures")
        self._tardiness = system._metrics.histogram("reminder.tardiness")
        self._firing = True  # False once shutdown began: no new fires, acknowledgements still land
        self._closed = False
        # The fire pipeline: due reminders and handled fires, served by one thread in batches.
        # Everything the fire thread is asked to do, in order: reminders that came due, handled
        # fires to acknowledge, events to set once what came before is done, and the stop. A
        # SimpleQueue takes a put without a Python-level lock, so hundreds of actor threads
        # queueing acknowledgements never queue up behind each other.
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._drained = False  # the fire thread has ended: no acknowledgement is written now
        # Set when acknowledgements are settled (written, or given up on for now): an actor
        # waits for its own before its next message (see `_await_acks`).
        self._settled = threading.Condition(threading.Lock())
        self._settled_all = False
        self._inline_due: list[_Armed] = []
        self._firer = threading.Thread(
            target=self._serve_fires, name=f"{system.name}-reminders", daemon=True
        )
        # Loads, polls and lease renewals: long store work that must not hold up fires.
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._maintainer = threading.Thread(
            target=_serve_queue,
            args=(self._work, "reminder.work_failed"),
            name=f"{system.name}-reminder-loads",
            daemon=True,
        )
        # Membership, bucket and lease renewals of a cluster node, apart from the long work.
        self._leases: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._leaser = threading.Thread(
            target=_serve_queue,
            args=(self._leases, "reminder.lease_work_failed"),
            name=f"{system.name}-reminder-leases",
            daemon=True,
        )
        # Activating a virtual actor for a fire runs its on_start: never on the fire thread.
        self._activator = ThreadPoolExecutor(
            max_workers=_ACTIVATION_THREADS, thread_name_prefix=f"{system.name}-activations"
        )
        # Joined first: a node refused by the cluster (another bucket count) leaves no thread.
        node.start(
            poll=self._poll,
            run=self._maintain,
            lost=self._buckets_lost,
            actor_left=self._actor_left,
            renew_run=self._renew,
        )
        self._firer.start()
        self._maintainer.start()
        if node.enabled:
            self._leaser.start()

    # -- registration (any thread) -----------------------------------------------------------------

    def register(
        self,
        actor_type: str,
        actor_key: str,
        name: str,
        *,
        due: Duration | datetime | None = None,
        period: Duration | None = None,
        max_count: int | None = None,
        payload: Any = None,
        missed: str = "once",
        min_period: timedelta = timedelta(seconds=1),
        cron: str | None = None,
        tz: str | ZoneInfo | None = None,
        expires_at: datetime | None = None,
        ttl: Duration | None = None,
        overwrite: bool = True,
        retry: RetryPolicy | None = None,
    ) -> ReminderInfo:
        """Store a reminder (replacing one of the same name, unless `overwrite` is False) and
        arm it; durable on return."""
        registration = ReminderRegistration(
            name,
            due,
            period,
            max_count,
            payload,
            missed,
            cron=cron,
            tz=tz,
            expires_at=expires_at,
            ttl=ttl,
            overwrite=overwrite,
            retry=retry,
        )
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
        create_only: set[ReminderKey] = set()
        for registration in registrations:
            record = new_record(actor_type, actor_key, registration, now, min_period)
            if record.key.name in names:
                raise ValueError(
                    f"reminder {record.key.name!r} is registered twice in one batch; each name "
                    "once per call"
                )
            names.add(record.key.name)
            records.append(record)
            if not registration.overwrite:
                create_only.add(record.key)
        horizon = self._clock.time() + self._horizon
        records = self._node.claim_registrations(records, horizon)
        with self._registering(actor_type, actor_key):
            # Written, then armed, before another registration of this actor writes: two
            # registrations of one name racing each other leave memory and store holding the
            # same one.
            if len(records) == 1:
                self._store.upsert(records[0], create_only=bool(create_only))
            elif records:
                self._store.upsert_many(records, create_only=create_only)
            with self._lock:
                for record in records:
                    self._disarm(record.key)
                    due = record.due_at.timestamp()
                    if due <= horizon:
                        if not self._node.enabled or record.claimed_by == self._node.node_id:
                            self._arm(record, due)
                        # Else another node fires it (it holds the bucket): its poll claims it.
                    else:
                        # Loaded in time by a batch load, like every reminder beyond the horizon.
                        self._schedule_loader(due - self._horizon / 2)
        return [info_of(record) for record in records]

    def _registering(self, actor_type: str, actor_key: str) -> threading.Lock:
        return self._register_locks[hash((actor_type, actor_key)) % _REGISTER_STRIPES]

    def unregister(self, actor_type: str, actor_key: str, name: str) -> bool:
        """Delete a reminder; a fire of it still in the mailbox is discarded. If the store
        cannot be reached the error is raised and the reminder stays armed and stored."""
        key = ReminderKey(actor_type, actor_key, name)
        with self._registering(actor_type, actor_key):
            deleted = self._store.delete(key)
            with self._lock:
                self._disarm(key)
        return deleted

    def get(self, actor_type: str, actor_key: str, name: str) -> ReminderInfo | None:
        record = self._store.get(ReminderKey(actor_type, actor_key, name))
        return None if record is None else info_of(record)

    def list_actor(self, actor_type: str, actor_key: str) -> list[ReminderInfo]:
        return [info_of(record) for record in self._store.list_actor(actor_type, actor_key)]

    # -- whole-type views (any thread; no actor is activated) --------------------------------------

    def list(
        self,
        actor_type: str | None = None,
        *,
        name_prefix: str | None = None,
        limit: int = 100,
        after: ReminderInfo | None = None,
    ) -> builtins.list[ReminderInfo]:
        """One page of stored reminders, across actors, in (actor type, actor key, name) order:
        of `actor_type` when given, whose name starts with `name_prefix` when given. Pass the
        last one of a page as `after` for the next page; a page shorter than `limit` is the
        last. Reads the store only: no actor is activated.

        Raises:
            ValueError: `limit` is not an int >= 1, a filter is not a non-empty str, or `after`
                is not a `ReminderInfo` of this listing.
        """
        records = self._store.find(
            limit, actor_type=actor_type, name_prefix=name_prefix, after=_cursor(after)
        )
        return [info_of(record) for record in records]

    def count(self, actor_type: str | None = None, *, name_prefix: str | None = None) -> int:
        """How many reminders `list` would page through (rows that cannot be decoded
        included): one query."""
        return self._store.count_matching(actor_type=actor_type, name_prefix=name_prefix)

    def cancel(self, actor_type: str | None = None, *, name_prefix: str | None = None) -> int:
        """Delete every reminder of `actor_type` and/or whose name starts with `name_prefix`
        (at least one of the two), durably, page by page, and disarm them on this node.
        Returns how many were deleted. Another node that has one armed finds its row gone at
        the fire's compare-and-set, and drops it.

        Raises:
            ValueError: neither filter given, or a filter is not a non-empty str.
        """
        if actor_type is None and name_prefix is None:
            raise ValueError(
                "cancel needs actor_type or name_prefix (or both); refusing to cancel every "
                "reminder of every actor type"
            )
        deleted = 0
        after: ReminderKey | None = None
        while True:
            # Keys only matter here, but `find` skips rows it cannot decode: those are deleted
            # by key below too, as an explicit cancel of everything matching.
            page = self._store.find(
                _VIEW_PAGE, actor_type=actor_type, name_prefix=name_prefix, after=after
            )
            keys = [record.key for record in page]
            if keys:
                deleted += self._store.delete_many(keys)
                with self._lock:
                    for key in keys:
                        self._disarm(key)
            if len(page) < _VIEW_PAGE:
                break
            after = keys[-1]
        _log.info(
            "reminder.cancelled",
            actor_type=actor_type,
            name_prefix=name_prefix,
            reminders=deleted,
        )
        return deleted

    # -- dead letters ------------------------------------------------------------------------------

    def dead_letters(
        self,
        actor_type: str | None = None,
        *,
        actor_key: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: DeadLetter | int | None = None,
    ) -> builtins.list[DeadLetter]:
        """One page of dead letters (fires whose handler failed as often as their
        `RetryPolicy` allows), oldest first, of the actor type, actor key and reminder name
        given. Pass the last one of a page (or its id) as `after` for the next page.

        Raises:
            ValueError: `limit` is not an int >= 1, or a filter is not a non-empty str.
        """
        last = after.id if isinstance(after, DeadLetter) else after
        return self._store.dead_letters(
            limit, after=last, actor_type=actor_type, actor_key=actor_key, name=name
        )

    def retry_dead_letter(self, letter: DeadLetter | int) -> bool:
        """Deliver the dead letter `letter` (or its id) once more, with the same `fire_count`:
        the letter is deleted when the handler returns, and stays a dead letter (one attempt
        more, the new error) when it raises. The request is stored first, so it survives a
        crash. Returns False if there is no such letter.

        This node delivers it now when it serves the actor type; otherwise a node that does
        takes it at its next look (while dead letters exist, every `dead_letter_poll`, backing
        off to 60 of them while nobody asks).
        """
        letter_id = letter.id if isinstance(letter, DeadLetter) else letter
        found = self._store.request_retry([letter_id], now=self._clock.now()) > 0
        if found:
            self._redrive()
        return found

    def retry_dead_letters(
        self,
        actor_type: str | None = None,
        *,
        actor_key: str | None = None,
        name: str | None = None,
    ) -> int:
        """`retry_dead_letter` for every dead letter of the actor type, actor key and reminder
        name given (all of them when none is); returns how many were asked for."""
        asked = 0
        after: int | None = None
        while True:
            page = self._store.dead_letters(
                _VIEW_PAGE, after=after, actor_type=actor_type, actor_key=actor_key, name=name
            )
            if page:
                ids = [letter.id for letter in page]
                asked += self._store.request_retry(ids, now=self._clock.now())
                after = ids[-1]
            if len(page) < _VIEW_PAGE:
                break
        if asked:
            self._redrive()
        return asked

    def gauges(self) -> dict[str, float]:
        """`reminders.armed` (in the scheduler), `reminders.in_flight` (delivered, not yet
        handled), `reminders.waiting` (due, held back while their actor has `max_in_flight`
        fires to handle) and `reminders.stored` (rows in the store)."""
        with self._lock:
            armed = float(len(self._armed))
            in_flight = float(self._total_in_flight)
            waiting = float(
                sum(len(parked) for parked in self._parked.values()) + len(self._parked_any)
            )
            closed = self._closed
        gauges = {
            "reminders.armed": armed,
            "reminders.in_flight": in_flight,
            "reminders.waiting": waiting,
        }
        if not closed:
            try:
                gauges["reminders.stored"] = float(self._store.count())
            except Exception as error:
                _log.warning("reminder.count_failed", error=repr(error))
        return gauges

    def errors(self) -> builtins.list[UndecodableReminder]:
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
                return  # the threads are gone; nothing can be in flight
            self._firing = False
            for armed in self._armed.values():
                armed.cancel()
            with self._deadlines_lock:
                self._deadlines.clear()
                if self._watch is not None:
                    self._watch.cancel()
                    self._watch = None
            if self._loader is not None:
                self._loader.cancel()
            if self._redrives.timer is not None:
                self._redrives.timer.cancel()
                self._redrives.timer = None
        self._node.stop()
        # Wait for the batch the fire thread may be delivering right now.
        self._flush()

    def _flush(self) -> None:
        """Wait until the fire thread has done everything queued so far: at most as long as a
        store call may wait for the database, so a shutdown never hangs on it (what was not
        written is delivered again after a restart)."""
        if self._firer is not threading.current_thread() and self._firer.is_alive():
            done = threading.Event()
            self._inbox.put(done)
            if not done.wait(_FLUSH_TIMEOUT):
                _log.warning("reminder.flush_timeout", waited_s=_FLUSH_TIMEOUT)

    def close(self) -> None:
        """Stop the threads, after writing the acknowledgements already queued, and hand this
        node's leases over. Fires recorded but not acknowledged are delivered again after a
        restart. The store itself belongs to the system."""
        self.stop_firing()
        # The handlers that ran before the actors stopped queued their acknowledgements: write
        # them now, so a clean shutdown leaves no fire to deliver again.
        self._flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._armed.clear()
            self._parked.clear()
            self._parked_any.clear()
        self._inbox.put(_STOP)
        self._work.put(None)
        self._leases.put(None)
        current = threading.current_thread()
        for thread in (self._firer, self._maintainer, self._leaser):
            if thread is not current and thread.ident is not None:
                thread.join()
        self._activator.shutdown(wait=True)
        self._node.release_all()

    # -- loading (maintenance thread) --------------------------------------------------------------

    def _maintain(self, work: Callable[[], None]) -> None:
        """Run store work that may take long (loads, polls) on the maintenance thread; inline
        inside `ManualClock.advance`, so it is done when the step ends."""
        _hand_to(self._work, work)

    def _renew(self, work: Callable[[], None]) -> None:
        """Run lease work (membership, buckets, renewals) on the lease thread, which nothing
        else uses, so it is never late behind a long poll; inline inside `ManualClock.advance`."""
        _hand_to(self._leases, work)

    def _schedule_loader(self, when: float) -> None:
        if not self._firing:
            return
        when = max(when, self._clock.time())
        if self._loader is not None:
            if self._loader.when <= when and not self._loader.cancelled:
                return
            self._loader.cancel()
        self._loader = self._scheduler.call_at(when, lambda: self._maintain(self._load))

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
            self._look_for_redrives()
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
        """Arm every reminder due within the horizon (claimed for this node in a cluster), page
        by page in due order, so the first page fires while later ones load; False if firing
        stopped meanwhile."""
        until_at = _at(now + self._horizon)
        after: tuple[datetime, ReminderKey] | None = None
        while True:
            if self._node.enabled:
                with self._lock:
                    served = sorted(self._served)
                page = self._node.claim_due(
                    now=now,
                    until=until_at,
                    limit=_LOAD_PAGE,
                    after=after,
                    actor_types=served,
                    include_own=include_own,
                )
                if page and not include_own:  # a poll claims only what no live node holds
                    _log.info("reminder.claimed", node_id=self._node.node_id, reminders=len(page))
            else:
                page = self._store.due(until_at, _LOAD_PAGE, after=after)
            with self._lock:
                if not self._firing:
                    return False
                for record in page:
                    if record.key.actor_type in self._served and record.key not in self._armed:
                        self._arm_record(record)
            if len(page) < _LOAD_PAGE:
                return True
            after = page[-1].position

    def _look_for_redrives(self) -> None:
        """Start looking for re-drives if the store holds dead letters (written by this node
        before a restart, or by another node) and nobody looks yet."""
        with self._lock:
            if self._redrives.timer is not None:
                return
        if self._store.dead_letters(1):
            self._poll_redrives()

    def _poll(self) -> None:
        # Reminders nobody holds: registered on another node, released, or left by a node whose
        # lease ran out. Own claims are armed already (and reconciled by every horizon load).
        try:
            self._load_due(self._clock.time(), include_own=False)
            self._look_for_redrives()
        except Exception as error:
            _log.warning("reminder.poll_failed", node_id=self._node.node_id, error=repr(error))

    def _buckets_lost(self, buckets: frozenset[int]) -> None:
        """This node gave up (or lost) `buckets`: stop firing their reminders before their
        claims are released. A fire already recorded stays pending in the store, and the
        bucket's next holder delivers it again (at-least-once)."""
        with self._lock:
            gone = [
                key for key in self._armed if bucket_of(key.actor_type, key.actor_key) in buckets
            ]
            for key in gone:
                self._disarm(key)
        if gone:
            _log.info("reminder.buckets_lost", buckets=len(buckets), reminders=len(gone))

    def _actor_left(self, actor_type: str, actor_key: str) -> None:
        """An actor this node held, in a bucket of another node, deactivated: stop firing its
        reminders and release their claims, so the bucket's holder fires them from its next
        poll. Runs on the deactivating thread, which may wait for the store."""
        if not self._firing:
            return  # shutting down: every claim of this node is released at once
        try:
            keys = [record.key for record in self._store.list_actor(actor_type, actor_key)]
        except Exception as error:
            # They stay armed here, and fire here (their claims stay this node's): nothing lost.
            _log.warning(
                "reminder.reload_failed", actor_id=f"{actor_type}/{actor_key}", error=repr(error)
            )
            return
        with self._lock:
            for key in keys:
                self._disarm(key)
        self._node.release_claims(keys)

    def claim_activation(self, ref: VirtualActorRef) -> str | None:
        """Take the cluster-wide activation lease of a virtual actor (see
        `ClusterNode.claim_activation`)."""
        return self._node.claim_activation(ref)

    def _backoff(self, attempt: int) -> float:
        return float(min(self._max_retry_delay, self._retry_delay * 2 ** (attempt - 1)))

    # -- arming (under the lock) -------------------------------------------------------------------

    def _arm_record(self, record: StoredReminder) -> None:
        if record.pending_fire is not None:
            # Recorded before a crash (or a failed handler) and never acknowledged: deliver it
            # again, with the same fire_count, at once (its failures so far stay counted).
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
            self._answered(armed)
            self._take_off(armed)

    def _current(self, armed: _Armed) -> bool:
        # Runs on an actor's thread before every fire it handles: one dict read, atomic on its
        # own, needs no lock (a change racing it is caught again when the fire is acknowledged).
        return not self._closed and self._armed.get(armed.record.key) is armed

    def _take_off(self, armed: _Armed) -> None:
        """A delivered fire of `armed` is done (handled, lost or failed); under the lock."""
        if not armed.in_flight:
            return
        armed.in_flight = False
        self._total_in_flight -= 1
        actor = _actor_id(armed.record.key)
        left = self._in_flight.get(actor, 1) - 1
        if left > 0:
            self._in_flight[actor] = left
        else:
            self._in_flight.pop(actor, None)
        # One fire fewer in flight: the next one that waited for that comes due now, first one
        # of this actor, else one that waited for the node.
        waiting: _Armed | None = None
        parked = self._parked.get(actor)
        if parked:
            waiting = parked.popleft()
            if not parked:
                del self._parked[actor]
        elif self._parked_any:
            waiting = self._parked_any.popleft()
        if waiting is not None and self._armed.get(waiting.record.key) is waiting and self._firing:
            self._scheduler.schedule(waiting, self._clock.time())

    # -- the fire pipeline -------------------------------------------------------------------------

    def _due(self, armed: _Armed) -> None:
        """A reminder came due (scheduler thread): queue it for the next batch. Inside
        `ManualClock.advance` the batch runs on the advancing thread at the end of the step,
        through the same code, so the fires are in the mailboxes when the step ends."""
        handoff = current_handoff()
        if handoff is not None:
            self._inline_due.append(armed)
            handoff.defer(self._fire_inline)
            return
        self._inbox.put(armed)

    def _fire_inline(self) -> None:
        while self._inline_due:
            due = self._inline_due
            self._inline_due = due[self._batch :]
            self._fire_batch(due[: self._batch])

    def _serve_fires(self) -> None:
        """The fire thread: acknowledge what was handled and record and deliver what came due,
        each in batches of whatever queued up meanwhile (up to `batch`). A lone fire is written
        at once; under load the batches grow by themselves while the last one is written."""
        inbox = self._inbox
        stopping = False
        while not stopping:
            items = [inbox.get()]
            while len(items) < 2 * self._batch:
                try:
                    items.append(inbox.get_nowait())
                except queue.Empty:
                    break
            acks: builtins.list[_Ack] = []
            due: builtins.list[_Armed] = []
            done: builtins.list[threading.Event] = []
            for item in items:
                if type(item) is _Armed:
                    due.append(item)
                elif type(item) is _Ack:
                    acks.append(item)
                elif item is _STOP:
                    stopping = True
                else:
                    done.append(cast("threading.Event", item))
            failed = [ack for ack in acks if ack.error is not None]
            if failed:
                acks = [ack for ack in acks if ack.error is None]
            try:
                if failed:
                    self._fail(failed)
                for start in range(0, len(acks), self._batch):
                    self._acknowledge(acks[start : start + self._batch])
                for start in range(0, len(due), self._batch):
                    self._fire_batch(due[start : start + self._batch])
            except Exception:
                _log.exception("reminder.work_failed")
            finally:
                for event in done:
                    event.set()
        # Closed: nothing more is written. Release whoever still waits for the thread.
        self._drained = True
        while True:
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                break
            if type(item) is _Ack:
                if item.written is not None:
                    item.written.set()
            elif isinstance(item, threading.Event):
                item.set()
        with self._settled:
            self._settled_all = True
            self._settled.notify_all()

    def _fire_batch(self, batch: builtins.list[_Armed]) -> None:
        """Record the fires of `batch` in one transaction, then deliver them."""
        if not self._firing:
            return
        now = self._clock.time()
        changes, recording, redeliver = self._admit(batch, now)
        results = self._record(changes, recording, now) if changes else None
        if results is not None:
            settled = zip(recording, changes, results, strict=True)
            # Delivered actor by actor: each actor's thread then wakes once for all of its fires
            # in the batch instead of once per fire (fires due together come in key order, which
            # interleaves actors). Stable, so an actor's own fires keep their due order.
            for armed, change, result in sorted(settled, key=_by_actor):
                self._settle(armed, change, result)
        for armed in redeliver:
            with self._lock:
                if armed.in_flight:
                    continue  # its earlier delivery is still being handled
                self._fly(armed)
            self._deliver(armed)

    def _admit(
        self, batch: builtins.list[_Armed], now: float
    ) -> tuple[builtins.list[FireChange], builtins.list[_Armed], builtins.list[_Armed]]:
        """Sort a batch of due reminders (under the lock): the changes to record and their
        reminders, and the fires recorded already, to deliver again as they are. Reminders
        replaced meanwhile are dropped; those of an actor at its in-flight bound wait."""
        changes: builtins.list[FireChange] = []
        recording: builtins.list[_Armed] = []
        redeliver: builtins.list[_Armed] = []
        with self._lock:
            for armed in batch:
                if self._closed or self._armed.get(armed.record.key) is not armed:
                    continue  # replaced, unregistered or handed over since it came due
                if armed.record.pending_fire is not None:
                    redeliver.append(armed)
                    continue
                actor = _actor_id(armed.record.key)
                if self._in_flight.get(actor, 0) >= self._max_in_flight:
                    # The actor has enough to handle: record nothing more for it until it
                    # catches up (bounded memory under a flood), then this comes due again.
                    self._parked.setdefault(actor, deque()).append(armed)
                    continue
                if self._total_in_flight >= self._max_total_in_flight:
                    self._parked_any.append(armed)  # the same, for the node as a whole
                    continue
                try:
                    change = self._plan(armed, now)
                except (ValueError, OverflowError) as error:
                    # A tick past the last datetime there is: nothing can be recorded for it.
                    self._record_failed([armed], error)
                    continue
                changes.append(change)
                recording.append(armed)
                self._fly(armed)  # counted from here, so a batch cannot overshoot the bound
        return changes, recording, redeliver

    def _fly(self, armed: _Armed) -> None:
        actor = _actor_id(armed.record.key)
        self._in_flight[actor] = self._in_flight.get(actor, 0) + 1
        self._total_in_flight += 1
        armed.in_flight = True

    def _record(
        self, changes: builtins.list[FireChange], recording: builtins.list[_Armed], now: float
    ) -> builtins.list[StoredReminder | None] | None:
        """Record the batch in one transaction; what the store holds afterwards, per change.
        None when the store could not be reached: nothing was recorded, and each fire is
        tried again after a backoff."""
        try:
            return self._store.record_fires(changes, now=_at(now), **self._node.fence(now))
        except Exception as error:
            self._record_failed(recording, error)
            return None

    def _record_failed(self, failed: builtins.list[_Armed], error: Exception) -> None:
        first = failed[0]
        _log.warning(
            "reminder.record_failed",
            actor_id=_actor_id(first.record.key),
            reminder=first.record.key.name,
            reminders=len(failed),
            error=repr(error),
            attempt=first.attempt + 1,
        )
        for armed in failed:
            with self._lock:
                self._take_off(armed)
            self._retry(armed)

    def _settle(self, armed: _Armed, change: FireChange, result: StoredReminder | None) -> None:
        """Deliver a recorded fire, or follow the store where the change did not apply."""
        if result is None:
            with self._lock:
                self._take_off(armed)
            # Changed under us (re-registered, deleted, or fired elsewhere): follow the store.
            self._rearm_from_store(armed, self._store_get(armed.record.key))
        elif change.scheduled_at is None and change.next_due_at is None:
            # Expired, and deleted: like a reminder whose last fire was acknowledged.
            with self._lock:
                self._take_off(armed)
                if self._armed.get(armed.record.key) is armed:
                    del self._armed[armed.record.key]
            _log.info(
                "reminder.expired",
                actor_id=_actor_id(result.key),
                facet="reminder",
                reminder=result.key.name,
                fire_count=result.fire_count,
                expires_at=None if result.expires_at is None else result.expires_at.isoformat(),
            )
        elif change.scheduled_at is None:
            # Missed ticks skipped: the reminder goes on at its next tick, nothing delivered.
            with self._lock:
                self._take_off(armed)
                if self._armed.get(armed.record.key) is armed:
                    del self._armed[armed.record.key]
                    self._arm_record(result)
        else:
            armed.record = result
            self._deliver(armed)

    def _store_get(self, key: ReminderKey) -> StoredReminder | _Unknown | None:
        try:
            return self._store.get(key)
        except Exception as error:
            _log.warning("reminder.reload_failed", reminder=str(key), error=repr(error))
            return _UNKNOWN

    def _plan(self, armed: _Armed, now: float) -> FireChange:
        """The change that fires `armed` now: record the fire due now (one standing for every
        missed tick under "once"), or under "skip" move a late reminder to its next tick; for
        an expiring reminder past its expiry, delete it."""
        record = armed.record
        if record.cron is not None or record.expires_at is not None:
            # Calendar schedules and expiry: plain periodic reminders never come this way, so
            # their fires cost nothing more.
            return _plan_calendar(record, now)
        scheduled = record.due_at.timestamp()
        period = record.period.total_seconds() if record.period is not None else None
        late_by_more_than_a_period = period is not None and now - scheduled > period
        anchor = record.anchor_at.timestamp()
        if late_by_more_than_a_period and record.missed == "skip":
            assert period is not None
            tick = _at_or_none(_next_tick(anchor, period, now, strictly_after=False))
            if tick is not None:
                return FireChange(record, scheduled_at=None, next_due_at=tick)
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
        return FireChange(record, scheduled_at=scheduled_at, next_due_at=next_due_at)

    def _rearm_from_store(self, armed: _Armed, record: StoredReminder | _Unknown | None) -> None:
        if isinstance(record, _Unknown):
            self._retry(armed)  # the store is unavailable: look again later
            return
        if record is not None and self._node.held_elsewhere(record):
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
        # Its type is served, so registered: no need to look it up again.
        ref = VirtualActorRef(self._system, record.key.actor_type, record.key.actor_key)
        self._watch_for(armed, fired)
        handoff = current_handoff() is not None
        try:
            delivered = self._system._deliver_if_active(
                ref, fired, guard=lambda: self._current(armed), done=self._done(armed, fired)
            )
        except Exception as error:
            self._delivery_failed(armed, fired, ref, error)
            return
        if delivered:
            return
        router = self._system._router
        if router is not None and not handoff:
            holder = router.holder_elsewhere(ref, look_up=False)
            if holder is not None:
                # Known to be active on another node: no activation attempt here.
                self._route_fire(armed, fired, ref, holder)
                return
        if handoff:
            # Inside ManualClock.advance: activate here, so the fire is in the mailbox when the
            # step ends.
            self._activate_and_deliver(armed, fired, ref)
            return
        # The actor is not active (or is activating or closing): activate it on an activation
        # thread, so a slow on_start holds up only this actor's fires. Fires for a key whose
        # activation is under way queue behind it, in order.
        with self._lock:
            waiting = self._activating.get(ref.actor_id)
            if waiting is not None:
                waiting.append((armed, fired))
                return
            self._activating[ref.actor_id] = [(armed, fired)]
        try:
            self._activator.submit(self._activate_queued, ref)
        except RuntimeError as error:  # the pool is shut down: the system is closing
            with self._lock:
                queued = self._activating.pop(ref.actor_id, [])
            for queued_armed, queued_fired in queued:
                self._delivery_failed(queued_armed, queued_fired, ref, error)

    def _activate_queued(self, ref: VirtualActorRef) -> None:
        """On an activation thread: deliver every fire queued for `ref`, activating it first."""
        while True:
            with self._lock:
                queued = self._activating.get(ref.actor_id)
                if not queued:
                    self._activating.pop(ref.actor_id, None)
                    return
                self._activating[ref.actor_id] = []
            for armed, fired in queued:
                self._activate_and_deliver(armed, fired, ref)

    def _activate_and_deliver(
        self, armed: _Armed, fired: ReminderFired, ref: VirtualActorRef
    ) -> None:
        router = self._system._router
        if router is not None:
            try:
                holder = router.holder_elsewhere(ref, look_up=True)
            except Exception as error:
                self._delivery_failed(armed, fired, ref, error)
                return
            if holder is not None:
                self._route_fire(armed, fired, ref, holder)
                return
        try:
            self._system._deliver_virtual(
                ref, fired, guard=lambda: self._current(armed), done=self._done(armed, fired)
            )
        except Exception as error:
            self._delivery_failed(armed, fired, ref, error)

    def _delivery_failed(
        self, armed: _Armed, fired: ReminderFired, ref: VirtualActorRef, error: Exception
    ) -> None:
        if isinstance(error, ActorActiveElsewhereError) and self._node.route_remote is not None:
            self._route_fire(armed, fired, ref, error.node_id)
            return
        self._answered(armed)  # nothing to wait for: it is retried or handed over below
        with self._lock:
            self._take_off(armed)
        if isinstance(error, ActorActiveElsewhereError):
            # The node holding the actor fires its reminders: hand this one over.
            with self._lock:
                if self._armed.get(armed.record.key) is armed:
                    self._disarm(armed.record.key)
            self._node.hand_over(armed.record.key, error.node_id)
            return
        # Activation failed (its on_start raised) or the system is closing: try again later.
        _log.warning(
            "reminder.delivery_failed",
            actor_id=ref.actor_id,
            reminder=armed.record.key.name,
            fire_count=fired.fire_count,
            error=repr(error),
        )
        self._retry(armed)

    def _route_fire(
        self, armed: _Armed, fired: ReminderFired, ref: VirtualActorRef, holder: str
    ) -> None:
        """Deliver a fire to its actor on node `holder` through the transport. The handler's
        outcome comes back on the transport's thread, which must not wait; a fire that does not
        get there is retried (a fresh delivery finds where the actor is by then)."""
        route = self._node.route_remote
        assert route is not None
        try:
            route(
                ref,
                fired,
                holder,
                lambda outcome: self._handled(armed, fired, outcome, False),
                lambda why: self._delivery_failed(armed, fired, ref, why),
            )
        except Exception as error:  # not sent at all (the transport is closed or refuses it)
            self._answered(armed)
            with self._lock:
                self._take_off(armed)
            _log.warning(
                "reminder.delivery_failed",
                actor_id=ref.actor_id,
                reminder=armed.record.key.name,
                fire_count=fired.fire_count,
                error=repr(error),
            )
            self._retry(armed)

    def _done(self, armed: _Armed, fired: ReminderFired) -> Done:
        # A fire delivered inside ManualClock.advance is acknowledged before its hand-off is
        # released, so the next tick is armed before time moves on.
        wait = current_handoff() is not None
        return lambda error: self._handled(armed, fired, error, wait)

    def _watch_for(self, armed: _Armed, fired: ReminderFired) -> None:
        """Expect an answer to the delivered `fired` within the acknowledgement timeout."""
        deadline = self._clock.time() + self._ack_timeout
        armed.answered = None
        with self._deadlines_lock:
            self._deadlines.pop(armed, None)
            self._deadlines[armed] = (deadline, fired)
            if self._watch is None and self._firing:
                self._watch = self._scheduler.call_at(deadline, self._sweep)

    def _answered(self, armed: _Armed) -> None:
        """The handler answered (or the reminder went away): stop waiting for it."""
        with self._deadlines_lock:
            self._deadlines.pop(armed, None)

    def _sweep(self) -> None:
        # On the scheduler thread, at the earliest deadline: every fire that got no answer in
        # time (its activation died with it in the mailbox, or the handler is very slow) is
        # delivered again: at-least-once.
        lost: builtins.list[tuple[_Armed, ReminderFired]] = []
        with self._deadlines_lock:
            self._watch = None
            now = self._clock.time()
            while self._deadlines:
                armed = next(iter(self._deadlines))
                deadline, fired = self._deadlines[armed]
                if deadline > now:
                    if self._firing:
                        self._watch = self._scheduler.call_at(deadline, self._sweep)
                    break
                del self._deadlines[armed]
                if armed.answered != fired.fire_count:
                    lost.append((armed, fired))
        for armed, fired in lost:
            self._lost(armed, fired)

    def _lost(self, armed: _Armed, fired: ReminderFired) -> None:
        with self._lock:
            if (
                self._closed
                or self._armed.get(armed.record.key) is not armed
                or armed.record.pending_fire != fired.fire_count
            ):
                return
            self._take_off(armed)
        _log.warning(
            "reminder.ack_timeout",
            actor_id=_actor_id(armed.record.key),
            facet="reminder",
            reminder=fired.reminder_name,
            fire_count=fired.fire_count,
            waited_s=self._ack_timeout,
        )
        self._due(armed)

    def _handled(
        self, armed: _Armed, fired: ReminderFired, error: BaseException | None, wait: bool
    ) -> Callable[[], None] | None:
        # On the actor's thread, after its handler: queue the acknowledgement for the fire
        # thread, which writes every one queued meanwhile in one transaction. (The checks read
        # without the lock, as `_current` does: the fire thread checks again before writing.)
        if (
            self._closed
            or self._armed.get(armed.record.key) is not armed
            or armed.record.pending_fire != fired.fire_count
        ):
            return None  # replaced or unregistered: that registration owns the row now
        if error is None:
            # Answered: the acknowledgement is on its way, so the watchdog lets it be. A plain
            # attribute write; no lock that hundreds of actor threads would contend for.
            armed.answered = fired.fire_count
        else:
            # A failed delivery: the fire thread counts it in the store, then delivers the fire
            # again after its backoff or dead-letters it.
            self._answered(armed)
            self._failures.add()
            _log.error(
                "reminder.handler_failed",
                actor_id=_actor_id(armed.record.key),
                facet="reminder",
                reminder=fired.reminder_name,
                fire_count=fired.fire_count,
                attempt=armed.record.attempts + 1,
                exc_info=error,
            )
        ack = _Ack(armed, fired, threading.Event() if wait else None, error)
        self._inbox.put(ack)
        if self._drained:
            # The fire thread ended before it could take this one: it is delivered again
            # after a restart, and nobody waits for it.
            ack.settled = True
            if ack.written is not None:
                ack.written.set()
        if ack.written is not None:
            ack.written.wait(self._ack_timeout)
            return None
        return lambda: self._await_acks(ack)

    def _await_acks(self, ack: _Ack) -> None:
        """Wait (on an actor's thread, before its next message) until `ack` was written or
        given up on for now, so the actor's own next message sees its fires acknowledged, as
        if it had written them itself."""
        with self._settled:
            self._settled.wait_for(lambda: ack.settled or self._settled_all, self._ack_timeout)

    def _mark_settled(self, acks: builtins.list[_Ack]) -> None:
        for ack in acks:
            ack.settled = True
            if ack.written is not None:
                ack.written.set()
        with self._settled:
            self._settled.notify_all()

    def _acknowledge(self, acks: builtins.list[_Ack]) -> None:
        """On the fire thread: write a batch of acknowledgements in one transaction, then arm
        each reminder's next tick."""
        current: builtins.list[_Ack] = []
        seen: set[ReminderKey] = set()
        with self._lock:
            for ack in acks:
                armed = ack.armed
                key = armed.record.key
                if (
                    self._closed
                    or self._armed.get(key) is not armed
                    or armed.record.pending_fire != ack.fired.fire_count
                    or key in seen  # the same fire handled twice (redelivered): one ack
                ):
                    continue
                seen.add(key)
                current.append(ack)
        with self._deadlines_lock:
            for ack in current:
                self._deadlines.pop(ack.armed, None)
        try:
            if current:
                self._store.acknowledge_fires(
                    [ack.armed.record for ack in current], now=self._clock.now()
                )
        except Exception as error:
            # Handled but not acknowledged: acknowledge later, never fire again meanwhile.
            first = current[0]
            _log.warning(
                "reminder.ack_failed",
                actor_id=_actor_id(first.armed.record.key),
                reminder=first.armed.record.key.name,
                fire_count=first.fired.fire_count,
                reminders=len(current),
                error=repr(error),
                retry_in_s=self._backoff(first.armed.attempt + 1),
            )
            for ack in current:
                self._ack_later(ack)
            # Given up on for now: the actor goes on (the store may be away for long).
            self._mark_settled(acks)
            return
        now = self._clock.time()
        for ack in current:
            armed, fired = ack.armed, ack.fired
            tardiness = now - fired.scheduled_at.timestamp()
            self._fires.add()
            self._tardiness.observe(tardiness)
            _log.debug(
                "reminder.fired",
                actor_id=_actor_id(armed.record.key),
                facet="reminder",
                reminder=fired.reminder_name,
                fire_count=fired.fire_count,
                lateness_ms=round(tardiness * 1000, 3),
            )
        with self._lock:
            for ack in current:
                armed = ack.armed
                armed.attempt = 0
                self._take_off(armed)
                record = armed.record
                if self._armed.get(record.key) is not armed:
                    continue
                del self._armed[record.key]
                if not record.finished:
                    self._arm(_replace_pending(record), record.due_at.timestamp())
        self._mark_settled(acks)

    def _fail(self, failed: builtins.list[_Ack]) -> None:
        """On the fire thread: count each failed delivery in the store and deliver its fire
        again after the reminder's backoff, or, once its `RetryPolicy` gives up, dead-letter the
        fire and arm the reminder's next tick."""
        try:
            for ack in failed:
                self._fail_one(ack)
        finally:
            self._mark_settled(failed)

    def _fail_one(self, ack: _Ack) -> None:
        armed, fired = ack.armed, ack.fired
        assert ack.error is not None
        with self._lock:
            if (
                self._closed
                or self._armed.get(armed.record.key) is not armed
                or armed.record.pending_fire != fired.fire_count
            ):
                return  # replaced or unregistered meanwhile: that registration owns the row
        record = armed.record
        policy = record.retry or self._default_retry
        failures = record.attempts + 1
        failure = FireFailure.of(ack.error)
        now = self._clock.now()
        dead: tuple[DeadLetter, StoredReminder | None] | None = None
        updated: StoredReminder | None = None
        try:
            if policy.exhausted(failures):
                dead = self._store.dead_letter(record, failure, now=now)
            else:
                updated = self._store.record_failure(record, failure, now=now)
        except Exception as error:
            # Not counted: delivered again after a backoff all the same, never dropped.
            _log.warning(
                "reminder.failure_unrecorded",
                actor_id=_actor_id(record.key),
                reminder=record.key.name,
                fire_count=fired.fire_count,
                error=repr(error),
            )
            with self._lock:
                self._take_off(armed)
            self._retry(armed)
            return
        if dead is None and updated is None:
            with self._lock:
                self._take_off(armed)
            # Changed under us (re-registered, deleted, handled elsewhere): follow the store.
            self._rearm_from_store(armed, self._store_get(record.key))
            return
        if dead is not None:
            letter, after = dead
            _log.warning(
                "reminder.dead_lettered",
                actor_id=_actor_id(record.key),
                facet="reminder",
                reminder=record.key.name,
                fire_count=fired.fire_count,
                attempts=letter.attempts,
                dead_letter=letter.id,
                error_type=failure.type,
            )
            with self._lock:
                self._take_off(armed)
                if self._armed.get(record.key) is armed:
                    del self._armed[record.key]
                    if after is not None:
                        self._arm_record(after)  # it goes on with its next tick
                self._watch_dead_letters(soon=True)
            return
        assert updated is not None
        delay = policy.delay(failures)
        _log.info(
            "reminder.retry_scheduled",
            actor_id=_actor_id(record.key),
            reminder=record.key.name,
            fire_count=fired.fire_count,
            attempt=failures,
            retry_in_s=delay,
        )
        with self._lock:
            self._take_off(armed)
            if self._armed.get(record.key) is armed and self._firing:
                armed.record = updated
                self._scheduler.schedule(armed, self._clock.time() + delay)

    # -- re-drives ---------------------------------------------------------------------------------

    def _watch_dead_letters(self, *, soon: bool = False) -> None:
        """Look for re-drives while the store holds dead letters (under the lock); not before,
        so a node without dead letters never polls for them. Every `dead_letter_poll` at first
        (`soon`: a fire was just dead-lettered, or a re-drive was just found), then less often
        while nobody asks, up to `_REDRIVE_BACKOFF` times that: a `ManualClock` moved on by
        days must not run a query for every second of them."""
        if not self._firing:
            return
        if soon:
            self._redrives.delay = self._dead_letter_poll
            if self._redrives.timer is not None:
                if self._redrives.timer.when <= self._clock.time() + self._redrives.delay:
                    return
                self._redrives.timer.cancel()
                self._redrives.timer = None
        if self._redrives.timer is None:
            self._redrives.timer = self._scheduler.call_later(
                self._redrives.delay, self._redrive_tick
            )

    def _redrive_tick(self) -> None:
        with self._lock:
            self._redrives.timer = None
        self._maintain(self._poll_redrives)

    def _poll_redrives(self) -> None:
        """Deliver the re-drives asked for, and keep looking while dead letters exist."""
        found = False
        try:
            found = self._redrive()
            more = bool(self._store.dead_letters(1))
        except Exception as error:
            _log.warning("reminder.redrive_poll_failed", error=repr(error))
            more = True
        if more:
            with self._lock:
                if not found:
                    self._redrives.delay = min(
                        self._redrives.delay * 2, self._dead_letter_poll * _REDRIVE_BACKOFF
                    )
                self._watch_dead_letters(soon=found)

    def _redrive(self) -> bool:
        """Take the re-drives asked for, of the types this node serves, and deliver each once
        more; whether there was any. On the calling thread: a delivery may wait for an actor's
        activation."""
        found = False
        # A read first: most looks find nothing, and a read does not contend with the fire
        # thread's writes as the taking (a write) would.
        while self._firing and self._store.dead_letters(1, requested=True):
            with self._lock:
                served = sorted(self._served)
            if not served:
                break
            taken = self._store.take_retries(
                self._node.node_id,
                now=self._clock.now(),
                lease_until=self._node.lease_end(),
                limit=_REDRIVE_PAGE,
                actor_types=served,
            )
            fresh = []
            with self._lock:
                for letter in taken:
                    if letter.id not in self._redrives.taken:  # not still being delivered
                        self._redrives.taken.add(letter.id)
                        fresh.append(letter)
            found = found or bool(taken)
            for letter in fresh:
                self._deliver_redrive(letter)
            if len(taken) < _REDRIVE_PAGE or not fresh:
                break
        return found

    def _deliver_redrive(self, letter: DeadLetter) -> None:
        fired = ReminderFired(
            reminder_name=letter.reminder_name,
            fire_count=letter.fire_count,
            max_count=letter.max_count,
            scheduled_at=letter.scheduled_at,
            payload=letter.payload,
        )
        ref = VirtualActorRef(self._system, letter.actor_type, letter.actor_key)
        _log.info(
            "reminder.redrive",
            actor_id=letter.actor_id,
            reminder=letter.reminder_name,
            fire_count=letter.fire_count,
            dead_letter=letter.id,
        )
        try:
            self._system._deliver_virtual(
                ref,
                fired,
                guard=lambda: not self._closed,
                done=lambda error: self._redriven(letter, error),
            )
        except ActorActiveElsewhereError:
            # The node holding the actor takes the re-drive once this node's hold runs out.
            with self._lock:
                self._redrives.taken.discard(letter.id)
        except Exception as error:
            self._redriven(letter, error)  # the activation failed: a failed delivery too

    def _redriven(self, letter: DeadLetter, error: BaseException | None) -> None:
        """A re-drive was handled (on the actor's thread): delete the letter, or put it back
        with the new error. Left held when the system closes meanwhile or the store fails: it
        is delivered again once this node's hold runs out (or after a restart)."""
        with self._lock:
            self._redrives.taken.discard(letter.id)
        if self._closed:
            return
        node = self._node.node_id
        try:
            if error is None:
                self._store.finish_retry(letter.id, node)
                _log.info(
                    "reminder.redrive_handled",
                    actor_id=letter.actor_id,
                    reminder=letter.reminder_name,
                    dead_letter=letter.id,
                )
            else:
                self._store.fail_retry(
                    letter.id, node, FireFailure.of(error), now=self._clock.now()
                )
                _log.warning(
                    "reminder.redrive_failed",
                    actor_id=letter.actor_id,
                    reminder=letter.reminder_name,
                    dead_letter=letter.id,
                    error_type=type(error).__name__,
                )
        except Exception as store_error:
            _log.warning(
                "reminder.redrive_unrecorded",
                actor_id=letter.actor_id,
                dead_letter=letter.id,
                error=repr(store_error),
            )

    def _ack_later(self, ack: _Ack) -> None:
        armed = ack.armed
        with self._lock:
            armed.attempt += 1
            delay = self._backoff(armed.attempt)

        def again() -> None:
            self._inbox.put(_Ack(armed, ack.fired, None))

        with self._lock:
            if self._armed.get(armed.record.key) is armed and self._firing:
                self._scheduler.call_later(delay, again)

    def _retry(self, armed: _Armed) -> None:
        with self._lock:
            armed.attempt += 1
            delay = self._backoff(armed.attempt)
            if self._armed.get(armed.record.key) is armed:
                self._scheduler.schedule(armed, self._clock.time() + delay)


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


def _plan_calendar(record: StoredReminder, now_s: float) -> FireChange:
    """`ReminderService._plan` for a calendar reminder or one that expires.

    The missed-tick policies work as for a periodic reminder, with the schedule's ticks for the
    phase: a tick is missed when the tick after it is already past. No fire is recorded at or
    after `expires_at`: a reminder found due then is deleted, and the fire whose next tick would
    come at or after it is the last.
    """
    now = _at(now_s)
    expires = record.expires_at
    if expires is not None and now >= expires:
        return FireChange(record, scheduled_at=None, next_due_at=None)
    ticks = _ticks(record)
    scheduled = record.due_at
    following = ticks(scheduled) if ticks is not None else None
    late = following is not None and following < now
    scheduled_at = scheduled
    upcoming = None
    if late and record.missed == "skip" and ticks is not None:
        upcoming = ticks(now - _ONE_MICROSECOND)
    if upcoming is not None:
        if expires is not None and upcoming >= expires:
            return FireChange(record, scheduled_at=None, next_due_at=None)
        return FireChange(record, scheduled_at=None, next_due_at=upcoming)
    if late and record.missed == "once":
        assert ticks is not None
        # The one fire stands for every missed tick; it carries the latest of them.
        scheduled_at = _latest_tick(record, now)
        following = ticks(now)
    if record.max_count is not None and record.fire_count + 1 >= record.max_count:
        following = None
    if following is not None and expires is not None and following >= expires:
        following = None
    return FireChange(record, scheduled_at=scheduled_at, next_due_at=following)


def _ticks(record: StoredReminder) -> Callable[[datetime], datetime | None] | None:
    """The function giving a repeating reminder's first tick strictly after a time; None for a
    one-shot."""
    if record.cron is not None:
        assert record.tz is not None
        return calendar_schedule(record.cron, record.tz).next_after
    period = record.period
    if period is None:
        return None
    anchor = record.anchor_at.timestamp()
    seconds = period.total_seconds()
    return lambda when: _at_or_none(
        _next_tick(anchor, seconds, when.timestamp(), strictly_after=True)
    )


def _latest_tick(record: StoredReminder, now: datetime) -> datetime:
    """The last tick at or before `now` (and after the reminder's due time)."""
    if record.cron is not None:
        assert record.tz is not None
        schedule = calendar_schedule(record.cron, record.tz)
        return schedule.latest_at_or_before(now, not_before=record.due_at)
    assert record.period is not None
    anchor, seconds = record.anchor_at.timestamp(), record.period.total_seconds()
    return _at(_next_tick(anchor, seconds, now.timestamp(), strictly_after=True) - seconds)


def _by_actor(item: tuple[_Armed, FireChange, StoredReminder | None]) -> tuple[str, str]:
    key = item[0].record.key
    return (key.actor_type, key.actor_key)


def _cursor(after: ReminderInfo | None) -> ReminderKey | None:
    """Where a page after the reminder `after` (from `ReminderService.list`) begins."""
    if after is None:
        return None
    if not isinstance(after, ReminderInfo) or after.actor_type is None or after.actor_key is None:
        raise ValueError(
            f"after {after!r} must be a ReminderInfo from ReminderService.list (the last one "
            "of the previous page)"
        )
    return ReminderKey(after.actor_type, after.actor_key, after.name)


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} {value!r} must be an int of at least 1")
    return value


def _replace_pending(record: StoredReminder) -> StoredReminder:
    return replace(record, pending_fire=None, pending_scheduled_at=None)


def _hand_to(
    queue_: queue.SimpleQueue[Callable[[], None] | None], work: Callable[[], None]
) -> None:
    """Put `work` on a service thread's queue; run it here inside `ManualClock.advance`."""
    if current_handoff() is not None:
        work()
    else:
        queue_.put(work)


def _serve_queue(queue_: queue.SimpleQueue[Callable[[], None] | None], event: str) -> None:
    """A service thread: run the work put on `queue_` in order until None comes; a failure
    (each piece of work logs its own expected ones) is logged as `event` and the thread goes
    on."""
    while True:
        work = queue_.get()
        if work is None:
            return
        try:
            work()
        except Exception:
            _log.exception(event)
