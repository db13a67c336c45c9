"""The reminder store contract: every backend passes the same tests.

The `backend` fixture is parametrized over the backends: a SQLite file, in-memory SQLite, and a
real PostgreSQL server (a new database for each test). Tests that are about files and processes
(WAL, a second process, a missing directory) use a SQLite file directly. Throughput is printed
(visible with `pytest -s`), never asserted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from plexspaces._errors import PlexSpacesError
from plexspaces._store import (
    SCHEMA_VERSION,
    NodeLeases,
    ReminderKey,
    ReminderStore,
    SchemaVersionError,
    SqlReminderStore,
    StoreClosedError,
    StoredReminder,
    StoreUnavailableError,
    UndecodableReminder,
    create_store_engine,
    from_micros,
    to_micros,
)
from plexspaces._store.sql.engine import COLUMNS_ADDED
from plexspaces._store.sql.engine import METADATA as SCHEMA_METADATA

from . import pgserver

T0 = datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
BACKENDS = ["sqlite", "sqlite-memory", "postgresql"]


def reminder(
    name: str = "r",
    due: datetime = T0,
    *,
    actor_type: str = "order",
    actor_key: str = "ord-1",
    **fields: Any,
) -> StoredReminder:
    """A fresh registration: nothing fired, nothing pending, unclaimed."""
    values: dict[str, Any] = {
        "key": ReminderKey(actor_type, actor_key, name),
        "due_at": due,
        "anchor_at": due,
        "period": None,
        "max_count": None,
        "fire_count": 0,
        "missed": "once",
        "payload": None,
        "pending_fire": None,
        "pending_scheduled_at": None,
        "finished": False,
        "claimed_by": None,
        "claimed_until": None,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return StoredReminder(**values)


@dataclass
class Backend:
    """One database under test: stores opened on it, and raw SQL beside them."""

    name: str
    open: Callable[[], SqlReminderStore]
    raw_engine: Engine
    stores: list[SqlReminderStore] = field(default_factory=list)

    def store(self) -> SqlReminderStore:
        """A new store on the same database (as after a restart)."""
        opened = self.open()
        self.stores.append(opened)
        return opened

    def raw(self, sql: str, **params: Any) -> list[Any]:
        """Run `sql` outside any store, committed; the rows it returns."""
        with self.raw_engine.begin() as connection:
            result = connection.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []

    def count(self) -> int:
        return int(self.raw("SELECT COUNT(*) FROM plexspaces_reminders")[0][0])


def _open_backend(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Callable[[], SqlReminderStore], Engine]:
    if name == "postgresql":
        url = request.getfixturevalue("pg_url")
        return (lambda: SqlReminderStore(url)), create_engine(url)
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'reminders.db'}"
        return (lambda: SqlReminderStore(url)), create_engine(url)
    if name == "sqlite-memory":
        engine = create_store_engine("sqlite://")
        return (lambda: SqlReminderStore(engine)), engine
    raise AssertionError(f"unknown backend {name!r}")


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


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'file.db'}"


def keys_of(records: list[StoredReminder]) -> list[str]:
    return [record.key.name for record in records]


# -- the package -------------------------------------------------------------------------------


def test_store_package_names_the_sql_backend_without_importing_it_up_front() -> None:
    """`import plexspaces` leaves SQLAlchemy unloaded; the SQL names of `plexspaces._store` load
    the backend on first use and are the backend's own objects."""
    script = textwrap.dedent(
        """
        import sys
        import facets.reminder, plexspaces, plexspaces._store as store
        assert "sqlalchemy" not in sys.modules, "import plexspaces loaded SQLAlchemy"
        from plexspaces._store import SqlReminderStore
        from plexspaces._store import sql
        for name in sql.__all__:
            assert getattr(store, name) is getattr(sql, name), name
        for name in store.__all__:
            getattr(store, name)
        assert SqlReminderStore.__module__.startswith("plexspaces._store.sql")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- times ---------------------------------------------------------------------------------------


def test_time_helpers_are_exact_and_refuse_naive_datetimes() -> None:
    """to_micros/from_micros round-trip to the microsecond, convert offsets, refuse naive ones."""
    assert from_micros(to_micros(T0)) == T0
    assert to_micros(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    assert to_micros(plus_two) == to_micros(T0)
    assert from_micros(to_micros(plus_two)).tzinfo is UTC
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match=r"datetime\.datetime\(2026, 1, 1, 0, 0\).*naive"):
        to_micros(naive)


# -- records -------------------------------------------------------------------------------------


def test_upsert_then_get_round_trips_every_field(store: ReminderStore) -> None:
    """Every field comes back equal, times to the microsecond and as aware UTC datetimes."""
    stored = reminder(
        "invoice",
        T0 + timedelta(days=30, microseconds=7),
        anchor_at=T0 - timedelta(microseconds=999_999),
        period=timedelta(hours=1, microseconds=3),
        max_count=12,
        fire_count=4,
        missed="all",
        payload={"order": "ord-1", "amount": 12.5, "lines": [1, 2, None, True], "note": "žluť"},
        pending_fire=4,
        pending_scheduled_at=T0 + timedelta(microseconds=1),
        finished=False,
        claimed_by="node-a",
        claimed_until=T0 + timedelta(seconds=10, microseconds=5),
        created_at=T0 - timedelta(days=1),
        updated_at=T0 + timedelta(microseconds=42),
    )
    store.upsert(stored)
    loaded = store.get(stored.key)
    assert loaded == stored
    assert loaded is not None
    for when in (
        loaded.due_at,
        loaded.anchor_at,
        loaded.pending_scheduled_at,
        loaded.claimed_until,
        loaded.created_at,
        loaded.updated_at,
    ):
        assert when is not None
        assert when.tzinfo is UTC


def test_upsert_converts_other_offsets_to_utc(store: ReminderStore) -> None:
    """An aware datetime in another zone is stored as the same instant and returned in UTC."""
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    store.upsert(reminder(due=local))
    loaded = store.get(ReminderKey("order", "ord-1", "r"))
    assert loaded is not None
    assert loaded.due_at == T0
    assert loaded.due_at.utcoffset() == timedelta(0)


def test_get_of_a_missing_reminder_is_none(store: ReminderStore) -> None:
    """get() returns None for a key that was never stored."""
    assert store.get(ReminderKey("order", "ord-1", "nothing")) is None


def test_upsert_replaces_the_whole_row(store: ReminderStore) -> None:
    """Re-registering a name replaces every field, counts and pending fire included."""
    first = reminder(
        "r", T0, period=SECOND, fire_count=3, pending_fire=3, pending_scheduled_at=T0, payload=1
    )
    store.upsert(first)
    second = reminder("r", T0 + timedelta(hours=1), payload={"v": 2}, missed="skip")
    store.upsert(second)
    assert store.get(second.key) == second


def test_delete_reports_whether_there_was_a_row(store: ReminderStore) -> None:
    """delete() is True for a stored reminder, then False; the row is gone."""
    stored = reminder()
    store.upsert(stored)
    assert store.delete(stored.key) is True
    assert store.get(stored.key) is None
    assert store.delete(stored.key) is False


def test_list_actor_returns_that_actors_reminders_by_due_time(store: ReminderStore) -> None:
    """list_actor() sees one actor's reminders only, ordered by due time, finished ones too."""
    store.upsert(reminder("late", T0 + 3 * SECOND))
    store.upsert(reminder("early", T0 + SECOND))
    store.upsert(
        reminder(
            "done",
            T0 + 2 * SECOND,
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0,
            finished=True,
        )
    )
    store.upsert(reminder("other-key", T0, actor_key="ord-2"))
    store.upsert(reminder("other-type", T0, actor_type="invoice"))
    assert keys_of(store.list_actor("order", "ord-1")) == ["early", "done", "late"]
    assert keys_of(store.list_actor("order", "ord-2")) == ["other-key"]
    assert store.list_actor("order", "ord-3") == []


# -- due scans -----------------------------------------------------------------------------------


def test_due_orders_by_due_time_then_key_and_honours_limit(store: ReminderStore) -> None:
    """due() returns rows due by `until`, by (due_at, key), at most `limit` of them."""
    store.upsert(reminder("c", T0 + 2 * SECOND))
    store.upsert(reminder("b", T0 + SECOND))
    store.upsert(reminder("a", T0 + SECOND))
    store.upsert(reminder("z", T0, actor_key="ord-0"))
    store.upsert(reminder("later", T0 + 10 * SECOND))
    records = store.due(T0 + 2 * SECOND, 10)
    assert [str(record.key) for record in records] == [
        "order/ord-0:z",
        "order/ord-1:a",
        "order/ord-1:b",
        "order/ord-1:c",
    ]
    assert keys_of(store.due(T0 + 2 * SECOND, 2)) == ["z", "a"]
    assert store.due(T0 - SECOND, 10) == []


def test_due_pages_through_2500_rows_without_duplicates_or_gaps(
    store: ReminderStore, backend: Backend
) -> None:
    """Keyset pages of 1,000 cover 2,500 due rows exactly once, in order, ties broken by key."""
    expected = []
    for index in range(2_500):
        # Many rows share a due time, so the key decides the order inside a tie.
        due = T0 + (index % 50) * SECOND
        record = reminder(f"r{index:05d}", due, actor_key=f"ord-{index % 7}")
        store.upsert(record)
        expected.append(record.position)
    store.upsert(reminder("not-yet", T0 + timedelta(days=1)))
    seen: list[tuple[datetime, ReminderKey]] = []
    after = None
    pages = []
    while True:
        page = store.due(T0 + 60 * SECOND, 1_000, after=after)
        pages.append(len(page))
        seen.extend(record.position for record in page)
        if len(page) < 1_000:
            break
        after = page[-1].position
    assert pages == [1_000, 1_000, 500]
    assert seen == sorted(expected)
    assert len(set(seen)) == 2_500
    assert backend.count() == 2_501


def test_due_excludes_finished_rows_and_includes_pending_ones(store: ReminderStore) -> None:
    """Pending fires are returned whatever `until` is, placed by their scheduled time; finished
    rows only while their last fire is pending."""
    store.upsert(reminder("plain", T0 + 5 * SECOND))
    # A periodic reminder whose next tick is far away but whose last fire was never acknowledged.
    store.upsert(
        reminder(
            "pending",
            T0 + timedelta(days=1),
            period=timedelta(days=1),
            fire_count=2,
            pending_fire=2,
            pending_scheduled_at=T0 + 2 * SECOND,
        )
    )
    # A finished one-shot whose fire is pending, with a pending time beyond `until`.
    store.upsert(
        reminder(
            "finished-pending",
            T0,
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0 + timedelta(days=9),
            finished=True,
        )
    )
    records = store.due(T0 + 10 * SECOND, 10)
    assert keys_of(records) == ["pending", "plain", "finished-pending"]
    assert records[0].position == (T0 + 2 * SECOND, ReminderKey("order", "ord-1", "pending"))
    # Once acknowledged, the periodic one waits for its next tick and the finished one is gone.
    store.acknowledge(ReminderKey("order", "ord-1", "pending"), 2, now=T0)
    store.acknowledge(ReminderKey("order", "ord-1", "finished-pending"), 1, now=T0)
    assert keys_of(store.due(T0 + 10 * SECOND, 10)) == ["plain"]


def test_due_pages_mix_pending_and_scheduled_rows_by_position(store: ReminderStore) -> None:
    """Pagination with `after` is exact across pending and scheduled rows alike."""
    for index in range(30):
        if index % 3 == 0:
            store.upsert(
                reminder(
                    f"r{index:02d}",
                    T0 + timedelta(hours=1),
                    fire_count=1,
                    pending_fire=1,
                    pending_scheduled_at=T0 + index * SECOND,
                    period=timedelta(hours=1),
                )
            )
        else:
            store.upsert(reminder(f"r{index:02d}", T0 + index * SECOND))
    names: list[str] = []
    after = None
    while True:
        page = store.due(T0 + 40 * SECOND, 4, after=after)
        names.extend(keys_of(page))
        if len(page) < 4:
            break
        after = page[-1].position
    assert names == [f"r{index:02d}" for index in range(30)]


def test_next_due_at_is_the_earliest_unfinished_due_time(store: ReminderStore) -> None:
    """next_due_at() skips finished rows and honours `after`; None when nothing is left."""
    assert store.next_due_at() is None
    store.upsert(
        reminder("done", T0, fire_count=1, pending_fire=1, pending_scheduled_at=T0, finished=True)
    )
    store.upsert(reminder("b", T0 + 7 * SECOND))
    store.upsert(reminder("a", T0 + 3 * SECOND))
    assert store.next_due_at() == T0 + 3 * SECOND
    assert store.next_due_at(after=T0 + 3 * SECOND) == T0 + 7 * SECOND
    assert store.next_due_at(after=T0 + 7 * SECOND) is None


# -- fires ---------------------------------------------------------------------------------------


def test_record_fire_counts_the_fire_and_makes_it_pending(store: ReminderStore) -> None:
    """record_fire() advances fire_count, sets the pending fire and the next due time."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=10 * SECOND, max_count=5))
    fired = store.record_fire(
        key,
        expected_fire_count=0,
        scheduled_at=T0,
        next_due_at=T0 + 10 * SECOND,
        now=T0 + timedelta(milliseconds=3),
    )
    assert fired is not None
    assert (fired.fire_count, fired.pending_fire, fired.pending_scheduled_at) == (1, 1, T0)
    assert fired.due_at == T0 + 10 * SECOND
    assert fired.finished is False
    assert fired.updated_at == T0 + timedelta(milliseconds=3)
    assert store.get(key) == fired


def test_record_fire_with_a_stale_count_fails(store: ReminderStore) -> None:
    """A second record_fire with the same expected count returns None and changes nothing."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=SECOND))
    first = store.record_fire(
        key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0
    )
    assert first is not None
    store.acknowledge(key, 1, now=T0)
    before = store.get(key)
    again = store.record_fire(
        key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0
    )
    assert again is None
    assert store.get(key) == before


def test_record_fire_while_a_fire_is_pending_fails(store: ReminderStore) -> None:
    """No fire is recorded while the previous one is unacknowledged."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=SECOND))
    assert store.record_fire(
        key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0
    )
    blocked = store.record_fire(
        key, expected_fire_count=1, scheduled_at=T0 + SECOND, next_due_at=T0 + 2 * SECOND, now=T0
    )
    assert blocked is None
    current = store.get(key)
    assert current is not None
    assert (current.fire_count, current.pending_fire) == (1, 1)


def test_record_fire_of_a_missing_reminder_fails(store: ReminderStore) -> None:
    """record_fire() on a key with no row returns None."""
    key = ReminderKey("order", "ord-1", "gone")
    assert (
        store.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=None, now=T0)
        is None
    )


def test_record_fire_of_a_one_shot_finishes_it(store: ReminderStore) -> None:
    """With no next due time the reminder is finished, and no further fire can be recorded."""
    key = ReminderKey("order", "ord-1", "once")
    store.upsert(reminder("once", T0 + 5 * SECOND))
    fired = store.record_fire(
        key, expected_fire_count=0, scheduled_at=T0 + 5 * SECOND, next_due_at=None, now=T0
    )
    assert fired is not None
    assert fired.finished is True
    assert fired.due_at == T0 + 5 * SECOND
    assert (fired.fire_count, fired.pending_fire) == (1, 1)
    assert store.next_due_at() is None


def test_record_fire_finishes_at_max_count_whatever_the_next_due_time(
    store: ReminderStore,
) -> None:
    """The fire that reaches max_count finishes the reminder even if a next tick is passed."""
    key = ReminderKey("order", "ord-1", "twice")
    store.upsert(reminder("twice", T0, period=SECOND, max_count=2))
    for count in range(2):
        fired = store.record_fire(
            key,
            expected_fire_count=count,
            scheduled_at=T0 + count * SECOND,
            next_due_at=T0 + (count + 1) * SECOND,
            now=T0,
        )
        assert fired is not None
        assert fired.finished is (count == 1)
        if count == 0:
            store.acknowledge(key, 1, now=T0)
    assert fired.due_at == T0 + SECOND  # the due time of its last fire


def test_record_fire_with_expected_due_at_refuses_a_re_registration(store: ReminderStore) -> None:
    """A re-registration with the same fire_count fails a fire guarded by the old due time."""
    key = ReminderKey("order", "ord-1", "r")
    store.upsert(reminder("r", T0))
    store.upsert(reminder("r", T0 + timedelta(days=1)))
    stale = store.record_fire(
        key,
        expected_fire_count=0,
        scheduled_at=T0,
        next_due_at=None,
        now=T0,
        expected_due_at=T0,
    )
    assert stale is None
    assert store.record_fire(
        key,
        expected_fire_count=0,
        scheduled_at=T0 + timedelta(days=1),
        next_due_at=None,
        now=T0,
        expected_due_at=T0 + timedelta(days=1),
    )


def test_acknowledge_clears_the_pending_fire_and_is_idempotent(store: ReminderStore) -> None:
    """acknowledge() clears the pending fire once; repeating it changes nothing."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=SECOND))
    store.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0)
    store.acknowledge(key, 1, now=T0 + 2 * SECOND)
    cleared = store.get(key)
    assert cleared is not None
    assert (cleared.fire_count, cleared.pending_fire, cleared.pending_scheduled_at) == (
        1,
        None,
        None,
    )
    assert cleared.updated_at == T0 + 2 * SECOND
    store.acknowledge(key, 1, now=T0 + 3 * SECOND)
    assert store.get(key) == cleared


