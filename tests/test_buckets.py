"""Bucket ownership across the nodes of a cluster, on a real PostgreSQL server and a shared
ManualClock: nodes converge to an even split, rebalance with few moves when a node joins, take a
cleanly stopped node's buckets at its next round and a dead node's after its lease, a
client-only node holds nothing, and a node with another bucket count is refused. Then whole
actor systems: every reminder tick fires exactly once across the nodes while they join and
leave."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from sqlalchemy import create_engine, text

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ManualClock, PlexSpacesError, ReminderFired
from plexspaces._cluster import BUCKETS, ClusterNode, fair_shares
from plexspaces._scheduler import Scheduler
from plexspaces._store import SqlReminderStore
from plexspaces._store.records import BucketCountError, bucket_of

LEASE = timedelta(seconds=3)
POLL = timedelta(seconds=1)


class Cluster:
    """ClusterNodes of one store, each with a store and scheduler of its own (as separate
    processes would have), all on one ManualClock."""

    def __init__(self, url: str, clock: ManualClock) -> None:
        self.url = url
        self.clock = clock
        self.nodes: dict[str, ClusterNode] = {}
        self._closers: list[Callable[[], None]] = []

    def start(
        self,
        node_id: str,
        lost: Callable[[frozenset[int]], None] | None = None,
        **kwargs: Any,
    ) -> ClusterNode:
        store = SqlReminderStore(self.url)
        scheduler = Scheduler(self.clock)
        scheduler.start()
        self._closers += [store.close, scheduler.close]
        node = ClusterNode(
            store,
            self.clock,
            scheduler,
            node_id=node_id,
            lease=LEASE,
            poll_interval=POLL,
            enabled=True,
            **kwargs,
        )
        node.start(poll=lambda: None, run=lambda work: work(), lost=lost)
        self.nodes[node_id] = node
        return node

    def owners(self) -> dict[int, str]:
        """Who holds each bucket, as the store says now."""
        return next(iter(self.nodes.values())).store.bucket_owners(self.clock.now())

    def held(self) -> Counter[str]:
        return Counter(self.owners().values())

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for close in reversed(self._closers):
            close()


@pytest.fixture
def cluster(pg_url: str, clock: ManualClock) -> Iterator[Cluster]:
    """An empty cluster on a new PostgreSQL database."""
    made = Cluster(pg_url, clock)
    yield made
    made.close()


def assert_even(held: Counter[str], nodes: list[str]) -> None:
    """Every bucket held, by `nodes` only, each within 10 % of an even share."""
    assert sum(held.values()) == BUCKETS
    assert set(held) == set(nodes)
    even = BUCKETS / len(nodes)
    for node, count in held.items():
        assert abs(count - even) <= 0.1 * even, (node, count, even)


def test_fair_shares_are_deterministic_and_sum_to_the_bucket_count() -> None:
    """fair_shares gives floor or ceiling of an even split, the extra ones to the first ids in
    order, whatever order the nodes come in."""
    assert fair_shares(256, ["c", "a", "b"]) == {"a": 86, "b": 85, "c": 85}
    assert fair_shares(256, ["b", "a", "b"]) == {"a": 128, "b": 128}
    assert fair_shares(3, ["a", "b", "c", "d"]) == {"a": 1, "b": 1, "c": 1, "d": 0}
    assert fair_shares(256, []) == {}


def test_three_nodes_converge_to_an_even_split(cluster: Cluster, clock: ManualClock) -> None:
    """Three nodes starting one after another hold every bucket between them, disjointly and
    evenly, within two poll intervals; each node's own view matches the store."""
    for node_id in ("n1", "n2", "n3"):
        cluster.start(node_id)
    clock.advance(POLL * 2)
    held = cluster.held()
    assert_even(held, ["n1", "n2", "n3"])
    assert held == fair_shares(BUCKETS, ["n1", "n2", "n3"])
    owners = cluster.owners()
    for node_id, node in cluster.nodes.items():
        assert node.owned_buckets() == {b for b, owner in owners.items() if owner == node_id}
        assert [info.node_id for info in node.live_nodes()] == ["n1", "n2", "n3"]


