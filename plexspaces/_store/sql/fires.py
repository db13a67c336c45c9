"""Fires in batches on the SQLAlchemy store: many compare-and-sets in one transaction.

The fire pipeline records every fire that came due together in one transaction, and acknowledges
every handled fire queued meanwhile in one more. A transaction per batch instead of per fire is
what lets a single node fire tens of thousands of durable reminders a second: the commit, the
write lock and (on PostgreSQL) the round trips are paid once per batch.

Each change stays its own compare-and-set, exactly as `record_fire`, `reschedule` and
`acknowledge` guard a single row, and additionally checks that the row still holds the
registration the caller read (payload, phase, period, limits, policy, creation time). So one
`executemany` of a guarded UPDATE does the whole batch, and its row count tells whether every
guard matched. In the common case it did, and the new records are computed from the old ones
without reading anything back. When a guard did not match (the row was re-registered, deleted,
taken by another node, or edited into something that cannot be decoded), the batch is rolled
back and each change is retried alone through the single-row methods, which decode what they
touch and leave an undecodable row unchanged. So the fast path never changes a row the caller
has not seen, and the slow path gives each change exactly the single-row semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Delete,
    String,
    Update,
    and_,
    bindparam,
    case,
    delete,
    false,
    null,
    or_,
    true,
    update,
)

from ..codec import json_text
from ..records import FireChange, StoredReminder, to_micros
from .engine import REMINDERS_TABLE, _execute_many, _reconnecting
from .reminders import (
    _KEY_MATCH,
    SqlReminderRecords,
    _fence_guard,
    _fence_values,
    _handled_values,
    _key_params,
    _param,
)

__all__ = ["SqlFires"]

_US: Final = timedelta(microseconds=1)


class _GuardMissed(Exception):
    """Raised inside a batch transaction to roll it back: some compare-and-set did not match."""


class SqlFires(SqlReminderRecords):
    """Fires in batches (`record_fires`, `acknowledge_fires`) on the SQL backend's records."""

    def record_fires(
        self,
        changes: Sequence[FireChange],
        *,
        now: datetime,
        node_id: str | None = None,
        lease_until: datetime | None = None,
    ) -> list[StoredReminder | None]:
        changes = _check_changes(changes)
        now_us = self._check_time(now, "now")
        lease_us = self._check_fence(node_id, lease_until, now_us)
        if not changes:
            return []
        fenced = lease_us is not None
        # Indexed by whether the reminder has a calendar schedule or an expiry: plain ones run
        # statements that check those columns are NULL and take no parameters for them.
        fires: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        moves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        expiries: list[dict[str, Any]] = []
        for change in changes:
            scheduled = _has_schedule(change.record)
            params = _registration_params(change.record)
            params["p_now"] = now_us
            if fenced:
                params["p_node"] = node_id
                params["p_lease"] = lease_us
            next_us = (
                None
                if change.next_due_at is None
                else self._check_time(change.next_due_at, "next_due_at")
            )
            if change.scheduled_at is None and next_us is None:
                expiries.append(params)
            elif change.scheduled_at is None:
                params["p_due"] = next_us
                moves[scheduled].append(params)
            else:
                params["p_count"] = change.record.fire_count + 1
                params["p_scheduled"] = self._check_time(change.scheduled_at, "scheduled_at")
                params["p_next"] = next_us
                fires[scheduled].append(params)
        try:
            self._run_guarded(
                [
                    (_batch_fire_statement(fenced, False), fires[False]),
                    (_batch_fire_statement(fenced, True), fires[True]),
                    (_batch_move_statement(fenced, False), moves[False]),
                    (_batch_move_statement(fenced, True), moves[True]),
                    (_expire_statement(fenced, returning=False), expiries),
                ],
            )
        except _GuardMissed:
            return [self._change_alone(change, now, node_id, lease_until) for change in changes]
        return [_changed(change, now, node_id, lease_until) for change in changes]

    def acknowledge_fires(self, fires: Sequence[StoredReminder], *, now: datetime) -> int:
        if isinstance(fires, StoredReminder):
            raise ValueError(f"fires {fires!r} must be a sequence of StoredReminder")
        fires = list(fires)
        now_us = self._check_time(now, "now")
        clears: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        deletes: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        seen: set[object] = set()
        for record in fires:
            if not isinstance(record, StoredReminder):
                raise ValueError(f"{record!r} is not a StoredReminder")
            if record.pending_fire is None or record.pending_scheduled_at is None:
                raise ValueError(f"reminder {record.key} has no pending fire to acknowledge")
            if record.key in seen:
                raise ValueError(f"reminder {record.key} is acknowledged twice in one batch")
            seen.add(record.key)
            params = _registration_params(record)
            params["p_fire"] = record.pending_fire
            params["p_scheduled"] = to_micros(record.pending_scheduled_at)
            params["p_now"] = now_us
            (deletes if record.finished else clears)[_has_schedule(record)].append(params)
        if not fires:
            return 0
        return self._run_counted(
            [
                (_batch_clear_statement(False), clears[False]),
                (_batch_clear_statement(True), clears[True]),
                (_batch_delete_statement(False), deletes[False]),
                (_batch_delete_statement(True), deletes[True]),
            ]
        )

    @_reconnecting
    def _run_guarded(self, batches: _Batches) -> None:
        """Run each statement over its parameter sets in one transaction; roll everything back
        (`_GuardMissed`) unless every parameter set matched exactly one row. (Run again on a
        fresh connection after a dead one, as every store call is: a batch that did commit
        then fails every guard, and each change is retried alone and found done or changed.)"""
        with self._write() as connection:
            for statement, params in batches:
                if params and _execute_many(connection, statement, params) != len(params):
                    raise _GuardMissed

    @_reconnecting
    def _run_counted(self, batches: _Batches) -> int:
        """Run each statement over its parameter sets in one transaction; the rows changed."""
        changed = 0
        with self._write() as connection:
            for statement, params in batches:
                if params:
                    changed += _execute_many(connection, statement, params)
        return changed

    def _change_alone(
        self,
        change: FireChange,
        now: datetime,
        node_id: str | None,
        lease_until: datetime | None,
    ) -> StoredReminder | None:
        record = change.record
        if change.scheduled_at is None and change.next_due_at is None:
            params = _registration_params(record)
            params["p_now"] = self._check_time(now, "now")
            lease_us = self._check_fence(node_id, lease_until, params["p_now"])
            if lease_us is not None:
                params["p_node"] = node_id
                params["p_lease"] = lease_us
            return self._change_one(_expire_statement(lease_us is not None, returning=True), params)
        if change.scheduled_at is None:
            assert change.next_due_at is not None
            return self.reschedule(
                record.key,
                expected_fire_count=record.fire_count,
                expected_due_at=record.due_at,
                due_at=change.next_due_at,
                now=now,
                node_id=node_id,
                lease_until=lease_until,
            )
        return self.record_fire(
            record.key,
            expected_fire_count=record.fire_count,
            expected_due_at=record.due_at,
            scheduled_at=change.scheduled_at,
            next_due_at=change.next_due_at,
            now=now,
            node_id=node_id,
            lease_until=lease_until,
        )