def test_acknowledge_of_another_fire_changes_nothing(store: ReminderStore) -> None:
    """An acknowledgement for another fire_count or scheduled time leaves the pending fire."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=SECOND))
    store.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0)
    before = store.get(key)
    store.acknowledge(key, 2, now=T0)
    store.acknowledge(key, 1, now=T0, scheduled_at=T0 - SECOND)
    assert store.get(key) == before
    store.acknowledge(key, 1, now=T0, scheduled_at=T0)
    after = store.get(key)
    assert after is not None
    assert after.pending_fire is None


def test_acknowledge_deletes_a_finished_reminder(store: ReminderStore) -> None:
    """Acknowledging the last fire deletes the row; acknowledging again is harmless."""
    key = ReminderKey("order", "ord-1", "once")
    store.upsert(reminder("once", T0))
    store.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=None, now=T0)
    assert store.get(key) is not None
    store.acknowledge(key, 1, now=T0)
    assert store.get(key) is None
    assert store.list_actor("order", "ord-1") == []
    store.acknowledge(key, 1, now=T0)


def test_reschedule_moves_the_next_fire_by_compare_and_set(store: ReminderStore) -> None:
    """reschedule() moves due_at without counting a fire, and fails on a stale count."""
    key = ReminderKey("order", "ord-1", "tick")
    store.upsert(reminder("tick", T0, period=SECOND))
    moved = store.reschedule(key, expected_fire_count=0, due_at=T0 + 5 * SECOND, now=T0 + SECOND)
    assert moved is not None
    assert (moved.due_at, moved.fire_count, moved.anchor_at) == (T0 + 5 * SECOND, 0, T0)
    assert moved.updated_at == T0 + SECOND
    assert store.reschedule(key, expected_fire_count=3, due_at=T0, now=T0) is None
    assert (
        store.reschedule(key, expected_fire_count=0, due_at=T0, now=T0, expected_due_at=T0) is None
    )
    assert store.get(key) == moved


def test_fire_state_survives_reopening_the_store(backend: Backend) -> None:
    """Counts and an unacknowledged fire are still there after the store is closed and reopened."""
    key = ReminderKey("order", "ord-1", "tick")
    first = backend.store()
    first.upsert(reminder("tick", T0, period=SECOND, max_count=3))
    first.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0)
    first.close()
    second = backend.store()
    loaded = second.get(key)
    assert loaded is not None
    assert (loaded.fire_count, loaded.pending_fire, loaded.pending_scheduled_at) == (1, 1, T0)
    assert keys_of(second.due(T0, 10)) == ["tick"]


def test_max_count_is_never_exceeded_by_racing_threads(store: ReminderStore) -> None:
    """8 threads making 1,000 record_fire calls on one row record exactly max_count fires."""
    key = ReminderKey("order", "ord-1", "race")
    max_count = 25
    store.upsert(reminder("race", T0, period=SECOND, max_count=max_count))
    recorded: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def racer() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(125):
                current = store.get(key)
                if current is not None and current.pending_fire is not None:
                    # Somebody's fire is pending: acknowledging it lets the race go on.
                    store.acknowledge(key, current.pending_fire, now=T0)
                expected = current.fire_count if current is not None else max_count
                fired = store.record_fire(
                    key,
                    expected_fire_count=expected,
                    scheduled_at=T0 + expected * SECOND,
                    next_due_at=T0 + (expected + 1) * SECOND,
                    now=T0,
                )
                if fired is not None:
                    assert fired.pending_fire is not None
                    with lock:
                        recorded.append(fired.pending_fire)
                    store.acknowledge(key, fired.pending_fire, now=T0)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert sorted(recorded) == list(range(1, max_count + 1))
    assert store.get(key) is None  # the last fire was acknowledged: the reminder is gone


# -- concurrency ---------------------------------------------------------------------------------


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=10)
            work(index)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def test_upserts_from_8_threads_all_land(store: ReminderStore, backend: Backend) -> None:
    """8 threads x 250 upserts on distinct keys: no lock errors, every row stored."""

    def work(thread: int) -> None:
        for index in range(250):
            store.upsert(reminder(f"r{index}", T0 + index * SECOND, actor_key=f"t{thread}"))

    _run_threads(8, work)
    assert backend.count() == 2_000
    assert len(store.list_actor("order", "t7")) == 250


def test_two_stores_on_one_file_write_concurrently(db_url: str) -> None:
    """Two stores, each with its own engine, write one file at once; every row lands."""
    stores = [SqlReminderStore(db_url), SqlReminderStore(db_url)]
    try:

        def work(index: int) -> None:
            target = stores[index % 2]
            for n in range(200):
                key = ReminderKey("order", f"w{index}", f"r{n}")
                target.upsert(reminder(key.name, T0, actor_key=key.actor_key, period=SECOND))
                fired = target.record_fire(
                    key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0
                )
                assert fired is not None
                target.acknowledge(key, 1, now=T0)

        _run_threads(4, work)
        for other in stores:
            assert len(other.due(T0 + SECOND, 10_000)) == 800
    finally:
        for opened in stores:
            opened.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from plexspaces._store import ReminderKey, SqlReminderStore, StoredReminder

    url, rows = sys.argv[1], int(sys.argv[2])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    store = SqlReminderStore(url)
    print("ready", flush=True)
    sys.stdin.readline()
    for index in range(rows):
        store.upsert(StoredReminder(
            key=ReminderKey("order", "child", f"r{index}"), due_at=t0, anchor_at=t0, period=None,
            max_count=None, fire_count=0, missed="once", payload={"from": "child"},
            pending_fire=None, pending_scheduled_at=None, finished=False, claimed_by=None,
            claimed_until=None, created_at=t0, updated_at=t0))
    store.close()
    print("done", flush=True)
    """
)


