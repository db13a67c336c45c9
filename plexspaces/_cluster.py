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
import os
import socket
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ._errors import ActorActiveElsewhereError, NodeIdInUseError, PlexSpacesError
from ._redact import shown_url

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no default-id lock (see docs/security.md)
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._clock import Clock
    from ._ref import VirtualActorRef
    from ._scheduler import ScheduledCall, Scheduler
    from ._store import ReminderKey, ReminderStore, StoredReminder

__all__ = ["ClusterNode", "NodeLock", "hold_node_id", "resolve_node_id", "store_identity"]

_log = structlog.get_logger("plexspaces.cluster")


def resolve_node_id(node_id: str | None, storage_url: str) -> str:
    """The node id to use: `node_id` checked, or by default one derived from the host name and
    the store's identity (`store_identity`: never its password or user), so a restarted process
    gets its own id (and its claims) back."""
    if node_id is None:
        host = socket.gethostname()
        digest = hashlib.sha256(f"{host}\0{store_identity(storage_url)}".encode()).hexdigest()[:8]
        return f"{host}-{digest}"
    if not isinstance(node_id, str) or not node_id.strip():
        raise ValueError(f"node_id {node_id!r} must be a non-empty string")
    return node_id


def store_identity(storage_url: str) -> str:
    """What names a store, and nothing secret: the SQLite file's real path, or a server
    database's backend, host, port and name (no user, no password, no other options). Empty
    for a store that is not SQL; `"sqlite:memory"` for an in-memory database."""
    if not storage_url:
        return ""
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database
        if database in (None, "", ":memory:") or url.query.get("mode") == "memory":
            return "sqlite:memory"
        return f"sqlite:{os.path.realpath(database or '')}"
    socket_host = url.query.get("host")
    via = f"?host={socket_host}" if isinstance(socket_host, str) else ""
    return f"{backend}://{url.host or ''}:{url.port or ''}/{url.database or ''}{via}"


def hold_node_id(node_id: str, storage_url: str, *, cluster: bool) -> NodeLock | None:
    """Take this host's exclusive lock on running as `node_id` on the store of `storage_url`
    (with the cluster off, on running reminders on that store at all): a second live process
    that tries is refused, so two processes never both fire every reminder or hold the same
    activation. The lock is an OS file lock, gone the moment its process dies, so a restarted
    process takes it (and its claims) back at once. Systems of one process share it.

    None when there is nothing to lock: an in-memory database, a store that is not SQL, or a
    platform without `fcntl` file locks.

    Raises:
        NodeIdInUseError: another live process on this host holds it.
        PlexSpacesError: the lock directory is not this user's own.
    """
    identity = store_identity(storage_url)
    if fcntl is None or identity in ("", "sqlite:memory"):
        return None
    subject = f"{identity}\0{node_id}" if cluster else identity
    name = hashlib.sha256(f"{socket.gethostname()}\0{subject}".encode()).hexdigest()[:32]
    path = _lock_directory() / f"node-{name}.lock"
    key = (os.getpid(), str(path))
    with _held_lock:
        held = _held.get(key)
        if held is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise NodeIdInUseError(
                    _in_use(node_id, storage_url, holder, cluster=cluster)
                ) from None
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            held = _held[key] = NodeLock(key, fd)
        held.holders += 1
        return held


class NodeLock:
    """This process's hold on a node id lock file; `release` once per `hold_node_id`."""

    def __init__(self, key: tuple[int, str], fd: int) -> None:
        self._key = key
        self._fd = fd
        self.holders = 0

    def release(self) -> None:
        with _held_lock:
            self.holders -= 1
            if self.holders > 0 or _held.get(self._key) is not self:
                return
            del _held[self._key]
            # Closing the descriptor drops the lock; the file stays (unlinking it could let a
            # third process lock a new file while a second one waits on the old).
            os.close(self._fd)


_held: dict[tuple[int, str], NodeLock] = {}
_held_lock = threading.Lock()


def _lock_directory() -> Path:
    """A directory of this user's own for the lock files (the temporary directory is shared)."""
    directory = Path(tempfile.gettempdir()) / f"plexspaces-{os.getuid()}"
    with suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
        raise PlexSpacesError(
            f"the node lock directory {str(directory)!r} is not a directory of this user's own; "
            "remove it, or pass an explicit node_id on a store of this process's own"
        )
    return directory


def _in_use(node_id: str, storage_url: str, holder: str, *, cluster: bool) -> str:
    shown = shown_url(storage_url)
    if cluster:
        return (
            f"node id {node_id!r} is already in use on this host by process {holder} on the "
            f"store {shown}: two processes with one node id would both fire every reminder and "
            "hold the same activations. Give each process its own node id: "
            "ActorSystem(node_id=...)"
        )
    return (
        f"the store {shown} is already used by process {holder} on this host without a "
        "cluster: two processes would both fire every reminder. Stop that process, give this "
        "one another store (storage_url=...), or run both as a cluster: "
        "ActorSystem(cluster=True, node_id=...) with a node_id of its own for each"
    )


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
