"""Messages between nodes: one small interface (`Transport`), one implementation on NATS
(`NatsTransport`, opened by `open_transport`), and the codecs that turn messages into bytes.

The transport moves bytes only: what a request and its reply mean (a `tell`, an `ask`, its
result or error) is the actor system's business, and so is which node holds an actor (the
store's activation directory). Delivery is at most once: a request that fails or times out may
or may not have been handled by the other node.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .codec import CODECS, Codec, JsonCodec, PickleCodec, codec_named

if TYPE_CHECKING:
    from .nats_transport import NatsTransport

__all__ = [
    "CODECS",
    "Codec",
    "Handler",
    "JsonCodec",
    "PickleCodec",
    "ReplyWaiter",
    "Transport",
    "codec_named",
    "open_transport",
]

Handler = Callable[[bytes, Callable[[bytes], None]], None]
"""`handler(body, reply)`: serves one request; see `Transport.start`."""


class ReplyWaiter:
    """What a thread waits on for a request's outcome: a callback for `request_async` that
    hands the reply (or the error) over through a lock held until then (lighter than a
    `concurrent.futures.Future` or an `Event`, which wake through a condition's waiters list)."""

    __slots__ = ("_lock", "outcome")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.outcome: bytes | BaseException | None = None

    def __call__(self, outcome: bytes | BaseException) -> None:
        self.outcome = outcome
        self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Whether the outcome arrived within `timeout` seconds."""
        return self._lock.acquire(timeout=timeout)


class Transport(ABC):
    """Request/reply between the nodes of one cluster, addressed by node id.

    Every method may be called from any thread, except that `request` (which waits) must not
    be called on the transport's own thread, where handlers and callbacks run.
    """

    @abstractmethod
    def start(self, node_id: str, handler: Handler) -> None:
        """Serve requests addressed to `node_id`. `handler(body, reply)` is called for each
        request on the transport's own thread and must not block; it calls `reply(bytes)`
        exactly once, from any thread, possibly later (after an actor handled the message).

        Requests from one thread to one node reach `handler` in the order they were made.
        Returns once the server knows this node serves `node_id`. A handler that raises is
        logged (`transport.handler_failed`) and its requester gets no reply; a second call of
        `reply` raises `RuntimeError`. A reply that cannot be sent (larger than the server
        accepts, or the connection is down) is logged (`transport.reply_dropped`) and its
        requester times out.

        Raises:
            TransportUnavailableError: not connected.
            RuntimeError: this transport already serves a node id.
        """

    @abstractmethod
    def request(self, node_id: str, body: bytes, timeout: float) -> bytes:
        """Send `body` to `node_id` and wait for its reply; callable from any thread.

        Raises:
            TransportUnavailableError: not connected to the server (at once, not after the
                timeout), or the connection dropped while waiting.
            NoResponderError: no node serves `node_id`.
            TransportTimeoutError: no reply within `timeout` seconds.
            TransportError: the transport is closed, or the body is larger than the server
                accepts.
        """

    @abstractmethod
    def request_async(
        self,
        node_id: str,
        body: bytes,
        timeout: float,
        callback: Callable[[bytes | BaseException], None],
    ) -> None:
        """Same without blocking: `callback` runs once with the reply or the error (on the
        transport's thread; it must not block). Only when the transport is already closed does
        it run at once on the calling thread."""

    @abstractmethod
    def close(self) -> None:
        """Stop serving, fail the requests in flight with `TransportError`, send the replies
        already given, and disconnect. Idempotent."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the transport is connected to its server now."""


def open_transport(
    url: str, *, name: str, options: Mapping[str, Any] | None = None
) -> NatsTransport:
    """A connected transport for the nodes of cluster `name`, through the NATS server(s) at
    `url` (`nats://host:port`, with optional `user:password@` or `token@`; several separated by
    commas). `options` are keyword arguments of nats-py's `connect` (credentials, `tls`,
    `reconnect_time_wait`, ...).

    Raises:
        ValueError: a URL that is not a NATS URL, a bad name, or an option nats-py does not
            take; the message never shows a secret.
        ModuleNotFoundError: nats-py is not installed (the `nats` extra).
        TransportUnavailableError: the server cannot be reached.
        TransportError: the server refuses the credentials.
    """
    try:
        from .nats_transport import NatsTransport
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "nats":
            raise
        raise ModuleNotFoundError(
            "the NATS transport needs nats-py: pip install 'plexspaces-facets[nats]'",
            name=error.name,
        ) from error
    return NatsTransport(url, name=name, options=options)
