"""The NATS transport between nodes, against a real nats-server: request/reply, timeouts, no
responders, a server that stops and comes back, credentials, secrets kept out of errors and
logs, and the codecs."""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from plexspaces import (
    AskTimeoutError,
    Codec,
    MessageDecodeError,
    MessageEncodeError,
    NoResponderError,
    PlexSpacesError,
    TransportError,
    TransportTimeoutError,
    TransportUnavailableError,
    codec_named,
)
from plexspaces._redact import redact_text
from plexspaces._transport import Transport, open_transport
from plexspaces._transport.nats_transport import (
    NatsTransport,
    decode_token,
    encode_token,
    node_subject,
)

from .natsserver import NatsServer, free_port

WAIT = 10.0
"""Seconds a test waits for something that happens in milliseconds (a bound, never a delay)."""
FAST = 1.0
"""Seconds within which a failure the transport can tell at once must be reported."""
PASSWORD = "Sw0rdfish-nats-51d2"
TOKEN = "T0ken-nats-9c3e77"

Opener = Callable[..., NatsTransport]


@pytest.fixture(autouse=True)
def every_log_level() -> Iterator[None]:
    """Events of every level reach `capture_logs`, whatever an earlier test configured; the
    configuration is put back afterwards."""
    saved = structlog.get_config() if structlog.is_configured() else None
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    if saved is None:
        structlog.reset_defaults()
    else:
        structlog.configure(**saved)


@pytest.fixture
def open_nats() -> Iterator[Opener]:
    """Open transports (`open_transport`'s arguments, name "test" by default); all closed after
    the test, whose transport threads must then have ended."""
    opened: list[NatsTransport] = []

    def open_(url: str, name: str = "test", **kwargs: Any) -> NatsTransport:
        transport = open_transport(url, name=name, **kwargs)
        opened.append(transport)
        return transport

    yield open_
    for transport in opened:
        transport.close()
    left = [t for t in threading.enumerate() if t.name.startswith("plexspaces-transport-")]
    assert left == [], f"transport threads left running: {left}"


def echo_upper(body: bytes, reply: Callable[[bytes], None]) -> None:
    reply(body.upper())


def until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Whether `condition` holds within `timeout` seconds, checked every few milliseconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- request and reply ---------------------------------------------------------------------------


def test_a_request_gets_the_reply_of_the_node_it_names(nats_url: str, open_nats: Opener) -> None:
    """A request to a served node id is answered by that node's handler, and only by it."""
    client, server, other = open_nats(nats_url), open_nats(nats_url), open_nats(nats_url)
    server.start("n1", echo_upper)
    other.start("n2", lambda body, reply: reply(b"n2:" + body))
    assert isinstance(client, Transport)
    assert client.connected
    assert client.request("n1", b"hello", WAIT) == b"HELLO"
    assert client.request("n2", b"hello", WAIT) == b"n2:hello"
    assert server.request("n2", b"", WAIT) == b"n2:"  # a serving node requests as well


def test_a_handler_may_reply_later_from_another_thread(nats_url: str, open_nats: Opener) -> None:
    """`reply` works after the handler returned, called from a thread of the application."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    handed_over: list[tuple[bytes, Callable[[bytes], None]]] = []
    arrived = threading.Event()

    def handler(body: bytes, reply: Callable[[bytes], None]) -> None:
        handed_over.append((body, reply))
        arrived.set()

    server.start("later", handler)
    outcome: list[bytes | BaseException] = []
    done = threading.Event()

    def callback(result: bytes | BaseException) -> None:
        outcome.append(result)
        done.set()

    client.request_async("later", b"question", WAIT, callback)
    assert arrived.wait(WAIT)
    assert not done.is_set()
    body, reply = handed_over[0]
    replier = threading.Thread(target=reply, args=(b"answer to " + body,))
    replier.start()
    replier.join(WAIT)
    assert done.wait(WAIT)
    assert outcome == [b"answer to question"]


def test_requests_from_eight_threads_are_all_answered_in_order(
    nats_url: str, open_nats: Opener
) -> None:
    """Eight threads requesting at once each get their own replies, and each thread's requests
    reach the handler in the order it made them."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    seen: dict[int, list[int]] = {}

    def handler(body: bytes, reply: Callable[[bytes], None]) -> None:
        thread, number = map(int, body.split(b":"))
        seen.setdefault(thread, []).append(number)
        reply(b"%d:%d" % (thread, number * 2))

    server.start("busy", handler)
    per_thread = 200
    results: dict[int, list[bytes]] = {}
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            results[thread] = [
                client.request("busy", b"%d:%d" % (thread, number), WAIT)
                for number in range(per_thread)
            ]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for index in range(8):
        assert results[index] == [b"%d:%d" % (index, n * 2) for n in range(per_thread)]
        assert seen[index] == list(range(per_thread))


