# ruff: noqa: F811  (the contract suite's fixtures are imported by name)
"""The store contract for fires in batches (`record_fires`, `acknowledge_fires`), on every backend.

Uses the backends of the main contract suite: a SQLite file, in-memory SQLite and a real
PostgreSQL server. Throughput is printed (visible with `pytest -s`), never asserted.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import pytest
import structlog

from plexspaces._store import FireChange, ReminderKey, ReminderStore, StoredReminder

from .test_store_contract import (  # noqa: F401
    SECOND,
    T0,
    Backend,
    backend,
    reminder,
    store,
)


def _stored(store: ReminderStore, record: StoredReminder) -> StoredReminder:
    store.upsert(record)
    found = store.get(record.key)
    assert found is not None
    return found


def _fire(record: StoredReminder, next_due_at: datetime | None) -> FireChange:
    return FireChange(record, scheduled_at=record.due_at, next_due_at=next_due_at)


def test_record_fires_records_every_fire_of_a_batch(store: ReminderStore) -> None:
    """record_fires() counts each fire, makes it pending, moves periodic reminders on, finishes
    one-shots and reminders at max_count, and returns exactly what is stored."""
    periodic = _stored(store, reminder("tick", T0, period=10 * SECOND, payload={"n": 1}))
    one_shot = _stored(store, reminder("once", T0 + SECOND, payload=["a", 2.5, None]))
    last = _stored(store, reminder("last", T0, period=SECOND, max_count=1))
    now = T0 + 2 * SECOND
    results = store.record_fires(
        [
            _fire(periodic, T0 + 10 * SECOND),
            _fire(one_shot, None),
            _fire(last, T0 + SECOND),
        ],
        now=now,
    )
    tick, once, final = results
    assert tick is not None
    assert once is not None
    assert final is not None
    assert (tick.fire_count, tick.pending_fire, tick.pending_scheduled_at) == (1, 1, T0)
    assert (tick.due_at, tick.finished, tick.updated_at) == (T0 + 10 * SECOND, False, now)
    assert (once.fire_count, once.pending_fire, once.finished) == (1, 1, True)
    assert once.due_at == T0 + SECOND  # a finished reminder keeps the due time of its last fire
    assert (final.fire_count, final.finished, final.due_at) == (1, True, T0)
    for record in results:
        assert record is not None
        assert store.get(record.key) == record


def test_record_fires_moves_without_a_fire(store: ReminderStore) -> None:
    """A change without scheduled_at reschedules: due time moves, nothing is counted."""
    tick = _stored(store, reminder("tick", T0, period=SECOND, missed="skip"))
    [moved] = store.record_fires(
        [FireChange(tick, scheduled_at=None, next_due_at=T0 + 7 * SECOND)], now=T0 + 6 * SECOND
    )
    assert moved is not None
    assert (moved.due_at, moved.fire_count, moved.pending_fire) == (T0 + 7 * SECOND, 0, None)
    assert store.get(tick.key) == moved


def test_a_failed_compare_and_set_leaves_the_rest_of_the_batch_recorded(
    store: ReminderStore,
) -> None:
    """One stale record in a batch gets None and its row is unchanged; the others are recorded."""
    records = [_stored(store, reminder(f"r{i}", T0, period=SECOND)) for i in range(5)]
    stale = records[2]
    [moved_on] = store.record_fires([_fire(stale, T0 + SECOND)], now=T0)
    assert moved_on is not None
    store.acknowledge(stale.key, 1, now=T0)
    before = store.get(stale.key)
    results = store.record_fires([_fire(record, T0 + SECOND) for record in records], now=T0)
    assert results[2] is None
    assert store.get(stale.key) == before
    for index in (0, 1, 3, 4):
        result = results[index]
        assert result is not None
        assert result.fire_count == 1
        assert store.get(records[index].key) == result


def test_record_fires_refuses_a_row_registered_again_since_it_was_read(
    store: ReminderStore,
) -> None:
    """A re-registration with the same count and due time but another payload fails the
    batch's compare-and-set: the new registration is fired as stored, never with the old one's
    payload."""
    old = _stored(store, reminder("r", T0, payload={"v": 1}))
    newer = _stored(store, reminder("r", T0, payload={"v": 2}))
    [result] = store.record_fires([_fire(old, None)], now=T0)
    # The batch fell back to the single-row compare-and-set, which fires what is stored.
    assert result is not None
    assert result.payload == {"v": 2}
    assert result.fire_count == 1
    assert store.get(newer.key) == result


def test_record_fires_leaves_a_row_edited_into_an_undecodable_one(
    store: ReminderStore, backend: Backend
) -> None:
    """A row whose payload was corrupted after it was read is neither fired nor changed, and
    is reported; the rest of the batch is recorded."""
    good = _stored(store, reminder("good", T0))
    bad = _stored(store, reminder("bad", T0, payload={"x": 1}))
    backend.raw("UPDATE plexspaces_reminders SET payload = '{broken' WHERE name = 'bad'")
    raw_before = backend.raw("SELECT * FROM plexspaces_reminders WHERE name = 'bad'")
    with structlog.testing.capture_logs() as logs:
        results = store.record_fires([_fire(good, None), _fire(bad, None)], now=T0)
    assert results[0] is not None
    assert results[0].fire_count == 1
    assert results[1] is None
    assert backend.raw("SELECT * FROM plexspaces_reminders WHERE name = 'bad'") == raw_before
    assert [entry["name"] for entry in logs if entry["event"] == "reminder.undecodable"] == ["bad"]


def test_fenced_record_fires_claim_for_the_node_and_skip_rows_held_elsewhere(
    store: ReminderStore,
) -> None:
    """With node_id, each fire claims its row for the node; a row another node holds is not
    fired."""
    free = _stored(store, reminder("free", T0, period=SECOND))
    held = _stored(
        store, reminder("held", T0, period=SECOND, claimed_by="n2", claimed_until=T0 + 9 * SECOND)
    )
    results = store.record_fires(
        [_fire(free, T0 + SECOND), _fire(held, T0 + SECOND)],
        now=T0,
        node_id="n1",
        lease_until=T0 + 30 * SECOND,
    )
    fired, refused = results
    assert fired is not None
    assert (fired.claimed_by, fired.claimed_until) == ("n1", T0 + 30 * SECOND)
    assert store.get(free.key) == fired
    assert refused is None
    assert store.get(held.key) == held


def test_acknowledge_fires_clears_or_deletes_and_is_idempotent(store: ReminderStore) -> None:
    """acknowledge_fires() clears pending fires of reminders that go on, deletes finished ones,
    and a second acknowledgement of the same fires changes nothing."""
    tick = _stored(store, reminder("tick", T0, period=SECOND))
    once = _stored(store, reminder("once", T0))
    recorded = store.record_fires([_fire(tick, T0 + SECOND), _fire(once, None)], now=T0)
    assert all(record is not None for record in recorded)
    fires = [record for record in recorded if record is not None]
    assert store.acknowledge_fires(fires, now=T0 + SECOND) == 2
    cleared = store.get(tick.key)
    assert cleared is not None
    assert (cleared.fire_count, cleared.pending_fire) == (1, None)
    assert cleared.pending_scheduled_at is None
    assert cleared.updated_at == T0 + SECOND
    assert store.get(once.key) is None
    assert store.acknowledge_fires(fires, now=T0 + 2 * SECOND) == 0
    assert store.get(tick.key) == cleared


def test_acknowledge_fires_leaves_rows_changed_since_the_fire(
    store: ReminderStore, backend: Backend
) -> None:
    """A fire of a reminder registered again meanwhile, or of a row edited into an
    undecodable one, is not acknowledged: the row stays as it is."""
    replaced = _stored(store, reminder("replaced", T0))
    corrupted = _stored(store, reminder("corrupted", T0))
    fires = [
        record
        for record in store.record_fires([_fire(replaced, None), _fire(corrupted, None)], now=T0)
        if record is not None
    ]
    again = replace(fires[0], payload={"second": True}, created_at=T0 + SECOND)
    store.upsert(again)
    backend.raw("UPDATE plexspaces_reminders SET payload = 'NaN' WHERE name = 'corrupted'")
    raw_before = backend.raw("SELECT * FROM plexspaces_reminders ORDER BY name")
    assert store.acknowledge_fires(fires, now=T0 + SECOND) == 0
    assert backend.raw("SELECT * FROM plexspaces_reminders ORDER BY name") == raw_before


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda r: [_fire(r, None), _fire(r, None)], "twice"),
        (lambda r: [FireChange(r, scheduled_at=None, next_due_at=None)], "next_due_at is None"),
        (lambda r: ["not a change"], "'not a change'"),
        (lambda r: _fire(r, None), "sequence of FireChange"),
    ],
)
def test_record_fires_refuses_bad_batches_and_changes_nothing(
    store: ReminderStore, make: object, named: str
) -> None:
    """A bad batch raises ValueError naming the problem, and no fire of it is recorded."""
    record = _stored(store, reminder("r", T0))
    with pytest.raises(ValueError, match=named):
        store.record_fires(make(record), now=T0)  # type: ignore[operator]
    assert store.get(record.key) == record


def test_acknowledge_fires_refuses_records_without_a_pending_fire(store: ReminderStore) -> None:
    """Acknowledging a record that has no pending fire is a ValueError; nothing changes."""
    record = _stored(store, reminder("r", T0))
    with pytest.raises(ValueError, match="no pending fire"):
        store.acknowledge_fires([record], now=T0)
    assert store.get(record.key) == record


def test_batches_of_a_thousand(store: ReminderStore, backend: Backend) -> None:
    """A thousand fires recorded and acknowledged in two transactions (rate printed)."""
    count = 1000
    records = [
        reminder(f"r{i}", T0, actor_key=f"k{i % 100}", payload={"i": i}) for i in range(count)
    ]
    store.upsert_many(records)
    started = time.perf_counter()
    recorded = store.record_fires([_fire(record, None) for record in records], now=T0)
    fires = [record for record in recorded if record is not None]
    assert len(fires) == count
    assert store.acknowledge_fires(fires, now=T0 + SECOND) == count
    elapsed = time.perf_counter() - started
    print(f"{backend.name}: {count / elapsed:,.0f} fires/s recorded and acknowledged in batches")
    assert backend.count() == 0
    assert store.get(ReminderKey("order", "k1", "r1")) is None


def test_rows_decode_positionally_in_the_table_order() -> None:
    """Rows are decoded by position in the order `ROW_COLUMNS` gives, which must be the reminder
    table's own order (a column added to one and not the other would shift every value)."""
    from plexspaces._store.codec import ROW_COLUMNS
    from plexspaces._store.sql.engine import REMINDERS_TABLE

    assert tuple(column.name for column in REMINDERS_TABLE.columns) == ROW_COLUMNS


def test_rows_selected_in_another_column_order_decode_alike(store: ReminderStore) -> None:
    """A statement that selects the table's columns in another order still decodes each row
    into the stored record (by name, not by position)."""
    from sqlalchemy import select

    from plexspaces._retry import RetryPolicy
    from plexspaces._store.sql.engine import REMINDERS_TABLE

    plain = _stored(store, reminder("plain", payload={"n": 1}))
    full = _stored(
        store,
        reminder(
            "full",
            cron="0 9 * * *",
            tz="Europe/Prague",
            expires_at=T0 + 100 * SECOND,
            retry=RetryPolicy(max_attempts=3),
            last_fired_at=T0 - SECOND,
            last_handled_at=T0 - SECOND,
        ),
    )
    rows = store._rows(  # type: ignore[attr-defined]
        select(*reversed(REMINDERS_TABLE.columns)).order_by(REMINDERS_TABLE.c.name)
    )
    assert store._decode_all(rows) == [full, plain]  # type: ignore[attr-defined]