def _check_changes(changes: Sequence[FireChange]) -> list[FireChange]:
    if isinstance(changes, FireChange):
        raise ValueError(f"changes {changes!r} must be a sequence of FireChange")
    checked = list(changes)
    seen: set[object] = set()
    for change in checked:
        if type(change) is not FireChange:
            raise ValueError(f"{change!r} is not a FireChange")
        if not isinstance(change.record, StoredReminder):
            raise ValueError(f"{change.record!r} is not a StoredReminder")
        if (
            change.scheduled_at is None
            and change.next_due_at is None
            and change.record.expires_at is None
        ):
            raise ValueError(
                f"reminder {change.record.key}: a change without a fire must move the next "
                "fire, but next_due_at is None (only an expiring reminder can be deleted so)"
            )
        if change.record.key in seen:
            raise ValueError(f"reminder {change.record.key} is changed twice in one batch")
        seen.add(change.record.key)
    return checked


_Batches = list[tuple[Any, list[dict[str, Any]]]]


def _changed(
    change: FireChange, now: datetime, node_id: str | None, lease_until: datetime | None
) -> StoredReminder:
    """The record as the guarded statement left it (every guard matched, so it is exactly the
    caller's record with the statement's changes). Built field by field: this runs once per
    fire, and `dataclasses.replace` costs several times as much."""
    r = change.record
    if change.scheduled_at is None and change.next_due_at is None:
        return r  # expired: deleted, as it was
    claimed_by, claimed_until = (
        (r.claimed_by, r.claimed_until) if node_id is None else (node_id, lease_until)
    )
    last_fired = r.last_fired_at
    if change.scheduled_at is None:
        assert change.next_due_at is not None
        count, pending, pending_at, finished, due = (
            r.fire_count,
            r.pending_fire,
            r.pending_scheduled_at,
            r.finished,
            change.next_due_at,
        )
    else:
        last_fired = now
        count = r.fire_count + 1
        finished = change.next_due_at is None or (r.max_count is not None and r.max_count <= count)
        pending, pending_at = count, change.scheduled_at
        due = r.due_at if finished or change.next_due_at is None else change.next_due_at
    return StoredReminder(
        r.key,
        due,
        r.anchor_at,
        r.period,
        r.max_count,
        count,
        r.missed,
        r.payload,
        pending,
        pending_at,
        finished,
        claimed_by,
        claimed_until,
        r.created_at,
        now,
        r.cron,
        r.tz,
        r.expires_at,
        r.retry,
        r.attempts,
        last_fired,
        r.last_handled_at,
        r.last_error,
    )