def test_request_async_calls_back_once_on_the_transport_thread(
    nats_url: str, open_nats: Opener
) -> None:
    """The callback of `request_async` runs once, with the reply, on the transport's thread;
    `request_async` itself returns at once."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    server.start("n1", echo_upper)
    calls: list[tuple[bytes | BaseException, str]] = []
    done = threading.Event()

    def callback(result: bytes | BaseException) -> None:
        calls.append((result, threading.current_thread().name))
        done.set()

    client.request_async("n1", b"abc", WAIT, callback)
    assert done.wait(WAIT)
    assert calls == [(b"ABC", "plexspaces-transport-test")]
    # An error reaches the callback the same way.
    done.clear()
    calls.clear()
    client.request_async("nobody", b"abc", WAIT, callback)
    assert done.wait(WAIT)
    assert isinstance(calls[0][0], NoResponderError)
    assert calls[0][1] == "plexspaces-transport-test"


# -- failures ------------------------------------------------------------------------------------


def test_no_reply_within_the_timeout_raises_transport_timeout(
    nats_url: str, open_nats: Opener
) -> None:
    """A node that never replies makes the request raise TransportTimeoutError (also an
    AskTimeoutError) after its timeout, not before and not much after."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    server.start("silent", lambda body, reply: None)
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError, match=r"node 'silent' did not reply within 0.3s"):
        client.request("silent", b"anyone?", 0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.3 + FAST
    assert issubclass(TransportTimeoutError, AskTimeoutError)
    assert issubclass(TransportTimeoutError, TimeoutError)


def test_an_unknown_node_raises_no_responder_at_once(nats_url: str, open_nats: Opener) -> None:
    """A request to a node id nobody serves raises NoResponderError at once, not after the
    timeout, naming the node."""
    client = open_nats(nats_url)
    started = time.monotonic()
    with pytest.raises(NoResponderError, match=r"node id 'gone' .*look the actor up again"):
        client.request("gone", b"hello", 30)
    assert time.monotonic() - started < FAST


def test_a_handler_that_raises_is_logged_and_its_requester_times_out(
    nats_url: str, open_nats: Opener
) -> None:
    """A failing handler is logged as transport.handler_failed; the transport goes on serving."""
    client, server = open_nats(nats_url), open_nats(nats_url)

    def handler(body: bytes, reply: Callable[[bytes], None]) -> None:
        if body == b"boom":
            raise RuntimeError("handler broke")
        reply(body)

    server.start("fragile", handler)
    with capture_logs() as logs, pytest.raises(TransportTimeoutError):
        client.request("fragile", b"boom", 0.3)
    assert [e["event"] for e in logs if e["event"] == "transport.handler_failed"] == [
        "transport.handler_failed"
    ]
    assert client.request("fragile", b"fine", WAIT) == b"fine"


def test_a_second_reply_is_refused(nats_url: str, open_nats: Opener) -> None:
    """Calling `reply` twice raises RuntimeError; the requester gets the first reply."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    second: list[BaseException] = []

    def handler(body: bytes, reply: Callable[[bytes], None]) -> None:
        reply(b"first")
        try:
            reply(b"second")
        except RuntimeError as error:
            second.append(error)

    server.start("twice", handler)
    assert client.request("twice", b"", WAIT) == b"first"
    assert len(second) == 1
    assert "exactly once" in str(second[0])


def test_request_refuses_to_wait_on_the_transport_thread(nats_url: str, open_nats: Opener) -> None:
    """A handler calling the blocking `request` gets a RuntimeError instead of a deadlock."""
    client, server = open_nats(nats_url), open_nats(nats_url)

    def handler(body: bytes, reply: Callable[[bytes], None]) -> None:
        try:
            server.request("n1", b"", 1)
        except RuntimeError as error:
            reply(str(error).encode())

    server.start("n1", handler)
    assert b"request_async" in client.request("n1", b"", WAIT)


def test_a_body_larger_than_the_server_accepts_fails_clearly(
    nats_url: str, open_nats: Opener
) -> None:
    """A request bigger than the server's max_payload raises TransportError naming both sizes."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    server.start("n1", echo_upper)
    assert client.max_payload == 1024 * 1024  # nats-server's default
    with pytest.raises(TransportError, match=r"2000000 bytes .* larger than .*1048576 bytes"):
        client.request("n1", b"x" * 2_000_000, WAIT)
    assert client.request("n1", b"ok", WAIT) == b"OK"


def test_a_reply_larger_than_the_server_accepts_is_logged_and_times_out(
    nats_url: str, open_nats: Opener
) -> None:
    """A reply bigger than max_payload is dropped with a transport.reply_dropped warning; the
    requester times out and the transport goes on."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    server.start("n1", lambda body, reply: reply(body * 2_000_000 if body == b"x" else body))
    with capture_logs() as logs, pytest.raises(TransportTimeoutError):
        client.request("n1", b"x", 0.5)
    assert [e["bytes"] for e in logs if e["event"] == "transport.reply_dropped"] == [2_000_000]
    assert client.request("n1", b"ok", WAIT) == b"ok"


def test_bad_arguments_are_refused_naming_the_value(nats_url: str, open_nats: Opener) -> None:
    """Bodies that are not bytes, timeouts that are not positive seconds and empty node ids
    raise before anything is sent."""
    client = open_nats(nats_url)
    with pytest.raises(TypeError, match="request body must be bytes, not str"):
        client.request("n1", "text", WAIT)  # type: ignore[arg-type]
    for timeout in (0, -1, math.nan, math.inf, "1s", True):
        with pytest.raises(ValueError, match=f"request timeout {timeout!r} is not accepted"):
            client.request("n1", b"", timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot name a node"):
        client.request("", b"", WAIT)


def test_a_closed_transport_fails_requests_and_ends_its_thread(
    nats_url: str, open_nats: Opener
) -> None:
    """close() fails the requests in flight with TransportError, later requests too, and ends
    the transport's thread; a second close() does nothing."""
    server = open_nats(nats_url, name="other")
    server.start("silent", lambda body, reply: None)
    outcome: list[bytes | BaseException] = []
    done = threading.Event()

    def callback(result: bytes | BaseException) -> None:
        outcome.append(result)
        done.set()

    client = open_nats(nats_url, name="other")
    client.request_async("silent", b"", 30, callback)
    client.close()
    assert done.wait(WAIT)
    assert isinstance(outcome[0], TransportError)
    assert "closed" in str(outcome[0])
    with pytest.raises(TransportError, match="closed"):
        client.request("silent", b"", WAIT)
    assert not client.connected
    client.close()
    threads = [t.name for t in threading.enumerate()]
    assert threads.count("plexspaces-transport-other") == 1  # the server's; the client's ended


def test_close_from_a_callback_ends_the_transport_without_deadlock(
    nats_url: str, open_nats: Opener
) -> None:
    """close() called on the transport's own thread (in a callback) returns, and the transport
    winds down and ends its thread."""
    client, server = open_nats(nats_url, name="selfclose"), open_nats(nats_url)
    server.start("n1", echo_upper)
    done = threading.Event()

    def callback(result: bytes | BaseException) -> None:
        client.close()
        done.set()

    client.request_async("n1", b"x", WAIT, callback)
    assert done.wait(WAIT)
    assert until(
        lambda: all(t.name != "plexspaces-transport-selfclose" for t in threading.enumerate())
    )
    with pytest.raises(TransportError, match="closed"):
        client.request("n1", b"", WAIT)


def test_a_transport_serves_one_node_id(nats_url: str, open_nats: Opener) -> None:
    """A second start() on one transport raises RuntimeError; the first node id stays served."""
    client, server = open_nats(nats_url), open_nats(nats_url)
    server.start("n1", echo_upper)
    with pytest.raises(RuntimeError, match="open one transport per node"):
        server.start("n2", echo_upper)
    assert client.request("n1", b"x", WAIT) == b"X"


# -- the server goes away and comes back ---------------------------------------------------------


def test_a_stopped_server_fails_requests_at_once_and_a_restarted_one_serves_again(
    make_nats_server: Callable[..., NatsServer], open_nats: Opener
) -> None:
    """While the server is down requests raise TransportUnavailableError at once (also one in
    flight when it went down); after a restart on the same port, with several failed reconnect
    attempts in between, requests succeed again and the node is served again, with no action by
    the user."""
    nats = make_nats_server()
    options = {"reconnect_time_wait": 0.05}
    client, server = open_nats(nats.url, options=options), open_nats(nats.url, options=options)
    server.start("n1", lambda body, reply: reply(body) if body != b"hold" else None)
    assert client.request("n1", b"before", WAIT) == b"before"
    in_flight: list[bytes | BaseException] = []
    dropped = threading.Event()

    def callback(result: bytes | BaseException) -> None:
        in_flight.append(result)
        dropped.set()

    with capture_logs() as logs:
        client.request_async("n1", b"hold", 60, callback)
        nats.stop()
        assert dropped.wait(WAIT)  # long before its 60 s timeout
        assert isinstance(in_flight[0], TransportUnavailableError)
        assert until(lambda: not client.connected)
        started = time.monotonic()
        with pytest.raises(TransportUnavailableError, match=r"fail until it is back") as raised:
            client.request("n1", b"during", 30)
        assert time.monotonic() - started < FAST
        assert nats.url in str(raised.value)
        assert isinstance(raised.value, ConnectionError)
        # Keep it down across several failed reconnect attempts: reconnecting never gives up.
        errors_before = client._errors_seen
        assert until(lambda: client._errors_seen >= errors_before + 5)
        nats.start()
        assert client.wait_until_connected(WAIT)
        assert server.wait_until_connected(WAIT)
    assert client.request("n1", b"after", WAIT) == b"after"
    events = [e["event"] for e in logs]
    assert "transport.disconnected" in events
    assert "transport.reconnected" in events


def test_opening_against_a_server_that_is_down_fails_fast(open_nats: Opener) -> None:
    """open_transport on a port where nothing listens raises TransportUnavailableError within
    a few seconds, naming the URL."""
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(
        TransportUnavailableError, match=f"cannot connect to the NATS server at {url}"
    ):
        open_nats(url)
    assert time.monotonic() - started < 5


# -- credentials ---------------------------------------------------------------------------------


def test_user_and_password_in_the_url_or_options_connect(
    make_nats_server: Callable[..., NatsServer], open_nats: Opener
) -> None:
    """A server that requires a user and password accepts them from the URL (percent-encoded
    there) or from options; the transport shows the URL without the password."""
    password = PASSWORD + "@:/"
    nats = make_nats_server(user="node", password=password)
    encoded = PASSWORD + "%40%3A%2F"
    in_url = open_nats(f"nats://node:{encoded}@127.0.0.1:{nats.port}")
    in_options = open_nats(nats.url, options={"user": "node", "password": password})
    in_url.start("n1", echo_upper)
    assert in_options.request("n1", b"hi", WAIT) == b"HI"
    assert in_url.url == f"nats://node:***@127.0.0.1:{nats.port}"
    assert PASSWORD not in repr(in_url)


def test_a_token_in_the_url_or_options_connects(
    make_nats_server: Callable[..., NatsServer], open_nats: Opener
) -> None:
    """A server that requires a token accepts it from the URL or options; the URL is shown
    with the token hidden."""
    nats = make_nats_server(token=TOKEN)
    in_url = open_nats(f"nats://{TOKEN}@127.0.0.1:{nats.port}")
    in_options = open_nats(nats.url, options={"token": TOKEN})
    in_url.start("n1", echo_upper)
    assert in_options.request("n1", b"hi", WAIT) == b"HI"
    assert in_url.url == f"nats://***@127.0.0.1:{nats.port}"


@pytest.mark.parametrize("kind", ["password", "token"])
def test_wrong_credentials_fail_clearly_without_the_secret(
    kind: str, make_nats_server: Callable[..., NatsServer], open_nats: Opener
) -> None:
    """Wrong credentials raise TransportError saying they were refused, naming the server,
    never showing the secret that was tried; nothing logged shows it either."""
    if kind == "password":
        nats = make_nats_server(user="node", password=PASSWORD)
        wrong = "Wr0ng-" + PASSWORD
        url = f"nats://node:{wrong}@127.0.0.1:{nats.port}"
    else:
        nats = make_nats_server(token=TOKEN)
        wrong = "Wr0ng-" + TOKEN
        url = f"nats://{wrong}@127.0.0.1:{nats.port}"
    refused = "refused this node's credentials"
    with capture_logs() as logs, pytest.raises(TransportError, match=refused) as raised:
        open_nats(url)
    assert not isinstance(raised.value, TransportUnavailableError)
    text = str(raised.value)
    assert f"127.0.0.1:{nats.port}" in text
    for secret in (wrong, PASSWORD, TOKEN):
        assert secret not in text
        assert secret not in repr(logs)
    with pytest.raises(TransportError, match="refused this node's credentials") as raised:
        open_nats(nats.url, options={"password" if kind == "password" else "token": wrong})
    assert wrong not in str(raised.value)


def test_secrets_never_reach_the_logs(
    make_nats_server: Callable[..., NatsServer], open_nats: Opener
) -> None:
    """Connecting, serving, losing the server and reconnecting with a password in the URL log
    structured events that never hold the password."""
    nats = make_nats_server(user="node", password=PASSWORD)
    url = f"nats://node:{PASSWORD}@127.0.0.1:{nats.port}"
    with capture_logs() as logs:
        client = open_nats(url, options={"reconnect_time_wait": 0.05})
        server = open_nats(url, options={"reconnect_time_wait": 0.05})
        server.start("n1", echo_upper)
        nats.restart()
        assert client.wait_until_connected(WAIT)
        assert until(lambda: any(e["event"] == "transport.reconnected" for e in logs))
    events = [e["event"] for e in logs]
    assert "transport.connected" in events
    assert "transport.serving" in events
    assert "transport.disconnected" in events
    assert PASSWORD not in repr(logs)
    assert all(e.get("url") == f"nats://node:***@127.0.0.1:{nats.port}" for e in logs)


def test_bad_urls_and_options_are_refused_without_secrets() -> None:
    """A URL that is not a NATS URL, an option nats-py does not take, or credentials given twice
    raise ValueError naming what is wrong and what is accepted, never the secret."""
    for url in (
        f"http://node:{PASSWORD}@127.0.0.1:4222",
        f"nats://node:{PASSWORD}@127.0.0.1:notaport",
        f"nats://{TOKEN}@/path",
        "not a url",
    ):
        with pytest.raises(
            ValueError, match=r"is not a NATS URL.*; expected 'nats://host:port'"
        ) as e:
            open_transport(url, name="test")
        assert PASSWORD not in str(e.value)
        assert TOKEN not in str(e.value)
    with pytest.raises(ValueError, match=r"option\(s\) 'colour' not accepted"):
        open_transport("nats://127.0.0.1:4222", name="test", options={"colour": "red"})
    with pytest.raises(ValueError, match=r"option\(s\) 'error_cb' not accepted"):
        open_transport("nats://127.0.0.1:4222", name="test", options={"error_cb": print})
    with pytest.raises(ValueError, match="both in the URL") as e:
        open_transport(f"nats://{TOKEN}@127.0.0.1:4222", name="test", options={"token": "x"})
    assert TOKEN not in str(e.value)
    with pytest.raises(ValueError, match="reconnect_time_wait=0 is not accepted"):
        open_transport("nats://127.0.0.1:4222", name="t", options={"reconnect_time_wait": 0})


def test_log_redaction_hides_nats_tokens() -> None:
    """The log redaction hides the token of a NATS URL as it hides a URL's password."""
    text = f"nats://{TOKEN}@db:4222 and tls://node:{PASSWORD}@db:4222"
    assert redact_text(text) == "nats://***@db:4222 and tls://node:***@db:4222"


# -- node ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node_id", ["a.b", "*", ">", "node one", "a~2eb", "ünïcode-✓", "tab\there", "x.*.>"]
)
def test_node_ids_with_subject_characters_are_served(
    node_id: str, nats_url: str, open_nats: Opener
) -> None:
    """Node ids with '.', '*', '>', spaces or any other character are served under a subject
    token of their own, decoded back to the same id, and reach only their own node."""
    token = encode_token(node_id)
    assert decode_token(token) == node_id
    assert all(c.isascii() and (c.isalnum() or c in "-_~") for c in token)
    assert node_subject("c", node_id) == f"plexspaces.c.node.{token}"
    client, server, plain = open_nats(nats_url), open_nats(nats_url), open_nats(nats_url)
    server.start(node_id, lambda body, reply: reply(node_id.encode()))
    plain.start("a", lambda body, reply: reply(b"plain"))  # what '*' or '>' would also match
    assert client.request(node_id, b"", WAIT) == node_id.encode()
    assert client.request("a", b"", WAIT) == b"plain"


