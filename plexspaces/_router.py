"""Messages to virtual actors wherever they are active: find the holder, send it the message over
the transport, and serve what other nodes send here.

A sender looks for the holder of a key in this order: an activation on this node (active or
starting), its cache of holders, then the activation table in the store (the one source of truth).
A key active nowhere is activated on the sending node when it hosts actors (local placement: no
extra hop, and the key's reminders and messages then meet on the node that uses it), or, from a
client-only node, on the live hosting node that rendezvous hashing of the actor id picks.

Every reply says what happened to the message: enqueued (`tell`), answered (`ask`), or not taken
(`moved`: the receiver does not hold the key; the sender looks it up again and retries). A
message is retried only when it was certainly not taken: after a `moved` reply or when no node
serves the holder's subject (the holder died; the sender waits for its activation lease to run
out and then activates the key elsewhere). A request whose reply is lost (a timeout) is not
retried: the message may have been handled.

A `tell` returns once the hosting node has put the message into the actor's mailbox, so the
messages one thread sends to one actor arrive in the order it sent them, wherever the actor is.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import pykka
import structlog

from . import _pykka
from ._errors import (
    ActorActiveElsewhereError,
    AskTimeoutError,
    NodeLostError,
    NoHostingNodeError,
    NoResponderError,
    PlexSpacesError,
    RemoteActorError,
    SystemShutdownError,
    TransportTimeoutError,
)
from ._messages import ReminderFired
from ._transport import ReplyWaiter

if TYPE_CHECKING:
    from ._actor import Done, _Queued
    from ._ref import VirtualActorRef
    from ._system import ActorSystem
    from ._transport import Codec, Transport

__all__ = ["Router"]

_log = structlog.get_logger("plexspaces.router")

_CACHE_LIMIT: Final = 100_000
"""Holders remembered per node; the cache is cleared when it grows past this (a lookup refills)."""

_SERVE_THREADS: Final = 32
"""Threads that take messages for keys not active here (they may wait for an activation)."""

_FIRST_BACKOFF: Final = 0.02
_MAX_BACKOFF: Final = 0.5
"""Seconds between attempts while a dead holder's activation lease runs out."""

_TELL_TIMEOUT: Final = 30.0
"""How long a `tell` to a remote actor waits for the hosting node to enqueue it."""

_FIRE_TIMEOUT: Final = 60.0
"""How long a reminder fire sent to another node waits for its handler's outcome (the reminder
service's watchdog redelivers a fire that gets none within its acknowledgement timeout)."""

_MAX_HOPS: Final = 8
"""`moved` replies a fire follows before it is retried later."""

# Request and reply kinds (lists, so every codec can carry them).
_TELL: Final = "t"
_ASK: Final = "a"
_FIRE: Final = "f"
_PING: Final = "p"
_OK: Final = "ok"
_RAISE: Final = "raise"
_ERROR: Final = "error"
_MOVED: Final = "moved"

_FIRE_FIELDS: Final = tuple(field.name for field in fields(ReminderFired))