def test_a_second_process_writes_the_same_file_concurrently(db_url: str) -> None:
    """Another process and this one upsert into one SQLite file at once; all writes land."""
    rows = 500
    store = SqlReminderStore(db_url)
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, db_url, str(rows)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        for index in range(rows):
            store.upsert(reminder(f"r{index}", T0, actor_key="parent"))
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "done"
        assert len(store.list_actor("order", "parent")) == rows
        assert len(store.list_actor("order", "child")) == rows
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        store.close()


def test_many_stores_can_open_a_new_file_at_once(db_url: str) -> None:
    """Eight stores creating the schema of one new file at the same moment all succeed."""
    opened: list[SqlReminderStore] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        store = SqlReminderStore(db_url)
        with lock:
            opened.append(store)
        store.upsert(reminder(f"r{index}"))

    try:
        _run_threads(8, work)
        assert len(opened[0].list_actor("order", "ord-1")) == 8
    finally:
        for store in opened:
            store.close()


# -- undecodable rows ----------------------------------------------------------------------------

_BAD_ROWS = {
    "bad-json": {"payload": "{not json", "missed": "once", "period_us": None},
    "bad-missed": {"payload": "null", "missed": "sometimes", "period_us": None},
    "negative-period": {"payload": "null", "missed": "once", "period_us": -5},
    "nan-payload": {"payload": "NaN", "missed": "once", "period_us": None},
}


def _insert_bad_rows(backend: Backend) -> None:
    for name, values in _BAD_ROWS.items():
        backend.raw(
            "INSERT INTO plexspaces_reminders (actor_type, actor_key, name, due_us, anchor_us,"
            " period_us, max_count, fire_count, missed, payload, pending_fire,"
            " pending_scheduled_us, finished, claimed_by, claimed_until_us, created_us,"
            " updated_us) VALUES ('order', 'ord-1', :name, :due, :due, :period_us, NULL, 1,"
            " :missed, :payload, 1, :due, :finished, NULL, NULL, :due, :due)",
            name=name,
            due=to_micros(T0),
            finished=name == "bad-json",
            **values,
        )


def test_undecodable_rows_are_kept_reported_once_and_skipped(
    store: ReminderStore, backend: Backend
) -> None:
    """Rows that cannot be decoded are skipped by every query, logged once, reported by
    errors(), and never changed or deleted by the store's own processing."""
    _insert_bad_rows(backend)
    store.upsert(reminder("good", T0 + SECOND))
    raw_before = backend.raw("SELECT * FROM plexspaces_reminders ORDER BY name")
    with structlog.testing.capture_logs() as logs:
        assert store.get(ReminderKey("order", "ord-1", "bad-json")) is None
        assert keys_of(store.list_actor("order", "ord-1")) == ["good"]
        # A page of one still finds the good row behind the bad ones.
        assert keys_of(store.due(T0 + SECOND, 1)) == ["good"]
        assert keys_of(store.due(T0 + SECOND, 10)) == ["good"]
        assert store.next_due_at() == T0 + SECOND
        for name in _BAD_ROWS:
            key = ReminderKey("order", "ord-1", name)
            store.acknowledge(key, 1, now=T0)
            assert (
                store.record_fire(
                    key, expected_fire_count=1, scheduled_at=T0, next_due_at=None, now=T0
                )
                is None
            )
        claimed = store.claim_due(
            "node-a", until=T0 + SECOND, lease_until=T0 + 9 * SECOND, now=T0, limit=10
        )
        assert keys_of(claimed) == ["good"]
        problems = store.errors()
    assert [problem.key.name for problem in problems] == sorted(_BAD_ROWS)
    assert all(isinstance(problem, UndecodableReminder) for problem in problems)
    messages = {problem.key.name: problem.error for problem in problems}
    assert "JSON" in messages["bad-json"]
    assert "'sometimes'" in messages["bad-missed"]
    assert "period" in messages["negative-period"]
    assert "NaN" in messages["nan-payload"]
    events = [entry for entry in logs if entry["event"] == "reminder.undecodable"]
    assert sorted(entry["name"] for entry in events) == sorted(_BAD_ROWS)  # once each
    assert all(entry["actor_type"] == "order" and entry["actor_key"] == "ord-1" for entry in events)
    raw_after = backend.raw("SELECT * FROM plexspaces_reminders ORDER BY name")
    unchanged = [row for row in raw_after if row.name != "good"]
    assert unchanged == [row for row in raw_before if row.name != "good"]
    assert backend.count() == len(_BAD_ROWS) + 1


def test_an_undecodable_row_can_be_replaced_or_deleted_explicitly(
    store: ReminderStore, backend: Backend
) -> None:
    """Re-registering or unregistering the name of an undecodable row is how it is repaired."""
    _insert_bad_rows(backend)
    fixed = reminder("bad-json", T0)
    store.upsert(fixed)
    assert store.get(fixed.key) == fixed
    assert store.delete(ReminderKey("order", "ord-1", "bad-missed")) is True
    assert sorted(problem.key.name for problem in store.errors()) == [
        "nan-payload",
        "negative-period",
    ]


# -- validation ----------------------------------------------------------------------------------

_INVALID: list[tuple[str, Callable[[], StoredReminder], str]] = [
    ("set payload", lambda: reminder(payload={1, 2}), "{1, 2} of type set"),
    ("nan payload", lambda: reminder(payload={"x": [float("nan")]}), "payload['x'][0] is nan"),
    ("int dict key", lambda: reminder(payload={1: "a"}), "dict key 1"),
    ("naive due_at", lambda: reminder(due=datetime(2026, 1, 1)), "datetime(2026, 1, 1, 0, 0)"),
    ("naive created_at", lambda: reminder(created_at=datetime(2026, 1, 2)), "created_at"),
    ("max_count 0", lambda: reminder(max_count=0), "max_count 0"),
    ("period 0", lambda: reminder(period=timedelta(0)), "period datetime.timedelta(0)"),
    ("negative period", lambda: reminder(period=-SECOND), "period datetime.timedelta(days=-1"),
    ("bad missed", lambda: reminder(missed="sometimes"), "'sometimes'"),
    ("empty name", lambda: reminder(name=""), "name ''"),
    ("empty actor_type", lambda: reminder(actor_type=""), "actor_type ''"),
    ("pending without time", lambda: reminder(fire_count=1, pending_fire=1), "pending_fire 1"),
    ("finished not pending", lambda: reminder(finished=True), "finished"),
    ("above max_count", lambda: reminder(max_count=2, fire_count=3), "fire_count 3"),
]


@pytest.mark.parametrize(
    ("make", "named"), [case[1:] for case in _INVALID], ids=[case[0] for case in _INVALID]
)
def test_invalid_reminders_are_refused_and_nothing_is_stored(
    store: ReminderStore, backend: Backend, make: Callable[[], StoredReminder], named: str
) -> None:
    """upsert() raises ValueError naming the bad value, and stores nothing."""
    with pytest.raises(ValueError, match="reminder") as raised:
        store.upsert(make())
    assert named in str(raised.value)
    assert backend.count() == 0


