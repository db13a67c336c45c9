"""Virtual actors across nodes: several actor systems on one PostgreSQL store and one real
nats-server, in one process (each system is a node with its own id, transport connection and
threads). The crash and scale runs with node processes are in `test_mesh.py`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import (
    Actor,
    ActorActiveElsewhereError,
    ActorSystem,
    MessageEncodeError,
    NoHostingNodeError,
    PlexSpacesError,
    ReminderFired,
    RemoteActorError,
    TransportUnavailableError,
)

from . import natsserver


class Unpicklable(Exception):
    """An exception that cannot cross as itself: it holds a lock."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


class Place(Actor):
    """Answers where it runs, keeps what it was sent, raises on request."""

    fired: ClassVar[list[tuple[str, str, int]]] = []
    fired_changed: ClassVar[threading.Condition] = threading.Condition()

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1h"})
        self.attach_facet(ReminderFacet(), config={"min_period": "100ms"})
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        match message:
            case "where":
                return self.ctx.system.node_id
            case ("append", value):
                self.seen.append(value)
                return None
            case "seen":
                return list(self.seen)
            case ("raise", text):
                raise KeyError(text)
            case "unpicklable":
                raise Unpicklable("holds a lock")
            case ("echo", value):
                return value
            case ("remind", name, period):
                self.facet(ReminderFacet).register_reminder(name, due=period, period=period)
                return None
            case ReminderFired(reminder_name=name, fire_count=count):
                with self.fired_changed:
                    self.fired.append((self.ctx.actor_key, self.ctx.system.node_id, count))
                    self.fired_changed.notify_all()
                return None
        raise ValueError(f"unexpected message {message!r}")


Nodes = Callable[..., ActorSystem]


@pytest.fixture
def node(pg_url: str, nats_url: str, make_system: Callable[..., ActorSystem]) -> Nodes:
    """A factory of cluster nodes on one PostgreSQL database and one nats-server; each hosts
    the `place` type unless `hosts_actors=False`."""

    def make(node_id: str, **kwargs: Any) -> ActorSystem:
        options: dict[str, Any] = {
            "storage_url": pg_url,
            "cluster": True,
            "transport": nats_url,
            "node_id": node_id,
            "lease": "2s",
            "poll_interval": "200ms",
            "name": node_id,
        }
        options.update(kwargs)
        system = make_system(**options)
        if system.hosts_actors:
            system.register_virtual("place", Place)
        return system

    return make


def test_a_message_from_another_node_reaches_the_actor_where_it_is_active(node: Nodes) -> None:
    """An actor active on node a answers asks and takes tells sent from node b, in the order
    one thread sent them, and nothing raises ActorActiveElsewhereError."""
    a, b = node("node-a"), node("node-b")
    assert a.virtual("place", "k1").ask("where", timeout=10) == "node-a"
    remote = b.virtual("place", "k1")
    assert remote.ask("where", timeout=10) == "node-a"
    for value in range(300):
        remote.tell(("append", value))
    assert remote.ask("seen", timeout=10) == list(range(300))
    assert b.actor_ids() == []  # nothing was activated on b


def test_a_key_active_nowhere_is_activated_on_the_sending_node(node: Nodes) -> None:
    """Placement is local: the first node to send to an inactive key activates it there, and
    the other node's messages then go to it."""
    a, b = node("node-a"), node("node-b")
    assert b.virtual("place", "fresh").ask("where", timeout=10) == "node-b"
    assert a.virtual("place", "fresh").ask("where", timeout=10) == "node-b"


def test_the_remote_handlers_exception_is_raised_to_the_sender(node: Nodes) -> None:
    """An exception the handler raised on another node is raised on the sender as itself when
    it can cross, else as RemoteActorError with its type name and text; the actor goes on."""
    a, b = node("node-a"), node("node-b")
    a.virtual("place", "k2").ask("where", timeout=10)
    remote = b.virtual("place", "k2")
    with pytest.raises(KeyError, match="missing"):
        remote.ask(("raise", "missing"), timeout=10)
    with pytest.raises(RemoteActorError) as caught:
        remote.ask("unpicklable", timeout=10)
    assert caught.value.type_name == "Unpicklable"
    assert caught.value.text == "holds a lock"
    assert caught.value.node_id == "node-a"
    assert remote.ask("where", timeout=10) == "node-a"


