"""`ActorSystem`: owns the actors, the clock, the one scheduler and the facet service."""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pykka
import structlog

from . import _pykka
from ._actor import Actor, Done, _Cell, _Delivery, _Queued, _Slot
from ._clock import Clock, SystemClock, current_handoff
from ._cluster import ClusterNode, NodeLock, hold_node_id, resolve_node_id
from ._context import FacetService
from ._duration import Duration, parse_duration, positive_duration
from ._errors import (
    ActorIdInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    PlexSpacesError,
    SystemShutdownError,
)
from ._logging import ensure_logging_configured
from ._metrics import Metrics, MetricsSnapshot
from ._redact import quoted_url, shown_url
from ._ref import ActorRef, VirtualActorRef
from ._scheduler import Scheduler

if TYPE_CHECKING:
    from ._reminders import ReminderService
    from ._router import Router
    from ._store import ReminderStore, UndecodableReminder
    from ._transport import Codec, Transport

__all__ = ["STORAGE_URL_ENV", "ActorSystem"]

STORAGE_URL_ENV: Final = "PLEXSPACES_STORAGE_URL"
"""Environment variable naming the storage URL when `ActorSystem(storage_url=None)`."""

DEFAULT_DATABASE_FILE: Final = "plexspaces.db"
SUPPORTED_BACKENDS: Final = ("sqlite", "postgresql")

A = TypeVar("A", bound=Actor)
_log = structlog.get_logger("plexspaces")

# Systems not shut down yet. Actor threads are not daemons, and Python joins them before it runs
# `atexit` callbacks, so a program that forgot `shutdown()` would hang there; the hook below runs
# at that very point (before the join) and shuts down what is left, with a warning.
_unfinished: weakref.WeakSet[ActorSystem] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


def _track_until_shutdown(system: ActorSystem) -> None:
    global _exit_hook_installed
    with _exit_hook_lock:
        _unfinished.add(system)
        if _exit_hook_installed:
            return
        # `threading._register_atexit` runs before non-daemon threads are joined (where
        # `concurrent.futures` hooks in); `atexit` would run too late.
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is not None:
                register(_shut_down_unfinished)
            else:
                import atexit

                atexit.register(_shut_down_unfinished)
        except RuntimeError:
            return  # the interpreter is already exiting
        _exit_hook_installed = True


def _shut_down_unfinished() -> None:
    for system in list(_unfinished):
        if system.is_shut_down:
            continue
        _log.warning(
            "system.not_shut_down",
            system=system.name,
            node_id=system.node_id,
            actors=len(system.actor_ids()),
            hint="use the system as a context manager or call shutdown()",
        )
        try:
            system.shutdown()
        except Exception:
            _log.exception("system.shutdown_failed", system=system.name)


class _Reserved:
    """Placeholder for an actor id whose actor is being constructed."""


_RESERVED: Final = _Reserved()
_ROUTE_ATTEMPTS = 100
T = TypeVar("T")


def _check_type_name(type_name: object) -> None:
    if not isinstance(type_name, str) or not type_name or "/" in type_name or "\x00" in type_name:
        raise ValueError(
            f"virtual actor type {type_name!r} must be a non-empty string without '/' or "
            "NUL characters"
        )


def _check_transport(
    transport: object,
    codec: object,
    options: object,
    *,
    cluster: bool,
    hosts_actors: object,
) -> tuple[str | Transport | None, Codec | None, dict[str, Any]]:
    """The transport, codec and transport options a system was given, checked before anything
    is opened."""
    if not isinstance(hosts_actors, bool):
        raise TypeError(f"hosts_actors {hosts_actors!r} must be True or False")
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"transport_options {options!r} must be a mapping of option names")
    if transport is None:
        if not hosts_actors:
            raise ValueError(
                "hosts_actors=False (a client-only node) needs a transport to reach the nodes "
                "that host actors: ActorSystem(transport='nats://host:4222', ...)"
            )
        if options:
            raise ValueError("transport_options were given without a transport")
        return None, None, {}
    from ._transport import Codec, Transport, codec_named

    if not isinstance(transport, str | Transport):
        raise TypeError(
            f"transport {transport!r} must be a NATS URL such as 'nats://host:4222' or a "
            "plexspaces Transport"
        )
    if not cluster:
        raise ValueError(
            "a transport connects the nodes of a cluster: pass cluster=True (and a store the "
            "nodes share, such as PostgreSQL)"
        )
    if not isinstance(codec, str | Codec):
        raise TypeError(f"codec {codec!r} must be 'pickle', 'json' or a plexspaces Codec")
    return transport, codec_named(codec), dict(options or {})


def _check_actor_class(cls: object, caller: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"{caller} needs a subclass of plexspaces.Actor, got {cls!r}")


