"""Reminder records and their fires on SQL: `SqlReminderRecords`, and the statements it runs.

A fire, a reschedule and an acknowledgement are each one guarded UPDATE (or DELETE) ... RETURNING,
built once and run with parameters; the guard is the whole compare-and-set.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from functools import cache
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Delete,
    Select,
    String,
    Update,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from ..._errors import ReminderExistsError
from ..codec import _decode_row, _row_values
from ..records import ReminderKey, StoredReminder, UndecodableReminder
from .engine import (
    _KEY_COLUMNS,
    REMINDERS_TABLE,
    SqlStoreBase,
    _after,
    _execute_many,
    _key_literals,
    _KeyText,
    _Page,
    _Position,
    _r,
    _reconnecting,
    _row_position,
)

__all__ = ["SqlReminderRecords"]

_NEXT_DUE_PAGE: Final = 16
_ERRORS_PAGE: Final = 500


class SqlReminderRecords(SqlStoreBase):
    """The `ReminderRecords` part of `SqlReminderStore`."""

    @property
    def _upsert(self) -> Any:
        return _upsert_statement(self._dialect)

    # -- reminders ---------------------------------------------------------------------------------

    @_reconnecting
    def upsert(self, reminder: StoredReminder, *, create_only: bool = False) -> None:
        values = _row_values(reminder, self._checked_payload(reminder))
        if create_only:
            self._write_rows([(reminder.key, values)], {reminder.key})
            return
        with self._write() as connection:
            if self._upsert is not None:
                _execute_many(connection, self._upsert, [values])
            else:
                # Databases without an upsert statement: replace in one transaction.
                connection.execute(_DELETE_ONE, _key_params(reminder.key))
                connection.execute(insert(REMINDERS_TABLE), values)

    def upsert_many(
        self,
        reminders: Iterable[StoredReminder],
        *,
        create_only: Collection[ReminderKey] = frozenset(),
    ) -> int:
        if isinstance(reminders, StoredReminder | str | bytes) or not isinstance(
            reminders, Iterable
        ):
            raise ValueError(f"reminders {reminders!r} must be an iterable of StoredReminder")
        # Checked and encoded up front, into a list: a retry on a fresh connection
        # (_reconnecting) must not find a one-shot iterator consumed by the first attempt.
        rows: dict[ReminderKey, dict[str, Any]] = {}
        for reminder in reminders:
            payload = self._checked_payload(reminder)
            # One row per key, the last record winning: PostgreSQL refuses an upsert batch that
            # touches one row twice.
            rows[reminder.key] = _row_values(reminder, payload)
        if rows:
            self._write_rows(list(rows.items()), frozenset(create_only))
        return len(rows)

    @_reconnecting
    def _write_rows(
        self,
        rows: list[tuple[ReminderKey, dict[str, Any]]],
        create_only: Collection[ReminderKey] = frozenset(),
    ) -> None:
        replaced = [(key, values) for key, values in rows if key not in create_only]
        created = [(key, values) for key, values in rows if key in create_only]
        with self._write() as connection:
            # Created first, each its own insert that the database refuses on the key (not a
            # read, then a write): a concurrent registration of the same name cannot slip in
            # between, and the first refusal rolls back the whole batch.
            for key, values in created:
                if not self._create_row(connection, key, values):
                    raise ReminderExistsError(f"{key.actor_type}/{key.actor_key}", key.name)
            if not replaced:
                return
            if self._upsert is not None:
                _execute_many(connection, self._upsert, [values for _, values in replaced])
                return
            for key, values in replaced:
                connection.execute(_DELETE_ONE, _key_params(key))
                connection.execute(insert(REMINDERS_TABLE), values)

    def _create_row(self, connection: Connection, key: ReminderKey, values: dict[str, Any]) -> bool:
        """Insert a row unless an unfinished reminder holds its key; False if one does. A
        finished one (its last fire being handled) is replaced: it is as good as gone."""
        statement = _create_statement(self._dialect)
        if statement is not None:
            # A row comes back when one was written (rowcount is not reliable for an upsert on
            # every driver: psycopg reports -1).
            return connection.execute(statement, values).first() is not None
        existing = connection.execute(_SELECT_ONE, _key_params(key)).first()
        if existing is not None and not existing.finished:
            return False
        connection.execute(_DELETE_ONE, _key_params(key))
        connection.execute(insert(REMINDERS_TABLE), values)
        return True

    @_reconnecting
    def delete(self, key: ReminderKey) -> bool:
        self._check_key(key)
        with self._write() as connection:
            result = connection.execute(_DELETE_ONE, _key_params(key))
        return result.rowcount > 0

    @_reconnecting
    def get(self, key: ReminderKey) -> StoredReminder | None:
        self._check_key(key)
        with self._connection() as connection:
            rows = connection.execute(_SELECT_ONE, _key_params(key)).all()
        return self._decode(rows[0]) if rows else None

    @_reconnecting
    def list_actor(self, actor_type: str, actor_key: str) -> list[StoredReminder]:
        self._check_text(actor_type, "actor_type")
        self._check_text(actor_key, "actor_key")
        rows = self._rows(
            select(REMINDERS_TABLE)
            .where(_r.actor_type == actor_type, _r.actor_key == actor_key)
            .order_by(_r.due_us, _r.name)
        )
        return self._decode_all(rows)

    @_reconnecting
    def due(
        self,
        until: datetime,
        limit: int,
        *,
        after: tuple[datetime, ReminderKey] | None = None,
    ) -> list[StoredReminder]:
        until_us = self._check_time(until, "until")
        self._check_count(limit, "limit", 1)
        start = self._check_position(after)

        def fetch(cursor: _Position | None, want: int) -> _Page:
            params: dict[str, Any] = {"until_us": until_us, "want": want}
            if cursor is not None:
                at, key = cursor
                params.update(c_at=at, c_type=key.actor_type, c_key=key.actor_key, c_name=key.name)
            rows = self._rows(_due_statement(cursor is not None), params)
            return rows, len(rows) < want

        return self._scan(fetch, limit, start)

    @_reconnecting
    def next_due_at(self, *, after: datetime | None = None) -> datetime | None:
        after_us = None if after is None else self._check_time(after, "after")

        def fetch(cursor: _Position | None, want: int) -> _Page:
            statement = select(REMINDERS_TABLE, _r.due_us.label("pos")).where(
                _r.finished == false()
            )
            if after_us is not None:
                statement = statement.where(_r.due_us > after_us)
            if cursor is not None:
                statement = statement.where(_after(_r.due_us, cursor))
            rows = self._rows(statement.order_by(_r.due_us, *_KEY_COLUMNS).limit(want))
            return rows, len(rows) < want

        # Pages of a few rows, not MIN(due_us): an undecodable row must not decide the answer.
        cursor: _Position | None = None
        while True:
            rows, exhausted = fetch(cursor, _NEXT_DUE_PAGE)
            for record in map(self._decode, rows):
                if record is not None:
                    return record.due_at
            if exhausted or not rows:
                return None
            cursor = _row_position(rows[-1])

    # -- fires -------------------------------------------------------------------------------------

    @_reconnecting
    def record_fire(
        self,
        key: ReminderKey,
        *,
        expected_fire_count: int,
        scheduled_at: datetime,
        next_due_at: datetime | None,
        now: datetime,
        expected_due_at: datetime | None = None,
        node_id: str | None = None,
        lease_until: datetime | None = None,
    ) -> StoredReminder | None:
        self._check_key(key)
        expected = self._check_count(expected_fire_count, "expected_fire_count", 0)
        scheduled_us = self._check_time(scheduled_at, "scheduled_at")
        next_us = None if next_due_at is None else self._check_time(next_due_at, "next_due_at")
        now_us = self._check_time(now, "now")
        lease_us = self._check_fence(node_id, lease_until, now_us)
        expected_due_us = (
            None
            if expected_due_at is None
            else self._check_time(expected_due_at, "expected_due_at")
        )
        params = {
            **_key_params(key),
            "p_expected": expected,
            "p_count": expected + 1,
            "p_scheduled": scheduled_us,
            "p_next": next_us,
            "p_now": now_us,
            "p_expected_due": expected_due_us,
            "p_node": node_id,
            "p_lease": lease_us,
        }
        statement = _fire_statement(
            next_us is not None, expected_due_us is not None, lease_us is not None
        )
        return self._change_one(statement, params)

    @_reconnecting
    def reschedule(
        self,
        key: ReminderKey,
        *,
        expected_fire_count: int,
        due_at: datetime,
        now: datetime,
        expected_due_at: datetime | None = None,
        node_id: str | None = None,
        lease_until: datetime | None = None,
    ) -> StoredReminder | None:
        self._check_key(key)
        expected = self._check_count(expected_fire_count, "expected_fire_count", 0)
        due_us = self._check_time(due_at, "due_at")
        now_us = self._check_time(now, "now")
        lease_us = self._check_fence(node_id, lease_until, now_us)
        expected_due_us = (
            None
            if expected_due_at is None
            else self._check_time(expected_due_at, "expected_due_at")
        )
        params = {
            **_key_params(key),
            "p_expected": expected,
            "p_due": due_us,
            "p_now": now_us,
            "p_expected_due": expected_due_us,
            "p_node": node_id,
            "p_lease": lease_us,
        }
        statement = _reschedule_statement(expected_due_us is not None, lease_us is not None)
        return self._change_one(statement, params)

    @_reconnecting
    def acknowledge(
        self,
        key: ReminderKey,
        fire_count: int,
        *,
        now: datetime,
        scheduled_at: datetime | None = None,
    ) -> None:
        self._check_key(key)
        self._check_count(fire_count, "fire_count", 1)
        now_us = self._check_time(now, "now")
        scheduled_us = (
            None if scheduled_at is None else self._check_time(scheduled_at, "scheduled_at")
        )
        params = {
            **_key_params(key),
            "p_fire": fire_count,
            "p_scheduled": scheduled_us,
            "p_now": now_us,
        }
        # Clear the pending fire of an unfinished reminder, or delete a finished one: at most
        # one of the two matches. A row that turns out undecodable is rolled back untouched.
        with_scheduled = scheduled_us is not None
        for finished in (False, True):
            if self._change_one(_acknowledge_statement(finished, with_scheduled), params):
                return

    def _change_one(self, statement: Any, params: dict[str, Any]) -> StoredReminder | None:
        """Run a guarded single-row UPDATE or DELETE ... RETURNING in one transaction: the row
        as it is afterwards (as it was, for a delete), or None if the guard matched nothing.

        One round trip and a commit, no read before: the guard is the whole compare-and-set.
        A matched row that cannot be decoded is rolled back, so the store's own processing
        never changes it."""
        try:
            with self._write() as connection:
                row = connection.execute(statement, params).first()
                if row is None:
                    return None
                decoded = _decode_row(row._mapping)
                if isinstance(decoded, UndecodableReminder):
                    raise _RollBack(decoded)
        except _RollBack as rolled_back:
            self._report_undecodable(rolled_back.problem)
            return None
        return decoded

    # -- housekeeping ------------------------------------------------------------------------------

    @_reconnecting
    def count(self) -> int:
        with self._connection() as connection:
            return int(
                connection.execute(select(func.count()).select_from(REMINDERS_TABLE)).scalar_one()
            )

    @_reconnecting
    def errors(self) -> list[UndecodableReminder]:
        problems: list[UndecodableReminder] = []
        last: tuple[str, str, str] | None = None
        while True:
            statement = select(REMINDERS_TABLE).order_by(*_KEY_COLUMNS).limit(_ERRORS_PAGE)
            if last is not None:
                statement = statement.where(tuple_(*_KEY_COLUMNS) > tuple_(*_key_literals(last)))
            rows = self._rows(statement)
            for row in rows:
                decoded = _decode_row(row._mapping)
                if isinstance(decoded, UndecodableReminder):
                    self._report_undecodable(decoded)
                    problems.append(decoded)
            if len(rows) < _ERRORS_PAGE:
                return problems
            last = (rows[-1].actor_type, rows[-1].actor_key, rows[-1].name)


# -- statements ----------------------------------------------------------------------------------


@cache
def _upsert_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE` replacing every column, built once per dialect (it
    takes its values as parameters); None where the dialect has no such statement."""
    if dialect == "sqlite":
        statement: Any = sqlite_dialect.insert(REMINDERS_TABLE)
    elif dialect == "postgresql":
        statement = pg_dialect.insert(REMINDERS_TABLE)
    else:
        return None
    replaced = {
        column.name: statement.excluded[column.name]
        for column in REMINDERS_TABLE.columns
        if not column.primary_key
    }
    return statement.on_conflict_do_update(index_elements=list(_KEY_COLUMNS), set_=replaced)