def test_a_message_the_codec_cannot_encode_raises_on_the_sender_naming_its_type(
    node: Nodes,
) -> None:
    """A message bound for another node that the codec cannot encode raises
    MessageEncodeError at tell/ask on the sender, naming the type; nothing is sent."""
    a, b = node("node-a"), node("node-b")
    a.virtual("place", "k3").ask("where", timeout=10)
    remote = b.virtual("place", "k3")
    with pytest.raises(MessageEncodeError, match="lock"):
        remote.tell(("append", threading.Lock()))
    with pytest.raises(MessageEncodeError, match="lock"):
        remote.ask(("echo", threading.Lock()), timeout=10)
    assert remote.ask("seen", timeout=10) == []


def test_the_json_codec_carries_json_values_and_refuses_others(node: Nodes) -> None:
    """With codec="json", JSON-compatible messages and answers cross; a set is refused on
    the sender naming its type; a handler's exception arrives as RemoteActorError."""
    a = node("node-a", codec="json")
    b = node("node-b", codec="json")
    a.virtual("place", "k4").ask("where", timeout=10)
    remote = b.virtual("place", "k4")
    value = {"amount": 12.5, "items": ["a", "b"], "paid": True, "note": None}
    assert remote.ask(["echo", value], timeout=10) == value
    with pytest.raises(MessageEncodeError, match="set"):
        remote.ask(["echo", {1, 2}], timeout=10)
    with pytest.raises(RemoteActorError, match="KeyError"):
        remote.ask(["raise", "x"], timeout=10)


def test_a_client_only_node_routes_to_hosting_nodes_and_activates_nothing(node: Nodes) -> None:
    """A node with hosts_actors=False sends to virtual actors of a type it never registered;
    keys active nowhere are spread over the live hosting nodes; it activates nothing."""
    node("node-a")
    node("node-b")
    client = node("client", hosts_actors=False)
    answers = {client.virtual("place", f"c{index}").ask("where", timeout=10) for index in range(40)}
    assert answers == {"node-a", "node-b"}
    assert client.actor_ids() == []
    with pytest.raises(PlexSpacesError, match="hosts no actors"):
        client.virtual("place", "c0").attach_facet(VirtualActorFacet())


def test_a_client_only_node_without_hosting_nodes_says_so(node: Nodes) -> None:
    """With no live node that hosts actors, a client-only node's ask fails with
    NoHostingNodeError instead of waiting."""
    client = node("client", hosts_actors=False)
    with pytest.raises(NoHostingNodeError, match="no live node hosts actors"):
        client.virtual("place", "nowhere").ask("where", timeout=5)


def test_a_reminder_fires_into_its_actor_on_the_node_that_holds_it(node: Nodes) -> None:
    """Reminders of actors active on node b are handled there, whichever node owns their
    bucket and fires them, each fire once and in order."""
    Place.fired = []
    a, b = node("node-a"), node("node-b")
    keys = [f"r{index}" for index in range(24)]
    for key in keys:
        b.virtual("place", key).ask(("remind", "tick", "300ms"), timeout=10)

    def enough() -> bool:
        counts: dict[str, int] = {}
        for key, _, count in Place.fired:
            counts[key] = max(counts.get(key, 0), count)
        return all(counts.get(key, 0) >= 3 for key in keys)

    with Place.fired_changed:
        assert Place.fired_changed.wait_for(enough, timeout=30), f"fired: {len(Place.fired)}"
        fired = list(Place.fired)
    assert {node_id for _, node_id, _ in fired} == {"node-b"}
    for key in keys:
        counts = [count for fired_key, _, count in fired if fired_key == key]
        assert counts[:3] == [1, 2, 3], (key, counts)
    assert a.actor_ids() == []