def test_invalid_replacement_leaves_the_old_row(store: ReminderStore) -> None:
    """A refused re-registration leaves the stored reminder as it was."""
    stored = reminder(payload={"v": 1})
    store.upsert(stored)
    with pytest.raises(ValueError, match="JSON"):
        store.upsert(replace(stored, payload={"v": {1, 2}}))
    assert store.get(stored.key) == stored


def test_method_arguments_are_checked(store: ReminderStore) -> None:
    """Naive times, bad limits and empty node ids raise ValueError naming the value."""
    key = ReminderKey("order", "ord-1", "r")
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match=r"until.*naive"):
        store.due(naive, 10)
    with pytest.raises(ValueError, match="limit 0"):
        store.due(T0, 0)
    with pytest.raises(ValueError, match=r"now.*naive"):
        store.record_fire(key, expected_fire_count=0, scheduled_at=T0, next_due_at=None, now=naive)
    with pytest.raises(ValueError, match="expected_fire_count -1"):
        store.record_fire(key, expected_fire_count=-1, scheduled_at=T0, next_due_at=None, now=T0)
    with pytest.raises(ValueError, match="node_id ''"):
        store.claim_due("", until=T0, lease_until=T0 + SECOND, now=T0, limit=1)
    with pytest.raises(ValueError, match="lease_until"):
        store.claim_due("n", until=T0, lease_until=T0, now=T0, limit=1)
    with pytest.raises(ValueError, match="name ''"):
        store.get(ReminderKey("order", "ord-1", ""))
    with pytest.raises(ValueError, match="actor_type ''"):
        store.list_actor("", "ord-1")
    with pytest.raises(ValueError, match=r"after.*naive"):
        store.due(T0, 10, after=(naive, key))


# -- schema and lifecycle ------------------------------------------------------------------------


def test_schema_version_is_recorded(store: ReminderStore, backend: Backend) -> None:
    """Opening a store records ("reminders", SCHEMA_VERSION) in plexspaces_schema, once."""
    backend.store()  # a second open records nothing more
    rows = backend.raw("SELECT component, version FROM plexspaces_schema")
    assert [tuple(row) for row in rows] == [("reminders", SCHEMA_VERSION)]
    assert SCHEMA_VERSION == 2


def test_a_newer_schema_version_is_refused(backend: Backend) -> None:
    """A database of a newer schema version is refused with an error naming both versions."""
    backend.store().upsert(reminder())
    newer = SCHEMA_VERSION + 1
    backend.raw(f"UPDATE plexspaces_schema SET version = {newer} WHERE component = 'reminders'")
    with pytest.raises(
        SchemaVersionError, match=rf"schema version {newer}, newer than version {SCHEMA_VERSION}"
    ):
        backend.store()
    assert backend.count() == 1


_VERSION_1_TABLES = {"plexspaces_reminders", "plexspaces_activations", "plexspaces_schema"}


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_reminders(
    backend: Backend,
) -> None:
    """A database written by schema version 1 (its tables as they were, without the columns and
    tables added since) is upgraded when a store opens it: the version becomes SCHEMA_VERSION,
    the added columns and tables exist, and the reminders stored before are read back unchanged."""
    first = backend.store()
    stored = reminder(name="kept", payload={"amount": 7})
    first.upsert(stored)
    first.close()
    for version in range(2, SCHEMA_VERSION + 1):
        for table, column in COLUMNS_ADDED[version]:
            # Indexes on an added column came with it (SQLite refuses to drop a column in use).
            for index in table.indexes:
                if column in index.columns:
                    backend.raw(f"DROP INDEX IF EXISTS {index.name}")
            backend.raw(f"ALTER TABLE {table.name} DROP COLUMN {column}")
    for table in SCHEMA_METADATA.sorted_tables:
        if table.name not in _VERSION_1_TABLES:
            backend.raw(f"DROP TABLE IF EXISTS {table.name}")
    backend.raw("UPDATE plexspaces_schema SET version = 1 WHERE component = 'reminders'")

    upgraded = backend.store()
    rows = backend.raw("SELECT component, version FROM plexspaces_schema")
    assert [tuple(row) for row in rows] == [("reminders", SCHEMA_VERSION)]
    inspector = inspect(backend.raw_engine)
    for table in SCHEMA_METADATA.sorted_tables:
        assert inspector.has_table(table.name), table.name
        found = {column["name"] for column in inspector.get_columns(table.name)}
        assert found == set(table.c.keys()), table.name
    assert upgraded.get(stored.key) == stored
    upgraded.close()
    assert backend.store().get(stored.key) == stored  # a second open upgrades nothing more


def test_a_handed_engine_is_never_disposed(db_url: str) -> None:
    """close() disposes an engine the store created, never one it was handed."""
    engine = create_store_engine(db_url)
    try:
        pool = engine.pool
        store = SqlReminderStore(engine)
        store.upsert(reminder())
        store.close()
        assert engine.pool is pool  # dispose() would have replaced the pool
        with engine.connect() as connection:
            assert (
                connection.execute(text("SELECT COUNT(*) FROM plexspaces_reminders")).scalar() == 1
            )
    finally:
        engine.dispose()
    owning = SqlReminderStore(db_url)
    own_pool = owning.engine.pool
    owning.close()
    assert owning.engine.pool is not own_pool


def test_a_closed_store_refuses_to_work(store: ReminderStore) -> None:
    """After close(), calls raise StoreClosedError; close() again is harmless."""
    store.close()
    store.close()
    with pytest.raises(StoreClosedError):
        store.get(ReminderKey("order", "ord-1", "r"))


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A SQLite file in a directory that does not exist is refused, naming the directory."""
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SqlReminderStore(f"sqlite:///{missing / 'r.db'}")
    assert not missing.exists()


def test_sqlite_files_run_in_wal_mode_with_a_busy_timeout(db_url: str) -> None:
    """Engines the store creates use WAL, a 30 s busy timeout and synchronous=NORMAL."""
    with SqlReminderStore(db_url) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


# -- claims --------------------------------------------------------------------------------------


def test_racing_nodes_claim_disjoint_sets(store: ReminderStore, backend: Backend) -> None:
    """Two nodes claiming the same due rows at once never both get one, and between them they
    get every row."""
    for index in range(300):
        store.upsert(reminder(f"r{index:03d}", T0 + index * timedelta(milliseconds=1)))
    other = backend.store()
    claims: dict[str, set[ReminderKey]] = {"node-a": set(), "node-b": set()}

    def work(index: int) -> None:
        node, target = (("node-a", store), ("node-b", other))[index]
        for _ in range(5):
            # A node's own claims stay claimable by it: each call returns what it holds plus
            # what it newly won, so the last call returns all that the node holds.
            got = target.claim_due(
                node, until=T0 + SECOND, lease_until=T0 + 30 * SECOND, now=T0, limit=1_000
            )
            assert all(record.claimed_by == node for record in got)
            claims[node].update(record.key for record in got)

    _run_threads(2, work)
    a, b = claims["node-a"], claims["node-b"]
    assert a.isdisjoint(b)
    assert len(a | b) == 300
    owners = backend.raw("SELECT claimed_by, COUNT(*) FROM plexspaces_reminders GROUP BY 1")
    assert {row[0]: row[1] for row in owners} == {
        node: len(held) for node, held in claims.items() if held
    }


def test_claim_batches_of_racing_nodes_never_overlap(
    store: ReminderStore, backend: Backend
) -> None:
    """Four nodes claiming small batches at once, each firing what it won, fire each row once."""
    for index in range(200):
        store.upsert(reminder(f"r{index:03d}", T0 + index * timedelta(milliseconds=1)))
    stores = [store, *(backend.store() for _ in range(3))]
    fired: list[ReminderKey] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        node, target = f"node-{index}", stores[index]
        for _ in range(200):
            batch = target.claim_due(
                node, until=T0 + SECOND, lease_until=T0 + 30 * SECOND, now=T0, limit=7
            )
            for record in batch:
                # Recording the fire makes the one-shot finished: no node can claim it again.
                done = target.record_fire(
                    record.key, expected_fire_count=0, scheduled_at=T0, next_due_at=None, now=T0
                )
                if done is not None:
                    target.acknowledge(record.key, 1, now=T0)
                    with lock:
                        fired.append(record.key)

    _run_threads(4, work)
    assert len(fired) == 200
    assert len(set(fired)) == 200
    assert backend.count() == 0


def test_claim_due_takes_only_due_and_claimable_rows(store: ReminderStore) -> None:
    """claim_due() claims rows due by `until` and pending ones, in position order, up to limit,
    and returns a node's own claims to it again."""
    store.upsert(reminder("late", T0 + timedelta(hours=1)))
    store.upsert(reminder("b", T0 + 2 * SECOND))
    store.upsert(reminder("a", T0 + SECOND))
    store.upsert(
        reminder(
            "p",
            T0 + timedelta(days=1),
            period=timedelta(days=1),
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0,
        )
    )
    first = store.claim_due(
        "n1", until=T0 + 5 * SECOND, lease_until=T0 + 10 * SECOND, now=T0, limit=2
    )
    assert keys_of(first) == ["p", "a"]
    assert all(record.claimed_until == T0 + 10 * SECOND for record in first)
    assert keys_of(
        store.claim_due("n2", until=T0 + 5 * SECOND, lease_until=T0 + 10 * SECOND, now=T0, limit=10)
    ) == ["b"]
    again = store.claim_due(
        "n1", until=T0 + 5 * SECOND, lease_until=T0 + 20 * SECOND, now=T0 + SECOND, limit=10
    )
    assert keys_of(again) == ["p", "a"]
    assert all(record.claimed_until == T0 + 20 * SECOND for record in again)
    late = store.get(ReminderKey("order", "ord-1", "late"))
    assert late is not None
    assert late.claimed_by is None