class Router:
    """Location-transparent `tell`/`ask` for the virtual actors of a system with a transport.

    Args:
        system: the system whose virtual actors this node hosts (or only addresses).
        transport: carries requests between nodes.
        codec: encodes requests and replies.
        hosts_actors: False for a client-only node, which activates nothing.
        holder_of: the node holding a key's activation, from the store (None: nobody).
        hosting_nodes: the live nodes that host actors, from the store: where a client-only
            node places a key, and whether a node that is slow to answer is still alive.
        liveness_check: seconds between those checks while a request waits for its answer.
    """

    def __init__(
        self,
        system: ActorSystem,
        transport: Transport,
        codec: Codec,
        *,
        hosts_actors: bool,
        holder_of: Callable[[str, str], str | None],
        hosting_nodes: Callable[[], Sequence[str]],
        liveness_check: float = 1.0,
    ) -> None:
        self._system = system
        self._transport = transport
        self._codec = codec
        self.node_id = system.node_id
        self.hosts_actors = hosts_actors
        self._holder_of = holder_of
        self._hosting_nodes = hosting_nodes
        self._liveness_check = liveness_check
        self._holders: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=_SERVE_THREADS, thread_name_prefix=f"{system.name}-router"
        )
        self._closed = False

    def start(self) -> None:
        """Serve requests addressed to this node (a client-only node serves none)."""
        if self.hosts_actors:
            self._transport.start(self.node_id, self._serve)

    def close(self) -> None:
        """Stop taking requests; those being served finish."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=False)

    # -- sending -----------------------------------------------------------------------------------

    def tell(self, ref: VirtualActorRef, message: Any) -> None:
        """Put `message` into the mailbox of `ref`'s activation, wherever it is (activating the
        key if it is active nowhere); returns once it is there."""
        body: bytes | None = None
        deadline = time.monotonic() + _TELL_TIMEOUT
        backoff = _FIRST_BACKOFF
        while True:
            holder = self._target(ref)
            if holder is None:
                try:
                    self._tell_here(ref, message)
                    return
                except ActorActiveElsewhereError as error:
                    self._remember(ref, error.node_id)
                    continue
            if body is None:
                body = self._encode_request(_TELL, ref, message)
            reply = self._request(ref, holder, body, deadline, message)
            if reply is None:
                backoff = self._wait_before_retry(ref, deadline, backoff, message)
                continue
            self._result(ref, holder, reply)
            return

    def ask(
        self, ref: VirtualActorRef, message: Any, seconds: float | None, timeout: object
    ) -> Any:
        """The answer of `ref`'s actor to `message`, wherever it is active."""
        body: bytes | None = None
        deadline = time.monotonic() + (seconds if seconds is not None else 365 * 86_400.0)
        backoff = _FIRST_BACKOFF
        while True:
            holder = self._target(ref)
            if holder is None:
                try:
                    return self._ask_here(ref, message, deadline, seconds, timeout)
                except ActorActiveElsewhereError as error:  # another node activated it first
                    self._remember(ref, error.node_id)
                    continue
            if body is None:
                body = self._encode_request(_ASK, ref, message)
            try:
                answer = self._request(ref, holder, body, deadline, message)
            except TransportTimeoutError:
                raise AskTimeoutError(
                    f"actor {ref.actor_id!r} on node {holder!r} did not answer {message!r} "
                    f"within {timeout!r}"
                ) from None
            if answer is None:
                backoff = self._wait_before_retry(ref, deadline, backoff, message, timeout)
                continue
            return self._result(ref, holder, answer)

    def deliver_fire(
        self,
        ref: VirtualActorRef,
        fired: ReminderFired,
        holder: str,
        *,
        done: Callable[[BaseException | None], object],
        failed: Callable[[Exception], None],
        timeout: float = _FIRE_TIMEOUT,
    ) -> None:
        """Deliver a reminder fire to `ref`'s activation on node `holder` without waiting: `done`
        gets the handler's outcome once it has run there (None, or what it raised), `failed`
        why the fire did not reach the actor (it is then retried by the caller)."""
        self._remember(ref, holder)
        body = self._encode_request(_FIRE, ref, _fire_fields(fired))
        hops = [holder]

        def answered(result: bytes | BaseException) -> None:
            if isinstance(result, BaseException):
                if isinstance(result, NoResponderError):
                    self._forget(ref)
                failed(result if isinstance(result, Exception) else RuntimeError(repr(result)))
                return
            try:
                kind, value = self._decode_reply(result)
            except Exception as error:
                failed(error)
                return
            if kind == _MOVED:
                target = value if isinstance(value, str) and value != self.node_id else None
                if target is None or len(hops) >= _MAX_HOPS:
                    self._forget(ref)
                    failed(
                        PlexSpacesError(
                            f"no node took the fire for actor {ref.actor_id!r} (asked "
                            f"{', '.join(hops)}); it is delivered again after a backoff"
                        )
                    )
                    return
                self._remember(ref, target)
                hops.append(target)
                self._transport.request_async(target, body, timeout, answered)
                return
            if kind == _OK:
                done(None)
            else:
                done(self._remote_error(ref, hops[-1], kind, value))

        self._transport.request_async(holder, body, timeout, answered)

    def holder_elsewhere(self, ref: VirtualActorRef, *, look_up: bool) -> str | None:
        """The other node that holds `ref`'s key as far as this node knows: from its cache, and
        with `look_up` from the store too (which waits for it). None when the key is active
        here, active nowhere, or (without `look_up`) not known."""
        if self._system._is_local(ref):
            return None
        holder = self._holders.get(ref.actor_id)
        if holder is None and look_up:
            holder = self._holder_of(ref.actor_type, ref.actor_key)
            if holder is not None:
                self._remember(ref, holder)
        return None if holder == self.node_id else holder

    def _target(self, ref: VirtualActorRef) -> str | None:
        """The node to send to: None for this one (the key is active or starting here, or
        active nowhere and this node hosts actors)."""
        if self._system._is_local(ref):
            return None
        holder = self._holders.get(ref.actor_id)
        if holder is None:
            holder = self._holder_of(ref.actor_type, ref.actor_key)
            if holder is None or holder == self.node_id:
                if self.hosts_actors:
                    return None
                holder = self._place(ref)
            self._remember(ref, holder)
        return None if holder == self.node_id and self.hosts_actors else holder

    def _place(self, ref: VirtualActorRef) -> str:
        """The live hosting node that activates a key active nowhere, from a client-only node:
        the highest rendezvous hash of the actor id and the node id, so every client picks the
        same node while membership holds still, and a node's leaving moves only its own keys."""
        nodes = [node for node in self._hosting_nodes() if node != self.node_id]
        if not nodes:
            raise NoHostingNodeError(
                f"no live node hosts actors to activate {ref.actor_id!r} on; start a node with "
                "hosts_actors=True on the same store and transport"
            )
        return max(nodes, key=lambda node: _rendezvous(ref.actor_id, node))

    def _remember(self, ref: VirtualActorRef, holder: str) -> None:
        holders = self._holders
        if len(holders) >= _CACHE_LIMIT:
            holders.clear()
        holders[ref.actor_id] = holder

    def _forget(self, ref: VirtualActorRef) -> None:
        self._holders.pop(ref.actor_id, None)

    def _request(
        self, ref: VirtualActorRef, holder: str, body: bytes, deadline: float, message: Any
    ) -> tuple[str, Any] | None:
        """Send one request to `holder`: its decoded reply, or None when the message was
        certainly not taken (the sender looks the key up again)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportTimeoutError(
                f"no node took {type(message).__name__} for actor {ref.actor_id!r} in time"
            )
        answered = ReplyWaiter()
        self._transport.request_async(holder, body, left, answered)
        # A node that dies with the message in flight never answers: while waiting, check now
        # and then that it is still a member, and give up once its lease has run out.
        while not answered.wait(min(self._liveness_check, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TransportTimeoutError(
                    f"node {holder!r} did not answer {type(message).__name__} for actor "
                    f"{ref.actor_id!r} in time"
                )
            if holder not in self._hosting_nodes() and not self._answers(holder):
                self._forget(ref)
                raise NodeLostError(
                    f"node {holder!r}, which held actor {ref.actor_id!r}, died (its lease ran "
                    f"out) with {type(message).__name__} in flight: it may or may not have been "
                    "handled there; a new message reaches the actor where it is activated next"
                )
        result = answered.outcome
        assert result is not None
        if isinstance(result, NoResponderError):
            # Nobody serves that node's subject: it died or shut down. Its activation lease
            # runs out (or was released), and a fresh lookup then finds the key free.
            self._forget(ref)
            return None
        if isinstance(result, BaseException):
            raise result
        kind, value = self._decode_reply(result)
        if kind == _MOVED:
            if isinstance(value, str) and value != holder:
                self._remember(ref, value)
            else:
                self._forget(ref)
            return None
        return kind, value

    def _answers(self, node_id: str) -> bool:
        """Whether `node_id` still serves its subject (a node that died serves none: its
        connection to NATS is gone). Asked only when its membership lease has run out, so a
        node that is merely late to heartbeat is not given up while it answers."""
        try:
            self._transport.request(node_id, self._codec.encode([_PING, "", "", None]), 1.0)
        except (NoResponderError, TransportTimeoutError):
            return False
        except Exception:
            return True  # the transport is down, not the node: the request fails by itself
        return True

    def _wait_before_retry(
        self,
        ref: VirtualActorRef,
        deadline: float,
        backoff: float,
        message: Any,
        timeout: object = _TELL_TIMEOUT,
    ) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AskTimeoutError(
                f"no node could take {type(message).__name__} for actor {ref.actor_id!r} "
                f"within {timeout!r}: its holder is gone and its activation lease has not run "
                "out yet"
            )
        if self._holders.get(ref.actor_id) is None:
            # A real-time backoff, as the request's own timeout is: waiting for a dead holder's
            # lease to run out, seen through the store, not a timing mechanism of the system.
            time.sleep(min(backoff, left))
            return min(backoff * 2, _MAX_BACKOFF)
        return backoff  # redirected to a known holder: try it at once

    def _result(self, ref: VirtualActorRef, holder: str, reply: tuple[str, Any]) -> Any:
        kind, value = reply
        if kind == _OK:
            return value
        raise self._remote_error(ref, holder, kind, value)

    def _remote_error(self, ref: VirtualActorRef, holder: str, kind: str, value: Any) -> Exception:
        if kind == _RAISE and isinstance(value, BaseException):
            if isinstance(value, Exception):
                return value
            return RemoteActorError(ref.actor_id, holder, type(value).__name__, str(value))
        if kind == _ERROR and isinstance(value, list) and len(value) == 2:
            return RemoteActorError(ref.actor_id, holder, str(value[0]), str(value[1]))
        return RemoteActorError(ref.actor_id, holder, "ProtocolError", f"unknown reply {kind!r}")

    def _encode_request(self, kind: str, ref: VirtualActorRef, message: Any) -> bytes:
        # Raises MessageEncodeError (naming the type) on the sender, before anything is sent.
        return self._codec.encode([kind, ref.actor_type, ref.actor_key, message])

    def _decode_reply(self, body: bytes) -> tuple[str, Any]:
        decoded = self._codec.decode(body)
        if not isinstance(decoded, list) or len(decoded) != 2 or not isinstance(decoded[0], str):
            raise PlexSpacesError(f"a node answered with a malformed reply: {decoded!r:.200}")
        return decoded[0], decoded[1]

    def _ask_here(
        self,
        ref: VirtualActorRef,
        message: Any,
        deadline: float,
        seconds: float | None,
        timeout: object,
    ) -> Any:
        """Ask the activation of `ref` on this node (activating it here if needed). Raises
        ActorActiveElsewhereError, with the message not delivered, when another node holds it."""
        reply: pykka.Future[Any] = pykka.ThreadingFuture()
        envelope = _pykka.Envelope(message, reply_to=reply)
        future, queued, _ = self._system._route(
            ref, lambda cell: cell.actor_ref.ask(message, block=False), lambda: envelope
        )
        if queued is not None and self._system._may_wait(ref):
            try:
                _placed(queued, deadline)
            except AskTimeoutError:
                raise AskTimeoutError(
                    f"actor {ref.actor_id!r} did not answer {message!r} within {timeout!r}"
                ) from None
        left = None if seconds is None else max(0.0, deadline - time.monotonic())
        return ref._answer(reply if future is None else future, message, left, timeout)

    def _tell_here(self, ref: VirtualActorRef, message: Any) -> None:
        system = self._system
        _, queued, _ = system._route(
            ref, lambda cell: cell.actor_ref.tell(message), lambda: _pykka.Envelope(message)
        )
        if queued is not None and system._may_wait(ref):
            _placed(queued, None)

    # -- serving -----------------------------------------------------------------------------------

    def _serve(self, body: bytes, reply: Callable[[bytes], None]) -> None:
        """On the transport's thread: take one request. What may wait (an activation) goes to
        the serving threads; a message for a live activation goes into its mailbox at once."""
        if self._closed:
            reply(self._encode_reply(_MOVED, None))  # this node is closing: look elsewhere
            return
        try:
            kind, actor_type, actor_key, message = self._codec.decode(body)
            if kind == _PING:
                reply(self._encode_reply(_OK, None))
                return
            ref = self._ref(actor_type, actor_key)
            if kind == _FIRE:
                message = _fired(message)
        except Exception as error:
            reply(self._encode_reply(_ERROR, [type(error).__name__, f"bad request: {error}"]))
            return
        try:
            if kind == _TELL:
                if self._system._send_if_live(ref, lambda cell: cell.actor_ref.tell(message)):
                    reply(self._encode_reply(_OK, None))
                    return
                self._pool.submit(self._serve_tell, ref, message, reply)
            elif kind == _ASK:
                answer = self._answer_with(ref, reply)
                envelope = _pykka.Envelope(message, reply_to=answer)
                if self._system._send_if_live(
                    ref, lambda cell: _pykka.put_if_alive(cell, envelope)
                ):
                    return
                self._pool.submit(self._serve_ask, ref, message, answer)
            elif kind == _FIRE:
                done = self._fire_done(ref, reply)
                if self._system._deliver_if_active(ref, message, guard=_always, done=done):
                    return
                self._pool.submit(self._serve_fire, ref, message, done, reply)
            else:
                reply(self._encode_reply(_ERROR, ["ProtocolError", f"unknown kind {kind!r}"]))
        except RuntimeError:  # the serving threads are shut down: this node is closing
            reply(self._encode_reply(_MOVED, None))

    def _ref(self, actor_type: Any, actor_key: Any) -> VirtualActorRef:
        from ._ref import VirtualActorRef

        if actor_type not in self._system._virtual_types:
            raise PlexSpacesError(
                f"virtual actor type {actor_type!r} is not registered on node {self.node_id!r}"
            )
        if not isinstance(actor_key, str) or not actor_key:
            raise PlexSpacesError(f"bad virtual actor key {actor_key!r}")
        return VirtualActorRef(self._system, actor_type, actor_key)

    def _serve_tell(
        self, ref: VirtualActorRef, message: Any, reply: Callable[[bytes], None]
    ) -> None:
        try:
            self._tell_here(ref, message)
        except BaseException as error:
            reply(self._not_taken(error))
            return
        reply(self._encode_reply(_OK, None))

    def _serve_ask(self, ref: VirtualActorRef, message: Any, answer: _pykka.CallbackFuture) -> None:
        # A queued ask is answered through its future once the activation handles it, or failed
        # through it (ActorActiveElsewhereError: moved) when the activation cannot start.
        envelope = _pykka.Envelope(message, reply_to=answer)
        try:
            self._system._route(
                ref, lambda cell: _pykka.put_if_alive(cell, envelope), lambda: envelope
            )
        except BaseException as error:
            answer.set_exception((type(error), error, error.__traceback__))

    def _serve_fire(
        self,
        ref: VirtualActorRef,
        fired: ReminderFired,
        done: Done,
        reply: Callable[[bytes], None],
    ) -> None:
        try:
            self._system._deliver_virtual(ref, fired, guard=_always, done=done)
        except BaseException as error:
            reply(self._not_taken(error))

    def _answer_with(self, ref: VirtualActorRef, reply: Callable[[bytes], None]) -> Any:
        def answered(value: Any, error: BaseException | None) -> None:
            if error is None:
                reply(self._encode_reply(_OK, value))
            elif _not_delivered(error):
                reply(self._not_taken(error))
            else:
                reply(self._encode_error(error))

        return _pykka.CallbackFuture(answered)

    def _fire_done(self, ref: VirtualActorRef, reply: Callable[[bytes], None]) -> Done:
        def done(error: BaseException | None) -> None:
            reply(self._encode_reply(_OK, None) if error is None else self._encode_error(error))

        return done

    def _not_taken(self, error: BaseException) -> bytes:
        if isinstance(error, ActorActiveElsewhereError):
            return self._encode_reply(_MOVED, error.node_id)
        if _not_delivered(error):
            return self._encode_reply(_MOVED, None)
        return self._encode_error(error)

    def _encode_reply(self, kind: str, value: Any) -> bytes:
        try:
            return self._codec.encode([kind, value])
        except Exception as error:
            return self._codec.encode(
                [_ERROR, [type(error).__name__, f"the reply could not be encoded: {error}"]]
            )

    def _encode_error(self, error: BaseException) -> bytes:
        try:
            return self._codec.encode([_RAISE, error])
        except Exception:
            return self._codec.encode([_ERROR, [type(error).__name__, str(error)]])


def _placed(queued: _Queued, deadline: float | None) -> None:
    """Wait until a queued message is in its activation's mailbox; raise why it never got
    there (ActorActiveElsewhereError when another node holds the key)."""
    assert queued.placed is not None
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not queued.placed.wait(left):
        raise AskTimeoutError("the activation did not start in time")
    if queued.error is not None:
        raise queued.error


def _not_delivered(error: BaseException) -> bool:
    """Whether `error` says the message never reached a handler here (so another node may
    take it): the key is held elsewhere, or this node is closing."""
    return isinstance(error, ActorActiveElsewhereError | SystemShutdownError | pykka.ActorDeadError)


def _always() -> bool:
    return True


def _rendezvous(actor_id: str, node_id: str) -> bytes:
    return hashlib.blake2b(f"{node_id}\0{actor_id}".encode(), digest_size=8).digest()


def _fire_fields(fired: ReminderFired) -> list[Any]:
    """A fire as plain values every codec carries (the time as ISO-8601 text)."""
    return [
        fired.scheduled_at.isoformat() if name == "scheduled_at" else getattr(fired, name)
        for name in _FIRE_FIELDS
    ]


def _fired(values: Any) -> ReminderFired:
    if not isinstance(values, list) or len(values) != len(_FIRE_FIELDS):
        raise PlexSpacesError(f"malformed reminder fire: {values!r:.200}")
    named = dict(zip(_FIRE_FIELDS, values, strict=True))
    named["scheduled_at"] = datetime.fromisoformat(named["scheduled_at"])
    return ReminderFired(**named)