def test_a_joining_node_takes_its_share_from_the_others_within_two_leases_with_few_moves(
    cluster: Cluster, clock: ManualClock
) -> None:
    """A fourth node gets an even share within two leases, and the only buckets that move are
    the ones it takes."""
    for node_id in ("n1", "n2", "n3"):
        cluster.start(node_id)
    clock.advance(POLL * 2)
    before = cluster.owners()
    cluster.start("n4")
    clock.advance(LEASE * 2)
    after = cluster.owners()
    assert_even(cluster.held(), ["n1", "n2", "n3", "n4"])
    moved = {bucket for bucket in before if after[bucket] != before[bucket]}
    assert {after[bucket] for bucket in moved} == {"n4"}
    assert len(moved) == cluster.held()["n4"] == BUCKETS // 4


def test_a_node_is_told_which_buckets_it_gave_up_before_others_take_them(
    cluster: Cluster, clock: ManualClock
) -> None:
    """When a node releases buckets to a joining node, its `lost` callback hears of exactly
    those buckets, at a moment when the store still shows nobody else holding them."""
    heard: dict[str, set[int]] = {}

    def recorder(node_id: str) -> Callable[[frozenset[int]], None]:
        def lost(buckets: frozenset[int]) -> None:
            owners = cluster.owners()
            assert all(owners.get(bucket) == node_id for bucket in buckets)
            heard.setdefault(node_id, set()).update(buckets)

        return lost

    for node_id in ("n1", "n2"):
        cluster.start(node_id, lost=recorder(node_id))
    clock.advance(POLL * 2)
    heard.clear()
    before = cluster.owners()
    cluster.start("n3", lost=recorder("n3"))
    clock.advance(LEASE * 2)
    after = cluster.owners()
    moved = {bucket for bucket in before if after[bucket] != before[bucket]}
    assert set().union(*heard.values()) == moved
    assert "n3" not in heard
    for node_id, buckets in heard.items():
        assert {before[bucket] for bucket in buckets} == {node_id}


def test_a_node_that_stops_cleanly_has_its_buckets_taken_at_the_next_round(
    cluster: Cluster, clock: ManualClock
) -> None:
    """A node that leaves (release_all) frees its buckets and its row at once: the others hold
    every bucket evenly one poll interval later, long before its lease would have ended."""
    for node_id in ("n1", "n2", "n3", "n4"):
        cluster.start(node_id)
    clock.advance(LEASE * 2)
    leaving = cluster.nodes["n2"]
    leaving.stop()
    leaving.release_all()
    assert "n2" not in {info.node_id for info in leaving.store.live_nodes(clock.now())}
    clock.advance(POLL)
    assert_even(cluster.held(), ["n1", "n3", "n4"])


def test_a_dead_node_keeps_its_buckets_until_its_lease_ends_then_they_are_taken(
    cluster: Cluster, clock: ManualClock
) -> None:
    """A node that stops renewing without leaving (a crash) keeps its buckets until its lease
    has run out; within a poll interval after that, the survivors hold every bucket evenly."""
    for node_id in ("n1", "n2", "n3"):
        cluster.start(node_id)
    clock.advance(LEASE * 2)
    dead = cluster.nodes["n3"]
    dead.stop()  # no release: as if the process was killed
    held_by_dead = cluster.held()["n3"]
    clock.advance(LEASE - POLL)
    assert cluster.held()["n3"] == held_by_dead
    clock.advance(POLL * 2)
    assert_even(cluster.held(), ["n1", "n2"])
    assert [info.node_id for info in cluster.nodes["n1"].live_nodes()] == ["n1", "n2"]


def test_a_client_only_node_is_live_but_holds_and_claims_nothing(
    cluster: Cluster, clock: ManualClock
) -> None:
    """A node with hosts_actors=False heartbeats (the others see it, flagged) but holds no
    bucket, counts for no share, claims no reminder and takes no activation."""
    cluster.start("n1")
    client = cluster.start("client", hosts_actors=False)
    cluster.start("n2")
    clock.advance(POLL * 3)
    assert_even(cluster.held(), ["n1", "n2"])
    assert [(info.node_id, info.hosts_actors) for info in cluster.nodes["n1"].live_nodes()] == [
        ("client", False),
        ("n1", True),
        ("n2", True),
    ]
    assert client.owned_buckets() == frozenset()
    now = clock.time()
    assert (
        client.claim_due(
            now=now,
            until=clock.now(),
            limit=10,
            after=None,
            actor_types=["dev"],
            include_own=True,
        )
        == []
    )
    ref = type("Ref", (), {"actor_type": "dev", "actor_key": "x", "actor_id": "dev/x"})()
    with pytest.raises(PlexSpacesError, match=r"'client' is client-only \(hosts_actors=False\)"):
        client.claim_activation(ref)