def test_clusters_with_different_names_do_not_see_each_other(
    nats_url: str, open_nats: Opener
) -> None:
    """The same node id in two clusters on one server is two different nodes."""
    blue, green = open_nats(nats_url, name="blue"), open_nats(nats_url, name="green")
    blue.start("n1", lambda body, reply: reply(b"blue"))
    with pytest.raises(NoResponderError):
        green.request("n1", b"", WAIT)
    assert open_nats(nats_url, name="blue").request("n1", b"", WAIT) == b"blue"


# -- errors --------------------------------------------------------------------------------------


def test_transport_errors_are_plexspaces_errors_and_survive_pickling() -> None:
    """Each transport error is a PlexSpacesError and comes back from pickle with its type and
    text (an error may travel between nodes)."""
    for error in (
        TransportError("closed"),
        TransportUnavailableError("down"),
        NoResponderError("gone"),
        TransportTimeoutError("late"),
        MessageEncodeError("bad"),
        MessageDecodeError("bad"),
    ):
        assert isinstance(error, PlexSpacesError)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
    assert issubclass(TransportUnavailableError, ConnectionError)
    assert issubclass(MessageEncodeError, TypeError)


# -- codecs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposit:
    account: str
    amount: int


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle this")


def test_the_pickle_codec_round_trips_any_picklable_object() -> None:
    """pickle (the default) gives back equal objects of the same types."""
    codec = codec_named("pickle")
    for message in (
        Deposit("a-1", 5),
        ("ask", 1, None),
        {1: {2, 3}},
        b"raw",
        1.5,
        [Deposit("x", 0)],
    ):
        assert codec.decode(codec.encode(message)) == message
        assert type(codec.decode(codec.encode(message))) is type(message)