def test_expired_claims_can_be_taken_over(store: ReminderStore) -> None:
    """A claim is held through claimed_until and claimable by another node after it."""
    store.upsert(reminder("r", T0))
    assert keys_of(
        store.claim_due("dead", until=T0, lease_until=T0 + 10 * SECOND, now=T0, limit=5)
    ) == ["r"]
    at_expiry = store.claim_due(
        "alive", until=T0 + 10 * SECOND, lease_until=T0 + 20 * SECOND, now=T0 + 10 * SECOND, limit=5
    )
    assert at_expiry == []
    taken = store.claim_due(
        "alive",
        until=T0 + 11 * SECOND,
        lease_until=T0 + 21 * SECOND,
        now=T0 + 10 * SECOND + timedelta(microseconds=1),
        limit=5,
    )
    assert [(record.key.name, record.claimed_by) for record in taken] == [("r", "alive")]


def test_renew_and_release_claims(store: ReminderStore) -> None:
    """renew_claims() extends live claims only; release_claims() drops a node's claims."""
    for name in ("a", "b", "c"):
        store.upsert(reminder(name, T0))
    store.claim_due("n1", until=T0, lease_until=T0 + 10 * SECOND, now=T0, limit=2)
    store.claim_due("n2", until=T0, lease_until=T0 + 5 * SECOND, now=T0, limit=5)
    assert store.renew_claims("n1", lease_until=T0 + 30 * SECOND, now=T0 + 9 * SECOND) == 2
    assert store.renew_claims("n2", lease_until=T0 + 30 * SECOND, now=T0 + 9 * SECOND) == 0
    a = store.get(ReminderKey("order", "ord-1", "a"))
    assert a is not None
    assert (a.claimed_by, a.claimed_until) == ("n1", T0 + 30 * SECOND)
    assert a.updated_at == T0  # leases are not changes of the reminder
    assert store.release_claims("n1") == 2
    assert store.release_claims("n1") == 0
    a = store.get(ReminderKey("order", "ord-1", "a"))
    assert a is not None
    assert (a.claimed_by, a.claimed_until) == (None, None)
    assert store.release_claims("n2") == 1


# -- throughput ----------------------------------------------------------------------------------


def test_throughput_on_a_sqlite_file(db_url: str) -> None:
    """Prints single-threaded upserts/s and record_fire+acknowledge pairs/s on a SQLite file."""
    rows = 2_000
    with SqlReminderStore(db_url) as store:
        started = time.perf_counter()
        for index in range(rows):
            store.upsert(reminder(f"r{index}", T0, period=SECOND, payload={"i": index}))
        upserts = rows / (time.perf_counter() - started)
        started = time.perf_counter()
        for index in range(rows):
            key = ReminderKey("order", "ord-1", f"r{index}")
            fired = store.record_fire(
                key, expected_fire_count=0, scheduled_at=T0, next_due_at=T0 + SECOND, now=T0
            )
            assert fired is not None
            store.acknowledge(key, 1, now=T0)
        pairs = rows / (time.perf_counter() - started)
        started = time.perf_counter()
        scanned = 0
        after = None
        while page := store.due(T0 + SECOND, 1_000, after=after):
            scanned += len(page)
            after = page[-1].position
        scan = scanned / (time.perf_counter() - started)
    assert scanned == rows
    print(
        f"\nreminder store on a SQLite file: {upserts:,.0f} upserts/s, "
        f"{pairs:,.0f} record_fire+acknowledge pairs/s, {scan:,.0f} rows/s scanned by due()"
    )
    print(json.dumps({"upserts_per_s": round(upserts), "fire_ack_pairs_per_s": round(pairs)}))


# -- claims: paging, actor types, activations, fencing -------------------------------------------

_MICRO = timedelta(microseconds=1)


def _claim(
    store: ReminderStore, node: str, now: datetime, *, limit: int = 100, **options: Any
) -> list[StoredReminder]:
    """claim_due() of everything due by `now`, leased for 30 s from `now`."""
    return store.claim_due(
        node, until=now, lease_until=now + 30 * SECOND, now=now, limit=limit, **options
    )


def _claim_of(store: ReminderStore, key: ReminderKey) -> tuple[str | None, datetime | None]:
    loaded = store.get(key)
    assert loaded is not None
    return (loaded.claimed_by, loaded.claimed_until)


def test_claim_due_pages_with_after_claim_every_due_row_once(store: ReminderStore) -> None:
    """Pages of claim_due(after=last position) claim every due row exactly once, pending and
    scheduled rows alike, in position order; rows not yet due are left alone."""
    expected = []
    for index in range(23):
        # Ties on the due time, so the key decides inside a tie; every fourth row is pending.
        when = T0 + (index % 5) * SECOND
        if index % 4 == 0:
            record = reminder(
                f"r{index:02d}",
                T0 + timedelta(days=1),
                actor_key=f"ord-{index % 3}",
                period=timedelta(days=1),
                fire_count=1,
                pending_fire=1,
                pending_scheduled_at=when,
            )
        else:
            record = reminder(f"r{index:02d}", when, actor_key=f"ord-{index % 3}")
        store.upsert(record)
        expected.append(record.position)
    store.upsert(reminder("not-yet", T0 + timedelta(hours=1)))
    seen: list[tuple[datetime, ReminderKey]] = []
    pages: list[int] = []
    after = None
    while len(pages) < 10:  # 23 rows in pages of 5: a cursor that does not advance fails here
        page = store.claim_due(
            "n1",
            until=T0 + 10 * SECOND,
            lease_until=T0 + 30 * SECOND,
            now=T0,
            limit=5,
            after=after,
        )
        pages.append(len(page))
        assert [record.position for record in page] == sorted(record.position for record in page)
        assert all(
            (record.claimed_by, record.claimed_until) == ("n1", T0 + 30 * SECOND) for record in page
        )
        seen.extend(record.position for record in page)
        if len(page) < 5:
            break
        after = page[-1].position
    assert pages == [5, 5, 5, 5, 3]
    assert seen == sorted(expected)
    assert _claim_of(store, ReminderKey("order", "ord-1", "not-yet")) == (None, None)


def test_claim_due_after_the_last_position_claims_nothing(store: ReminderStore) -> None:
    """A page after the last due row is empty and claims nothing, even for another node."""
    store.upsert(reminder("a", T0))
    store.upsert(reminder("b", T0 + SECOND))
    first = _claim(store, "n1", T0 + SECOND, limit=1)
    assert keys_of(first) == ["a"]
    rest = _claim(store, "n2", T0 + SECOND, after=first[-1].position)
    assert keys_of(rest) == ["b"]
    assert _claim(store, "n3", T0 + SECOND, after=rest[-1].position) == []
    assert _claim_of(store, ReminderKey("order", "ord-1", "a"))[0] == "n1"
    assert _claim_of(store, ReminderKey("order", "ord-1", "b"))[0] == "n2"


def test_claim_due_limits_the_claim_to_actor_types(store: ReminderStore, backend: Backend) -> None:
    """actor_types claims only reminders of those types; other types stay unclaimed."""
    store.upsert(reminder("o", T0, actor_type="order"))
    store.upsert(reminder("i", T0 + SECOND, actor_type="invoice"))
    store.upsert(reminder("u", T0, actor_type="user"))
    store.upsert(
        reminder(
            "p",
            T0 + timedelta(days=1),
            actor_type="user",
            period=timedelta(days=1),
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0,
        )
    )
    claimed = _claim(store, "n1", T0 + SECOND, actor_types=("order", "invoice"))
    assert [str(record.key) for record in claimed] == ["order/ord-1:o", "invoice/ord-1:i"]
    assert _claim_of(store, ReminderKey("user", "ord-1", "u")) == (None, None)
    assert _claim_of(store, ReminderKey("user", "ord-1", "p")) == (None, None)
    # A set is a collection too; the pending row of the type is claimed as well.
    users = _claim(store, "n2", T0 + SECOND, actor_types={"user"})
    assert [str(record.key) for record in users] == ["user/ord-1:p", "user/ord-1:u"]
    assert all(record.claimed_by == "n2" for record in users)
    owners = backend.raw(
        "SELECT actor_type, claimed_by FROM plexspaces_reminders ORDER BY actor_type, name"
    )
    assert [tuple(row) for row in owners] == [
        ("invoice", "n1"),
        ("order", "n1"),
        ("user", "n2"),
        ("user", "n2"),
    ]


def test_claim_due_with_no_actor_types_claims_nothing(
    store: ReminderStore, backend: Backend
) -> None:
    """An empty actor_types claims nothing; a bare str is refused, naming it, claiming nothing."""
    store.upsert(reminder("o", T0, actor_type="order"))
    store.upsert(reminder("i", T0, actor_type="invoice"))
    assert _claim(store, "n1", T0, actor_types=[]) == []
    assert _claim(store, "n1", T0, actor_types=frozenset()) == []
    with pytest.raises(ValueError, match=r"actor_types 'order'.*not a str"):
        _claim(store, "n1", T0, actor_types="order")
    claimed = backend.raw("SELECT COUNT(*) FROM plexspaces_reminders WHERE claimed_by IS NOT NULL")
    assert claimed[0][0] == 0


def test_claim_due_without_own_claims_takes_only_free_and_expired_rows(
    store: ReminderStore,
) -> None:
    """include_own=False neither returns nor re-leases a node's live claims, and still takes
    unclaimed rows and expired claims (its own expired ones included)."""
    now = T0 + 10 * SECOND
    store.upsert(reminder("mine", T0, claimed_by="n1", claimed_until=now))  # live: inclusive
    store.upsert(reminder("free", T0 + SECOND))
    store.upsert(reminder("expired", T0 + 2 * SECOND, claimed_by="n2", claimed_until=now - _MICRO))
    store.upsert(
        reminder("mine-expired", T0 + 3 * SECOND, claimed_by="n1", claimed_until=now - _MICRO)
    )
    store.upsert(reminder("theirs", T0 + 4 * SECOND, claimed_by="n2", claimed_until=now))
    claimed = store.claim_due(
        "n1", until=now, lease_until=now + 30 * SECOND, now=now, limit=10, include_own=False
    )
    assert keys_of(claimed) == ["free", "expired", "mine-expired"]
    assert all(
        (record.claimed_by, record.claimed_until) == ("n1", now + 30 * SECOND) for record in claimed
    )
    assert _claim_of(store, ReminderKey("order", "ord-1", "mine")) == ("n1", now)
    assert _claim_of(store, ReminderKey("order", "ord-1", "theirs")) == ("n2", now)
    # The same call with own claims returns all four of the node's rows, "mine" re-leased.
    again = store.claim_due("n1", until=now, lease_until=now + 60 * SECOND, now=now, limit=10)
    assert keys_of(again) == ["mine", "free", "expired", "mine-expired"]
    assert _claim_of(store, ReminderKey("order", "ord-1", "mine")) == ("n1", now + 60 * SECOND)