# -- statements ----------------------------------------------------------------------------------


def _has_schedule(record: StoredReminder) -> bool:
    """Whether `record` has a calendar schedule or an expiry (columns a plain one leaves NULL)."""
    return record.cron is not None or record.expires_at is not None


def _registration_params(record: StoredReminder) -> dict[str, Any]:
    period = record.period
    params = {
        **_key_params(record.key),
        "g_fire_count": record.fire_count,
        "g_due": to_micros(record.due_at),
        "g_anchor": to_micros(record.anchor_at),
        "g_period": None if period is None else period // _US,
        "g_max": record.max_count,
        "g_missed": record.missed,
        "g_payload": json_text(record.payload),  # exactly as the store writes payloads
        "g_created": to_micros(record.created_at),
    }
    if _has_schedule(record):
        params["g_cron"] = record.cron
        params["g_tz"] = record.tz
        params["g_expires"] = None if record.expires_at is None else to_micros(record.expires_at)
    return params


def _registration_guard(scheduled: bool) -> list[ColumnElement[bool]]:
    """The row still holds the registration the caller read, and is where the caller saw it.
    `scheduled`: the registration has a calendar schedule or an expiry (else those columns are
    NULL, checked without parameters)."""
    r = REMINDERS_TABLE.c
    schedule: list[ColumnElement[bool]]
    if not scheduled:
        schedule = [r.cron.is_(None), r.expires_us.is_(None)]
    else:
        schedule = [
            r.cron.is_not_distinct_from(bindparam("g_cron", type_=String)),
            r.tz.is_not_distinct_from(bindparam("g_tz", type_=String)),
            r.expires_us.is_not_distinct_from(_param("g_expires")),
        ]
    return [
        *schedule,
        _KEY_MATCH,
        r.anchor_us == _param("g_anchor"),
        r.period_us.is_not_distinct_from(_param("g_period")),
        r.max_count.is_not_distinct_from(_param("g_max")),
        r.missed == bindparam("g_missed", type_=String),
        r.payload == bindparam("g_payload", type_=String),
        r.created_us == _param("g_created"),
    ]


def _fire_guard(fenced: bool, scheduled: bool) -> list[ColumnElement[bool]]:
    r = REMINDERS_TABLE.c
    guard = [
        *_registration_guard(scheduled),
        r.fire_count == _param("g_fire_count"),
        r.due_us == _param("g_due"),
        r.pending_fire.is_(None),
        r.finished == false(),
        or_(r.max_count.is_(None), r.max_count > _param("g_fire_count")),
    ]
    if fenced:
        guard.append(_fence_guard())
    return guard


@cache
def _batch_fire_statement(fenced: bool, scheduled: bool) -> Update:
    r = REMINDERS_TABLE.c
    count = _param("p_count")
    last = or_(_param("p_next").is_(None), and_(r.max_count.is_not(None), r.max_count <= count))
    return (
        update(REMINDERS_TABLE)
        .where(*_fire_guard(fenced, scheduled))
        .values(
            fire_count=count,
            pending_fire=count,
            pending_scheduled_us=_param("p_scheduled"),
            finished=case((last, true()), else_=false()),
            due_us=case((last, r.due_us), else_=_param("p_next")),
            updated_us=_param("p_now"),
            last_fired_us=_param("p_now"),
            **_fence_values(fenced),
        )
    )


@cache
def _batch_move_statement(fenced: bool, scheduled: bool) -> Update:
    return (
        update(REMINDERS_TABLE)
        .where(*_fire_guard(fenced, scheduled))
        .values(due_us=_param("p_due"), updated_us=_param("p_now"), **_fence_values(fenced))
    )


@cache
def _expire_statement(fenced: bool, *, returning: bool) -> Any:
    """Delete an expired reminder: the same compare-and-set as a fire (the row is as the caller
    saw it, can fire, and no other node holds it), so a re-registration is never deleted."""
    statement = delete(REMINDERS_TABLE).where(*_fire_guard(fenced, True))
    return statement.returning(*REMINDERS_TABLE.c) if returning else statement


def _pending_guard(scheduled: bool) -> list[ColumnElement[bool]]:
    r = REMINDERS_TABLE.c
    return [
        *_registration_guard(scheduled),
        r.pending_fire == _param("p_fire"),
        r.pending_scheduled_us == _param("p_scheduled"),
    ]


@cache
def _batch_clear_statement(scheduled: bool) -> Update:
    r = REMINDERS_TABLE.c
    return (
        update(REMINDERS_TABLE)
        .where(*_pending_guard(scheduled), r.finished == false())
        .values(pending_fire=null(), pending_scheduled_us=null(), **_handled_values())
    )


@cache
def _batch_delete_statement(scheduled: bool) -> Delete:
    r = REMINDERS_TABLE.c
    return delete(REMINDERS_TABLE).where(*_pending_guard(scheduled), r.finished == true())
