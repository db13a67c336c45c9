"""This node among the nodes that share one store: identity, membership, bucket ownership,
leases, polls, claims and hand-over.

Several processes (nodes) may share one database. Each node heartbeats a row of
`plexspaces_nodes` with a lease; it is alive while that lease holds, and dead once it ran out
(never because a connection dropped). The reminders fall into `BUCKETS` hash buckets of their
actor (`bucket_of`); the live nodes that host actors share the buckets out, each holding its
fair share with a lease, and fire the reminders of their own buckets. Every round (each poll,
and each lease renewal) a node heartbeats, reads the live nodes and who holds which bucket,
renews its buckets, releases its surplus while another node is below its share, and takes free
or expired buckets up to its share. A joining node so takes buckets only from nodes above their
share, and nothing else moves.

Within its buckets a node claims each due reminder with a lease (`claimed_by`, `claimed_until`),
renews its leases every third of the lease, and records a fire only while no other node holds a
live claim on it (a fenced fire). Without a transport between nodes a node cannot deliver to an
actor active on another node, so the node holding a virtual actor's activation lease claims that
actor's reminders whatever their bucket, and a bucket holder hands over a reminder whose actor is
active elsewhere. With a transport (`ClusterNode.route_remote`) the bucket holder claims them all
and delivers through it.

A single process on its own store runs the same code with the cluster switched off: no claims,
no buckets, no activation leases, no polls, and fires are not fenced.

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
from ._store.records import BUCKETS, NodeInfo, bucket_of

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no default-id lock (see docs/security.md)
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._clock import Clock
    from ._messages import ReminderFired
    from ._ref import VirtualActorRef
    from ._scheduler import ScheduledCall, Scheduler
    from ._store import ReminderKey, ReminderStore, StoredReminder

__all__ = [
    "BUCKETS",
    "ClusterNode",
    "NodeInfo",
    "NodeLock",
    "RouteRemote",
    "bucket_of",
    "fair_shares",
    "hold_node_id",
    "resolve_node_id",
    "store_identity",
]

RouteRemote = Callable[
    [
        "VirtualActorRef",
        "ReminderFired",
        str,
        Callable[[BaseException | None], object],
        Callable[[Exception], None],
    ],
    None,
]
"""Delivers a reminder fire to a virtual actor active on another node without waiting:
`(ref, fired, node_id, done, failed)`, where `node_id` is the node holding the actor. `done(error
or None)` is called once the remote handler has returned (the fire is then acknowledged, or
retried on an error); `failed(error)` when the fire did not reach the actor (it is retried after a
backoff)."""

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


def fair_shares(buckets: int, nodes: Iterable[str]) -> dict[str, int]:
    """How many of `buckets` buckets each of `nodes` holds in a balanced cluster: the floor of
    an even split each, one more for the first `buckets % len(nodes)` nodes in id order, so every
    node computes the same shares and they sum to `buckets`."""
    ordered = sorted(set(nodes))
    if not ordered:
        return {}
    base, extra = divmod(buckets, len(ordered))
    return {node: base + (1 if index < extra else 0) for index, node in enumerate(ordered)}


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
        hosts_actors: whether this node hosts virtual actors. A client-only node (False)
            heartbeats, so the others see it, but holds no bucket, claims no reminder and
            holds no activation.
        buckets: the number of hash buckets; every node of a cluster must use the same
            (`BUCKETS`; another number only to test that a mismatch is refused).

    Attributes:
        activations_renewed: told after each renewal how many activation leases it renewed,
            so the system can find an activation whose lease it lost (see `hold_activation`).
        route_remote: how to deliver a reminder fire to an actor active on another node, or
            None without a transport between nodes. None keeps the hand-over: the node that
            holds an actor's activation fires its reminders.
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
        hosts_actors: bool = True,
        buckets: int = BUCKETS,
    ) -> None:
        if not isinstance(hosts_actors, bool):
            raise ValueError(f"hosts_actors {hosts_actors!r} must be True or False")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets {buckets!r} must be an int of at least 1")
        self.store = store
        self.node_id = node_id
        self.enabled = enabled
        self.hosts_actors = hosts_actors
        self.buckets = buckets
        self.route_remote: RouteRemote | None = None
        self.activations_renewed: Callable[[int], None] | None = None
        self._clock = clock
        self._scheduler = scheduler
        self._lease = lease.total_seconds()
        self._poll_interval = poll_interval.total_seconds()
        self._lock = threading.Lock()
        self._timers: list[ScheduledCall] = []
        self._running = False
        self._released = False
        # What the last round found: the buckets this node holds, and the live nodes. Replaced
        # whole (never mutated), so readers on other threads need no lock.
        self._owned: frozenset[int] = frozenset()
        self._live: tuple[NodeInfo, ...] = ()
        self._lost: Callable[[frozenset[int]], None] | None = None
        self._actor_left: Callable[[str, str], None] | None = None

    # -- timers ------------------------------------------------------------------------------------

    def start(
        self,
        *,
        poll: Callable[[], None],
        run: Callable[[Callable[[], None]], None],
        lost: Callable[[frozenset[int]], None] | None = None,
        actor_left: Callable[[str, str], None] | None = None,
        renew_run: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """Join the cluster: check the bucket count, heartbeat and take a fair share of the
        buckets at once; then every poll interval run a round (`balance`) and `poll`, and renew
        this node's leases every third of the lease, each handed to `run` (which runs it on a
        thread that may wait for the store). `lost` is told which buckets this node gave up or
        lost, before their reminder claims are released; `actor_left` that an actor this node
        held (and so fired the reminders of) deactivated while its bucket is another node's.
        Nothing when the cluster is off.

        Raises:
            BucketCountError: the cluster on the store uses another number of buckets.
            StoreUnavailableError: the store cannot be reached.
        """
        if not self.enabled:
            return
        self._lost = lost
        self._actor_left = actor_left
        self.store.prepare_buckets(self.buckets)
        self.balance()
        with self._lock:
            self._running = True

        def round_then_poll() -> None:
            self.balance()
            poll()

        if renew_run is None:
            self._every(self._poll_interval, round_then_poll, run)
            self._every(self._lease / 3, self.renew, run)
        else:
            # Rounds and renewals on a thread of their own, so a long poll or load (claiming
            # thousands of reminders after a failover) never holds up a lease renewal: a late
            # one would lose this node its buckets and start a cycle of release and re-claim.
            self._every(self._poll_interval, self.balance, renew_run)
            self._every(self._poll_interval, poll, run)
            self._every(self._lease / 3, self.renew, renew_run)

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
        due within `horizon` and this node fires them: it registers from inside the actor it
        holds, which without a transport is what entitles it; with one, only when it holds the
        reminder's bucket (the holder of the bucket claims it on its next poll otherwise)."""
        if not self.enabled:
            return list(records)
        lease = self.lease_end()
        follows = self.follows_activations
        owned = self._owned
        return [
            replace(record, claimed_by=self.node_id, claimed_until=lease)
            if self.hosts_actors
            and record.due_at.timestamp() <= horizon
            and (follows or bucket_of(record.key.actor_type, record.key.actor_key) in owned)
            else record
            for record in records
        ]

    @property
    def follows_activations(self) -> bool:
        """Whether the node holding an actor's activation fires its reminders (no transport to
        deliver to it from the bucket's holder)."""
        return self.route_remote is None

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
        """Claim one page of due reminders for this node (see `ReminderStore.claim_due`): of
        the buckets it holds (and, without a transport, of the actors it holds). None for a
        client-only node."""
        if not self.hosts_actors:
            return []
        return self.store.claim_due(
            self.node_id,
            until=until,
            lease_until=_at(now + self._lease),
            now=_at(now),
            limit=limit,
            after=after,
            actor_types=actor_types,
            include_own=include_own,
            buckets=self._owned,
            follow_activations=self.follows_activations,
        )

    def renew(self) -> None:
        """Extend every lease this node still holds: on activations first (a lapsed one lets
        another node activate the same actor), then on reminders of its buckets (and, without a
        transport, of its actors), then a round (`balance`: the heartbeat and the buckets). A
        failure is logged (the leases then run out, and other nodes take over)."""
        now = self._clock.now()
        until = self.lease_end()
        try:
            renewed = self.store.renew_activations(self.node_id, lease_until=until, now=now)
        except Exception as error:
            _log.warning("reminder.renew_failed", node_id=self.node_id, error=repr(error))
        else:
            if self.activations_renewed is not None:
                self.activations_renewed(renewed)
        try:
            self.store.renew_claims(
                self.node_id,
                lease_until=until,
                now=now,
                buckets=self._owned,
                follow_activations=self.follows_activations,
            )
        except Exception as error:
            _log.warning("reminder.renew_failed", node_id=self.node_id, error=repr(error))
        self.balance()

    # -- membership and buckets --------------------------------------------------------------------

    def live_nodes(self) -> list[NodeInfo]:
        """The live nodes as the last round found them (this one included once it joined),
        ordered by node id; empty when the cluster is off."""
        return list(self._live)

    def owned_buckets(self) -> frozenset[int]:
        """The buckets this node held after its last round."""
        return self._owned

    def balance(self) -> None:
        """One round: heartbeat, read the live nodes and the bucket holders, renew this node's
        buckets, release its surplus while another live node is below its share (only as many
        as free buckets cannot make up), and take free or expired buckets up to its share. A
        failure is logged; the buckets whose leases then run out are taken by other nodes."""
        if not self.enabled:
            return
        with self._lock:
            if self._released:
                return
        now = self._clock.time()
        at, until = _at(now), _at(now + self._lease)
        try:
            self.store.heartbeat(
                self.node_id, hosts_actors=self.hosts_actors, lease_until=until, now=at
            )
            live = self.store.live_nodes(at)
            self._live = tuple(live)
            if not self.hosts_actors:
                return
            owners = self.store.bucket_owners(at)
            owned = set(self.store.renew_buckets(self.node_id, lease_until=until, now=at))
        except Exception as error:
            _log.warning("cluster.round_failed", node_id=self.node_id, error=repr(error))
            return
        shares = fair_shares(
            self.buckets, [node.node_id for node in live if node.hosts_actors] + [self.node_id]
        )
        held: dict[str, int] = dict.fromkeys(shares, 0)
        for bucket, owner in owners.items():
            if owner in held and bucket < self.buckets:
                held[owner] += 1
        held[self.node_id] = len(owned)
        share = shares[self.node_id]
        lost = self._owned - owned  # leases that ran out under us (the store was away)
        surplus = len(owned) - share
        if surplus > 0:
            wanted = sum(max(0, shares[node] - count) for node, count in held.items())
            free = self.buckets - sum(held.values())
            give = min(surplus, max(0, wanted - free))
            if give:
                released = frozenset(sorted(owned)[-give:])
                owned -= released
                # Stop firing them here before anyone else can take them.
                self._owned = frozenset(owned)
                self._tell_lost(lost | released)
                lost = frozenset()
                try:
                    self.store.release_buckets(self.node_id, released)
                except Exception as error:
                    # Their leases run out instead; the claims in them are no longer renewed.
                    _log.warning("cluster.release_failed", node_id=self.node_id, error=repr(error))
                _log.info(
                    "cluster.buckets_released",
                    node_id=self.node_id,
                    buckets=len(released),
                    held=len(owned),
                    share=share,
                )
        elif surplus < 0:
            try:
                taken = self.store.claim_buckets(
                    self.node_id, count=-surplus, lease_until=until, now=at
                )
            except Exception as error:
                _log.warning("cluster.claim_failed", node_id=self.node_id, error=repr(error))
                taken = []
            if taken:
                owned.update(taken)
                _log.info(
                    "cluster.buckets_taken",
                    node_id=self.node_id,
                    buckets=len(taken),
                    held=len(owned),
                    share=share,
                )
        self._owned = frozenset(owned)
        # A bucket whose lease ran out while the store was away and that this round took back
        # was never another node's: its reminders stay armed here (telling it lost would
        # disarm reminders this node goes on claiming and renewing, and they would never fire).
        self._tell_lost(frozenset(lost) - self._owned)

    def _tell_lost(self, buckets: frozenset[int]) -> None:
        if buckets and self._lost is not None:
            self._lost(buckets)

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
        self._owned = frozenset()
        try:
            self.store.release_claims(self.node_id)
            self.store.release_activations(self.node_id)
            self.store.leave(self.node_id)
        except Exception as error:
            _log.warning("reminder.release_failed", node_id=self.node_id, error=repr(error))

    # -- activations -------------------------------------------------------------------------------

    def held_activations(self) -> set[tuple[str, str, str]]:
        """`(actor_type, actor_key, activation_id)` of the live activation leases this node
        holds now (see `ReminderStore.held_activations`)."""
        return self.store.held_activations(self.node_id, now=self._clock.now())

    def hold_activation(self, ref: VirtualActorRef, activation_id: str) -> str | None:
        """Take the activation lease of `ref` back for the activation `activation_id` this node
        runs (its lease ran out unrenewed: the node was paused, or the store away): None when
        this node holds it again, else the node that holds it now.

        Raises:
            StoreUnavailableError: the store cannot be reached.
        """
        return self.store.claim_activation(
            ref.actor_type,
            ref.actor_key,
            self.node_id,
            activation_id=activation_id,
            lease_until=self.lease_end(),
            now=self._clock.now(),
        )

    def claim_activation(self, ref: VirtualActorRef) -> str | None:
        """Take the cluster-wide activation lease of a virtual actor for this node; its
        activation id (None when the cluster is off: nothing to take).

        Raises:
            ActorActiveElsewhereError: another node holds the actor's activation.
            StoreUnavailableError: the store cannot be reached.
        """
        if not self.enabled:
            return None
        if not self.hosts_actors:
            raise PlexSpacesError(
                f"node {self.node_id!r} is client-only (hosts_actors=False): it activates no "
                f"virtual actor, so {ref.actor_id!r} must be activated on a node that hosts actors"
            )
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
        left = self._actor_left
        if (
            left is not None
            and self.follows_activations
            and bucket_of(ref.actor_type, ref.actor_key) not in self._owned
        ):
            # Holding the actor was what let this node fire its reminders: the bucket's
            # holder fires them from now on.
            left(ref.actor_type, ref.actor_key)

    def release_claims(self, keys: Collection[ReminderKey]) -> None:
        """Give up this node's claims on `keys` (reminders it no longer fires); a failure is
        logged, and the claims then run out after the lease."""
        if not self.enabled or not keys:
            return
        try:
            self.store.release_claims(self.node_id, keys)
        except Exception as error:
            _log.warning("reminder.release_failed", reminders=len(keys), error=repr(error))

    def __repr__(self) -> str:
        mode = ("cluster" if self.hosts_actors else "cluster client") if self.enabled else "single"
        return f"<ClusterNode {self.node_id!r} {mode}>"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