class ActorSystem:
    """A set of actors sharing a clock, one scheduler thread and (for reminders) one store.

    Args:
        storage_url: SQLAlchemy URL of the durable store. None: the environment variable
            `PLEXSPACES_STORAGE_URL` if set, else an embedded SQLite file `plexspaces.db` in the
            current directory. Nothing is opened until a facet needs the store.
        clock: the source of time (default: the system clock). Pass a `ManualClock` to drive time
            by hand in tests and simulations.
        node_id: the name of this process among nodes that share one database. Default: a stable
            id derived from the host name and the storage URL, so a restarted process gets the
            same id back.
        lease: how long a node's claim on a reminder or an activation lasts without renewal:
            how soon other nodes take over the reminders of a node that died.
        name: a name for logs and the scheduler thread.
        cluster: whether other nodes (processes) share the store. None (the default): yes for
            PostgreSQL and other server databases, no for SQLite. In a cluster the node claims
            the reminders it fires with a lease, renews its leases, polls the store for
            reminders registered or given up by other nodes, and takes an activation lease for
            each virtual actor it activates, so an actor is active on one node at a time.
        poll_interval: in a cluster, how often to look for reminders to take over (registered
            elsewhere, released, or left by a node that died); on any node, while the store
            holds dead letters, how often to look for re-drives asked for by another process
            (`plexspaces reminders retry`; backing off to 60 poll intervals while nobody asks).
            Runs on the system's clock.
        max_reminders_in_flight: the most reminder fires of one actor that are delivered and not
            yet handled. Further fires of that actor that come due wait, unrecorded, until it
            catches up, so a flood of due reminders for a slow actor does not grow memory.
        transport: how this node reaches the others: a NATS URL (`"nats://host:4222"`, with
            credentials in it or in `transport_options`) or a `Transport`. With one,
            `virtual(type, key).tell/ask` reach the actor on whichever node holds it, and
            reminders are delivered there; without one, a message for an actor active on another
            node raises `ActorActiveElsewhereError`. Needs `cluster=True`.
        hosts_actors: False makes a client-only node: it sends to virtual actors on the other
            nodes (any type name, registered here or not) but activates none and fires no
            reminder. Needs a transport.
        codec: how messages travel between nodes: `"pickle"` (the default: any picklable
            message; only for nodes that trust each other, as unpickling runs code) or `"json"`
            (JSON-compatible messages, for other languages), or a `Codec`.
        transport_options: options for the transport (for NATS: `user`, `password`, `token`,
            `nkeys_seed`, `user_credentials`, `tls`, ...).
        store: the `ReminderStore` to keep reminders in, instead of opening one on
            `storage_url` (pass one or the other). The system uses it as it is and never closes
            it: its owner does. With `cluster=None` a store on SQLite (or any store that is not
            a `SqlReminderStore`) is taken as this process's own, any other as shared.

    Use it as a context manager, or call `shutdown()`. Actor threads are not daemons; a system
    still running at interpreter exit is shut down then, with a `system.not_shut_down` warning.
    """

    def __init__(
        self,
        storage_url: str | None = None,
        clock: Clock | None = None,
        node_id: str | None = None,
        lease: Duration = "10s",
        *,
        name: str = "plexspaces",
        cluster: bool | None = None,
        poll_interval: Duration = "1s",
        max_reminders_in_flight: int = 1000,
        store: ReminderStore | None = None,
        transport: str | Transport | None = None,
        hosts_actors: bool = True,
        codec: str | Codec = "pickle",
        transport_options: Mapping[str, Any] | None = None,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(
                f"clock {clock!r} must be a plexspaces Clock (SystemClock or ManualClock)"
            )
        ensure_logging_configured()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._given_store = _check_store(store, storage_url)
        self.storage_url: str = (
            _resolve_storage_url(storage_url) if store is None else _store_url(store)
        )
        self.node_id: str = resolve_node_id(node_id, self.storage_url)
        try:
            self.lease: timedelta = positive_duration(lease)
        except ValueError as error:
            raise ValueError(f"lease: {error}") from None
        try:
            self.poll_interval: timedelta = positive_duration(poll_interval)
        except ValueError as error:
            raise ValueError(f"poll_interval: {error}") from None
        if cluster is not None and not isinstance(cluster, bool):
            raise TypeError(f"cluster {cluster!r} must be True, False or None")
        if cluster is None:
            cluster = bool(self.storage_url) and not _is_sqlite(self.storage_url)
        self.cluster: bool = cluster
        self._transport_spec, self._codec, self._transport_options = _check_transport(
            transport, codec, transport_options, cluster=cluster, hosts_actors=hosts_actors
        )
        self.hosts_actors: bool = hosts_actors
        if (
            isinstance(max_reminders_in_flight, bool)
            or not isinstance(max_reminders_in_flight, int)
            or max_reminders_in_flight < 1
        ):
            raise ValueError(
                f"max_reminders_in_flight {max_reminders_in_flight!r} must be an int of at least 1"
            )
        self._max_reminders_in_flight = max_reminders_in_flight
        self.name = name
        self.log = _log.bind(system=name, node_id=self.node_id)
        self.facet_service = FacetService(self)
        self._metrics = Metrics()
        self._activations = self._metrics.counter("actor.activations")
        self._deactivations = self._metrics.counter("actor.deactivations")
        self.scheduler = Scheduler(self.clock, name=f"{name}-scheduler")
        self._lock = threading.Lock()
        self._actors: dict[str, _Cell | _Reserved] = {}
        # Every actor thread this system started and that may still run, joined at shutdown.
        self._threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        self._virtual_types: dict[str, type[Actor]] = {}
        self._virtual_arguments: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._reminder_service: ReminderService | None = None
        self._router: Router | None = None
        self._transport: Transport | None = None
        self._store: ReminderStore | None = None
        self._node: ClusterNode | None = None
        self._node_lock: NodeLock | None = None
        self._reminders_lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        # Actor threads inside a shutdown() call of their own; no shutdown waits for them.
        self._shutting_down_actors: set[threading.Thread] = set()
        self._shutting_down = False
        self._closed = False  # every actor stopped and the scheduler closed
        self.scheduler.start()
        _track_until_shutdown(self)

    # -- actors ----------------------------------------------------------------------------------

    def spawn(
        self, cls: type[A], *args: Any, actor_id: str | None = None, **kwargs: Any
    ) -> ActorRef:
        """Start an actor of class `cls`; `args`/`kwargs` go to its constructor.

        Returns once its `on_start` has run. An exception from the constructor or from `on_start`
        is raised here, and the id is free again.

        Raises:
            TypeError: `cls` is not an `Actor` subclass.
            ValueError: `actor_id` is not a non-empty string, or contains '/' (reserved for
                virtual actors, whose ids are `"<type>/<key>"`).
            ActorIdInUseError: an actor with that id is alive.
            SystemShutdownError: the system is shut down.
        """
        _check_actor_class(cls, "spawn")
        if actor_id is None:
            actor_id = f"{cls.__name__.lower()}-{uuid.uuid4().hex[:12]}"
        elif not isinstance(actor_id, str) or not actor_id:
            raise ValueError(f"actor_id {actor_id!r} must be a non-empty string")
        elif "/" in actor_id:
            raise ValueError(
                f"actor_id {actor_id!r} contains '/', which is reserved for virtual actors "
                "('<type>/<key>'); address those through system.virtual(type, key)"
            )
        return self._start(cls, args, kwargs, actor_id).ref

    def _start(
        self,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        actor_id: str,
    ) -> _Cell:
        cell = self._launch(cls, args, kwargs, actor_id, None)
        cell.started.wait()
        if cell.start_error is not None:
            raise cell.start_error
        return cell

    def _launch(
        self,
        cls: type[Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        actor_id: str,
        slot: _Slot | None,
    ) -> _Cell:
        """Make the actor and start its thread; its `on_start` runs there, not waited for."""
        with self._lock:
            self._check_open()
            if actor_id in self._actors:
                raise ActorIdInUseError(f"an actor with id {actor_id!r} is already running")
            self._actors[actor_id] = _RESERVED
        created: list[_Cell] = []
        try:
            actor = cls(*args, **kwargs)
            _Cell.start(self, actor, actor_id, slot, created)
        except BaseException:
            with self._lock:
                if self._actors.get(actor_id) is _RESERVED:
                    del self._actors[actor_id]
            raise
        return created[0]

    # -- virtual actors ----------------------------------------------------------------------------

    def register_virtual(self, type_name: str, cls: type[Actor], *args: Any, **kwargs: Any) -> None:
        """Make `type_name` a virtual actor type served by `cls`.

        Its actors are addressed by key through `virtual(type_name, key)`, exist logically for
        ever, and are activated on demand: each activation is `cls(*args, **kwargs)` (shared
        dependencies such as a repository go here; the key is `ctx.actor_key`). Registering the
        same class again is allowed (the new arguments apply to later activations); another
        class under a registered name is an error.
        """
        _check_type_name(type_name)
        _check_actor_class(cls, "register_virtual")
        with self._lock:
            self._check_open()
            known = self._virtual_types.get(type_name)
            if known is not None and known is not cls:
                raise ValueError(
                    f"virtual actor type {type_name!r} is already registered to "
                    f"{known.__qualname__}, not {cls.__qualname__}"
                )
            self._virtual_types[type_name] = cls
            self._virtual_arguments[type_name] = (args, kwargs)
        # Reminders of the type resume: at once if the service runs, or if the store may hold
        # reminders from an earlier run (the service then starts and serves every type). A
        # cluster node always serves: other nodes may register or leave reminders at any time.
        if (
            self._reminder_service is not None
            or self.cluster
            or self._given_store is not None
            or _store_may_hold_data(self.storage_url)
        ):
            self.reminders.serve_type(type_name)

    def virtual(self, type_name: str, key: str) -> VirtualActorRef:
        """The ref of virtual actor `key` of type `type_name`; its id is `"<type>/<key>"`.

        The ref stays valid across deactivation: `tell`/`ask` activate the actor when it is not
        active. Raises `LookupError` for a type that was not registered.
        """
        if not self.hosts_actors:
            _check_type_name(type_name)
        elif type_name not in self._virtual_types:
            known = ", ".join(sorted(self._virtual_types)) or "none"
            raise ActorNotFoundError(
                f"virtual actor type {type_name!r} is not registered (registered: {known}); "
                "call system.register_virtual(type_name, cls) first"
            )
        if not isinstance(key, str) or not key or "\x00" in key:
            raise ValueError(
                f"virtual actor key {key!r} must be a non-empty string without NUL characters"
            )
        return VirtualActorRef(self, type_name, key)

    def virtual_types(self) -> dict[str, type[Actor]]:
        """The registered virtual actor types and their classes."""
        with self._lock:
            return dict(self._virtual_types)

    # -- reminders -------------------------------------------------------------------------------

    @property
    def reminders(self) -> ReminderService:
        """The durable reminder service, opened on first use (with the store, on `storage_url`
        unless a store was handed in, and this node of the cluster)."""
        with self._reminders_lock:
            if self._reminder_service is None:
                self._check_open()
                from ._reminders import ReminderService

                # One live process per node id and store on this host (see hold_node_id).
                self._node_lock = hold_node_id(self.node_id, self.storage_url, cluster=self.cluster)
                store = self._given_store
                if store is None:
                    from ._store import SqlReminderStore

                    try:
                        store = SqlReminderStore(self.storage_url)
                    except BaseException:
                        self._release_node_lock()
                        raise
                self._store = store
                # Where durable state goes (the default is a file in the current directory).
                self.log.info("store.opened", **_store_location(self.storage_url))
                self._node = ClusterNode(
                    store,
                    self.clock,
                    self.scheduler,
                    node_id=self.node_id,
                    lease=self.lease,
                    poll_interval=self.poll_interval,
                    enabled=self.cluster,
                    hosts_actors=self.hosts_actors,
                )
                self._node.activations_renewed = self._check_activations
                if self._transport_spec is not None:
                    # Before the service starts, so the node's first round knows that fires
                    # reach actors on other nodes. A transport that cannot connect leaves
                    # nothing open behind it: the next use tries again.
                    try:
                        self._start_router(store, self._node)
                    except BaseException:
                        self._node = None
                        self._store = None
                        if self._given_store is None:
                            store.close()
                        self._release_node_lock()
                        raise
                service = ReminderService(
                    self,
                    store,
                    self._node,
                    max_in_flight=self._max_reminders_in_flight,
                    dead_letter_poll=self.poll_interval,
                )
                for type_name in self.virtual_types():
                    service.serve_type(type_name)
                self._reminder_service = service
            return self._reminder_service

    def _start_router(self, store: ReminderStore, node: ClusterNode) -> None:
        from ._router import Router
        from ._transport import open_transport

        spec = self._transport_spec
        assert spec is not None
        assert self._codec is not None
        transport = (
            open_transport(spec, name=store.cluster_id(), options=self._transport_options)
            if isinstance(spec, str)
            else spec
        )
        self._transport = transport
        clock = self.clock
        self._router = Router(
            self,
            transport,
            self._codec,
            hosts_actors=self.hosts_actors,
            holder_of=lambda actor_type, actor_key: store.activation_holder(
                actor_type, actor_key, now=clock.now()
            ),
            hosting_nodes=lambda: [
                found.node_id for found in store.live_nodes(clock.now()) if found.hosts_actors
            ],
            liveness_check=min(1.0, self.lease.total_seconds() / 3),
        )
        self._router.start()
        router = self._router
        node.route_remote = lambda ref, fired, holder, done, failed: router.deliver_fire(
            ref, fired, holder, done=done, failed=failed
        )

    def _routing(self) -> Router | None:
        """The router of a system with a transport (started on first use), else None."""
        if self._transport_spec is None:
            return None
        router = self._router
        if router is None:
            self.reminders  # noqa: B018 - opens the store, this node and its router
            router = self._router
        return router

    def _is_local(self, ref: VirtualActorRef) -> bool:
        """Whether `ref`'s key is active, starting or closing on this node (messages for it
        then go through its slot here)."""
        slot = self._slots.get(ref.actor_id)
        return slot is not None and not slot.removed

    def _send_if_live(self, ref: VirtualActorRef, send: Callable[[_Cell], object]) -> bool:
        """`send(cell)` to the live activation of `ref` here, under its key's lock, without
        waiting for anything: False (nothing sent) when there is none."""
        slot = self._slots.get(ref.actor_id)
        if slot is None:
            return False
        with slot.lock:
            cell = slot.cell
            if slot.removed or cell is None or not cell.actor_ref.is_alive():
                return False
            try:
                send(cell)
            except pykka.ActorDeadError:
                return False
            return True

    def reminder_errors(self) -> list[UndecodableReminder]:
        """Stored reminder rows that could not be decoded: kept in the store, never fired."""
        return self.reminders.errors()

    def _deliver_virtual(
        self, ref: VirtualActorRef, message: Any, *, guard: Callable[[], bool], done: Done
    ) -> None:
        """Deliver a runtime message to a virtual actor, activating it if needed.

        Returns once the message is in an activation's mailbox (so a `ManualClock` hand-off can
        follow it); raises when the activation it waited for could not start.
        """

        def send(cell: _Cell) -> None:
            if not cell.deliver(message, guard, done):
                raise pykka.ActorDeadError(f"actor {ref.actor_id!r} stopped")

        handoff = current_handoff()
        picked_up = threading.Event() if handoff is not None else None
        queued = self._route(
            ref, send, lambda: _pykka.Envelope(_Delivery(message, guard, picked_up, done))
        )[1]
        if queued is None or not self._may_wait(ref):
            return
        assert queued.placed is not None
        queued.placed.wait()
        if queued.error is not None:
            raise queued.error
        if handoff is not None and picked_up is not None and queued.cell is not None:
            handoff.track(picked_up, queued.cell.actor_ref.is_alive)

    def _deliver_if_active(
        self, ref: VirtualActorRef, message: Any, *, guard: Callable[[], bool], done: Done
    ) -> bool:
        """Deliver a runtime message to the live activation of `ref` without waiting for
        anything: False (nothing sent) when the key has no live activation (it is inactive,
        being activated or closing). The caller then uses `_deliver_virtual` on a thread that
        may wait."""
        slot = self._slots.get(ref.actor_id)
        if slot is None:
            return False
        with slot.lock:  # only ever held for a few steps
            cell = slot.cell
            if slot.removed or cell is None or not cell.actor_ref.is_alive():
                return False
            return cell.deliver(message, guard, done)

    def _slot(self, ref: VirtualActorRef) -> _Slot:
        with self._lock:
            self._check_open()
            slot = self._slots.get(ref.actor_id)
            if slot is None:
                slot = self._slots[ref.actor_id] = _Slot(ref)
            return slot

    def _route(
        self,
        ref: VirtualActorRef,
        send: Callable[[_Cell], T],
        envelope: Callable[[], _pykka.Envelope[Any]],
    ) -> tuple[T | None, _Queued | None, bool]:
        """Send to the live activation of `ref`, or queue for the next one, activating the key.

        With a live activation, `send(cell)` runs under the key's lock (deactivation takes the
        same lock to close the gate, so nothing slips into an activation that is closing) and
        its result is returned. Otherwise `envelope()` waits in the key's slot and goes into
        the mailbox of the next activation, in order, once its on_start has run: returned as
        the `_Queued`, with True when this call started that activation. Nothing here waits
        for an on_start or an on_stop, so a sender's own timeout bounds the whole call.
        """
        for _ in range(_ROUTE_ATTEMPTS):
            slot = self._slot(ref)
            with slot.lock:
                if slot.removed:
                    continue
                cell = slot.cell
                if cell is not None:
                    try:
                        return send(cell), None, False
                    except pykka.ActorDeadError:
                        # Stopped without closing the gate (shutdown): treat it as closing.
                        slot.cell = None
                        slot.retiring = cell
                queued = _Queued(envelope(), threading.Event())
                slot.pending.append(queued)
                starts = not slot.activating and slot.retiring is None
                if starts:
                    slot.activating = True
            if starts:
                self._begin_activation(slot)
            return None, queued, starts
        raise ActorStoppedError(f"virtual actor {ref.actor_id!r} could not be activated")

    def _may_wait(self, ref: VirtualActorRef) -> bool:
        """Whether this thread may wait for the next activation of `ref`: not when it is the
        thread of that key's current (starting or closing) activation, which would wait for
        itself."""
        own = self._live_cell(ref.actor_id)
        return own is None or own.thread is not threading.current_thread()

    def _begin_activation(self, slot: _Slot) -> None:
        """Start the next activation of a key whose slot was just marked `activating`.

        Its on_start runs on its own thread, which then puts the queued messages into its
        mailbox (`_activated`). Raises nothing: when the activation cannot start, the messages
        waiting for it get the error (`_give_up`).
        """
        ref = slot.ref
        try:
            if not self.hosts_actors:
                raise PlexSpacesError(
                    f"this node hosts no actors (hosts_actors=False), so it cannot activate "
                    f"{ref.actor_id!r}; send it messages with tell/ask, which reach it on a node "
                    "that hosts actors"
                )
            if self.cluster:
                # One activation per key across the cluster: take its lease before starting it.
                slot.activation_id = self.reminders.claim_activation(ref)
            cls = self._virtual_types[ref.actor_type]
            args, kwargs = self._virtual_arguments[ref.actor_type]
            self._launch(cls, args, kwargs, ref.actor_id, slot)
        except BaseException as error:
            self._release_activation(slot)
            with slot.lock:
                slot.activating = False
                given_up, slot.pending = slot.pending, []
                idle = slot.idle() and not slot.removed
                if idle:
                    slot.removed = True
            if idle:
                self._drop_slot(slot)
            self._give_up(ref.actor_id, given_up, error)

    def _activated(self, cell: _Cell) -> None:
        """On the new activation's thread, once its on_start has run: open it to senders after
        putting the messages that waited for it into its mailbox, in order."""
        slot = cell.slot
        assert slot is not None
        with slot.lock:
            slot.activating = False
            slot.cell = cell
            waiting, slot.pending = slot.pending, []
            for queued in waiting:
                _pykka.requeue(cell, queued.envelope)
        self._activations.add()
        for queued in waiting:
            queued.resolve(cell, None)

    def _give_up(self, actor_id: str, given_up: list[_Queued], error: BaseException) -> None:
        """Messages whose activation could not start: a waiting sender gets `error` (an ask
        through its future), and a tell nobody waits for is dropped and logged."""
        dropped = 0
        for queued in given_up:
            reply_to = queued.envelope.reply_to
            if reply_to is not None:
                reply_to.set_exception(exc_info=(type(error), error, error.__traceback__))
            elif queued.placed is None:
                dropped += 1
            queued.resolve(None, error)
        if dropped:
            self.log.warning(
                "actor.kept_messages_dropped",
                actor_id=actor_id,
                messages=dropped,
                error=repr(error),
            )

    def _retired(self, cell: _Cell) -> None:
        """After an activation released everything: start the next one if messages wait for
        it, else drop the key's slot."""
        slot = cell.slot
        assert slot is not None
        with slot.lock:
            if slot.cell is cell:
                slot.cell = None
            if slot.retiring is cell:
                slot.retiring = None
            starts = bool(slot.pending) and (
                slot.cell is None and slot.retiring is None and not slot.activating
            )
            if starts:
                slot.activating = True
            idle = slot.idle() and not slot.removed
            if idle:
                slot.removed = True
        if starts:
            self._begin_activation(slot)
        elif idle:
            self._drop_slot(slot)

    def _drop_slot(self, slot: _Slot) -> None:
        with self._lock:
            if self._slots.get(slot.ref.actor_id) is slot:
                del self._slots[slot.ref.actor_id]

    def _check_activations(self, renewed: int) -> None:
        """After a lease renewal (on the lease thread): when fewer activation leases were
        renewed than this node runs activations, some ran out unrenewed (the node was paused or
        the store away). Each is taken back for its activation id, or, when another node has
        taken the actor meanwhile, this node's activation is stopped: one key never stays active
        on two nodes longer than until this node's next renewal."""
        node = self._node
        with self._lock:
            running = [
                (slot, slot.cell, slot.activation_id)
                for slot in self._slots.values()
                if slot.activation_id is not None and slot.cell is not None
            ]
        if node is None or renewed >= len(running):
            return
        # Fewer renewed than running: usually activations that started after the renewal
        # counted. One query tells which leases this node really holds; only the others (a
        # lease that lapsed) are looked at one by one.
        try:
            held = node.held_activations()
        except Exception as error:
            self.log.warning("actor.activation_check_failed", error=repr(error))
            return
        for slot, cell, activation_id in running:
            if cell is None or activation_id is None or slot.activation_id != activation_id:
                continue  # ended meanwhile
            if (slot.ref.actor_type, slot.ref.actor_key, activation_id) in held:
                continue
            try:
                holder = node.hold_activation(slot.ref, activation_id)
            except Exception as error:
                self.log.warning(
                    "actor.activation_check_failed", actor_id=slot.ref.actor_id, error=repr(error)
                )
                return
            if holder is not None and holder != self.node_id:
                self.log.warning("actor.fenced", actor_id=slot.ref.actor_id, holder=holder)
                slot.activation_id = None  # that lease is another node's now: not ours to drop
                self._deactivate(cell, only_if_idle=False)

    def _release_activation(self, slot: _Slot) -> None:
        activation_id, slot.activation_id = slot.activation_id, None
        node = self._node
        if activation_id is not None and node is not None:
            node.release_activation(slot.ref, activation_id)

    def _activation(self, ref: VirtualActorRef) -> _Cell | None:
        """The current live activation of `ref`, without activating it."""
        cell = self._live_cell(ref.actor_id)
        return cell if cell is not None and cell.slot is not None else None

    def _deactivate(self, cell: _Cell, *, only_if_idle: bool) -> bool:
        """Close the gate of a virtual actor's activation and stop it after its current message.

        With `only_if_idle`, nothing happens unless its mailbox is empty, so no message can be
        left behind in an activation that is going away.
        """
        slot = cell.slot
        if slot is None:
            return False
        with slot.lock:
            if slot.cell is not cell or not cell.actor_ref.is_alive():
                return False
            if only_if_idle and not _pykka.inbox_empty(cell):
                return False
            slot.cell = None
            slot.retiring = cell
        cell.actor_ref.stop(block=False)
        return True

    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the system's metrics: counters and latency histograms recorded as
        things happened (timer and reminder fires, lateness, activations), and gauges read now
        (live actors, armed timers and reminders, stored reminders, mailbox depth per actor
        type). See `plexspaces.MetricsSnapshot`. Safe from any thread; no store query unless
        the store is open."""
        with self._lock:
            cells = [cell for cell in self._actors.values() if isinstance(cell, _Cell)]
        gauges: dict[str, float] = {"actors": float(len(cells))}
        depth: dict[str, int] = {}
        for cell in cells:
            kind = cell.slot.ref.actor_type if cell.slot is not None else type(cell.actor).__name__
            depth[kind] = depth.get(kind, 0) + cell.mailbox_depth()
            for facet in list(cell.facets):
                for name, value in facet.facet_metrics().items():
                    gauge = f"{facet.facet_type}.{name}"
                    gauges[gauge] = gauges.get(gauge, 0.0) + value
        service = self._reminder_service
        if service is not None:
            gauges.update(service.gauges())
        return self._metrics.snapshot(gauges, depth)

    def lookup(self, actor_id: str) -> ActorRef | None:
        """The ref of the live actor with that id, or None."""
        cell = self._live_cell(actor_id)
        return cell.ref if cell is not None else None

    def actor_ids(self) -> list[str]:
        """Ids of the live actors."""
        with self._lock:
            return [key for key, cell in self._actors.items() if isinstance(cell, _Cell)]

    # -- lifecycle -------------------------------------------------------------------------------

    def shutdown(self, timeout: Duration | None = "30s") -> None:
        """Stop every actor (each runs `on_stop`, its facets are detached), then the scheduler.

        Returns once every actor has stopped and every thread the system started has been joined.
        Idempotent. Called from inside an actor's handler, it stops the other actors, waits for
        them, and returns; the calling actor stops after its current message, and the system
        finishes shutting down when it has (a later `shutdown()` from outside waits for that).
        """
        seconds = None if timeout is None else parse_duration(timeout).total_seconds()
        current = threading.current_thread()
        inside = current in self._threads
        with self._lock:
            first = not self._shutting_down
            self._shutting_down = True
            _unfinished.discard(self)
            cells = [cell for cell in self._actors.values() if isinstance(cell, _Cell)]
            if inside:
                # Registered before waiting, so two actors shutting down at once never wait for
                # each other: each can stop only after its own handler returns.
                self._shutting_down_actors.add(current)
        try:
            if first:
                service = self._reminder_service
                if service is not None and not inside:
                    # No new fires from here on; handlers still running can acknowledge theirs.
                    service.stop_firing()
                for cell in cells:
                    cell.actor_ref.stop(block=False)
            for cell in cells:
                if cell.thread is current or cell.thread in self._shutting_down_actors:
                    continue
                if not cell.terminated.wait(seconds):
                    raise AskTimeoutError(
                        f"actor {cell.actor_id!r} did not stop within {timeout!r}"
                    )
        finally:
            if inside:
                with self._lock:
                    self._shutting_down_actors.discard(current)
        if inside:
            return
        for thread in list(self._threads):
            if thread is not current:
                thread.join(seconds)
        self._finish_shutdown(len(cells))

    def _finish_shutdown(self, actors: int) -> None:
        # Reached by the outside shutdown() call and by the last actor to stop; runs once.
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._reminder_service is not None:
            self._reminder_service.close()
        if self._router is not None:
            self._router.close()
        if self._transport is not None and isinstance(self._transport_spec, str):
            self._transport.close()  # a transport handed in belongs to its owner
        if self._store is not None and self._given_store is None:
            self._store.close()  # a store handed in belongs to its owner
        self._release_node_lock()
        self.scheduler.close()
        self.log.debug("system.shut_down", actors=actors)

    def _release_node_lock(self) -> None:
        lock, self._node_lock = self._node_lock, None
        if lock is not None:
            lock.release()

    @property
    def is_shut_down(self) -> bool:
        return self._shutting_down

    def __enter__(self) -> ActorSystem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name!r} node={self.node_id!r} actors={len(self.actor_ids())}>"

    # -- used by cells ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutting_down:
            raise SystemShutdownError(f"actor system {self.name!r} is shut down")

    def _adopt(self, cell: _Cell) -> None:
        with self._lock:
            self._check_open()
            self._actors[cell.actor_id] = cell

    def _thread_started(self, thread: threading.Thread) -> None:
        self._threads.add(thread)

    def _forget(self, cell: _Cell) -> bool:
        """Free the id of a cell that released everything. True when it was the last actor of
        a system being shut down: the caller then finishes the shutdown, once its own
        `terminated` is set (a reminder delivery may be waiting for exactly that)."""
        slot = cell.slot
        if slot is not None:
            # Before `terminated` is set: the next activation of the key waits for that.
            self._release_activation(slot)
            if cell.started.is_set() and cell.start_error is None:
                self._deactivations.add()
        with self._lock:
            if self._actors.get(cell.actor_id) is cell:
                del self._actors[cell.actor_id]
            return self._shutting_down and not any(
                isinstance(other, _Cell) for other in self._actors.values()
            )

    def _live_cell(self, actor_id: str) -> _Cell | None:
        cell = self._actors.get(actor_id)
        return cell if isinstance(cell, _Cell) else None


def _is_sqlite(storage_url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(storage_url).get_backend_name() == "sqlite"


def _store_location(storage_url: str) -> dict[str, str]:
    """The store's URL as it may be shown (password hidden) and, for a SQLite file, its
    absolute path; nothing for a store handed in that is not a SQL store."""
    if not storage_url:
        return {}
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    location = {"url": shown_url(storage_url)}
    named_file = url.database not in (None, "", ":memory:") and str(
        url.query.get("uri", "")
    ).lower() not in ("1", "true", "yes", "on")
    if url.get_backend_name() == "sqlite" and named_file:
        location["path"] = str(Path(url.database or "").resolve())
    return location


def _store_may_hold_data(storage_url: str) -> bool:
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database
    return database is not None and database not in ("", ":memory:") and Path(database).exists()


def _resolve_storage_url(storage_url: str | None) -> str:
    if storage_url is None:
        storage_url = os.environ.get(STORAGE_URL_ENV) or None
    if storage_url is None:
        return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"
    if not isinstance(storage_url, str) or not storage_url.strip():
        raise ValueError(
            f"storage_url {quoted_url(storage_url)} must be a SQLAlchemy URL such as "
            "'sqlite:///plexspaces.db' or 'postgresql+psycopg://user@host/db'"
        )
    from sqlalchemy.exc import ArgumentError

    from ._store.sql.engine import normalize_url

    try:
        url = normalize_url(storage_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(
            f"storage_url {quoted_url(storage_url)} is not a SQLAlchemy URL; expected for example "
            "'sqlite:///plexspaces.db' or 'postgresql+psycopg://user@host/db'"
        ) from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"storage_url {shown!r} names the database {url.get_backend_name()!r}; supported: "
            "SQLite ('sqlite:///plexspaces.db') and PostgreSQL "
            "('postgresql+psycopg://user@host/db')"
        )
    try:
        dialect = url.get_dialect()
        dialect.import_dbapi()
    except ImportError as error:
        raise ModuleNotFoundError(
            f"storage_url {shown!r} needs a database driver that is not installed ({error}); "
            "for PostgreSQL install psycopg 3 (pip install 'plexspaces-facets[postgresql]') and "
            "use 'postgresql+psycopg://'"
        ) from None
    except ArgumentError as error:  # NoSuchModuleError: an unknown driver name
        raise ValueError(
            f"storage_url {shown!r} names a driver SQLAlchemy does not know ({error}); use "
            "'sqlite:///...' or 'postgresql+psycopg://...'"
        ) from None
    if url.drivername == "postgresql+psycopg" and not storage_url.startswith("postgresql+psycopg"):
        # postgres:// or postgresql:// (a DATABASE_URL): the driver the store uses, spelled out.
        return url.render_as_string(hide_password=False)
    return storage_url


def _check_store(store: ReminderStore | None, storage_url: str | None) -> ReminderStore | None:
    if store is None:
        return None
    from ._store import ReminderStore

    if not isinstance(store, ReminderStore):
        raise TypeError(f"store {store!r} must be a plexspaces ReminderStore")
    if storage_url is not None:
        raise ValueError(
            f"pass storage_url {quoted_url(storage_url)} or a store, not both: a store handed in "
            "already names its database"
        )
    return store


def _store_url(store: ReminderStore) -> str:
    """The URL of a SQL store handed in (password included, as `storage_url` would hold it);
    empty for another kind of store."""
    from ._store import SqlReminderStore

    if isinstance(store, SqlReminderStore):
        return store.engine.url.render_as_string(hide_password=False)
    return ""