def test_a_node_with_another_bucket_count_is_refused(cluster: Cluster) -> None:
    """A node that divides reminders into another number of buckets than the cluster on the
    store is refused when it starts, naming both numbers, and joins nothing."""
    cluster.start("n1")
    with pytest.raises(BucketCountError, match=f"into {BUCKETS} buckets, and this node into 128"):
        cluster.start("odd", buckets=128)
    assert [info.node_id for info in cluster.nodes["n1"].live_nodes()] == ["n1"]
    assert "odd" not in cluster.held()


# -- whole systems ---------------------------------------------------------------------------------


class Device(Actor):
    """Records (node, key, fire_count) of every reminder fire; deactivates when idle, so its
    reminders are fired by whichever node holds their bucket."""

    fires: ClassVar[list[tuple[str, str, int]]]

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "500ms"})
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(fire_count=count):
                self.fires.append((self.ctx.system.node_id, self.ctx.actor_key, count))
                return None
            case ("register", kwargs):
                self.facet(ReminderFacet).register_reminder("tick", **kwargs)
                return None
            case "ping":
                return self.ctx.system.node_id
        raise AssertionError(f"unexpected message {message!r}")


def test_every_tick_fires_exactly_once_across_nodes_that_join_and_leave(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """Reminders of 40 actors tick every second while a fourth node joins, one node shuts down
    cleanly and the rest rebalance: every tick due is fired exactly once, with fire counts
    contiguous from 1, and once settled each reminder fires on the node holding its bucket."""
    fires: list[tuple[str, str, int]] = []
    cls = type("Device", (Device,), {"fires": fires})

    def node(node_id: str) -> ActorSystem:
        system = make_system(
            storage_url=pg_url, clock=clock, node_id=node_id, lease="3s", poll_interval="1s"
        )
        system.register_virtual("dev", cls)
        return system

    systems = {node_id: node(node_id) for node_id in ("n1", "n2", "n3")}
    keys = [f"d{index:02d}" for index in range(40)]
    for index, key in enumerate(keys):
        registrar = systems[f"n{index % 3 + 1}"]
        registrar.virtual("dev", key).ask(
            ("register", {"due": "1s", "period": "1s", "missed": "all"})
        )
    for _ in range(6):
        clock.advance("1s")
    systems["n4"] = node("n4")
    for _ in range(6):
        clock.advance("1s")
    systems.pop("n2").shutdown()
    for _ in range(6):
        clock.advance("1s")
    ticks = 18

    engine = create_engine(pg_url)
    with engine.connect() as connection:
        stored = dict(
            connection.execute(text("SELECT actor_key, fire_count FROM plexspaces_reminders")).all()
        )
    engine.dispose()
    by_key: dict[str, list[int]] = {key: [] for key in keys}
    for _, key, count in fires:
        by_key[key].append(count)
    for key in keys:
        # Every tick due by now was recorded and handled once: nothing twice, nothing lost.
        assert sorted(by_key[key]) == list(range(1, ticks + 1)), key
        assert stored[key] == ticks
    # Once the cluster settled, each actor's last tick was fired by the node holding its
    # bucket, whichever node registered it (the actors deactivate between ticks).
    owners = systems["n1"].reminders._node.store.bucket_owners(clock.now())
    last = {key: node_id for node_id, key, count in fires if count == ticks}
    assert last == {key: owners[bucket_of("dev", key)] for key in keys}
    assert set(last.values()) == {"n1", "n3", "n4"}
    # And no node keeps a reminder of a bucket it gave up armed.
    for system in systems.values():
        service = system.reminders
        owned = service._node.owned_buckets()
        assert {bucket_of(k.actor_type, k.actor_key) for k in service._armed} <= owned


def test_with_a_transport_the_bucket_holder_fires_and_routes_to_the_actors_node(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """Given a `route_remote` (a transport), the node holding a reminder's bucket claims it even
    while the actor is active on another node, and hands each fire to `route_remote` with that
    node's id; the fire is acknowledged once `done` is called, so the count goes on."""
    fires: list[tuple[str, str, int]] = []
    cls = type("Device", (Device,), {"fires": fires})
    a = make_system(storage_url=pg_url, clock=clock, node_id="node-a", lease="3s")
    a.register_virtual("dev", cls)
    b = make_system(storage_url=pg_url, clock=clock, node_id="node-b", lease="3s")
    b.register_virtual("dev", cls)
    clock.advance("2s")
    routed: list[tuple[str, int, str]] = []

    def route(ref: Any, fired: ReminderFired, node_id: str, done: Any, failed: Any) -> None:
        routed.append((ref.actor_id, fired.fire_count, node_id))
        done(None)

    for system in (a, b):
        system.reminders._node.route_remote = route
    owned_by_b = b.reminders._node.owned_buckets()
    key = next(f"k{i}" for i in range(1000) if bucket_of("dev", f"k{i}") in owned_by_b)
    # Active on node a (idle_timeout 500ms: kept active by a message every 250ms below).
    a.virtual("dev", key).ask(("register", {"due": "1s", "period": "1s"}))
    for _ in range(12):
        clock.advance("250ms")
        assert a.virtual("dev", key).ask("ping") == "node-a"
    assert routed == [(f"dev/{key}", count, "node-a") for count in (1, 2, 3)]
    assert fires == []  # nothing reached the actor locally: the route was the only way
    # `done` queued the acknowledgement on node b's fire thread: wait until that thread has
    # written everything queued so far.
    b.reminders._flush()
    stored = b.reminders._store.list_actor("dev", key)
    assert [record.pending_fire for record in stored] == [None]  # acknowledged


def test_a_node_that_gives_a_bucket_up_disarms_its_reminders_and_the_new_holder_arms_them(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """When a joining node takes a bucket, the node that gave it up stops firing the bucket's
    reminders in that same round (before they come due), and the new holder arms them."""
    fires: list[tuple[str, str, int]] = []
    cls = type("Device", (Device,), {"fires": fires})
    a = make_system(storage_url=pg_url, clock=clock, node_id="node-a", lease="3s")
    a.register_virtual("dev", cls)
    # Node a holds every bucket; a joining node gets the upper half (a gives up its highest).
    key = next(f"k{i}" for i in range(1000) if bucket_of("dev", f"k{i}") >= BUCKETS // 2)
    a.virtual("dev", key).ask(("register", {"due": "10s"}))
    a.virtual("dev", key).stop()  # inactive: only its bucket decides who fires it
    assert [k.actor_key for k in a.reminders._armed] == [key]
    b = make_system(storage_url=pg_url, clock=clock, node_id="node-b", lease="3s")
    b.register_virtual("dev", cls)
    clock.advance("2s")  # a round of each node: a releases, b takes
    assert bucket_of("dev", key) in b.reminders._node.owned_buckets()
    assert list(a.reminders._armed) == []
    assert [k.actor_key for k in b.reminders._armed] == [key]
    clock.advance("8s")
    assert fires == [("node-b", key, 1)]


def test_buckets_that_lapsed_and_are_taken_back_keep_their_reminders_firing(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """When a node's bucket leases ran out unrenewed (the store was away longer than the lease)
    and its next round takes the same buckets back, its reminders in them go on firing: they
    are not given up as if another node had taken the buckets."""
    fires: list[tuple[str, str, int]] = []
    cls = type("Device", (Device,), {"fires": fires})
    system = make_system(
        storage_url=pg_url, clock=clock, node_id="n1", lease="3s", poll_interval="1s"
    )
    system.register_virtual("dev", cls)
    system.virtual("dev", "d1").ask(("register", {"due": "1s", "period": "1s"}))
    clock.advance("2s")
    assert [count for _, _, count in fires] == [1, 2]
    engine = create_engine(pg_url)
    with engine.begin() as connection:  # every bucket lease runs out, as after an outage
        connection.execute(text("UPDATE plexspaces_buckets SET lease_until_us = 0"))
    engine.dispose()
    for _ in range(5):
        clock.advance("1s")
    assert [count for _, _, count in fires] == [1, 2, 3, 4, 5, 6, 7]
    assert bucket_of("dev", "d1") in system.reminders._node.owned_buckets()
