# ruff: noqa: F811  (the contract suite's fixtures are imported by name)
"""The store contract for calendar schedules (`cron`, `tz`), expiry (`expires_at`) and
create-only registration, on every backend: a SQLite file, in-memory SQLite and a real
PostgreSQL server.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import inspect

from plexspaces import ReminderExistsError
from plexspaces._store import FireChange, ReminderStore, SqlReminderStore
from plexspaces._store.sql.engine import COLUMNS_ADDED, REMINDERS_TABLE

from .test_store_contract import (  # noqa: F401
    _VERSION_1_TABLES,
    SECOND,
    T0,
    Backend,
    backend,
    reminder,
    store,
)

CALENDAR = {"cron": "0 9 * * MON-FRI", "tz": "Europe/Prague"}


def test_cron_tz_and_expiry_are_stored_and_read_back(store: ReminderStore) -> None:
    """A calendar reminder with an expiry comes back with its cron, tz and expires_at; a plain
    one with None in all three."""
    calendar = reminder("cal", **CALENDAR, expires_at=T0 + 30 * 86_400 * SECOND)
    plain = reminder("plain", period=SECOND)
    store.upsert_many([calendar, plain])
    assert store.get(calendar.key) == calendar
    assert store.get(plain.key) == plain
    found = store.get(plain.key)
    assert found is not None
    assert (found.cron, found.tz, found.expires_at) == (None, None, None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"cron": "0 9 * * *"}, r"cron '0 9 \* \* \*' and tz None must both be set"),
        ({"tz": "UTC"}, r"cron None and tz 'UTC' must both be set"),
        ({"cron": "0 9 * * *", "tz": "UTC", "period": SECOND}, r"has no period"),
        ({"cron": "99 * * * *", "tz": "UTC"}, r"cron '99 \* \* \* \*' is not valid"),
        ({"cron": "0 9 * * *", "tz": "Nowhere/City"}, r"tz 'Nowhere/City' is not a time zone"),
        ({"expires_at": T0.replace(tzinfo=None)}, r"expires_at: datetime .* is naive"),
    ],
)
def test_a_record_with_a_bad_schedule_or_expiry_is_refused(
    backend: Backend, fields: dict[str, object], expected: str
) -> None:
    """cron without tz (or the reverse), cron with a period, a bad cron, an unknown zone or a
    naive expiry: ValueError naming it, nothing stored."""
    store = backend.store()
    with pytest.raises(ValueError, match=expected):
        store.upsert(reminder("bad", **fields))
    assert backend.count() == 0


def test_a_row_whose_zone_is_unknown_is_kept_and_reported(backend: Backend) -> None:
    """A stored row whose tz the zone database does not know (edited, or a zone removed) is
    undecodable: kept, reported by errors(), never returned or deleted."""
    store = backend.store()
    good = reminder("cal", **CALENDAR)
    store.upsert(good)
    backend.raw("UPDATE plexspaces_reminders SET tz = 'Atlantis/Capital'")
    assert store.get(good.key) is None
    assert store.due(T0 + SECOND, 10) == []
    [problem] = store.errors()
    assert "Atlantis/Capital" in problem.error
    assert backend.count() == 1


def test_record_fires_deletes_an_expired_reminder_under_its_compare_and_set(
    store: ReminderStore,
) -> None:
    """A change with neither scheduled_at nor next_due_at deletes an expiring reminder (the
    result is the record as it was); one re-registered since it was read is left alone."""
    expiring = reminder("x", period=SECOND, expires_at=T0 + 5 * SECOND)
    other = reminder("y", period=SECOND, expires_at=T0 + 5 * SECOND)
    store.upsert_many([expiring, other])
    renewed = replace(other, payload="renewed", created_at=T0 + SECOND)
    store.upsert(renewed)
    results = store.record_fires(
        [
            FireChange(expiring, scheduled_at=None, next_due_at=None),
            FireChange(other, scheduled_at=None, next_due_at=None),
        ],
        now=T0 + 6 * SECOND,
    )
    assert results == [expiring, None]
    assert store.get(expiring.key) is None
    assert store.get(other.key) == renewed


def test_a_delete_change_is_refused_for_a_reminder_without_expiry(store: ReminderStore) -> None:
    """Only an expiring reminder can be deleted by record_fires: for another, a change without
    a fire and without a next due time is a ValueError, and nothing changes."""
    plain = reminder("p", period=SECOND)
    store.upsert(plain)
    with pytest.raises(ValueError, match="only an expiring reminder"):
        store.record_fires([FireChange(plain, None, None)], now=T0)
    assert store.get(plain.key) == plain


def test_fires_of_a_calendar_reminder_keep_cron_tz_and_expiry(store: ReminderStore) -> None:
    """record_fires and acknowledge_fires on a calendar reminder keep its schedule and expiry
    (the batch path builds the new record without reading it back)."""
    calendar = reminder("cal", **CALENDAR, expires_at=T0 + 86_400 * 9 * SECOND)
    store.upsert(calendar)
    [fired] = store.record_fires(
        [FireChange(calendar, scheduled_at=T0, next_due_at=T0 + 86_400 * SECOND)], now=T0
    )
    assert fired is not None
    assert store.get(calendar.key) == fired
    assert (fired.cron, fired.tz, fired.expires_at) == (
        calendar.cron,
        calendar.tz,
        calendar.expires_at,
    )
    assert store.acknowledge_fires([fired], now=T0) == 1


def test_create_only_refuses_an_existing_unfinished_reminder(store: ReminderStore) -> None:
    """upsert(create_only=True) writes a new key, raises ReminderExistsError for an unfinished
    reminder under the key (leaving it as it was), and replaces a finished one."""
    first = reminder("r", payload=1)
    store.upsert(first, create_only=True)
    with pytest.raises(ReminderExistsError, match="'order/ord-1' already has a reminder 'r'"):
        store.upsert(replace(first, payload=2), create_only=True)
    assert store.get(first.key) == first
    finished = replace(first, fire_count=1, pending_fire=1, pending_scheduled_at=T0, finished=True)
    store.upsert(finished)
    store.upsert(replace(first, payload=3), create_only=True)
    assert store.get(first.key) == replace(first, payload=3)


def test_upsert_many_with_a_taken_create_only_key_writes_nothing(store: ReminderStore) -> None:
    """upsert_many is all or nothing: one taken key among create_only raises
    ReminderExistsError and none of the batch (replacements included) is written."""
    taken = reminder("taken", payload="old")
    store.upsert(taken)
    batch = [reminder("a"), replace(taken, payload="new"), reminder("b", payload="b")]
    with pytest.raises(ReminderExistsError, match="'taken'"):
        store.upsert_many(batch, create_only={taken.key})
    assert [r.key.name for r in store.list_actor("order", "ord-1")] == ["taken"]
    assert store.get(taken.key) == taken
    store.upsert_many([reminder("a"), reminder("b")], create_only={reminder("a").key})
    assert len(store.list_actor("order", "ord-1")) == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_create_only_writes_from_two_stores_let_exactly_one_win(
    backend: Backend,
) -> None:
    """Two stores on one database (two processes' worth of connections), eight threads each
    creating the same key at once: exactly one write succeeds. Decided by the database, not by
    a lock in this process."""
    stores = [backend.store(), backend.store()]
    barrier = threading.Barrier(8)
    won: list[int] = []
    refused: list[int] = []

    def create(index: int) -> None:
        record = reminder("race", payload=index)
        barrier.wait(5)
        try:
            stores[index % 2].upsert(record, create_only=True)
            won.append(index)
        except ReminderExistsError:
            refused.append(index)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert len(refused) == 7
    found = stores[0].get(reminder("race").key)
    assert found is not None
    assert found.payload == won[0]


def test_a_version_1_database_gains_the_calendar_columns_and_takes_calendar_reminders(
    backend: Backend,
) -> None:
    """Upgrading a version-1 database (without cron, tz, expires_us) adds the three columns as
    nullable; its old reminders read back with None in them, and a calendar reminder with an
    expiry can be stored beside them."""
    assert {name for _, name in COLUMNS_ADDED[2]} >= {"cron", "tz", "expires_us"}
    first = backend.store()
    old = reminder("old", period=SECOND)
    first.upsert(old)
    first.close()
    for column in ("cron", "tz", "expires_us"):
        backend.raw(f"ALTER TABLE plexspaces_reminders DROP COLUMN {column}")
    backend.raw("UPDATE plexspaces_schema SET version = 1 WHERE component = 'reminders'")
    assert "plexspaces_reminders" in _VERSION_1_TABLES

    upgraded: SqlReminderStore = backend.store()
    columns = {c["name"]: c for c in inspect(backend.raw_engine).get_columns(REMINDERS_TABLE.name)}
    assert all(columns[name]["nullable"] for name in ("cron", "tz", "expires_us"))
    assert upgraded.get(old.key) == old
    calendar = reminder("cal", **CALENDAR, expires_at=T0 + timedelta(days=3))
    upgraded.upsert(calendar)
    assert upgraded.get(calendar.key) == calendar


def test_one_batch_fires_and_acknowledges_plain_and_calendar_reminders_together(
    store: ReminderStore,
) -> None:
    """record_fires and acknowledge_fires take plain, calendar and expiring reminders in one
    batch (each kind under its own guard): every fire is recorded, and acknowledged."""
    plain = reminder("plain", period=SECOND)
    calendar = reminder("cal", **CALENDAR)
    expiring = reminder("exp", period=SECOND, expires_at=T0 + 10 * SECOND)
    store.upsert_many([plain, calendar, expiring])
    changes = [FireChange(r, r.due_at, r.due_at + SECOND) for r in (plain, calendar, expiring)]
    fired = store.record_fires(changes, now=T0)
    assert [r.pending_fire if r is not None else None for r in fired] == [1, 1, 1]
    assert [store.get(r.key) for r in (plain, calendar, expiring)] == fired
    assert store.acknowledge_fires([r for r in fired if r is not None], now=T0) == 3
    assert [r.pending_fire for r in store.list_actor("order", "ord-1")] == [None] * 3
