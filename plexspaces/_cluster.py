"""This node among the nodes that share one store: identity, leases, polls, claims and hand-over.

Several processes (nodes) may share one database. Each node claims the reminders it fires with a
lease (`claimed_by`, `claimed_until`), renews its leases every third of the lease, polls for
reminders that nobody holds (registered elsewhere, released, or left by a node that died), and
records a fire only while no other node holds a live claim on it (a fenced fire). A node that
holds a virtual actor's activation lease is the only one that claims that actor's reminders, so
a reminder never activates a second copy of an actor that is active elsewhere.

A single process on its own store runs the same code with the cluster switched off: no claims,
no activation leases, no polls, and fires are not fenced.

Everything here runs on the system's clock, so a `ManualClock` drives leases and polls as it
drives timers. The store is reached only from the threads that call in (the reminder service's
maintenance thread, an activating thread): nothing here holds a lock while it waits for the store.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ._errors import ActorActiveElsewhereError

if TYPE_CHECKING:
    from ._clock import Clock
    from ._ref import VirtualActorRef
    from ._scheduler import ScheduledCall, Scheduler
    from ._store import ReminderKey, ReminderStore, StoredReminder

__all__ = ["ClusterNode", "resolve_node_id"]

_log = structlog.get_logger("plexspaces.cluster")


def resolve_node_id(node_id: str | None, storage_url: str) -> str:
    """The node id to use: `node_id` checked, or by default one derived from the host name and
    the storage URL, so a restarted process gets its own id (and its claims) back."""
    if node_id is None:
        host = socket.gethostname()
        digest = hashlib.sha256(f"{host}\0{storage_url}".encode()).hexdigest()[:8]
        return f"{host}-{digest}"
    if not isinstance(node_id, str) or not node_id.strip():
        raise ValueError(f"node_id {node_id!r} must be a non-empty string")
    return node_id


class ClusterNode:
    """This process as a node of a cluster (or, with `enabled=False`, a node on its own).

    Args:
        store: the store the nodes share.
        clock: the system's clock; leases and polls run on it.
        scheduler: the system's scheduler, for the poll and renewal timers.
        node_id: this node's id.
        lease: how long a claim lasts without renewal.
        poll_interval: how often to look for reminders to take over.
        enabled: whether other nodes share the store.
    """

    def __init__(
        self,
        store: ReminderStore,
        clock: Clock,
        scheduler: Scheduler,
        *,
        node_id: str,
        lease: timedelta,
        poll_interval: timedelta,
        enabled: bool,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.enabled = enabled
        self._clock = clock
        self._scheduler = scheduler
        self._lease = lease.total_seconds()
        self._poll_interval = poll_interval.total_seconds()
        self._lock = threading.Lock()
        self._timers: list[ScheduledCall] = []
        self._running = False
        self._released = False

    # -- timers ------------------------------------------------------------------------------------

    def start(self, *, poll: Callable[[], None], run: Callable[[Callable[[], None]], None]) -> None:
        """Call `poll` every poll interval and renew this node's leases every third of the lease,
        each handed to `run` (which runs it on a thread that may wait for the store). Nothing
        when the cluster is off."""
        if not self.enabled:
            return
        with self._lock:
            self._running = True
        self._every(self._poll_interval, poll, run)
        self._every(self._lease / 3, self.renew, run)

    def stop(self) -> None:
        """Stop polling and renewing (the node is shutting down)."""
        with self._lock:
            self._running = False
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()

    def _every(
        self,
        interval: float,
        work: Callable[[], None],
        run: Callable[[Callable[[], None]], None],
    ) -> None:
        def tick() -> None:
            run(work)
            with self._lock:
                if self._running:
                    self._timers[index] = self._scheduler.call_later(interval, tick)

        with self._lock:
            index = len(self._timers)
            self._timers.append(self._scheduler.call_later(interval, tick))

    # -- leases ------------------------------------------------------------------------------------

    def lease_end(self) -> datetime:
        """When a lease taken or renewed now runs out."""
        return _at(self._clock.time() + self._lease)

    def fence(self, now: float) -> dict[str, Any]:
        """The arguments that fence a fire recorded at `now`: fire only what no other node
        holds, and hold it while firing. Empty when the cluster is off."""
        if not self.enabled:
            return {}
        return {"node_id": self.node_id, "lease_until": _at(now + self._lease)}

    def claim_registrations(
        self, records: Iterable[StoredReminder], horizon: float
    ) -> list[StoredReminder]:
        """Registrations as this node stores them: in a cluster, claimed for this node when
        due within `horizon` (it registers from inside the actor it holds, so it fires them)."""
        if not self.enabled:
            return list(records)
        lease = self.lease_end()
        return [
            replace(record, claimed_by=self.node_id, claimed_until=lease)
            if record.due_at.timestamp() <= horizon
            else record
            for record in records
        ]

    def held_elsewhere(self, record: StoredReminder) -> bool:
        """Whether another node holds a live claim on `record`."""
        return (
            self.enabled
            and record.claimed_by is not None
            and record.claimed_by != self.node_id
            and record.claimed_until is not None
            and record.claimed_until.timestamp() >= self._clock.time()
        )

    def claim_due(
        self,
        *,
        now: float,
        until: datetime,
        limit: int,
        after: tuple[datetime, ReminderKey] | None,
        actor_types: Collection[str],
        include_own: bool,
    ) -> list[StoredReminder]:
        """Claim one page of due reminders for this node (see `ReminderStore.claim_due`)."""
        return self.store.claim_due(
            self.node_id,
            until=until,
            lease_until=_at(now + self._lease),
            now=_at(now),
            limit=limit,
            after=after,
            actor_types=actor_types,
            include_own=include_own,
        )

    def renew(self) -> None:
        """Extend every lease this node still holds; a failure is logged (the leases then run
        out, and other nodes take over)."""
        now = self._clock.now()
        until = self.lease_end()
        try:
            self.store.renew_claims(self.node_id, lease_until=until, now=now)
            self.store.renew_activations(self.node_id, lease_until=until, now=now)
        except Exception as error:
            _log.warning("reminder.renew_failed", node_id=self.node_id, error=repr(error))

    def hand_over(self, key: ReminderKey, to: str) -> None:
        """Give up the claim on one reminder whose actor another node holds: that node fires it
        from now on. A failure is logged; the claim then runs out after the lease."""
        _log.info(
            "reminder.handed_over",
            actor_id=f"{key.actor_type}/{key.actor_key}",
            reminder=key.name,
            to=to,
        )
        try:
            self.store.release_claims(self.node_id, [key])
        except Exception as error:
            _log.warning(
                "reminder.release_failed",
                actor_id=f"{key.actor_type}/{key.actor_key}",
                reminder=key.name,
                error=repr(error),
            )

    def release_all(self) -> None:
        """Hand every claim and activation of this node over at once (a clean shutdown) instead
        of after the lease. Later activation releases are then no-ops."""
        with self._lock:
            if self._released:
                return
            self._released = True
        if not self.enabled:
            return
        try:
            self.store.release_claims(self.node_id)
            self.store.release_activations(self.node_id)
        except Exception as error:
            _log.warning("reminder.release_failed", node_id=self.node_id, error=repr(error))

    # -- activations -------------------------------------------------------------------------------

    def claim_activation(self, ref: VirtualActorRef) -> str | None:
        """Take the cluster-wide activation lease of a virtual actor for this node; its
        activation id (None when the cluster is off: nothing to take).

        Raises:
            ActorActiveElsewhereError: another node holds the actor's activation.
            StoreUnavailableError: the store cannot be reached.
        """
        if not self.enabled:
            return None
        activation_id = uuid.uuid4().hex
        holder = self.store.claim_activation(
            ref.actor_type,
            ref.actor_key,
            self.node_id,
            activation_id=activation_id,
            lease_until=self.lease_end(),
            now=self._clock.now(),
        )
        if holder is not None:
            raise ActorActiveElsewhereError(ref.actor_id, holder)
        return activation_id

    def release_activation(self, ref: VirtualActorRef, activation_id: str) -> None:
        """Drop an activation lease (the activation ended); a failure is logged, and the lease
        then simply runs out."""
        with self._lock:
            if self._released:
                return  # shutting down released every lease of the node
        try:
            self.store.release_activation(ref.actor_type, ref.actor_key, activation_id)
        except Exception as error:
            _log.warning(
                "actor.activation_release_failed", actor_id=ref.actor_id, error=repr(error)
            )

    def __repr__(self) -> str:
        mode = "cluster" if self.enabled else "single"
        return f"<ClusterNode {self.node_id!r} {mode}>"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