def test_asks_fail_clearly_while_nats_is_down_and_succeed_after_it_restarts(
    pg_url: str,
    make_nats_server: Callable[..., natsserver.NatsServer],
    make_system: Callable[..., ActorSystem],
) -> None:
    """While the nats-server is down, an ask to an actor on another node fails at once with
    TransportUnavailableError; once it is back, asks succeed again without any action."""
    server = make_nats_server()
    common: dict[str, Any] = {
        "storage_url": pg_url,
        "cluster": True,
        "transport": server.url,
        "lease": "2s",
        "poll_interval": "200ms",
    }
    a = make_system(node_id="node-a", name="node-a", **common)
    b = make_system(node_id="node-b", name="node-b", **common)
    for system in (a, b):
        system.register_virtual("place", Place)
    a.virtual("place", "k5").ask("where", timeout=10)
    remote = b.virtual("place", "k5")
    assert remote.ask("where", timeout=10) == "node-a"
    server.stop()
    with pytest.raises(TransportUnavailableError):
        remote.ask("where", timeout=10)
    assert a.virtual("place", "k5").ask("where", timeout=10) == "node-a"  # local: fine
    server.start()
    answered = None
    for _ in range(100):
        try:
            answered = remote.ask("where", timeout=10)
            break
        except TransportUnavailableError:
            threading.Event().wait(0.1)  # reconnecting: a bounded poll, not a sleep
    assert answered == "node-a"


def test_without_a_transport_another_nodes_actor_is_still_refused(
    pg_url: str, make_system: Callable[..., ActorSystem]
) -> None:
    """Without a transport nothing changes: an actor active on another node raises
    ActorActiveElsewhereError naming the node (and the message says how to reach it)."""
    common: dict[str, Any] = {"storage_url": pg_url, "cluster": True, "lease": "2s"}
    a = make_system(node_id="node-a", **common)
    b = make_system(node_id="node-b", **common)
    for system in (a, b):
        system.register_virtual("place", Place)
    a.virtual("place", "k6").ask("where", timeout=10)
    with pytest.raises(ActorActiveElsewhereError, match="transport"):
        b.virtual("place", "k6").ask("where", timeout=10)


def test_bad_transport_settings_are_refused_before_anything_opens(tmp_path: Any) -> None:
    """A transport without cluster, hosts_actors=False without a transport, an unknown codec
    and options without a transport are refused with errors naming what is wrong."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(ValueError, match="cluster=True"):
        ActorSystem(storage_url=url, transport="nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match="needs a transport"):
        ActorSystem(storage_url=url, cluster=True, hosts_actors=False)
    with pytest.raises(ValueError, match="codec"):
        ActorSystem(storage_url=url, cluster=True, transport="nats://x:1", codec="yaml")
    with pytest.raises(ValueError, match="without a transport"):
        ActorSystem(storage_url=url, transport_options={"token": "t"})
    with pytest.raises(TypeError, match="hosts_actors"):
        ActorSystem(storage_url=url, hosts_actors="no")  # type: ignore[arg-type]


def test_a_transport_that_cannot_connect_fails_the_first_use_and_leaves_nothing_open(
    pg_url: str, make_system: Callable[..., ActorSystem]
) -> None:
    """With no NATS server at the transport URL, the first use of the cluster raises
    TransportUnavailableError naming the URL; nothing stays open (the next use tries again and
    fails the same way, and the system shuts down without leaks)."""
    url = f"nats://127.0.0.1:{natsserver.free_port()}"
    system = make_system(storage_url=pg_url, cluster=True, transport=url, node_id="node-a")
    with pytest.raises(TransportUnavailableError, match=r"127\.0\.0\.1"):
        system.register_virtual("place", Place)  # a cluster node joins (and connects) here
    for _ in range(2):
        with pytest.raises(TransportUnavailableError, match=r"127\.0\.0\.1"):
            system.virtual("place", "k").ask("where", timeout=5)