def test_the_json_codec_round_trips_json_values_and_turns_tuples_into_lists() -> None:
    """json gives back JSON values as they were, tuples as lists."""
    codec = codec_named("json")
    message = {"n": 1, "f": 2.5, "s": "ü", "b": True, "z": None, "l": [1, [2]], "t": (1, 2)}
    assert codec.decode(codec.encode(message)) == {**message, "t": [1, 2]}


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (Deposit("a", 1), "message is Deposit"),
        ({"when": {1, 2}}, "message['when'] is {1, 2} of type set"),
        ({1: "a"}, "message has the dict key 1"),
        ([math.nan], "message[0] is nan"),
        (b"bytes", "message is b'bytes' of type bytes"),
    ],
)
def test_the_json_codec_refuses_what_is_not_json(message: Any, problem: str) -> None:
    """json refuses anything but JSON values with MessageEncodeError naming the message's type,
    the codec and where the problem is."""
    with pytest.raises(MessageEncodeError) as raised:
        codec_named("json").encode(message)
    text = str(raised.value)
    assert text.startswith(
        f"message of type {type(message).__qualname__!r} cannot be encoded by the json codec: "
    )
    assert problem in text
    assert isinstance(raised.value, TypeError)


def test_the_pickle_codec_names_the_type_it_cannot_encode() -> None:
    """An unpicklable message raises MessageEncodeError naming its type and the codec."""
    with pytest.raises(
        MessageEncodeError,
        match=r"message of type 'Unpicklable' cannot be encoded by the pickle codec: ",
    ):
        codec_named("pickle").encode(Unpicklable())
    with pytest.raises(MessageEncodeError, match=r"type 'function'.*pickle codec"):
        codec_named("pickle").encode(lambda: None)


def test_undecodable_bytes_raise_message_decode_error() -> None:
    """Bytes a codec cannot read raise MessageDecodeError naming the codec."""
    with pytest.raises(MessageDecodeError, match="cannot be decoded by the json codec"):
        codec_named("json").decode(b"\x80not json")
    with pytest.raises(MessageDecodeError, match="cannot be decoded by the pickle codec"):
        codec_named("pickle").decode(b"not a pickle")


def test_codec_named_takes_a_name_or_a_codec_and_refuses_others() -> None:
    """codec_named resolves the two names, passes a Codec instance through, and refuses an
    unknown name with a ValueError listing the accepted ones."""

    class Upper(Codec):
        name = "upper"

        def encode(self, obj: Any) -> bytes:
            return str(obj).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode()

    custom = Upper()
    assert codec_named(custom) is custom
    assert codec_named("pickle").name == "pickle"
    assert codec_named("json").name == "json"
    for bad in ("yaml", None, 3):
        with pytest.raises(
            ValueError, match=r"codec .* is not known; accepted are 'pickle', 'json'"
        ):
            codec_named(bad)  # type: ignore[arg-type]