def test_claim_due_skips_actors_active_on_another_node(store: ReminderStore) -> None:
    """A reminder whose actor has a live activation lease of another node is left to that node;
    a lease of the claiming node itself, or of another actor, does not hold it back."""
    store.upsert(reminder("held", T0, actor_key="held"))
    store.upsert(
        reminder(
            "held-pending",
            T0 + timedelta(days=1),
            actor_key="held",
            period=timedelta(days=1),
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0,
        )
    )
    store.upsert(reminder("mine", T0 + SECOND, actor_key="mine"))
    store.upsert(reminder("idle", T0 + 2 * SECOND, actor_key="idle"))
    lease = T0 + 10 * SECOND
    for actor_type, actor_key, node in [
        ("order", "held", "n2"),
        ("order", "mine", "n1"),
        # The same key under another type, and another key of the same type: other actors.
        ("invoice", "idle", "n2"),
        ("order", "idle-2", "n2"),
    ]:
        assert (
            store.claim_activation(
                actor_type, actor_key, node, activation_id=f"{node}-a", lease_until=lease, now=T0
            )
            is None
        )
    # Still live at its last microsecond: lease_until is inclusive.
    first = _claim(store, "n1", lease)
    assert keys_of(first) == ["mine", "idle"]
    assert _claim_of(store, ReminderKey("order", "held", "held")) == (None, None)
    assert _claim_of(store, ReminderKey("order", "held", "held-pending")) == (None, None)
    # The holder of the activation claims them.
    holder = _claim(store, "n2", lease)
    assert keys_of(holder) == ["held", "held-pending"]  # both at T0: by key
    assert all(record.claimed_by == "n2" for record in holder)


def test_claim_due_takes_actors_whose_lease_expired_or_was_released(store: ReminderStore) -> None:
    """Once another node's activation lease expired (lease_until < now) or was released, the
    actor's reminders are claimable by any node."""
    store.upsert(reminder("expiring", T0, actor_key="expiring"))
    store.upsert(reminder("released", T0, actor_key="released"))
    assert (
        store.claim_activation(
            "order", "expiring", "n2", activation_id="x1", lease_until=T0 + 10 * SECOND, now=T0
        )
        is None
    )
    assert (
        store.claim_activation(
            "order", "released", "n2", activation_id="x2", lease_until=T0 + 60 * SECOND, now=T0
        )
        is None
    )
    assert _claim(store, "n1", T0 + 10 * SECOND) == []
    assert store.release_activation("order", "released", "x2") is True
    assert keys_of(_claim(store, "n1", T0 + 10 * SECOND)) == ["released"]
    after_expiry = _claim(store, "n1", T0 + 10 * SECOND + _MICRO, include_own=False)
    assert keys_of(after_expiry) == ["expiring"]
    assert after_expiry[0].claimed_by == "n1"


# -- fencing -------------------------------------------------------------------------------------

_FENCE_STARTS: dict[str, dict[str, Any]] = {
    "unclaimed": {},
    "expired": {"claimed_by": "n2", "claimed_until": T0 + SECOND - _MICRO},
    "own": {"claimed_by": "n1", "claimed_until": T0 + 2 * SECOND},
    "own-expired": {"claimed_by": "n1", "claimed_until": T0},
}


def test_fenced_record_fire_claims_the_reminder_for_the_node(store: ReminderStore) -> None:
    """record_fire(node_id=, lease_until=) succeeds on unclaimed rows, expired claims and the
    node's own claims, and leaves the row claimed by the node until lease_until."""
    for name, claim in _FENCE_STARTS.items():
        key = ReminderKey("order", "ord-1", name)
        store.upsert(reminder(name, T0, period=SECOND, **claim))
        fired = store.record_fire(
            key,
            expected_fire_count=0,
            scheduled_at=T0,
            next_due_at=T0 + SECOND,
            now=T0 + SECOND,
            node_id="n1",
            lease_until=T0 + 30 * SECOND,
        )
        assert fired is not None, name
        assert (fired.fire_count, fired.pending_fire, fired.due_at) == (1, 1, T0 + SECOND)
        assert (fired.claimed_by, fired.claimed_until) == ("n1", T0 + 30 * SECOND), name
        assert fired.updated_at == T0 + SECOND
        assert store.get(key) == fired


def test_fenced_reschedule_claims_the_reminder_for_the_node(store: ReminderStore) -> None:
    """reschedule(node_id=, lease_until=) succeeds where a fenced fire would, and claims the row."""
    for name, claim in _FENCE_STARTS.items():
        key = ReminderKey("order", "ord-1", name)
        store.upsert(reminder(name, T0, period=SECOND, **claim))
        moved = store.reschedule(
            key,
            expected_fire_count=0,
            due_at=T0 + 5 * SECOND,
            now=T0 + SECOND,
            node_id="n1",
            lease_until=T0 + 30 * SECOND,
        )
        assert moved is not None, name
        assert (moved.due_at, moved.fire_count, moved.pending_fire) == (T0 + 5 * SECOND, 0, None)
        assert (moved.claimed_by, moved.claimed_until) == ("n1", T0 + 30 * SECOND), name
        assert store.get(key) == moved


def test_fenced_calls_fail_while_another_node_holds_a_live_claim(store: ReminderStore) -> None:
    """With another node's live claim (through its last microsecond), a fenced record_fire or
    reschedule returns None and changes nothing."""
    key = ReminderKey("order", "ord-1", "r")
    store.upsert(reminder("r", T0, period=SECOND, claimed_by="n2", claimed_until=T0 + 10 * SECOND))
    before = store.get(key)
    for now in (T0, T0 + 10 * SECOND):
        fired = store.record_fire(
            key,
            expected_fire_count=0,
            scheduled_at=T0,
            next_due_at=T0 + SECOND,
            now=now,
            node_id="n1",
            lease_until=now + 30 * SECOND,
        )
        assert fired is None
        moved = store.reschedule(
            key,
            expected_fire_count=0,
            due_at=T0 + 5 * SECOND,
            now=now,
            node_id="n1",
            lease_until=now + 30 * SECOND,
        )
        assert moved is None
        assert store.get(key) == before
    # The holder itself may fire it.
    assert store.record_fire(
        key,
        expected_fire_count=0,
        scheduled_at=T0,
        next_due_at=T0 + SECOND,
        now=T0 + 10 * SECOND,
        node_id="n2",
        lease_until=T0 + 40 * SECOND,
    )


def test_fence_arguments_are_checked(store: ReminderStore) -> None:
    """node_id and lease_until go together, and the lease must end after now; a refused call
    changes nothing."""
    key = ReminderKey("order", "ord-1", "r")
    store.upsert(reminder("r", T0, period=SECOND))
    before = store.get(key)
    fire = {"expected_fire_count": 0, "scheduled_at": T0, "next_due_at": T0 + SECOND}
    move = {"expected_fire_count": 0, "due_at": T0 + 5 * SECOND}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"node_id": "n1"}, r"node_id 'n1' and lease_until None"),
        ({"lease_until": T0 + SECOND}, r"node_id None and lease_until"),
        ({"node_id": "n1", "lease_until": T0}, r"lease_until .* later than now"),
        ({"node_id": "n1", "lease_until": T0 - SECOND}, r"lease_until .* later than now"),
        ({"node_id": "", "lease_until": T0 + SECOND}, r"node_id ''"),
    ]
    for fence, message in bad:
        with pytest.raises(ValueError, match=message):
            store.record_fire(key, now=T0, **fire, **fence)
        with pytest.raises(ValueError, match=message):
            store.reschedule(key, now=T0, **move, **fence)
    assert store.get(key) == before


def test_unfenced_calls_ignore_claims(store: ReminderStore) -> None:
    """Without node_id, record_fire and reschedule work whoever holds a claim, and leave it."""
    claim = {"claimed_by": "n2", "claimed_until": T0 + 10 * SECOND}
    store.upsert(reminder("fire", T0, period=SECOND, **claim))
    store.upsert(reminder("move", T0, period=SECOND, **claim))
    fired = store.record_fire(
        ReminderKey("order", "ord-1", "fire"),
        expected_fire_count=0,
        scheduled_at=T0,
        next_due_at=T0 + SECOND,
        now=T0,
    )
    assert fired is not None
    assert fired.fire_count == 1
    assert (fired.claimed_by, fired.claimed_until) == ("n2", T0 + 10 * SECOND)
    moved = store.reschedule(
        ReminderKey("order", "ord-1", "move"),
        expected_fire_count=0,
        due_at=T0 + 5 * SECOND,
        now=T0,
    )
    assert moved is not None
    assert moved.due_at == T0 + 5 * SECOND
    assert (moved.claimed_by, moved.claimed_until) == ("n2", T0 + 10 * SECOND)


def test_release_claims_of_some_keys(store: ReminderStore) -> None:
    """release_claims(node, keys=...) drops that node's claims on those keys only."""
    for name in ("a", "b", "c"):
        store.upsert(reminder(name, T0, claimed_by="n1", claimed_until=T0 + 10 * SECOND))
    store.upsert(reminder("d", T0, claimed_by="n2", claimed_until=T0 + 10 * SECOND))

    def key(name: str) -> ReminderKey:
        return ReminderKey("order", "ord-1", name)

    assert store.release_claims("n1", keys=[]) == 0
    assert _claim_of(store, key("a")) == ("n1", T0 + 10 * SECOND)
    released = store.release_claims("n1", keys=[key("a"), key("d"), key("missing")])
    assert released == 1
    assert _claim_of(store, key("a")) == (None, None)
    assert _claim_of(store, key("b")) == ("n1", T0 + 10 * SECOND)
    assert _claim_of(store, key("c")) == ("n1", T0 + 10 * SECOND)
    assert _claim_of(store, key("d")) == ("n2", T0 + 10 * SECOND)
    assert store.release_claims("n1", keys=[key("a")]) == 0
    assert store.release_claims("n1", keys=(key("b"), key("c"))) == 2
    assert _claim_of(store, key("c")) == (None, None)
    assert _claim_of(store, key("d")) == ("n2", T0 + 10 * SECOND)


