"""Leases on SQL: `SqlLeaseStore`, membership, bucket leases, reminder claims and activation
leases, and the statements they run."""

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
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Row
from sqlalchemy.schema import CreateIndex

from ..records import BucketCountError, NodeInfo, ReminderKey, StoredReminder, from_micros
from .engine import (
    _KEY_COLUMNS,
    ACTIVATIONS_TABLE,
    BUCKET_INDEX,
    BUCKETS_TABLE,
    NODES_TABLE,
    REMINDERS_TABLE,
    SqlStoreBase,
    _a,
    _b,
    _n,
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
        buckets: Collection[int] | None = None,
        follow_activations: bool = True,
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
        chosen = _check_buckets(buckets)
        if types == [] or (chosen == [] and not follow_activations):
            return []
        claimable = and_(
            _claimable_by(node_id, now_us, include_own),
            _entitled(node_id, now_us, chosen, follow_activations),
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
    def renew_claims(
        self,
        node_id: str,
        *,
        lease_until: datetime,
        now: datetime,
        buckets: Collection[int] | None = None,
        follow_activations: bool = True,
    ) -> int:
        self._check_node_id(node_id)
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        chosen = _check_buckets(buckets)
        held = and_(_r.claimed_by == node_id, _r.claimed_until_us >= now_us)
        if chosen is not None:
            held = and_(held, _in_buckets(node_id, now_us, chosen, follow_activations))
        if self._locks_rows:
            # Skip the rows a fire or an acknowledgement of this node holds locked right now
            # (their fire renews the claim itself; the next renewal takes the others): a
            # renewal then never waits for a batch, so the two cannot deadlock, whatever order
            # each takes its rows in.
            held = tuple_(*_KEY_COLUMNS).in_(
                select(*_KEY_COLUMNS).where(held).with_for_update(skip_locked=True)
            )
        with self._write() as connection:
            result = connection.execute(
                update(REMINDERS_TABLE).where(held).values(claimed_until_us=lease_us)
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

    # -- membership --------------------------------------------------------------------------------

    @_reconnecting
    def heartbeat(
        self, node_id: str, *, hosts_actors: bool, lease_until: datetime, now: datetime
    ) -> None:
        self._check_node_id(node_id)
        if not isinstance(hosts_actors, bool):
            raise ValueError(f"hosts_actors {hosts_actors!r} must be a bool")
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        if lease_us <= now_us:
            raise ValueError(f"lease_until {lease_until!r} must be later than now {now!r}")
        values = {"hosts_actors": hosts_actors, "heartbeat_us": now_us, "lease_until_us": lease_us}
        with self._write() as connection:
            # A row whose lease ran out belongs to a node that was counted dead: it joins anew.
            rejoined = connection.execute(
                update(NODES_TABLE)
                .where(_n.node_id == node_id, _n.lease_until_us < now_us)
                .values(started_us=now_us, **values)
            ).rowcount
            renewed = (
                rejoined
                or connection.execute(
                    update(NODES_TABLE).where(_n.node_id == node_id).values(**values)
                ).rowcount
            )
            if not renewed:
                self._insert_ignoring_conflict(
                    connection, NODES_TABLE, {"node_id": node_id, "started_us": now_us, **values}
                )

    @_reconnecting
    def live_nodes(self, now: datetime) -> list[NodeInfo]:
        now_us = self._check_time(now, "now")
        rows = self._rows(
            select(NODES_TABLE).where(_n.lease_until_us >= now_us).order_by(_n.node_id)
        )
        return [
            NodeInfo(
                node_id=str(row.node_id),
                hosts_actors=bool(row.hosts_actors),
                started_at=from_micros(row.started_us),
                lease_until=from_micros(row.lease_until_us),
            )
            for row in rows
        ]

    @_reconnecting
    def leave(self, node_id: str) -> int:
        self._check_node_id(node_id)
        with self._write() as connection:
            connection.execute(delete(NODES_TABLE).where(_n.node_id == node_id))
            return _release_buckets(connection, node_id, None)

    # -- buckets -----------------------------------------------------------------------------------

    @_reconnecting
    def prepare_buckets(self, buckets: int) -> None:
        self._check_count(buckets, "buckets", 1)
        with self._write() as connection:
            if self._dialect == "sqlite":
                # Claims look reminders up by bucket (see BUCKET_INDEX); SQLite's write lock
                # orders nodes that start at once, so the second finds the index made.
                connection.execute(CreateIndex(BUCKET_INDEX, if_not_exists=True))
            found = connection.execute(select(func.count()).select_from(BUCKETS_TABLE)).scalar_one()
            if found == 0:
                # Nodes starting at once insert the same rows: the first one wins, the others'
                # inserts do nothing, and all of them then count the same rows.
                self._insert_ignoring_conflict(
                    connection, BUCKETS_TABLE, [{"bucket": bucket} for bucket in range(buckets)]
                )
                found = connection.execute(
                    select(func.count()).select_from(BUCKETS_TABLE)
                ).scalar_one()
        if found != buckets:
            url = self._engine.url.render_as_string(hide_password=True)
            raise BucketCountError(
                f"the cluster on {url} divides reminders into {found} buckets, and this node "
                f"into {buckets}: every node of a cluster must run a plexspaces version with the "
                "same bucket count"
            )

    @_reconnecting
    def bucket_owners(self, now: datetime) -> dict[int, str]:
        now_us = self._check_time(now, "now")
        rows = self._rows(
            select(_b.bucket, _b.owner).where(_b.owner.is_not(None), _b.lease_until_us >= now_us)
        )
        return {int(row.bucket): str(row.owner) for row in rows}

    @_reconnecting
    def claim_buckets(
        self, node_id: str, *, count: int, lease_until: datetime, now: datetime
    ) -> list[int]:
        self._check_node_id(node_id)
        self._check_count(count, "count", 0)
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        if lease_us <= now_us:
            raise ValueError(f"lease_until {lease_until!r} must be later than now {now!r}")
        if count == 0:
            return []
        free = or_(_b.owner.is_(None), _b.lease_until_us < now_us)
        chosen = select(_b.bucket).where(free).order_by(_b.bucket).limit(count)
        if self._locks_rows:
            chosen = chosen.with_for_update(skip_locked=True)
        with self._write() as connection:
            # One statement: SQLite's writer lock, or PostgreSQL's row locks (skipping rows
            # another node is taking), makes the pick and the take one step. The outer guard
            # repeats the pick's condition for a row that changed before it was locked.
            taken = connection.execute(
                update(BUCKETS_TABLE)
                .where(_b.bucket.in_(chosen.scalar_subquery()), free)
                .values(owner=node_id, lease_until_us=lease_us)
                .returning(_b.bucket)
            ).all()
        return sorted(int(row.bucket) for row in taken)

    @_reconnecting
    def renew_buckets(self, node_id: str, *, lease_until: datetime, now: datetime) -> list[int]:
        self._check_node_id(node_id)
        lease_us = self._check_time(lease_until, "lease_until")
        now_us = self._check_time(now, "now")
        with self._write() as connection:
            renewed = connection.execute(
                update(BUCKETS_TABLE)
                .where(_b.owner == node_id, _b.lease_until_us >= now_us)
                .values(lease_until_us=lease_us)
                .returning(_b.bucket)
            ).all()
        return sorted(int(row.bucket) for row in renewed)

    @_reconnecting
    def release_buckets(self, node_id: str, buckets: Collection[int] | None = None) -> int:
        self._check_node_id(node_id)
        chosen = _check_buckets(buckets)
        if chosen == []:
            return 0
        with self._write() as connection:
            return _release_buckets(connection, node_id, chosen)

    def _insert_ignoring_conflict(
        self, connection: Any, table: Any, values: dict[str, Any] | list[dict[str, Any]]
    ) -> None:
        """Insert rows (in one statement) except those whose primary key exists (another node
        was first)."""
        rows = values if isinstance(values, list) else [values]
        if self._dialect in ("sqlite", "postgresql"):
            dialect = sqlite_dialect if self._dialect == "sqlite" else pg_dialect
            connection.execute(dialect.insert(table).values(rows).on_conflict_do_nothing())
            return
        primary = list(table.primary_key.columns)
        for row in rows:
            present = connection.execute(
                select(*primary).where(*(column == row[column.name] for column in primary))
            ).first()
            if present is None:
                connection.execute(insert(table).values(row))

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

    @_reconnecting
    def held_activations(self, node_id: str, *, now: datetime) -> set[tuple[str, str, str]]:
        self._check_node_id(node_id)
        now_us = self._check_time(now, "now")
        rows = self._rows(
            select(_a.actor_type, _a.actor_key, _a.activation_id).where(
                _a.node_id == node_id, _a.lease_until_us >= now_us
            )
        )
        return {(str(row.actor_type), str(row.actor_key), str(row.activation_id)) for row in rows}


# -- statements ----------------------------------------------------------------------------------


def _claimable_by(node_id: str, now_us: int, include_own: bool) -> ColumnElement[bool]:
    free = or_(_r.claimed_by.is_(None), _r.claimed_until_us < now_us)
    return or_(free, _r.claimed_by == node_id) if include_own else free


def _check_buckets(buckets: Collection[int] | None) -> list[int] | None:
    if buckets is None:
        return None
    if isinstance(buckets, str | bytes) or not isinstance(buckets, Collection):
        raise ValueError(f"buckets {buckets!r} must be a collection of ints, or None")
    chosen = sorted(set(buckets))
    for bucket in chosen:
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 0:
            raise ValueError(f"bucket {bucket!r} in buckets must be an int >= 0")
    return chosen


def _entitled(
    node_id: str, now_us: int, buckets: list[int] | None, follow_activations: bool
) -> ColumnElement[bool]:
    """The reminders `node_id` may fire: those of its buckets (all when `buckets` is None) and,
    when it follows activations, only those of actors that no other node holds, plus those of
    actors it holds itself whatever their bucket."""
    if not follow_activations:
        return true() if buckets is None else _r.bucket.in_(buckets)
    if buckets is None:
        return _not_active_elsewhere(node_id, now_us)
    return or_(
        and_(_r.bucket.in_(buckets), _not_active_elsewhere(node_id, now_us)),
        _active_here(node_id, now_us),
    )


def _in_buckets(
    node_id: str, now_us: int, buckets: list[int], follow_activations: bool
) -> ColumnElement[bool]:
    """The reminders in `buckets` or, when following activations, of actors `node_id` holds."""
    if not follow_activations:
        return _r.bucket.in_(buckets)
    return or_(_r.bucket.in_(buckets), _active_here(node_id, now_us))


def _release_buckets(connection: Any, node_id: str, buckets: list[int] | None) -> int:
    """Drop `node_id`'s leases on `buckets` (all when None) and its claims on their reminders."""
    claims = update(REMINDERS_TABLE).where(_r.claimed_by == node_id)
    leases = update(BUCKETS_TABLE).where(_b.owner == node_id)
    if buckets is None:
        owned = select(_b.bucket).where(_b.owner == node_id)
        claims = claims.where(_r.bucket.in_(owned.scalar_subquery()))
    else:
        claims = claims.where(_r.bucket.in_(buckets))
        leases = leases.where(_b.bucket.in_(buckets))
    connection.execute(claims.values(claimed_by=None, claimed_until_us=None))
    return int(connection.execute(leases.values(owner=None, lease_until_us=None)).rowcount)


def _active_here(node_id: str, now_us: int) -> ColumnElement[bool]:
    """The reminder's actor has a live activation lease held by `node_id`."""
    return exists().where(
        _a.actor_type == _r.actor_type,
        _a.actor_key == _r.actor_key,
        _a.node_id == node_id,
        _a.lease_until_us >= now_us,
    )


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
