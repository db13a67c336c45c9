"""The store's membership and bucket leases: every backend (a SQLite file, in-memory SQLite, a
real PostgreSQL server) keeps the same rules for heartbeats, live nodes, leaving, bucket leases,
the bucket column of reminders and the claims filtered by bucket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from plexspaces._store import FireChange, ReminderKey, SqlReminderStore
from plexspaces._store.records import BUCKETS, BucketCountError, bucket_of
from plexspaces._store.sql.engine import COLUMNS_ADDED, REMINDERS_TABLE

from .test_store_contract import BACKENDS, SECOND, T0, Backend, _open_backend, reminder

BUCKETS_8 = 8


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn; every store opened on it is closed after the test."""
    opener, raw_engine = _open_backend(request.param, tmp_path, request)
    opened = Backend(request.param, opener, raw_engine)
    yield opened
    for store in opened.stores:
        store.close()
    raw_engine.dispose()


@pytest.fixture
def store(backend: Backend) -> SqlReminderStore:
    """A store on the backend under test."""
    return backend.store()


def keys_in(bucket: int, count: int, *, buckets: int = BUCKETS) -> list[str]:
    """`count` actor keys of type "order" that fall into `bucket`."""
    found: list[str] = []
    index = 0
    while len(found) < count:
        key = f"ord-{index}"
        if bucket_of("order", key, buckets) == bucket:
            found.append(key)
        index += 1
    return found


# -- bucket_of -----------------------------------------------------------------------------------


def test_bucket_of_is_stable_and_spreads_actors_evenly() -> None:
    """bucket_of is a fixed function of (type, key) (the same in every process and release), and
    10 000 actors fill 256 buckets within a factor of two of an even share."""
    assert bucket_of("order", "ord-1") == bucket_of("order", "ord-1")
    # Pinned: nodes of one cluster running different releases must agree on every bucket.
    assert bucket_of("order", "ord-1") == 123
    counts = [0] * BUCKETS
    for index in range(10_000):
        counts[bucket_of("device", f"d{index}")] += 1
    assert min(counts) > 10_000 / BUCKETS / 2
    assert max(counts) < 10_000 / BUCKETS * 2


# -- membership ----------------------------------------------------------------------------------


def test_heartbeat_makes_a_node_live_until_its_lease_ends(store: SqlReminderStore) -> None:
    """A heartbeat makes a node live through `lease_until` (inclusive), with its hosts_actors
    flag and its start time; a renewal keeps the start time; after the lease it is not live."""
    store.heartbeat("n2", hosts_actors=False, lease_until=T0 + 10 * SECOND, now=T0)
    store.heartbeat("n1", hosts_actors=True, lease_until=T0 + 10 * SECOND, now=T0)
    store.heartbeat("n1", hosts_actors=True, lease_until=T0 + 15 * SECOND, now=T0 + 5 * SECOND)
    nodes = store.live_nodes(T0 + 10 * SECOND)
    assert [(n.node_id, n.hosts_actors, n.started_at, n.lease_until) for n in nodes] == [
        ("n1", True, T0, T0 + 15 * SECOND),
        ("n2", False, T0, T0 + 10 * SECOND),
    ]
    assert [n.node_id for n in store.live_nodes(T0 + 10 * SECOND + timedelta(microseconds=1))] == [
        "n1"
    ]
    assert store.live_nodes(T0 + 16 * SECOND) == []


def test_a_node_counted_dead_rejoins_with_a_new_start_time(store: SqlReminderStore) -> None:
    """A heartbeat after the node's lease ran out starts it anew: started_at is that time."""
    store.heartbeat("n1", hosts_actors=True, lease_until=T0 + 10 * SECOND, now=T0)
    store.heartbeat("n1", hosts_actors=True, lease_until=T0 + 30 * SECOND, now=T0 + 20 * SECOND)
    [node] = store.live_nodes(T0 + 20 * SECOND)
    assert node.started_at == T0 + 20 * SECOND