# -- activation leases ---------------------------------------------------------------------------


def test_claim_activation_grants_the_lease_to_one_node_at_a_time(store: ReminderStore) -> None:
    """The taker gets None, a refused node the holder's id while the lease lives; the holder may
    re-claim with a new activation, and another node takes over once the lease expired."""
    lease = T0 + 10 * SECOND
    assert store.activation_holder("order", "o1", now=T0) is None
    assert (
        store.claim_activation("order", "o1", "n1", activation_id="a1", lease_until=lease, now=T0)
        is None
    )
    assert store.activation_holder("order", "o1", now=T0) == "n1"
    assert store.activation_holder("order", "o1", now=lease) == "n1"
    assert store.activation_holder("order", "o1", now=lease + _MICRO) is None
    # Refused through the lease's last microsecond.
    for now in (T0, lease):
        refused = store.claim_activation(
            "order", "o1", "n2", activation_id="b1", lease_until=now + 30 * SECOND, now=now
        )
        assert refused == "n1"
    assert store.activation_holder("order", "o1", now=lease) == "n1"
    assert store.activation_holder("order", "o1", now=lease + _MICRO) is None  # not extended
    # The holder re-claims with a new activation; a late release of the old one changes nothing.
    again = T0 + 20 * SECOND
    assert (
        store.claim_activation(
            "order", "o1", "n1", activation_id="a2", lease_until=again, now=T0 + 5 * SECOND
        )
        is None
    )
    assert store.release_activation("order", "o1", "a1") is False
    assert store.activation_holder("order", "o1", now=again) == "n1"
    # Expired: another node takes over.
    taken = store.claim_activation(
        "order", "o1", "n2", activation_id="b2", lease_until=again + 30 * SECOND, now=again + _MICRO
    )
    assert taken is None
    assert store.activation_holder("order", "o1", now=again + _MICRO) == "n2"
    assert store.release_activation("order", "o1", "a2") is False  # n1's activation is over
    assert store.activation_holder("order", "o1", now=again + _MICRO) == "n2"
    assert store.release_activation("order", "o1", "b2") is True
    assert store.activation_holder("order", "o1", now=again + _MICRO) is None
    assert store.release_activation("order", "o1", "b2") is False


def test_activation_leases_are_per_actor(store: ReminderStore) -> None:
    """Leases of the same key under another type, or another key, are independent."""
    for actor_type, actor_key, node in [("order", "k", "n1"), ("invoice", "k", "n2")]:
        assert (
            store.claim_activation(
                actor_type, actor_key, node, activation_id=node, lease_until=T0 + SECOND, now=T0
            )
            is None
        )
    assert (
        store.claim_activation(
            "order", "k2", "n2", activation_id="n2-k2", lease_until=T0 + SECOND, now=T0
        )
        is None
    )
    assert store.activation_holder("order", "k", now=T0) == "n1"
    assert store.activation_holder("invoice", "k", now=T0) == "n2"
    assert store.activation_holder("order", "k2", now=T0) == "n2"
    assert store.activation_holder("user", "k", now=T0) is None


def test_renew_and_release_activations(store: ReminderStore) -> None:
    """renew_activations() extends a node's live leases only; release_activations() drops every
    lease of the node and no other node's."""

    def claim(actor_key: str, node: str, lease_until: datetime, now: datetime = T0) -> None:
        assert (
            store.claim_activation(
                "order",
                actor_key,
                node,
                activation_id=f"{node}-{actor_key}",
                lease_until=lease_until,
                now=now,
            )
            is None
        )

    claim("a", "n1", T0 + 10 * SECOND)
    claim("b", "n1", T0 + 6 * SECOND)  # live at the renewal: lease_until == now
    claim("c", "n2", T0 + 10 * SECOND)
    claim("d", "n1", T0 + 5 * SECOND)  # expired at the renewal, then taken over
    claim("d", "n2", T0 + 20 * SECOND, now=T0 + 6 * SECOND)
    claim("e", "n1", T0 + 5 * SECOND)  # expired at the renewal, nobody took it
    renewed = store.renew_activations("n1", lease_until=T0 + 30 * SECOND, now=T0 + 6 * SECOND)
    assert renewed == 2
    later = T0 + 25 * SECOND
    assert store.activation_holder("order", "a", now=later) == "n1"
    assert store.activation_holder("order", "b", now=later) == "n1"
    assert store.activation_holder("order", "c", now=later) is None  # n2's lease, not renewed
    assert store.activation_holder("order", "d", now=T0 + 20 * SECOND) == "n2"
    assert store.activation_holder("order", "e", now=T0 + 6 * SECOND) is None
    assert store.renew_activations("n3", lease_until=later, now=T0) == 0
    assert store.release_activations("n2") == 2
    assert store.activation_holder("order", "c", now=T0) is None
    assert store.activation_holder("order", "d", now=T0 + 6 * SECOND) is None
    assert store.activation_holder("order", "a", now=later) == "n1"
    store.release_activations("n1")
    for actor_key in "abcde":
        assert store.activation_holder("order", actor_key, now=T0) is None
    assert store.release_activations("n1") == 0
    # Nothing of n1 is left to block another node.
    for actor_key in "abe":
        claim(actor_key, "n3", T0 + 40 * SECOND, now=T0 + 7 * SECOND)


def test_racing_claim_activation_has_exactly_one_winner(
    store: ReminderStore, backend: Backend
) -> None:
    """Two nodes claiming the activation of the same actor at the same moment: one gets it
    (None), the other is told that node's id. 50 rounds, one new actor each."""
    rounds = 50
    stores = [store, backend.store()]
    answers: list[dict[str, str | None]] = [{} for _ in range(rounds)]
    step = threading.Barrier(2)

    def work(index: int) -> None:
        node = f"n{index}"
        for round_ in range(rounds):
            step.wait(timeout=30)
            answers[round_][node] = stores[index].claim_activation(
                "order",
                f"race-{round_}",
                node,
                activation_id=f"{node}-{round_}",
                lease_until=T0 + 30 * SECOND,
                now=T0,
            )

    _run_threads(2, work)
    winners = []
    for round_, answer in enumerate(answers):
        won = [node for node, holder in answer.items() if holder is None]
        assert len(won) == 1, (round_, answer)
        (winner,) = won
        (loser,) = set(answer) - {winner}
        assert answer[loser] == winner, (round_, answer)
        assert store.activation_holder("order", f"race-{round_}", now=T0) == winner
        winners.append(winner)
    rows = backend.raw("SELECT COUNT(*) FROM plexspaces_activations")
    assert rows[0][0] == rounds
    print(f"\nactivation race winners on {backend.name}: {sorted(set(winners))}")


# -- an unavailable database ---------------------------------------------------------------------


