"""Leases on SQL: `SqlLeaseStore`, reminder claims and activation leases, and the statements
they run."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    false,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Row

from ..records import ReminderKey, StoredReminder
from .engine import (
    _KEY_COLUMNS,
    ACTIVATIONS_TABLE,
    REMINDERS_TABLE,
    SqlStoreBase,
    _a,
    _Page,
    _Position,
    _r,
    _reconnecting,
)
from .reminders import _pending_select, _scheduled_select

__all__ = ["SqlLeaseStore"]

_CLAIM_CHUNK: Final = 300  # keys per claim statement: 900 parameters, far below every limit


class SqlLeaseStore(SqlStoreBase):
    """The `LeaseStore` part of `SqlReminderStore`."""

    # -- claims ------------------------------------------------------------------------------------

    @_reconnecting
    def claim_due(
        self,
        node_id: str,
        *,
        until: datetime,
        lease_until: datetime,
        now: datetime,
        limit: int,
        after: tuple[datetime, ReminderKey] | None = None,
        actor_types: Collection[str] | None = None,
        include_own: bool = True,
    ) -> list[StoredReminder]:
        self._check_node_id(node_id)
        until_us = self._check_time(until, "until")
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        self._check_count(limit, "limit", 1)
        start = self._check_position(after)
        types = self._check_types(actor_types)
        if lease_us <= now_us:
            raise ValueError(f"lease_until {lease_until!r} must be later than now {now!r}")
        if types == []:
            return []
        claimable = and_(
            _claimable_by(node_id, now_us, include_own), _not_active_elsewhere(node_id, now_us)
        )
        if types is not None:
            claimable = and_(claimable, _r.actor_type.in_(types))
        with self._write_serial, self._connection() as connection:

            def fetch(cursor: _Position | None, want: int) -> _Page:
                # Two statements, not a UNION: PostgreSQL refuses FOR UPDATE on a UNION. A row
                # that moves between them is deduplicated here or left for the next call.
                halves = [
                    _scheduled_select(until_us, cursor).where(claimable),
                    _pending_select(cursor).where(claimable),
                ]
                results = []
                for half in halves:
                    statement = half.limit(want)
                    if self._locks_rows:
                        statement = statement.with_for_update(of=REMINDERS_TABLE, skip_locked=True)
                    results.append(connection.execute(statement).all())
                merged = _merge_unique(results)
                exhausted = all(len(rows) < want for rows in results) and len(merged) <= want
                return merged[:want], exhausted

            candidates = [record.key for record in self._scan(fetch, limit, start)]
            if not candidates:
                connection.rollback()
                return []
            if not self._locks_rows:
                # End the read: the claim below must be a transaction that begins by writing.
                connection.commit()
            still_due = or_(
                _r.pending_scheduled_us.is_not(None),
                and_(_r.finished == false(), _r.due_us <= until_us),
            )
            claimed_rows: list[Row[Any]] = []
            for begin in range(0, len(candidates), _CLAIM_CHUNK):
                chunk = _keys_in(candidates[begin : begin + _CLAIM_CHUNK])
                connection.execute(
                    update(REMINDERS_TABLE)
                    .where(chunk, claimable, still_due)
                    .values(claimed_by=node_id, claimed_until_us=lease_us)
                )
                claimed_rows.extend(
                    connection.execute(
                        select(REMINDERS_TABLE).where(
                            chunk, _r.claimed_by == node_id, _r.claimed_until_us == lease_us
                        )
                    ).all()
                )
            connection.commit()
        claimed = self._decode_all(claimed_rows)
        claimed.sort(key=lambda record: record.position)
        return claimed

    @_reconnecting
    def renew_claims(self, node_id: str, *, lease_until: datetime, now: datetime) -> int:
        self._check_node_id(node_id)
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        with self._write() as connection:
            result = connection.execute(
                update(REMINDERS_TABLE)
                .where(_r.claimed_by == node_id, _r.claimed_until_us >= now_us)
                .values(claimed_until_us=lease_us)
            )
        return result.rowcount

    @_reconnecting
    def release_claims(self, node_id: str, keys: Collection[ReminderKey] | None = None) -> int:
        self._check_node_id(node_id)
        chosen = None if keys is None else [self._check_key(key) for key in keys]
        if chosen == []:
            return 0
        released = 0
        with self._write() as connection:
            for begin in range(0, 1 if chosen is None else len(chosen), _CLAIM_CHUNK):
                statement = update(REMINDERS_TABLE).where(_r.claimed_by == node_id)
                if chosen is not None:
                    statement = statement.where(_keys_in(chosen[begin : begin + _CLAIM_CHUNK]))
                result = connection.execute(
                    statement.values(claimed_by=None, claimed_until_us=None)
                )
                released += result.rowcount
        return released

    # -- activation leases -------------------------------------------------------------------------

    @_reconnecting
    def claim_activation(
        self,
        actor_type: str,
        actor_key: str,
        node_id: str,
        *,
        activation_id: str,
        lease_until: datetime,
        now: datetime,
    ) -> str | None:
        self._check_text(actor_type, "actor_type")
        self._check_text(actor_key, "actor_key")
        self._check_node_id(node_id)
        self._check_text(activation_id, "activation_id")
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        if lease_us <= now_us:
            raise ValueError(f"lease_until {lease_until!r} must be later than now {now!r}")
        row = {
            "actor_type": actor_type,
            "actor_key": actor_key,
            "node_id": node_id,
            "activation_id": activation_id,
            "lease_until_us": lease_us,
            "activated_us": now_us,
        }
        takeable = or_(_a.node_id == node_id, _a.lease_until_us < now_us)
        with self._write() as connection:
            if self._dialect in ("sqlite", "postgresql"):
                dialect = sqlite_dialect if self._dialect == "sqlite" else pg_dialect
                statement = dialect.insert(ACTIVATIONS_TABLE).values(row)
                statement = statement.on_conflict_do_update(
                    index_elements=[_a.actor_type, _a.actor_key],
                    set_={name: statement.excluded[name] for name in row},
                    where=takeable,
                )
                connection.execute(statement)
            else:
                taken = connection.execute(
                    update(ACTIVATIONS_TABLE)
                    .where(_a.actor_type == actor_type, _a.actor_key == actor_key, takeable)
                    .values(row)
                ).rowcount
                present = connection.execute(
                    select(_a.node_id).where(_a.actor_type == actor_type, _a.actor_key == actor_key)
                ).first()
                if not taken and present is None:
                    connection.execute(insert(ACTIVATIONS_TABLE).values(row))
            holder = connection.execute(
                select(_a.node_id, _a.activation_id).where(
                    _a.actor_type == actor_type, _a.actor_key == actor_key
                )
            ).one()
        if holder.node_id == node_id and holder.activation_id == activation_id:
            return None
        return str(holder.node_id)

    @_reconnecting
    def release_activation(self, actor_type: str, actor_key: str, activation_id: str) -> bool:
        self._check_text(actor_type, "actor_type")
        self._check_text(actor_key, "actor_key")
        self._check_text(activation_id, "activation_id")
        with self._write() as connection:
            result = connection.execute(
                delete(ACTIVATIONS_TABLE).where(
                    _a.actor_type == actor_type,
                    _a.actor_key == actor_key,
                    _a.activation_id == activation_id,
                )
            )
        return result.rowcount > 0

    @_reconnecting
    def renew_activations(self, node_id: str, *, lease_until: datetime, now: datetime) -> int:
        self._check_node_id(node_id)
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        with self._write() as connection:
            result = connection.execute(
                update(ACTIVATIONS_TABLE)
                .where(_a.node_id == node_id, _a.lease_until_us >= now_us)
                .values(lease_until_us=lease_us)
            )
        return result.rowcount

    @_reconnecting
    def release_activations(self, node_id: str) -> int:
        self._check_node_id(node_id)
        with self._write() as connection:
            result = connection.execute(delete(ACTIVATIONS_TABLE).where(_a.node_id == node_id))
        return result.rowcount

    @_reconnecting
    def activation_holder(self, actor_type: str, actor_key: str, *, now: datetime) -> str | None:
        self._check_text(actor_type, "actor_type")
        self._check_text(actor_key, "actor_key")
        now_us = self._check_time(now, "now")
        rows = self._rows(
            select(_a.node_id).where(
                _a.actor_type == actor_type,
                _a.actor_key == actor_key,
                _a.lease_until_us >= now_us,
            )
        )
        return str(rows[0].node_id) if rows else None


# -- statements ----------------------------------------------------------------------------------


def _claimable_by(node_id: str, now_us: int, include_own: bool) -> ColumnElement[bool]:
    free = or_(_r.claimed_by.is_(None), _r.claimed_until_us < now_us)
    return or_(free, _r.claimed_by == node_id) if include_own else free


def _not_active_elsewhere(node_id: str, now_us: int) -> ColumnElement[bool]:
    """The reminder's actor holds no live activation lease of another node."""
    return ~exists().where(
        _a.actor_type == _r.actor_type,
        _a.actor_key == _r.actor_key,
        _a.node_id != node_id,
        _a.lease_until_us >= now_us,
    )


def _keys_in(keys: Sequence[ReminderKey]) -> ColumnElement[bool]:
    return tuple_(*_KEY_COLUMNS).in_([(k.actor_type, k.actor_key, k.name) for k in keys])


def _merge_unique(pages: list[Sequence[Row[Any]]]) -> list[Row[Any]]:
    merged: list[Row[Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for row in heapq.merge(*pages, key=_sort_key):
        key = (row.actor_type, row.actor_key, row.name)
        if key not in seen:
            seen.add(key)
            merged.append(row)
    return merged


def _sort_key(row: Row[Any]) -> tuple[Any, ...]:
    # A corrupt position may not be an int; SQLite sorts such values after every number.
    pos = row.pos
    rank = (0, pos, "") if isinstance(pos, int) else (1, 0, str(pos))
    return (*rank, row.actor_type, row.actor_key, row.name)