def test_leave_removes_the_node_and_releases_its_buckets_and_their_claims(
    store: SqlReminderStore,
) -> None:
    """leave() deletes the node's row and drops its bucket leases and its reminder claims in
    them; other nodes' buckets and claims stay."""
    store.prepare_buckets(BUCKETS)
    lease = T0 + 10 * SECOND
    for node in ("n1", "n2"):
        store.heartbeat(node, hosts_actors=True, lease_until=lease, now=T0)
    assert store.claim_buckets("n1", count=4, lease_until=lease, now=T0) == [0, 1, 2, 3]
    assert store.claim_buckets("n2", count=4, lease_until=lease, now=T0) == [4, 5, 6, 7]
    [in_n1] = keys_in(2, 1)
    [in_n2] = keys_in(6, 1)
    store.upsert_many([reminder("r", actor_key=key) for key in (in_n1, in_n2)])
    store.claim_due("n1", until=T0, lease_until=lease, now=T0, limit=9, buckets=[2])
    store.claim_due("n2", until=T0, lease_until=lease, now=T0, limit=9, buckets=[6])
    assert store.leave("n1") == 4
    assert [n.node_id for n in store.live_nodes(T0)] == ["n2"]
    assert store.bucket_owners(T0) == {bucket: "n2" for bucket in range(4, 8)}
    claimed = {
        key: store.get(ReminderKey("order", key, "r")).claimed_by  # type: ignore[union-attr]
        for key in (in_n1, in_n2)
    }
    assert claimed == {in_n1: None, in_n2: "n2"}