def test_a_postgresql_url_without_a_server_is_unavailable_at_once() -> None:
    """Opening a store on a port where no server listens raises StoreUnavailableError, naming
    the URL with its password hidden."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://plexspaces:s3cret@127.0.0.1:{port}/reminders"
    with pytest.raises(StoreUnavailableError) as raised:
        SqlReminderStore(url)
    error = raised.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, PlexSpacesError)
    message = str(error)
    assert f"postgresql+psycopg://plexspaces:***@127.0.0.1:{port}/reminders" in message
    assert "s3cret" not in message


def test_a_store_survives_its_server_going_away_and_coming_back() -> None:
    """While the server is down, calls raise StoreUnavailableError and change nothing; once it
    is back, the same store works again, and a restart between two calls fails neither."""
    server = pgserver.PostgresServer()
    store = None
    try:
        store = SqlReminderStore(server.url)
        kept = reminder("kept", T0)
        store.upsert(kept)
        server.stop()
        lost = reminder("lost", T0 + SECOND)
        with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{server.port}"):
            store.upsert(lost)
        with pytest.raises(StoreUnavailableError):
            store.get(kept.key)
        server.start()
        assert store.get(lost.key) is None
        assert store.get(kept.key) == kept
        again = reminder("again", T0 + 2 * SECOND)
        store.upsert(again)
        assert keys_of(store.due(T0 + 10 * SECOND, 10)) == ["kept", "again"]
        # A restart between two calls costs no failed call: the pooled connections died with
        # the old server, and the next read and write still succeed.
        server.stop()
        server.start()
        assert store.get(kept.key) == kept
        server.stop()
        server.start()
        store.upsert(reminder("after-restart", T0 + 3 * SECOND))
        assert keys_of(store.due(T0 + 10 * SECOND, 10)) == ["kept", "again", "after-restart"]
    finally:
        if store is not None:
            store.close()
        server.close()


# -- operator tools (the `plexspaces` command) ---------------------------------------------------


def test_scan_lists_every_reminder_by_due_time_then_key(store: ReminderStore) -> None:
    """scan() returns every reminder, finished ones and pending ones included, each placed by
    its due_at, in (due_at, key) order; `limit` bounds the page and `after` starts past a
    record."""
    store.upsert(reminder("c", T0 + 2 * SECOND))
    store.upsert(reminder("a", T0 + SECOND))
    store.upsert(reminder("b", T0 + SECOND, actor_type="invoice"))
    store.upsert(
        reminder(
            "pending",
            T0 + timedelta(days=1),
            period=timedelta(days=1),
            fire_count=2,
            pending_fire=2,
            pending_scheduled_at=T0,
        )
    )
    store.upsert(
        reminder(
            "finished",
            T0 + 3 * SECOND,
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0 + 3 * SECOND,
            finished=True,
        )
    )
    records = store.scan(10)
    assert [str(record.key) for record in records] == [
        "invoice/ord-1:b",
        "order/ord-1:a",
        "order/ord-1:c",
        "order/ord-1:finished",
        "order/ord-1:pending",
    ]
    assert all(record == store.get(record.key) for record in records)
    assert keys_of(store.scan(2)) == ["b", "a"]
    a = records[1]
    assert keys_of(store.scan(10, after=(a.due_at, a.key))) == ["c", "finished", "pending"]
    last = records[-1]
    assert store.scan(10, after=(last.due_at, last.key)) == []


def test_scan_pages_through_1200_rows_without_duplicates_or_gaps(
    store: ReminderStore, backend: Backend
) -> None:
    """Keyset pages of 100 cover 1,200 rows, finished and unfinished mixed, exactly once and in
    (due_at, key) order; a filtered scan pages the same way."""
    records = []
    for index in range(1_200):
        # Many rows share a due time, so the key decides the order inside a tie.
        due = T0 + (index % 40) * SECOND
        fields: dict[str, Any] = {}
        if index % 5 == 0:
            fields = {
                "fire_count": 1,
                "pending_fire": 1,
                "pending_scheduled_at": due,
                "finished": True,
            }
        records.append(reminder(f"r{index:05d}", due, actor_key=f"ord-{index % 7}", **fields))
    assert store.upsert_many(records) == 1_200
    assert backend.count() == 1_200

    def scan_all(page_size: int, **filters: Any) -> tuple[list[StoredReminder], list[int]]:
        seen: list[StoredReminder] = []
        pages: list[int] = []
        after = None
        while True:
            page = store.scan(page_size, after=after, **filters)
            pages.append(len(page))
            seen.extend(page)
            if len(page) < page_size:
                return seen, pages
            after = (page[-1].due_at, page[-1].key)

    expected = sorted(records, key=lambda record: (record.due_at, record.key))
    seen, pages = scan_all(100)
    assert pages == [100] * 12 + [0]
    assert seen == expected
    filtered, _ = scan_all(30, actor_key="ord-3")
    assert filtered == [record for record in expected if record.key.actor_key == "ord-3"]


def test_scan_filters_by_actor_type_and_key_and_a_strict_due_range(store: ReminderStore) -> None:
    """actor_type and actor_key match exactly; due_after < due_at < due_before, both strict."""
    for actor_type, actor_key, name, offset in [
        ("order", "o1", "a", 0),
        ("order", "o1", "b", 10),
        ("order", "o2", "c", 20),
        ("invoice", "o1", "d", 30),
    ]:
        store.upsert(
            reminder(name, T0 + offset * SECOND, actor_type=actor_type, actor_key=actor_key)
        )
    assert keys_of(store.scan(10, actor_type="order")) == ["a", "b", "c"]
    assert keys_of(store.scan(10, actor_key="o1")) == ["a", "b", "d"]
    assert keys_of(store.scan(10, actor_type="order", actor_key="o1")) == ["a", "b"]
    assert keys_of(store.scan(10, due_after=T0, due_before=T0 + 30 * SECOND)) == ["b", "c"]
    assert keys_of(store.scan(10, due_after=T0 - _MICRO)) == ["a", "b", "c", "d"]
    assert keys_of(store.scan(10, actor_type="order", due_before=T0 + 10 * SECOND + _MICRO)) == [
        "a",
        "b",
    ]
    assert store.scan(10, actor_type="user") == []
    assert store.scan(10, due_after=T0 + 30 * SECOND) == []


def test_scan_skips_undecodable_rows_without_shortening_a_page(
    store: ReminderStore, backend: Backend
) -> None:
    """Rows that cannot be decoded are skipped (and logged once each); a page of one still finds
    the good row behind them."""
    _insert_bad_rows(backend)  # all due at T0
    store.upsert(reminder("early", T0 - SECOND))
    store.upsert(reminder("good", T0 + SECOND))
    early = ReminderKey("order", "ord-1", "early")
    with structlog.testing.capture_logs() as logs:
        assert keys_of(store.scan(1, after=(T0 - SECOND, early))) == ["good"]
        assert keys_of(store.scan(10)) == ["early", "good"]
    logged = [entry["name"] for entry in logs if entry["event"] == "reminder.undecodable"]
    assert sorted(logged) == sorted(_BAD_ROWS)
    assert backend.count() == len(_BAD_ROWS) + 2


def test_scan_arguments_are_checked(store: ReminderStore) -> None:
    """Bad limits, naive datetimes, empty filters and bad positions raise ValueError naming
    the value."""
    naive = datetime(2026, 1, 1)
    key = ReminderKey("order", "ord-1", "r")
    with pytest.raises(ValueError, match="limit 0"):
        store.scan(0)
    with pytest.raises(ValueError, match=r"due_before.*naive"):
        store.scan(1, due_before=naive)
    with pytest.raises(ValueError, match=r"due_after.*naive"):
        store.scan(1, due_after=naive)
    with pytest.raises(ValueError, match="actor_type ''"):
        store.scan(1, actor_type="")
    with pytest.raises(ValueError, match="actor_key ''"):
        store.scan(1, actor_key="")
    with pytest.raises(ValueError, match=r"after.*naive"):
        store.scan(1, after=(naive, key))
    with pytest.raises(ValueError, match="position"):
        store.scan(1, after=T0)  # type: ignore[arg-type]


def test_upsert_many_writes_every_record_or_none(store: ReminderStore, backend: Backend) -> None:
    """upsert_many() stores a batch, the last record of a key winning, and returns how many
    reminders it wrote; a batch holding one invalid record raises ValueError naming it and
    stores nothing of the batch."""
    kept = reminder("kept", T0, payload={"v": 1})
    store.upsert(kept)
    assert store.upsert_many(reminder(f"r{index}", T0 + index * SECOND) for index in range(3)) == 3
    replaced = replace(kept, payload={"v": 2}, fire_count=3)
    assert store.upsert_many([reminder("r0", T0), replace(kept, payload={"v": 9}), replaced]) == 2
    assert store.get(kept.key) == replaced
    assert backend.count() == 4
    batch = [
        reminder("new-1", T0),
        replace(kept, payload={"v": 3}),
        reminder("new-2", T0, payload={1, 2}),
    ]
    with pytest.raises(ValueError, match=r"order/ord-1:new-2.*\{1, 2\}"):
        store.upsert_many(batch)
    assert backend.count() == 4
    assert store.get(kept.key) == replaced
    assert store.get(ReminderKey("order", "ord-1", "new-1")) is None
    assert store.upsert_many([]) == 0
    with pytest.raises(ValueError, match="iterable of StoredReminder"):
        store.upsert_many(kept)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a StoredReminder"):
        store.upsert_many([{"name": "r"}])  # type: ignore[list-item]


def test_lease_holders_counts_each_nodes_live_and_expired_leases(store: ReminderStore) -> None:
    """lease_holders(now) gives, per node and by node id, its live and expired reminder claims
    and activation leases and the latest end among them (live through its last microsecond)."""
    now = T0 + 10 * SECOND
    assert store.lease_holders(now) == []
    store.upsert(reminder("a", T0, claimed_by="n1", claimed_until=now))
    store.upsert(reminder("b", T0, claimed_by="n1", claimed_until=now - _MICRO))
    store.upsert(reminder("c", T0, claimed_by="n2", claimed_until=T0))
    store.upsert(reminder("free", T0))
    for actor_key, node, lease_until in [
        ("o1", "n2", T0 + SECOND),
        ("o2", "n3", now + SECOND),
        ("o3", "n1", now + 5 * SECOND),
    ]:
        assert (
            store.claim_activation(
                "order", actor_key, node, activation_id=actor_key, lease_until=lease_until, now=T0
            )
            is None
        )
    assert store.lease_holders(now) == [
        NodeLeases("n1", 1, 1, 1, 0, lease_until=now + 5 * SECOND),
        NodeLeases("n2", 0, 1, 0, 1, lease_until=T0 + SECOND),
        NodeLeases("n3", 0, 0, 1, 0, lease_until=now + SECOND),
    ]
    later = now + 6 * SECOND
    assert store.lease_holders(later)[0] == NodeLeases("n1", 0, 2, 0, 1, now + 5 * SECOND)
    with pytest.raises(ValueError, match=r"now.*naive"):
        store.lease_holders(datetime(2026, 1, 1))


def test_read_schema_version_reads_without_creating_or_refusing(backend: Backend) -> None:
    """read_schema_version() is None before anything was stored (and creates no table), the
    version once a store opened the database, and reports another version instead of refusing
    it."""
    engine = backend.raw_engine
    assert SqlReminderStore.read_schema_version(engine) is None
    assert not inspect(engine).has_table("plexspaces_schema")
    backend.store().upsert(reminder())
    assert SqlReminderStore.read_schema_version(engine) == SCHEMA_VERSION
    backend.raw("UPDATE plexspaces_schema SET version = 7 WHERE component = 'reminders'")
    assert SqlReminderStore.read_schema_version(engine) == 7
    with pytest.raises(SchemaVersionError, match="schema version 7"):
        backend.store()


def test_read_schema_version_never_creates_a_sqlite_file(db_url: str, tmp_path: Path) -> None:
    """Of a SQLite file that does not exist the version is None, and the file is not created;
    a new in-memory database has none either."""
    assert SqlReminderStore.read_schema_version(db_url) is None
    assert not (tmp_path / "file.db").exists()
    SqlReminderStore(db_url).close()
    assert SqlReminderStore.read_schema_version(db_url) == SCHEMA_VERSION
    assert SqlReminderStore.read_schema_version("sqlite://") is None


def test_read_schema_version_of_a_server_that_is_not_there_is_unavailable() -> None:
    """Reading the version where no server listens raises StoreUnavailableError naming the URL,
    its password hidden."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://plexspaces:s3cret@127.0.0.1:{port}/reminders"
    with pytest.raises(StoreUnavailableError) as raised:
        SqlReminderStore.read_schema_version(url)
    assert f"plexspaces:***@127.0.0.1:{port}/reminders is unavailable" in str(raised.value)
    assert "s3cret" not in str(raised.value)
