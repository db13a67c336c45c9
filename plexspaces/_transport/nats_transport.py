"""`NatsTransport`: request/reply between nodes over NATS, with nats-py's asyncio client on one
event-loop thread of its own.

Every node serves the subject `plexspaces.<cluster>.node.<node id>` (both encoded by
`encode_token`). A request is published with a reply subject under this transport's one inbox
(`_INBOX.<unique>.<n>`, one subscription for all replies), and its timeout is a timer on the loop.

Threads hand work to the loop through one queue and at most one wake-up in flight
(`call_soon_threadsafe` only when the loop is not already due to look), so many threads
requesting at once cost one wake-up per batch, not one per request, and no task or thread is
created per request. A single sender coroutine publishes the queue in order, so the requests
of one thread to one node reach it, and are handed to its handler, in the order they were made.

The client reconnects by itself, forever, `reconnect_time_wait` apart, and re-subscribes the
served subject and the inbox. While it is not connected a request fails at once with
`TransportUnavailableError` instead of waiting for its timeout, and the requests in flight when
the connection dropped fail with it too (their replies would go to a connection that is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from .._errors import (
    NoResponderError,
    TransportError,
    TransportTimeoutError,
    TransportUnavailableError,
)
from .._logging import ensure_logging_configured
from .._redact import HIDDEN, redact_text
from . import Handler, ReplyWaiter, Transport

__all__ = [
    "DEFAULT_RECONNECT_WAIT_S",
    "NatsTransport",
    "decode_token",
    "encode_token",
    "node_subject",
    "parse_nats_url",
]

_log = structlog.get_logger("plexspaces.transport")

SUBJECT_PREFIX: Final = "plexspaces"
DEFAULT_RECONNECT_WAIT_S: Final = 1.0
"""Seconds between two attempts to reconnect (nats-py's own default is 2)."""
CONNECT_TIMEOUT_S: Final = 2.0
"""Seconds one attempt to connect may take (nats-py's default)."""
CALL_TIMEOUT_S: Final = 10.0
"""Seconds a thread waits for the loop to start serving or to close (a bound, never a delay)."""
_WAIT_GRACE_S: Final = 1.0
"""How much longer than its timeout `request` waits for the loop's answer, which always comes
first unless the loop itself is stuck."""

_SCHEMES: Final = ("nats", "tls", "ws", "wss")
_NO_RESPONDERS: Final = "503"  # the status of the server's reply when no one is subscribed
_STATUS: Final = "Status"
_AUTHORIZATION_VIOLATION: Final = "authorization violation"
# What the transport sets itself; everything else nats-py's `connect` takes passes through.
_RESERVED: Final = frozenset(
    {
        "servers",
        "error_cb",
        "disconnected_cb",
        "closed_cb",
        "reconnected_cb",
        "discovered_server_cb",
        "lame_duck_mode_cb",
    }
)
_CREDENTIALS: Final = ("user", "password", "token")


# -- subjects ------------------------------------------------------------------------------------


def _is_plain(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "-_")


def encode_token(text: str) -> str:
    """`text` as one token of a NATS subject, reversibly: ASCII letters, digits, `-` and `_`
    stay, every other character becomes `~` and the hex of its UTF-8 bytes (`.` is `~2e`), so
    no `.`, `*`, `>` or white space reaches the subject.

    Raises:
        ValueError: `text` is not a non-empty string.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} cannot name a node or cluster: expected a non-empty string")
    if all(_is_plain(char) for char in text):
        return text
    return "".join(
        char if _is_plain(char) else "~" + char.encode("utf-8", "surrogatepass").hex("~")
        for char in text
    )


def decode_token(token: str) -> str:
    """The text `encode_token` made `token` from."""
    if "~" not in token:
        return token
    out = bytearray()
    index = 0
    while index < len(token):
        if token[index] == "~":
            out += bytes.fromhex(token[index + 1 : index + 3])
            index += 3
        else:
            out += token[index].encode("ascii")
            index += 1
    return out.decode("utf-8", "surrogatepass")


def node_subject(cluster: str, node_id: str) -> str:
    """The subject node `node_id` of cluster `cluster` serves."""
    return f"{SUBJECT_PREFIX}.{encode_token(cluster)}.node.{encode_token(node_id)}"


# -- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsUrl:
    """A NATS URL taken apart: the servers without credentials, the credentials apart, and the
    URL as it may be shown."""

    servers: list[str]
    shown: str
    credentials: dict[str, str] = field(default_factory=dict)


def parse_nats_url(url: str) -> NatsUrl:
    """`url` (`nats://host:port`, `nats://user:password@host:port`, `nats://token@host:port`,
    `tls://...`, or several of them separated by commas) taken apart. Credentials are
    percent-decoded, so a password with `@` or `:` is written `%40`, `%3A`.

    Raises:
        ValueError: not such a URL, or servers with different credentials; the message shows
            the URL without its secrets.
    """
    if not isinstance(url, str):
        raise ValueError(
            f"transport URL {redact_text(repr(url))} is not a string; expected 'nats://host:port'"
        )
    servers: list[str] = []
    shown: list[str] = []
    credentials: dict[str, str] | None = None
    for part in url.split(","):
        piece = part.strip()
        where = redact_text(piece) if "@" not in piece else _hide_userinfo(piece)
        problem = f"transport URL {where!r} is not a NATS URL"
        accepted = (
            "expected 'nats://host:port' (or tls://, ws://, wss://), with an optional "
            "user:password@ or token@"
        )
        try:
            parts = urlsplit(piece)
            port = parts.port
        except ValueError:  # its text may quote the netloc, credentials included
            raise ValueError(f"{problem} (its port or host cannot be read); {accepted}") from None
        if parts.scheme not in _SCHEMES or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{problem}; {accepted}")
        if parts.query or parts.fragment:
            raise ValueError(f"{problem} (it has a query or fragment); {accepted}")
        found: dict[str, str] = {}
        if parts.username is not None and parts.password is not None:
            found = {"user": unquote(parts.username), "password": unquote(parts.password)}
        elif parts.username:
            found = {"token": unquote(parts.username)}
        if credentials is not None and found != credentials:
            raise ValueError(
                f"transport URL {_hide_userinfo(url)!r} gives its servers different credentials; "
                "give them once, the same for all (or in options)"
            )
        credentials = found
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if port is None else f"{host}:{port}"
        servers.append(f"{parts.scheme}://{netloc}")
        shown.append(_hide_userinfo(piece))
    return NatsUrl(servers=servers, shown=",".join(shown), credentials=credentials or {})


def _hide_userinfo(url: str) -> str:
    """`url` with a password or token replaced by `***` (a user name stays)."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return redact_text(url)
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:{HIDDEN}@{hostpart}" if colon else f"{scheme}://{HIDDEN}@{hostpart}"


def _connect_options(parsed: NatsUrl, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of nats-py's `connect`, checked: `options` may hold any of them but
    the callbacks and servers the transport sets itself, and credentials only where the URL has
    none."""
    given = dict(options or {})
    accepted = set(inspect.signature(Client.connect).parameters) - {"self"} - _RESERVED
    unknown = sorted(key for key in given if key not in accepted)
    if unknown:
        raise ValueError(
            f"transport option(s) {', '.join(map(repr, unknown))} not accepted; accepted are "
            f"the keyword arguments of nats-py's connect except {sorted(_RESERVED)}: "
            f"{', '.join(sorted(accepted))}"
        )
    both = [key for key in _CREDENTIALS if given.get(key) is not None and parsed.credentials]
    if both:
        raise ValueError(
            f"transport credentials given both in the URL {parsed.shown!r} and in options "
            f"({', '.join(both)}); give them in one place"
        )
    result: dict[str, Any] = {
        "reconnect_time_wait": DEFAULT_RECONNECT_WAIT_S,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "max_reconnect_attempts": -1,
        **parsed.credentials,
        **given,
    }
    for key in ("reconnect_time_wait", "connect_timeout"):
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(
                f"transport option {key}={value!r} is not accepted; expected a positive number "
                "of seconds"
            )
    return result


# -- the transport -------------------------------------------------------------------------------


class _Request:
    """One request in flight: where it goes, and whom to tell how it ended."""

    __slots__ = ("body", "callback", "node_id", "subject", "timeout", "timer")

    def __init__(
        self,
        node_id: str,
        subject: str,
        body: bytes,
        timeout: float,
        callback: Callable[[bytes | BaseException], None],
    ) -> None:
        self.node_id = node_id
        self.subject = subject
        self.body = body
        self.timeout = timeout
        self.callback = callback
        self.timer: asyncio.TimerHandle | None = None


class _Outgoing:
    """A reply to publish."""

    __slots__ = ("body", "subject")

    def __init__(self, subject: str, body: bytes) -> None:
        self.subject = subject
        self.body = body


class _Reply:
    """The `reply` handed to a handler with each request: callable once, from any thread."""

    __slots__ = ("_lock", "_subject", "_transport")

    def __init__(self, transport: NatsTransport, subject: str) -> None:
        self._transport = transport
        self._subject: str | None = subject
        self._lock = threading.Lock()

    def __call__(self, body: bytes) -> None:
        body = _checked_body(body, "reply")
        with self._lock:
            subject, self._subject = self._subject, None
        if subject is None:
            raise RuntimeError("this request was already replied to; reply exactly once")
        if subject:  # a message published without a reply subject wants no answer
            self._transport._submit(_Outgoing(subject, body))


def _checked_body(body: object, what: str) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"{what} body must be bytes, not {type(body).__name__}")


def _checked_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"request timeout {timeout!r} is not accepted; expected positive seconds")
    return float(timeout)


class NatsTransport(Transport):
    """Request/reply between the nodes of cluster `name` through the NATS server(s) at `url`.

    Connects when created (two attempts); raises `TransportUnavailableError` when the server
    cannot be reached, `TransportError` when it refuses the credentials. After that it
    reconnects by itself for as long as it is open. See `Transport` for the methods' contract.

    Args:
        url: `nats://host:port`, with optional `user:password@` or `token@`, or several URLs
            separated by commas (servers of one NATS cluster).
        name: the cluster's name: nodes that talk to each other use the same one.
        options: keyword arguments of nats-py's `connect` (`user`, `password`, `token`,
            `nkeys_seed`, `user_credentials`, `tls`, `reconnect_time_wait`, ...), except the
            callbacks and the servers, which the transport sets.
    """

    def __init__(self, url: str, *, name: str, options: Mapping[str, Any] | None = None) -> None:
        parsed = parse_nats_url(url)
        encode_token(name)  # checks the name before anything starts
        ensure_logging_configured()  # as an ActorSystem does: levels, and the log redaction
        self._options = _connect_options(parsed, options)
        self._servers = parsed.servers
        self.url = parsed.shown
        self.name = name
        self._secrets = [
            str(self._options[key])
            for key in _CREDENTIALS
            if isinstance(self._options.get(key), str) and self._options[key]
        ]
        self._subjects: dict[str, str] = {}
        self._outbox: deque[_Request | _Outgoing] = deque()
        self._wake_scheduled = False
        self._pending: dict[str, _Request] = {}
        self._next_token = 0
        self._inbox = ""
        self._serving: str | None = None
        self._handler: Handler | None = None
        self._up = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._last_error: BaseException | None = None
        self._errors_seen = 0  # connection errors so far (failed reconnect attempts among them)
        self._log = _log.bind(transport=name, url=self.url)
        self._nc = Client()
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._sender: asyncio.Task[None] | None = None
        self._thread = threading.Thread(
            target=self._run_loop, name=f"plexspaces-transport-{name}", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    # -- the Transport interface ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set() and not self._closed

    @property
    def max_payload(self) -> int:
        """The largest body, in bytes, the server accepts in one message (a request or a
        reply): nats-server's `max_payload`, 1 MiB by default."""
        return int(self._nc.max_payload)

    def wait_until_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the connection (back after an outage of the
        server); whether it is connected."""
        return self._up.wait(timeout) and not self._closed

    def start(self, node_id: str, handler: Handler) -> None:
        subject = self._subject_of(node_id)
        if not callable(handler):
            raise TypeError(f"handler {handler!r} is not callable")
        self._refuse_on_loop("start")
        if self._closed:
            raise self._closed_error()
        if self._serving is not None:
            raise RuntimeError(
                f"this transport already serves {self._serving}; open one transport per node"
            )
        future = asyncio.run_coroutine_threadsafe(
            self._serve(node_id, subject, handler), self._loop
        )
        future.result(CALL_TIMEOUT_S)

    def request(self, node_id: str, body: bytes, timeout: float) -> bytes:
        self._refuse_on_loop("request")
        waiter = ReplyWaiter()
        self._begin(node_id, body, timeout, waiter, fail_fast=True)
        seconds = float(timeout)
        if not waiter.wait(seconds + _WAIT_GRACE_S):
            raise TransportTimeoutError(
                f"node {node_id!r} did not reply within {seconds:g}s (the transport's loop did "
                "not answer either)"
            )
        outcome = waiter.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def request_async(
        self,
        node_id: str,
        body: bytes,
        timeout: float,
        callback: Callable[[bytes | BaseException], None],
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback {callback!r} is not callable")
        self._begin(node_id, body, timeout, callback, fail_fast=False)

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._up.clear()
        if threading.current_thread() is self._thread:
            # Called from a callback: the loop cannot wait for itself; it winds down after.
            self._loop.create_task(self._shutdown()).add_done_callback(lambda _: self._loop.stop())
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(CALL_TIMEOUT_S)
        self._stop_loop()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "disconnected"
        return f"<NatsTransport {self.name!r} {self.url} {state}>"

    # -- thread side ----------------------------------------------------------------------------

    def _subject_of(self, node_id: str) -> str:
        subject = self._subjects.get(node_id)
        if subject is None:
            subject = node_subject(self.name, node_id)
            if len(self._subjects) > 10_000:  # node ids come and go: keep the cache bounded
                self._subjects.clear()
            self._subjects[node_id] = subject
        return subject

    def _begin(
        self,
        node_id: str,
        body: bytes,
        timeout: float,
        callback: Callable[[bytes | BaseException], None],
        *,
        fail_fast: bool,
    ) -> None:
        subject = self._subject_of(node_id)
        data = _checked_body(body, "request")
        seconds = _checked_timeout(timeout)
        if self._closed:
            error: BaseException = self._closed_error()
        elif fail_fast and not self._up.is_set():
            error = self._unavailable_error()
        else:
            self._submit(_Request(node_id, subject, data, seconds, callback))
            return
        callback(error)

    def _submit(self, item: _Request | _Outgoing) -> None:
        self._outbox.append(item)
        if self._loop.is_closed():  # closed meanwhile: nothing will send it
            self._fail_outbox(self._closed_error)
            return
        # One wake-up in flight is enough: the sender resets the flag before it drains the
        # queue, so an item appended after the reset has a wake-up of its own coming.
        if not self._wake_scheduled:
            self._wake_scheduled = True
            wake = self._wake
            assert wake is not None
            if threading.current_thread() is self._thread:
                wake.set()
            else:
                try:
                    self._loop.call_soon_threadsafe(wake.set)
                except RuntimeError:  # the loop is closed: closing raced with this call
                    self._fail_outbox(self._closed_error)

    def _refuse_on_loop(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                f"{what} would wait on the transport's own thread; use request_async in "
                "handlers and callbacks"
            )

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_S)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()
            self._fail_outbox(self._closed_error)

    # -- errors ---------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """`text` with every credential of this transport hidden, in a URL or not."""
        text = redact_text(text)
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def _reason(self, error: BaseException | None) -> str:
        if error is None:
            return "no connection"
        return self._scrub(str(error) or type(error).__name__)

    def _unavailable_error(self) -> TransportUnavailableError:
        return TransportUnavailableError(
            f"the NATS server at {self.url} is not reachable ({self._reason(self._last_error)}); "
            "messages to other nodes fail until it is back (the transport reconnects by itself)"
        )

    def _closed_error(self) -> TransportError:
        return TransportError(f"the transport to {self.url} is closed")

    # -- loop side ------------------------------------------------------------------------------

    async def _connect(self) -> None:
        self._wake = asyncio.Event()
        options = dict(self._options)
        forever = options.pop("max_reconnect_attempts")
        allow_reconnect = options.pop("allow_reconnect", True)
        options.setdefault("name", f"{SUBJECT_PREFIX}.{self.name}")
        try:
            # The first connection gets two attempts and then fails, as a mistyped URL or a
            # server that is not up should; reconnecting later goes on forever (below).
            await self._nc.connect(
                servers=self._servers,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                **options,
            )
        except nats.errors.Error as error:
            reason = self._reason(self._last_error or error)
            if _AUTHORIZATION_VIOLATION in reason.lower():
                raise TransportError(
                    f"the NATS server at {self.url} refused this node's credentials ({reason}); "
                    "check the user and password or the token"
                ) from None
            if isinstance(error, nats.errors.NoServersError):
                raise TransportUnavailableError(
                    f"cannot connect to the NATS server at {self.url} ({reason}); start it or "
                    "check the URL"
                ) from None
            raise TransportError(
                f"cannot connect to the NATS server at {self.url}: {reason}"
            ) from None
        except (TimeoutError, OSError) as error:
            raise TransportUnavailableError(
                f"cannot connect to the NATS server at {self.url} ({self._reason(error)}); "
                "start it or check the URL"
            ) from None
        self._nc.options["allow_reconnect"] = allow_reconnect
        self._nc.options["max_reconnect_attempts"] = forever
        self._inbox = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._inbox + "*", cb=self._on_reply)
        self._sender = asyncio.get_running_loop().create_task(self._send_forever())
        self._last_error = None
        self._up.set()
        self._log.info("transport.connected", server=self._connected_server())

    def _connected_server(self) -> str | None:
        uri = self._nc.connected_url
        return None if uri is None else f"{uri.scheme}://{uri.hostname}:{uri.port}"

    async def _serve(
        self,
        node_id: str,
        subject: str,
        handler: Handler,
    ) -> None:
        if self._serving is not None:
            raise RuntimeError("this transport already serves a node; open one per node")
        if not self._nc.is_connected:
            raise self._unavailable_error()
        self._handler = handler
        self._serving = subject

        async def on_request(msg: Msg) -> None:
            self._handle(node_id, msg)

        await self._nc.subscribe(subject, cb=on_request)
        await self._nc.flush(timeout=int(CALL_TIMEOUT_S))
        self._log.info("transport.serving", node_id=node_id, subject=subject)

    def _handle(self, node_id: str, msg: Msg) -> None:
        handler = self._handler
        assert handler is not None
        try:
            handler(msg.data, _Reply(self, msg.reply))
        except Exception:
            # The requester gets no reply and times out; the handler's own failure is for the
            # log of the node that holds it.
            self._log.exception("transport.handler_failed", node_id=node_id)

    async def _send_forever(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            await wake.wait()
            wake.clear()
            self._wake_scheduled = False
            outbox = self._outbox
            while outbox:
                item = outbox.popleft()
                try:
                    if isinstance(item, _Request):
                        await self._send_request(item)
                    else:
                        await self._send_reply(item)
                except Exception:
                    # Never expected; but a sender that died would leave every later request
                    # to wait out its timeout.
                    self._log.exception("transport.send_failed")

    async def _send_request(self, request: _Request) -> None:
        if self._closed:
            self._finish(request, self._closed_error())
            return
        if not self._nc.is_connected:
            # nats-py would buffer the message until it reconnects; the caller is told now.
            self._finish(request, self._unavailable_error())
            return
        self._next_token += 1
        token = str(self._next_token)
        self._pending[token] = request
        request.timer = self._loop.call_later(request.timeout, self._expire, token)
        try:
            await self._nc.publish(request.subject, request.body, reply=self._inbox + token)
        except nats.errors.MaxPayloadError:
            self._drop(token)
            self._finish(
                request,
                TransportError(
                    f"a request of {len(request.body)} bytes to node {request.node_id!r} is "
                    f"larger than the NATS server accepts ({self._nc.max_payload} bytes)"
                ),
            )
        except Exception as error:
            self._drop(token)
            self._last_error = error
            self._finish(request, self._unavailable_error())

    async def _send_reply(self, reply: _Outgoing) -> None:
        if not self._nc.is_connected:
            self._log.warning("transport.reply_dropped", reason="not connected")
            return
        try:
            await self._nc.publish(reply.subject, reply.body)
        except Exception as error:
            self._log.warning(
                "transport.reply_dropped", bytes=len(reply.body), reason=self._reason(error)
            )

    def _drop(self, token: str) -> _Request | None:
        request = self._pending.pop(token, None)
        if request is not None and request.timer is not None:
            request.timer.cancel()
        return request

    async def _on_reply(self, msg: Msg) -> None:
        request = self._drop(msg.subject[len(self._inbox) :])
        if request is None:
            return  # a late reply to a request that timed out or failed
        headers = msg.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS and not msg.data:
            self._finish(
                request,
                NoResponderError(
                    f"no node serves node id {request.node_id!r} ({request.subject}): it is gone, "
                    "or not reconnected yet; look the actor up again"
                ),
            )
        else:
            self._finish(request, msg.data)

    def _expire(self, token: str) -> None:
        request = self._pending.pop(token, None)
        if request is not None:
            self._finish(
                request,
                TransportTimeoutError(
                    f"node {request.node_id!r} did not reply within {request.timeout:g}s"
                ),
            )

    def _finish(self, request: _Request, outcome: bytes | BaseException) -> None:
        try:
            request.callback(outcome)
        except Exception:
            self._log.exception("transport.callback_failed", node_id=request.node_id)

    def _fail_pending(self, error: Callable[[], BaseException]) -> None:
        pending, self._pending = self._pending, {}
        for request in pending.values():
            if request.timer is not None:
                request.timer.cancel()
            self._finish(request, error())

    def _fail_outbox(self, error: Callable[[], BaseException]) -> None:
        while self._outbox:
            with contextlib.suppress(IndexError):
                item = self._outbox.popleft()
                if isinstance(item, _Request):
                    self._finish(item, error())

    async def _shutdown(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        # Replies already handed over still go out; requests not yet sent fail.
        while self._outbox:
            item = self._outbox.popleft()
            if isinstance(item, _Request):
                self._finish(item, self._closed_error())
            else:
                await self._send_reply(item)
        self._fail_pending(self._closed_error)
        if self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.close(), CALL_TIMEOUT_S)
        self._log.info("transport.closed")

    # -- nats-py's callbacks --------------------------------------------------------------------

    async def _on_error(self, error: Exception) -> None:
        self._last_error = error
        self._errors_seen += 1
        reason = self._reason(error)
        if _AUTHORIZATION_VIOLATION in reason.lower():
            self._log.warning("transport.error", error=reason)
        else:
            self._log.debug("transport.error", error=reason)

    async def _on_disconnected(self) -> None:
        was_up = self._up.is_set()
        self._up.clear()
        self._fail_pending(self._unavailable_error)
        if was_up and not self._closed:
            self._log.warning("transport.disconnected", reason=self._reason(self._last_error))

    async def _on_reconnected(self) -> None:
        self._last_error = None
        self._up.set()
        self._log.info("transport.reconnected", server=self._connected_server())

    async def _on_closed(self) -> None:
        self._up.clear()
        if not self._closed:
            # Only when reconnecting was switched off (`allow_reconnect=False`) or gave up.
            self._log.warning("transport.connection_closed", reason=self._reason(self._last_error))