def test_membership_arguments_are_checked_and_nothing_is_stored(store: SqlReminderStore) -> None:
    """Bad arguments raise ValueError naming the value; no row is written."""
    with pytest.raises(ValueError, match="node_id ''"):
        store.heartbeat("", hosts_actors=True, lease_until=T0 + SECOND, now=T0)
    with pytest.raises(ValueError, match="hosts_actors 'yes'"):
        store.heartbeat("n", hosts_actors="yes", lease_until=T0 + SECOND, now=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be later than now"):
        store.heartbeat("n", hosts_actors=True, lease_until=T0, now=T0)
    with pytest.raises(ValueError, match="naive"):
        store.heartbeat(
            "n", hosts_actors=True, lease_until=T0 + SECOND, now=T0.replace(tzinfo=None)
        )
    with pytest.raises(ValueError, match="buckets 0"):
        store.prepare_buckets(0)
    with pytest.raises(ValueError, match="count -1"):
        store.claim_buckets("n", count=-1, lease_until=T0 + SECOND, now=T0)
    with pytest.raises(ValueError, match="bucket -2"):
        store.release_buckets("n", [-2])
    with pytest.raises(ValueError, match="bucket 'x'"):
        store.claim_due("n", until=T0, lease_until=T0 + SECOND, now=T0, limit=1, buckets=["x"])  # type: ignore[list-item]
    assert store.live_nodes(T0) == []
    assert store.bucket_owners(T0) == {}


# -- buckets -------------------------------------------------------------------------------------


def test_prepare_buckets_creates_them_once_and_refuses_another_count(
    store: SqlReminderStore, backend: Backend
) -> None:
    """prepare_buckets() creates the bucket rows, unowned, once; a store holding another number
    of buckets is refused with BucketCountError naming both numbers."""
    store.prepare_buckets(BUCKETS_8)
    store.prepare_buckets(BUCKETS_8)
    assert backend.raw("SELECT COUNT(*), MIN(bucket), MAX(bucket) FROM plexspaces_buckets") == [
        (8, 0, 7)
    ]
    with pytest.raises(BucketCountError, match=r"into 8 buckets, and this node into 16"):
        backend.store().prepare_buckets(16)
    assert backend.raw("SELECT COUNT(*) FROM plexspaces_buckets") == [(8,)]


def test_claim_renew_and_release_buckets(store: SqlReminderStore) -> None:
    """Buckets are claimed lowest first up to `count`, only while free or expired; renewal
    extends live leases only; release frees them for the next claimer."""
    store.prepare_buckets(BUCKETS_8)
    assert store.claim_buckets("n1", count=3, lease_until=T0 + 10 * SECOND, now=T0) == [0, 1, 2]
    assert store.claim_buckets("n2", count=2, lease_until=T0 + 5 * SECOND, now=T0) == [3, 4]
    assert store.claim_buckets("n3", count=9, lease_until=T0 + 5 * SECOND, now=T0) == [5, 6, 7]
    assert store.claim_buckets("n3", count=1, lease_until=T0 + 5 * SECOND, now=T0) == []
    assert store.renew_buckets("n1", lease_until=T0 + 20 * SECOND, now=T0 + 9 * SECOND) == [0, 1, 2]
    # n2's leases ran out at T0+5s: not renewed, and taken by another node.
    later = T0 + 6 * SECOND
    assert store.renew_buckets("n2", lease_until=later + 10 * SECOND, now=later) == []
    assert store.claim_buckets("n1", count=5, lease_until=later + 10 * SECOND, now=later) == [
        3,
        4,
        5,
        6,
        7,
    ]
    assert store.bucket_owners(later) == dict.fromkeys(range(8), "n1")
    assert store.release_buckets("n1", [6, 7]) == 2
    assert store.release_buckets("n2") == 0
    assert store.claim_buckets("n2", count=8, lease_until=later + SECOND, now=later) == [6, 7]


def test_racing_nodes_claim_disjoint_buckets(backend: Backend) -> None:
    """Eight nodes claiming buckets at once, each on its own store, get disjoint sets that
    together cover every bucket."""
    stores = [backend.store() for _ in range(8)]
    stores[0].prepare_buckets(BUCKETS)
    got: dict[int, list[int]] = {}

    def work(index: int) -> None:
        got[index] = stores[index].claim_buckets(
            f"n{index}", count=BUCKETS, lease_until=T0 + 10 * SECOND, now=T0
        )

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    taken = [bucket for buckets in got.values() for bucket in buckets]
    assert len(got) == 8
    assert sorted(taken) == list(range(BUCKETS))


# -- the bucket column and claims by bucket ------------------------------------------------------


def test_every_writer_stores_the_bucket_of_the_reminders_actor(
    store: SqlReminderStore, backend: Backend
) -> None:
    """upsert, upsert_many and fires leave each row with bucket_of(actor_type, actor_key)."""
    store.upsert(reminder("a", actor_key="k1"))
    store.upsert_many([reminder("b", actor_key="k2"), reminder("c", actor_key="k3")])
    change = FireChange(reminder("a", actor_key="k1"), scheduled_at=T0, next_due_at=None)
    [fired] = store.record_fires([change], now=T0)
    assert fired is not None
    rows = backend.raw("SELECT actor_key, bucket FROM plexspaces_reminders ORDER BY actor_key")
    assert [tuple(row) for row in rows] == [
        (key, bucket_of("order", key)) for key in ("k1", "k2", "k3")
    ]


def test_the_bucket_index_is_made_where_claims_use_it(backend: Backend) -> None:
    """On SQLite a single node never looks reminders up by bucket, and an index of every row's
    bucket is one more write per registration and per handled one-shot: it is made by the first
    cluster node (`prepare_buckets`), and is kept by every later open. PostgreSQL, clustered by
    default, has it from the start. The partial index of rows without a bucket is always there."""

    def indexes() -> set[str]:
        return {
            str(index["name"])
            for index in inspect(backend.raw_engine).get_indexes(REMINDERS_TABLE.name)
        }

    store = backend.store()
    assert "ix_plexspaces_reminders_unbucketed" in indexes()
    single_node = backend.name != "postgresql"
    assert ("ix_plexspaces_reminders_bucket" not in indexes()) is single_node
    store.prepare_buckets(BUCKETS_8)
    assert "ix_plexspaces_reminders_bucket" in indexes()
    backend.store()  # opened again, as after a restart
    assert "ix_plexspaces_reminders_bucket" in indexes()


def test_an_upgraded_version_1_database_gets_every_rows_bucket(backend: Backend) -> None:
    """Rows of a version-1 database (no bucket column) get their bucket when a store opens it,
    and a claim by bucket then finds them."""
    first = backend.store()
    first.upsert_many([reminder(f"r{index}", actor_key=f"k{index}") for index in range(20)])
    first.close()
    for table, column in COLUMNS_ADDED[2]:
        for index in table.indexes:
            if column in index.columns:
                backend.raw(f"DROP INDEX IF EXISTS {index.name}")
        backend.raw(f"ALTER TABLE {table.name} DROP COLUMN {column}")
    backend.raw("UPDATE plexspaces_schema SET version = 1 WHERE component = 'reminders'")
    assert "bucket" not in {
        c["name"] for c in inspect(backend.raw_engine).get_columns(REMINDERS_TABLE.name)
    }
    upgraded = backend.store()
    rows = backend.raw("SELECT actor_key, bucket FROM plexspaces_reminders")
    assert {row.actor_key: row.bucket for row in rows} == {
        f"k{index}": bucket_of("order", f"k{index}") for index in range(20)
    }
    wanted = bucket_of("order", "k3")
    claimed = upgraded.claim_due(
        "n1", until=T0, lease_until=T0 + SECOND, now=T0, limit=100, buckets=[wanted]
    )
    assert {record.key.actor_key for record in claimed} == {
        f"k{index}" for index in range(20) if bucket_of("order", f"k{index}") == wanted
    }


def test_claim_due_by_bucket_takes_only_those_buckets_reminders(store: SqlReminderStore) -> None:
    """With `buckets`, claim_due claims only reminders of actors in those buckets; an empty set
    claims nothing."""
    one, two = keys_in(1, 3), keys_in(2, 2)
    store.upsert_many([reminder("r", actor_key=key) for key in one + two])
    lease = T0 + 10 * SECOND
    assert store.claim_due("n", until=T0, lease_until=lease, now=T0, limit=9, buckets=[]) == []
    got = store.claim_due("n", until=T0, lease_until=lease, now=T0, limit=9, buckets=[1])
    assert sorted(record.key.actor_key for record in got) == sorted(one)
    got = store.claim_due("m", until=T0, lease_until=lease, now=T0, limit=9, buckets=[1, 2])
    assert sorted(record.key.actor_key for record in got) == sorted(two)


def test_claim_due_by_bucket_follows_activations_unless_told_not_to(
    store: SqlReminderStore,
) -> None:
    """Following activations, a node claims the reminders of an actor it holds in any bucket,
    and not those of an actor another node holds in its own buckets; without following them
    (a transport delivers anywhere), the bucket alone decides."""
    [held_by_n] = keys_in(3, 1)
    [held_by_m] = keys_in(1, 1)
    store.upsert_many([reminder("r", actor_key=key) for key in (held_by_n, held_by_m)])
    lease = T0 + 10 * SECOND
    for node, key in (("n", held_by_n), ("m", held_by_m)):
        store.claim_activation("order", key, node, activation_id=node, lease_until=lease, now=T0)
    got = store.claim_due("n", until=T0, lease_until=lease, now=T0, limit=9, buckets=[1])
    assert [record.key.actor_key for record in got] == [held_by_n]
    store.release_claims("n")
    got = store.claim_due(
        "n", until=T0, lease_until=lease, now=T0, limit=9, buckets=[1], follow_activations=False
    )
    assert [record.key.actor_key for record in got] == [held_by_m]


def test_renew_claims_by_bucket_lets_claims_outside_them_run_out(store: SqlReminderStore) -> None:
    """With `buckets`, renew_claims renews the node's claims in those buckets (and on actors it
    holds, following activations), not its others."""
    [inside] = keys_in(1, 1)
    outside = keys_in(2, 2)
    store.upsert_many([reminder("r", actor_key=key) for key in [inside, *outside]])
    lease = T0 + 10 * SECOND
    store.claim_due("n", until=T0, lease_until=lease, now=T0, limit=9)
    store.claim_activation("order", outside[0], "n", activation_id="a", lease_until=lease, now=T0)
    later = T0 + 30 * SECOND
    assert store.renew_claims("n", lease_until=later, now=T0, buckets=[1]) == 2
    renewed = {
        key: store.get(ReminderKey("order", key, "r")).claimed_until  # type: ignore[union-attr]
        for key in [inside, *outside]
    }
    assert renewed == {inside: later, outside[0]: later, outside[1]: lease}
    assert (
        store.renew_claims("n", lease_until=later, now=T0, buckets=[1], follow_activations=False)
        == 1
    )


def test_release_buckets_drops_the_nodes_claims_in_them(store: SqlReminderStore) -> None:
    """release_buckets() drops the node's claims on reminders of those buckets, and no other
    claim."""
    store.prepare_buckets(BUCKETS)
    lease = T0 + 10 * SECOND
    assert store.claim_buckets("n", count=3, lease_until=lease, now=T0) == [0, 1, 2]
    inside, outside = keys_in(1, 2), keys_in(5, 1)
    store.upsert_many([reminder("r", actor_key=key) for key in inside + outside])
    store.claim_due("n", until=T0, lease_until=lease, now=T0, limit=9)
    assert store.release_buckets("n", [1]) == 1
    claimed = {
        key: store.get(ReminderKey("order", key, "r")).claimed_by  # type: ignore[union-attr]
        for key in inside + outside
    }
    assert claimed == {inside[0]: None, inside[1]: None, outside[0]: "n"}
    assert store.bucket_owners(T0) == {0: "n", 2: "n"}
