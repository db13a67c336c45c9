"""The store's failure, dead-letter and whole-type methods, on every backend of the contract
suite (a SQLite file, in-memory SQLite, PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from plexspaces import FireFailure, RetryPolicy
from plexspaces._store import FireChange, ReminderKey, SqlReminderStore, StoredReminder
from tests.test_store_contract import SECOND, T0, Backend, backend, reminder, store

__all__ = ["backend", "store"]  # fixtures used by name

BOOM = FireFailure("Boom", "it broke")


def pending(store: SqlReminderStore, name: str = "r", **fields: Any) -> StoredReminder:
    """A reminder stored with its first fire recorded and pending."""
    record = reminder(name, **fields)
    store.upsert(record)
    next_due = None if record.period is None else record.due_at + record.period
    change = FireChange(record, scheduled_at=record.due_at, next_due_at=next_due)
    [fired] = store.record_fires([change], now=T0 + SECOND)
    assert fired is not None
    return fired


def test_a_recorded_fire_and_its_acknowledgement_write_the_history(
    store: SqlReminderStore,
) -> None:
    """record_fires sets last_fired_at, acknowledge_fires last_handled_at and clears the
    failure; the retry policy round-trips."""
    policy = RetryPolicy(max_attempts=3, backoff="250ms", max_backoff="4s")
    fired = pending(store, period=SECOND * 60, retry=policy)
    assert fired.last_fired_at == T0 + SECOND
    assert store.get(fired.key) == fired
    failed = store.record_failure(fired, BOOM, now=T0 + 2 * SECOND)
    assert failed is not None
    assert (failed.attempts, failed.last_error) == (1, BOOM)
    assert store.get(fired.key) == failed
    assert store.acknowledge_fires([failed], now=T0 + 3 * SECOND) == 1
    done = store.get(fired.key)
    assert done is not None
    assert (done.attempts, done.last_error, done.pending_fire) == (0, None, None)
    assert done.last_handled_at == T0 + 3 * SECOND
    assert done.retry == policy


def test_record_failure_is_a_compare_and_set_on_the_attempts(store: SqlReminderStore) -> None:
    """A failure reported twice from the same read counts once; one for a fire that is no
    longer pending changes nothing."""
    fired = pending(store)
    assert store.record_failure(fired, BOOM, now=T0) is not None
    assert store.record_failure(fired, BOOM, now=T0) is None
    stored = store.get(fired.key)
    assert stored is not None
    assert stored.attempts == 1
    store.acknowledge_fires([stored], now=T0)
    assert store.record_failure(stored, BOOM, now=T0) is None
    with pytest.raises(ValueError, match="no pending fire"):
        store.record_failure(replace(stored, pending_fire=None), BOOM, now=T0)


def test_dead_lettering_clears_the_pending_fire_or_deletes_a_finished_reminder(
    store: SqlReminderStore,
) -> None:
    """dead_letter stores the fire with its error and attempts and, in one transaction, clears
    a periodic reminder's pending fire (it goes on) or deletes a finished one-shot."""
    periodic = pending(store, "p", period=SECOND * 60, payload={"a": [1]})
    outcome = store.dead_letter(periodic, BOOM, now=T0 + 5 * SECOND)
    assert outcome is not None
    letter, after = outcome
    assert after is not None
    assert (after.pending_fire, after.attempts, after.last_error) == (None, 0, BOOM)
    assert store.get(periodic.key) == after
    assert (letter.reminder_name, letter.fire_count, letter.attempts) == ("p", 1, 1)
    assert letter.payload == {"a": [1]}
    assert letter.dead_at == T0 + 5 * SECOND
    assert store.dead_letter(periodic, BOOM, now=T0) is None  # no longer pending
    one_shot = pending(store, "o")
    assert one_shot.finished
    outcome = store.dead_letter(one_shot, BOOM, now=T0 + 6 * SECOND)
    assert outcome is not None
    assert outcome[1] is None
    assert store.get(one_shot.key) is None
    letters = store.dead_letters(10)
    assert [d.reminder_name for d in letters] == ["p", "o"]
    assert letters[0] == letter
    assert letters[1].id > letters[0].id
    assert store.dead_letters(10, after=letters[0].id) == letters[1:]
    assert store.dead_letters(10, name="o") == letters[1:]
    assert store.dead_letters(10, ids=[letters[1].id, 10**9]) == letters[1:]


def test_a_redrive_is_taken_by_one_node_and_finished_or_failed(
    store: SqlReminderStore,
) -> None:
    """request_retry marks letters; take_retries hands each to one node until its hold runs
    out; finish_retry deletes, fail_retry puts it back with one attempt more."""
    first = store.dead_letter(pending(store, "a"), BOOM, now=T0)
    second = store.dead_letter(pending(store, "b"), BOOM, now=T0)
    assert first is not None
    assert second is not None
    ids = [first[0].id, second[0].id]
    assert store.request_retry([*ids, 10**9], now=T0 + SECOND) == 2
    assert (
        store.take_retries("n2", now=T0, lease_until=T0 + SECOND, limit=5, actor_types=["x"]) == []
    )
    taken = store.take_retries("n1", now=T0 + SECOND, lease_until=T0 + 10 * SECOND, limit=5)
    assert [d.id for d in taken] == ids
    assert all(d.retry_requested_at == T0 + SECOND for d in taken)
    assert (
        store.take_retries("n2", now=T0 + 2 * SECOND, lease_until=T0 + 20 * SECOND, limit=5) == []
    )
    assert store.finish_retry(ids[0], "n2") is False  # not its own
    assert store.finish_retry(ids[0], "n1") is True
    assert store.fail_retry(ids[1], "n1", FireFailure("Other", "again"), now=T0 + 3 * SECOND)
    [back] = store.dead_letters(10)
    assert (back.id, back.attempts, back.error.type) == (ids[1], 2, "Other")
    assert (back.retry_requested_at, back.dead_at) == (None, T0 + 3 * SECOND)
    # A hold that ran out is taken by another node.
    store.request_retry([back.id], now=T0 + 4 * SECOND)
    assert store.take_retries("n1", now=T0 + 4 * SECOND, lease_until=T0 + 5 * SECOND, limit=5)
    again = store.take_retries("n2", now=T0 + 6 * SECOND, lease_until=T0 + 9 * SECOND, limit=5)
    assert [d.id for d in again] == [back.id]


def test_find_count_and_delete_many_by_type_and_name_prefix(backend: Backend) -> None:
    """find pages by key with a type and a literal name prefix (no wildcards); count_matching
    counts; delete_many deletes exactly the keys given."""
    store = backend.store()
    names = ["pay%", "pay-1", "pay_2", "payx", "ship"]
    store.upsert_many(reminder(n, actor_key=k) for k in ("a", "b") for n in names)
    store.upsert(reminder("pay-1", actor_type="other"))
    assert [r.key.name for r in store.find(10, actor_type="order", name_prefix="pay%")] == [
        "pay%",
        "pay%",
    ]
    assert store.count_matching(name_prefix="pay_") == 2
    assert store.count_matching(actor_type="order") == 10
    assert store.count_matching() == 11
    page = store.find(3, actor_type="order")
    rest = store.find(10, actor_type="order", after=page[-1].key)
    assert [r.key for r in page + rest] == sorted(
        ReminderKey("order", k, n) for k in ("a", "b") for n in names
    )
    assert store.delete_many([r.key for r in rest]) == 7
    assert backend.count() == 4
    with pytest.raises(ValueError, match="name_prefix ''"):
        store.find(10, name_prefix="")