@cache
def _create_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE finished`: inserts a new reminder, or
    replaces a finished one, and matches no row where an unfinished reminder has the key. None
    where the dialect has no such statement."""
    if dialect == "sqlite":
        statement: Any = sqlite_dialect.insert(REMINDERS_TABLE)
    elif dialect == "postgresql":
        statement = pg_dialect.insert(REMINDERS_TABLE)
    else:
        return None
    replaced = {
        column.name: statement.excluded[column.name]
        for column in REMINDERS_TABLE.columns
        if not column.primary_key
    }
    return statement.on_conflict_do_update(
        index_elements=list(_KEY_COLUMNS), set_=replaced, where=_r.finished == true()
    ).returning(_r.name)


# Statements used on every fire are built once, with parameters: building a SQLAlchemy statement
# costs more than SQLite takes to run it.
_KEY_MATCH: Final = and_(
    _r.actor_type == bindparam("k_actor_type", type_=_KeyText),
    _r.actor_key == bindparam("k_actor_key", type_=_KeyText),
    _r.name == bindparam("k_name", type_=_KeyText),
)
_SELECT_ONE: Final = select(REMINDERS_TABLE).where(_KEY_MATCH)
_DELETE_ONE: Final = delete(REMINDERS_TABLE).where(_KEY_MATCH)


def _key_params(key: ReminderKey) -> dict[str, Any]:
    return {"k_actor_type": key.actor_type, "k_actor_key": key.actor_key, "k_name": key.name}


class _RollBack(Exception):
    """Leaves a write transaction without committing it: the row it matched is undecodable."""

    def __init__(self, problem: UndecodableReminder) -> None:
        super().__init__(str(problem.key))
        self.problem = problem


def _param(name: str) -> BindParameter[int]:
    return bindparam(name, type_=BigInteger)


def _fire_guard(with_due_guard: bool, fenced: bool) -> list[ColumnElement[bool]]:
    """The compare-and-set of a fire: the row is as the caller last saw it, and can fire (and,
    fenced, no other node holds a live claim on it)."""
    guard = [
        _KEY_MATCH,
        _r.fire_count == _param("p_expected"),
        _r.pending_fire.is_(None),
        _r.finished == false(),
    ]
    if with_due_guard:
        guard.append(_r.due_us == _param("p_expected_due"))
    if fenced:
        guard.append(_fence_guard())
    return guard


def _handled_values() -> dict[str, Any]:
    """What acknowledging a fire writes besides clearing it: handled now (`p_now`), no failure
    pending."""
    return {
        "updated_us": _param("p_now"),
        "last_handled_us": _param("p_now"),
        # null(), not None: the batch path hands its parameter sets to the driver as they are.
        "attempts": null(),
        "last_error_type": null(),
        "last_error_text": null(),
    }


def _fence_guard() -> ColumnElement[bool]:
    """No other node holds a live claim on the row (parameters `p_now`, `p_node`)."""
    return or_(
        _r.claimed_by.is_(None),
        _r.claimed_until_us < _param("p_now"),
        _r.claimed_by == bindparam("p_node", type_=String),
    )


def _fence_values(fenced: bool) -> dict[str, Any]:
    if not fenced:
        return {}
    return {"claimed_by": bindparam("p_node", type_=String), "claimed_until_us": _param("p_lease")}


@cache
def _fire_statement(with_next: bool, with_due_guard: bool, fenced: bool) -> Update:
    count = _param("p_count")
    values: dict[str, Any] = {
        "fire_count": count,
        "pending_fire": count,
        "pending_scheduled_us": _param("p_scheduled"),
        "updated_us": _param("p_now"),
        "last_fired_us": _param("p_now"),
        **_fence_values(fenced),
    }
    if with_next:
        # The fire that reaches max_count is the last one, whatever next tick was passed.
        reaches_max = and_(_r.max_count.is_not(None), _r.max_count <= count)
        values["finished"] = case((reaches_max, true()), else_=false())
        values["due_us"] = case((reaches_max, _r.due_us), else_=_param("p_next"))
    else:
        values["finished"] = true()
    return (
        update(REMINDERS_TABLE)
        .where(*_fire_guard(with_due_guard, fenced))
        .where(or_(_r.max_count.is_(None), _r.max_count > _param("p_expected")))
        .values(values)
        .returning(*REMINDERS_TABLE.c)
    )


@cache
def _reschedule_statement(with_due_guard: bool, fenced: bool) -> Update:
    return (
        update(REMINDERS_TABLE)
        .where(*_fire_guard(with_due_guard, fenced))
        .values(due_us=_param("p_due"), updated_us=_param("p_now"), **_fence_values(fenced))
        .returning(*REMINDERS_TABLE.c)
    )


@cache
def _acknowledge_statement(finished: bool, with_scheduled: bool) -> Delete | Update:
    guard = [_KEY_MATCH, _r.pending_fire == _param("p_fire")]
    if with_scheduled:
        guard.append(_r.pending_scheduled_us == _param("p_scheduled"))
    if finished:
        return (
            delete(REMINDERS_TABLE)
            .where(*guard, _r.finished == true())
            .returning(*REMINDERS_TABLE.c)
        )
    return (
        update(REMINDERS_TABLE)
        .where(*guard, _r.finished == false())
        .values(pending_fire=None, pending_scheduled_us=None, **_handled_values())
        .returning(*REMINDERS_TABLE.c)
    )


def _scheduled_select(until_us: int | Any, cursor: _Position | Any | None) -> Select[Any]:
    """Unfinished rows without a pending fire, due by `until_us`, by (due_us, key). Both may
    be bind parameters (see `_after`)."""
    statement = select(REMINDERS_TABLE, _r.due_us.label("pos")).where(
        _r.finished == false(),
        _r.pending_scheduled_us.is_(None),
        _r.due_us <= until_us,
    )
    if cursor is not None:
        statement = statement.where(_after(_r.due_us, cursor))
    return statement.order_by(_r.due_us, *_KEY_COLUMNS)


@cache
def _due_statement(paged: bool) -> Select[Any]:
    """The scan of `due()`, built once (a page after the first also takes a cursor): its
    parameters are `until_us`, `want` (the page size) and, when `paged`, the cursor's `c_at`,
    `c_type`, `c_key` and `c_name`. One statement, so both halves see the same snapshot: a row
    that gets a pending fire or loses one meanwhile is neither missed nor returned twice."""
    want = bindparam("want", type_=BigInteger)
    cursor = (
        tuple_(
            bindparam("c_at", type_=BigInteger),
            bindparam("c_type", type_=_KeyText),
            bindparam("c_key", type_=_KeyText),
            bindparam("c_name", type_=_KeyText),
        )
        if paged
        else None
    )
    until = bindparam("until_us", type_=BigInteger)
    first = _scheduled_select(until, cursor).limit(want).subquery()
    second = _pending_select(cursor).limit(want).subquery()
    both = union_all(select(first), select(second)).subquery()
    return (
        select(both)
        .order_by(both.c.pos, both.c.actor_type, both.c.actor_key, both.c.name)
        .limit(want)
    )


def _pending_select(cursor: _Position | Any | None) -> Select[Any]:
    """Rows with a pending fire, by (pending_scheduled_us, key)."""
    statement = select(REMINDERS_TABLE, _r.pending_scheduled_us.label("pos")).where(
        _r.pending_scheduled_us.is_not(None)
    )
    if cursor is not None:
        statement = statement.where(_after(_r.pending_scheduled_us, cursor))
    return statement.order_by(_r.pending_scheduled_us, *_KEY_COLUMNS)
