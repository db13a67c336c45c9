"""The SQLAlchemy reminder store: an embedded SQLite file by default, PostgreSQL for several nodes.

One row per reminder in `plexspaces_reminders`; `plexspaces_schema` records the schema version of
the tables, so a newer database is refused instead of misread. Times are BIGINT microseconds since
the Unix epoch (UTC), the payload is JSON text.

How it stays correct with many threads, several processes on one SQLite file, and several nodes:

- Every change is one short transaction whose first statement writes. SQLite then waits for the
  write lock (busy timeout) instead of failing with "database is locked", which it does at once
  when a transaction that began by reading tries to write after another writer committed. So no
  method reads and then writes in one transaction, whatever transaction mode the sqlite3 driver
  runs in; where a method needs to look first (to leave undecodable rows alone), it reads in a
  transaction of its own and the write re-checks everything it relies on.
- Counts advance by compare-and-set (`UPDATE ... WHERE fire_count = :expected AND pending_fire
  IS NULL`): a fire is recorded once whichever thread, process or node races for it, so
  `max_count` is never exceeded.
- Claims are a guarded update too. On PostgreSQL the candidates are also locked with
  `FOR UPDATE SKIP LOCKED` in the same transaction, so concurrent nodes pick different rows
  instead of colliding on the same ones.
- Queries page with keysets on indexed columns and never load the whole table.
"""

from __future__ import annotations

import functools
import heapq
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    Column,
    ColumnElement,
    Delete,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, Row, RowMapping, create_engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from . import _sql_fires
from ._store import (
    BaseReminderStore,
    FireChange,
    NodeLeases,
    ReminderKey,
    SchemaVersionError,
    StoreClosedError,
    StoredReminder,
    StoreUnavailableError,
    UndecodableReminder,
    decode_payload,
    from_micros,
    to_micros,
    validate_reminder,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "ACTIVATIONS_TABLE",
    "REMINDERS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "SqlReminderStore",
    "create_store_engine",
]

SCHEMA_VERSION: Final = 1
"""The version of the reminder tables this code reads and writes."""

SCHEMA_COMPONENT: Final = "reminders"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite connection waits for another writer (thread or process) before failing."""

MIN_SQLITE_VERSION: Final = (3, 35, 0)
"""Row values, `INSERT ... ON CONFLICT DO UPDATE` and `RETURNING` need SQLite 3.35 (2021) or
newer."""

_US: Final = timedelta(microseconds=1)
_SCHEMA_ATTEMPTS: Final = 5
_CLAIM_CHUNK: Final = 300  # keys per claim statement: 900 parameters, far below every limit
_NEXT_DUE_PAGE: Final = 16
_ERRORS_PAGE: Final = 500

_metadata = MetaData()

# Key columns compare byte-wise on PostgreSQL too (its default collation is linguistic): the
# database then orders keys exactly as Python orders `ReminderKey`, which the claim path relies on
# when it merges two sorted result sets, and byte-wise comparison keeps the key index cheap.
_KeyText = String().with_variant(String(collation="C"), "postgresql")

REMINDERS_TABLE: Final = Table(
    "plexspaces_reminders",
    _metadata,
    Column("actor_type", _KeyText, primary_key=True),
    Column("actor_key", _KeyText, primary_key=True),
    Column("name", _KeyText, primary_key=True),
    Column("due_us", BigInteger, nullable=False),
    Column("anchor_us", BigInteger, nullable=False),
    Column("period_us", BigInteger, nullable=True),
    Column("max_count", BigInteger, nullable=True),
    Column("fire_count", BigInteger, nullable=False),
    Column("missed", String, nullable=False),
    Column("payload", Text, nullable=False),
    Column("pending_fire", BigInteger, nullable=True),
    Column("pending_scheduled_us", BigInteger, nullable=True),
    Column("finished", Boolean, nullable=False),
    Column("claimed_by", String, nullable=True),
    Column("claimed_until_us", BigInteger, nullable=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)
"""One row per reminder, keyed by (actor_type, actor_key, name)."""

_r = REMINDERS_TABLE.c
_KEY_COLUMNS: Final = (_r.actor_type, _r.actor_key, _r.name)

# The due scan: unfinished rows by due time. Carrying the key columns lets the index deliver the
# full (due_us, key) order that keyset pagination needs without a sort.
Index("ix_plexspaces_reminders_due", _r.finished, _r.due_us, *_KEY_COLUMNS)
# Rows with a pending fire, for redelivery; NULL (no pending fire) for almost every row.
Index("ix_plexspaces_reminders_pending", _r.pending_scheduled_us, *_KEY_COLUMNS)
# Lease renewal and release touch one node's claims.
Index("ix_plexspaces_reminders_claimed_by", _r.claimed_by)

ACTIVATIONS_TABLE: Final = Table(
    "plexspaces_activations",
    _metadata,
    Column("actor_type", _KeyText, primary_key=True),
    Column("actor_key", _KeyText, primary_key=True),
    Column("node_id", String, nullable=False),
    Column("activation_id", String, nullable=False),
    Column("lease_until_us", BigInteger, nullable=False),
    Column("activated_us", BigInteger, nullable=False),
)
"""One row per virtual actor active on some node of a cluster: who holds it, and until when."""

_a = ACTIVATIONS_TABLE.c
Index("ix_plexspaces_activations_node", _a.node_id)

SCHEMA_TABLE: Final = Table(
    "plexspaces_schema",
    _metadata,
    Column("component", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)
"""The schema version of each component's tables: `("reminders", SCHEMA_VERSION)`."""

_Position = tuple[int, ReminderKey]
_Page = tuple[Sequence[Row[Any]], bool]


def create_store_engine(url: str | URL) -> Engine:
    """An engine set up the way `SqlReminderStore` sets up the engines it creates.

    SQLite files get WAL journaling (readers never block the writer), a 30 s busy timeout (writers
    from other threads and processes queue instead of failing) and `synchronous=NORMAL` (durable
    across process crashes; a power cut may lose the last commits, never corrupt the file).
    An in-memory SQLite database gets one connection shared by every thread (the store
    serializes access to it); it lasts as long as the engine. Other databases get a plain
    pool: a connection that died with a restarted server is found on first use, and the store
    then runs the call again once on a fresh connection (see `SqlReminderStore`), instead of
    paying a round trip to check every connection before use.

    Raises:
        FileNotFoundError: the directory of a SQLite file does not exist.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed)
    if _is_memory_sqlite(parsed):
        return create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    database = parsed.database or ""
    if not _is_truthy(parsed.query.get("uri")):
        directory = Path(database).parent
        if not directory.is_dir():
            raise FileNotFoundError(
                f"the directory {str(directory)!r} of the reminder database {database!r} does not "
                "exist; create it first"
            )
    engine = create_engine(parsed)
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
    # locked" at once, without its busy handler, while another connection is switching the same
    # file. Back off and try again, within the busy timeout; once one connection has switched, the
    # mode is stored in the file and every later switch is a no-op.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
        # A real-time backoff for a lock held by another connection, not a timing mechanism.
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _is_truthy(value: str | Sequence[str] | None) -> bool:
    return isinstance(value, str) and value.lower() in ("1", "true", "yes", "on")


P = ParamSpec("P")
R = TypeVar("R")


def _reconnecting(
    method: Callable[Concatenate[SqlReminderStore, P], R],
) -> Callable[Concatenate[SqlReminderStore, P], R]:
    """Run a store method once more when it failed on a pooled connection that had died (the
    server restarted, or a network path dropped it): SQLAlchemy then has replaced the pool, and
    the second run gets a fresh connection. Safe because every change the store makes is a
    compare-and-set or idempotent: a change that did commit before the connection died is
    found by the second run's guard and not made twice. A server that is down fails the fresh
    connection too, and that error is raised."""

    def run(self: SqlReminderStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except StoreUnavailableError as error:
            if (
                not isinstance(error.__cause__, DBAPIError)
                or not error.__cause__.connection_invalidated
            ):
                raise
            return method(self, *args, **kwargs)

    functools.update_wrapper(run, method)
    return run


class SqlReminderStore(BaseReminderStore):
    """A `ReminderStore` on any SQLAlchemy database: SQLite files, in-memory SQLite, PostgreSQL.

    Args:
        url_or_engine: a SQLAlchemy URL (the store creates its engine with `create_store_engine`
            and disposes it on `close`), or an `Engine` the caller owns (used as configured, never
            disposed by the store).
        log: the structlog logger to report undecodable rows to; default `plexspaces.store`.

    Opening creates the tables if they are missing and records the schema version; two processes
    may open a new file at the same time.

    Raises:
        SchemaVersionError: the database was written by a version of plexspaces with another
            reminder schema version.
        FileNotFoundError: the directory of a SQLite file does not exist.
        ValueError: an in-memory SQLite engine was handed over without a `StaticPool` (each
            thread would see a database of its own).
        RuntimeError: SQLite is older than `MIN_SQLITE_VERSION`.
        StoreUnavailableError: the database cannot be reached.

    Every method raises `StoreUnavailableError` when the database cannot be reached. A call that
    met a pooled connection that had died (a restarted server) first runs once more on a fresh
    one.
    """

    def __init__(
        self, url_or_engine: str | URL | Engine, *, log: FilteringBoundLogger | None = None
    ) -> None:
        super().__init__(log=log)
        if isinstance(url_or_engine, Engine):
            engine, self._owns_engine = url_or_engine, False
        else:
            engine, self._owns_engine = create_store_engine(url_or_engine), True
        self._engine = engine
        self._closed = False
        self._dialect = engine.dialect.name
        # Only PostgreSQL is relied on for row locks; elsewhere the guarded update alone decides.
        self._locks_rows = self._dialect == "postgresql"
        self._upsert = _upsert_statement(self._dialect)
        try:
            self._serial = _serializer(engine)
            self._write_serial = _write_serializer(engine)
            self._prepare_schema()
        except BaseException:
            if self._owns_engine:
                engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The engine the store runs on."""
        return self._engine

    def __repr__(self) -> str:
        return f"<SqlReminderStore {self._engine.url.render_as_string(hide_password=True)}>"

    # -- connections -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")
        try:
            with self._serial, self._engine.connect() as connection:
                yield connection
        except (OperationalError, InterfaceError) as error:
            raise self._unavailable(error) from error
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            raise self._unavailable(error) from error

    def _unavailable(self, error: DBAPIError) -> StoreUnavailableError:
        return _unavailable(self._engine, error)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_serial, self._connection() as connection, connection.begin():
            yield connection

    def _rows(self, statement: Select[Any]) -> Sequence[Row[Any]]:
        with self._connection() as connection:
            return connection.execute(statement).all()

    # -- schema ------------------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        with self._connection() as connection:
            connection.exec_driver_sql("SELECT 1")
        if self._dialect == "sqlite":
            found = self._engine.dialect.server_version_info or (0,)
            if tuple(found) < MIN_SQLITE_VERSION:
                raise RuntimeError(
                    f"SQLite {'.'.join(map(str, found))} is too old for the reminder store; it "
                    f"needs {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer"
                )
        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                self._create_schema()
                return
            except DBAPIError:
                # Another process created a table, an index or the version row between our check
                # and our write: the next attempt finds it there.
                if attempt == _SCHEMA_ATTEMPTS - 1:
                    raise

    def _create_schema(self) -> None:
        s = SCHEMA_TABLE.c
        with self._write() as connection:
            connection.execute(CreateTable(SCHEMA_TABLE, if_not_exists=True))
            found = connection.execute(
                select(s.version).where(s.component == SCHEMA_COMPONENT)
            ).scalar_one_or_none()
            if found is not None and found != SCHEMA_VERSION:
                # Checked before anything else is created: a newer schema is left untouched.
                url = self._engine.url.render_as_string(hide_password=True)
                newer = "newer than" if found > SCHEMA_VERSION else "older than"
                raise SchemaVersionError(
                    f"the reminder tables in {url} have schema version {found}, {newer} version "
                    f"{SCHEMA_VERSION} that this version of plexspaces reads and writes; use the "
                    "plexspaces version that wrote them, or another database"
                )
            for table in (REMINDERS_TABLE, ACTIVATIONS_TABLE):
                connection.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                    connection.execute(CreateIndex(index, if_not_exists=True))
            if found is None:
                connection.execute(
                    insert(SCHEMA_TABLE).values(component=SCHEMA_COMPONENT, version=SCHEMA_VERSION)
                )

    # -- decoding ----------------------------------------------------------------------------------

    def _decode(self, row: Row[Any]) -> StoredReminder | None:
        decoded = _decode_row(row._mapping)
        if isinstance(decoded, UndecodableReminder):
            self._report_undecodable(decoded)
            return None
        return decoded

    def _decode_all(self, rows: Sequence[Row[Any]]) -> list[StoredReminder]:
        return [record for record in map(self._decode, rows) if record is not None]

    def _scan(
        self,
        fetch: Callable[[_Position | None, int], _Page],
        limit: int,
        after: _Position | None,
    ) -> list[StoredReminder]:
        """Up to `limit` decodable records from pages of `fetch`, so rows that cannot be decoded
        never shorten a page (a short page means the end)."""
        found: list[StoredReminder] = []
        cursor = after
        while len(found) < limit:
            want = limit - len(found)
            rows, exhausted = fetch(cursor, want)
            found.extend(self._decode_all(rows))
            if exhausted or not rows:
                break
            cursor = _row_position(rows[-1])
        return found

    # -- reminders ---------------------------------------------------------------------------------

    @_reconnecting
    def upsert(self, reminder: StoredReminder) -> None:
        values = _row_values(reminder, self._checked_payload(reminder))
        with self._write() as connection:
            if self._upsert is not None:
                connection.execute(self._upsert, values)
            else:
                # Databases without an upsert statement: replace in one transaction.
                connection.execute(_DELETE_ONE, _key_params(reminder.key))
                connection.execute(insert(REMINDERS_TABLE), values)

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
            # One statement, so both halves see the same snapshot: a row that gets a pending fire
            # or loses one meanwhile is neither missed nor returned twice.
            scheduled = _scheduled_select(until_us, cursor).limit(want).subquery()
            pending = _pending_select(cursor).limit(want).subquery()
            both = union_all(select(scheduled), select(pending)).subquery()
            statement = (
                select(both)
                .order_by(both.c.pos, both.c.actor_type, both.c.actor_key, both.c.name)
                .limit(want)
            )
            rows = self._rows(statement)
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

    def record_fires(
        self,
        changes: Sequence[FireChange],
        *,
        now: datetime,
        node_id: str | None = None,
        lease_until: datetime | None = None,
    ) -> list[StoredReminder | None]:
        return _sql_fires.record_fires(
            self, changes, now=now, node_id=node_id, lease_until=lease_until
        )

    def acknowledge_fires(self, fires: Sequence[StoredReminder], *, now: datetime) -> int:
        return _sql_fires.acknowledge_fires(self, fires, now=now)

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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()

    # -- operator tools (the `plexspaces` command) -------------------------------------------------

    @_reconnecting
    def scan(
        self,
        limit: int,
        *,
        after: tuple[datetime, ReminderKey] | None = None,
        actor_type: str | None = None,
        actor_key: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
    ) -> list[StoredReminder]:
        self._check_count(limit, "limit", 1)
        start = self._check_position(after)
        filters: list[ColumnElement[bool]] = []
        if actor_type is not None:
            filters.append(_r.actor_type == self._check_text(actor_type, "actor_type"))
        if actor_key is not None:
            filters.append(_r.actor_key == self._check_text(actor_key, "actor_key"))
        if due_after is not None:
            filters.append(_r.due_us > self._check_time(due_after, "due_after"))
        if due_before is not None:
            filters.append(_r.due_us < self._check_time(due_before, "due_before"))

        def fetch(cursor: _Position | None, want: int) -> _Page:
            # Unfinished and finished rows are two ranges of the due index (finished, due_us,
            # key); merging the two ordered halves keeps every page an index range scan.
            halves = []
            for finished in (false(), true()):
                half = select(REMINDERS_TABLE, _r.due_us.label("pos")).where(
                    _r.finished == finished, *filters
                )
                if cursor is not None:
                    half = half.where(_after(_r.due_us, cursor))
                halves.append(half.order_by(_r.due_us, *_KEY_COLUMNS).limit(want).subquery())
            both = union_all(select(halves[0]), select(halves[1])).subquery()
            statement = (
                select(both)
                .order_by(both.c.pos, both.c.actor_type, both.c.actor_key, both.c.name)
                .limit(want)
            )
            rows = self._rows(statement)
            return rows, len(rows) < want

        return self._scan(fetch, limit, start)

    def upsert_many(self, reminders: Iterable[StoredReminder]) -> int:
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
            self._write_rows(list(rows.items()))
        return len(rows)

    @_reconnecting
    def _write_rows(self, rows: list[tuple[ReminderKey, dict[str, Any]]]) -> None:
        with self._write() as connection:
            if self._upsert is not None:
                connection.execute(self._upsert, [values for _, values in rows])
                return
            for key, values in rows:
                connection.execute(_DELETE_ONE, _key_params(key))
                connection.execute(insert(REMINDERS_TABLE), values)

    @_reconnecting
    def lease_holders(self, now: datetime) -> list[NodeLeases]:
        now_us = self._check_time(now, "now")

        def tally(node: ColumnElement[str], until: ColumnElement[int]) -> Select[Any]:
            live = func.coalesce(func.sum(case((until >= now_us, 1), else_=0)), 0)
            return (
                select(
                    node.label("node_id"),
                    func.count().label("held"),
                    live.label("live"),
                    func.max(until).label("latest"),
                )
                .where(node.is_not(None), until.is_not(None))
                .group_by(node)
            )

        with self._connection() as connection:
            claims = connection.execute(tally(_r.claimed_by, _r.claimed_until_us)).all()
            activations = connection.execute(tally(_a.node_id, _a.lease_until_us)).all()
        # Per node: live claims, expired claims, live activations, expired activations, latest end.
        tallies: dict[str, list[int]] = {}
        for offset, rows in ((0, claims), (2, activations)):
            for row in rows:
                counts = tallies.setdefault(str(row.node_id), [0, 0, 0, 0, int(row.latest)])
                counts[offset] = int(row.live)
                counts[offset + 1] = int(row.held) - int(row.live)
                counts[4] = max(counts[4], int(row.latest))
        return [
            NodeLeases(
                node_id=node,
                live_claims=counts[0],
                expired_claims=counts[1],
                live_activations=counts[2],
                expired_activations=counts[3],
                lease_until=from_micros(counts[4]),
            )
            for node, counts in sorted(tallies.items())
        ]

    @staticmethod
    def read_schema_version(url_or_engine: str | URL | Engine) -> int | None:
        """The reminder schema version a database records, read without opening a store on it.

        Nothing is created, changed or refused, so this also answers for a database written by
        another version of plexspaces (which `SqlReminderStore` refuses to open), and a read-only
        tool can tell an empty database from a plexspaces one before it opens a store (which
        would create the tables).

        Returns:
            The version, or None when the database holds no plexspaces tables: nothing was ever
            stored in it, or the SQLite file does not exist (it is not created; a `?uri=true`
            URL is opened as given).

        Raises:
            StoreUnavailableError: the database cannot be reached.
        """
        if isinstance(url_or_engine, Engine):
            engine, owned = url_or_engine, False
        else:
            url = make_url(url_or_engine)
            if url.get_backend_name() == "sqlite":
                if _is_memory_sqlite(url):
                    return None  # a new in-memory database is empty
                if not _is_truthy(url.query.get("uri")) and not Path(url.database or "").is_file():
                    return None
            # A plain engine, not create_store_engine's: reading must not switch a file to WAL.
            engine, owned = create_engine(url), True
        s = SCHEMA_TABLE.c
        try:
            with _serializer(engine), engine.connect() as connection:
                if not inspect(connection).has_table(SCHEMA_TABLE.name):
                    return None
                found = connection.execute(
                    select(s.version).where(s.component == SCHEMA_COMPONENT)
                ).scalar_one_or_none()
        except (OperationalError, InterfaceError) as error:
            raise _unavailable(engine, error) from error
        finally:
            if owned:
                engine.dispose()
        return None if found is None else int(found)


# -- statements ----------------------------------------------------------------------------------


def _upsert_statement(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE` replacing every column, built once per store (it
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


def _unavailable(engine: Engine, error: DBAPIError) -> StoreUnavailableError:
    """The error for a database that cannot be reached: its URL (no password) and why."""
    url = engine.url.render_as_string(hide_password=True)
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    return StoreUnavailableError(f"the reminder database {url} is unavailable: {reason}")


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
        guard.append(
            or_(
                _r.claimed_by.is_(None),
                _r.claimed_until_us < _param("p_now"),
                _r.claimed_by == bindparam("p_node", type_=String),
            )
        )
    return guard


def _fence_values(fenced: bool) -> dict[str, Any]:
    if not fenced:
        return {}
    return {"claimed_by": bindparam("p_node", type_=String), "claimed_until_us": _param("p_lease")}


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


@cache
def _fire_statement(with_next: bool, with_due_guard: bool, fenced: bool) -> Update:
    count = _param("p_count")
    values: dict[str, Any] = {
        "fire_count": count,
        "pending_fire": count,
        "pending_scheduled_us": _param("p_scheduled"),
        "updated_us": _param("p_now"),
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
        .values(pending_fire=None, pending_scheduled_us=None, updated_us=_param("p_now"))
        .returning(*REMINDERS_TABLE.c)
    )


def _keys_in(keys: Sequence[ReminderKey]) -> ColumnElement[bool]:
    return tuple_(*_KEY_COLUMNS).in_([(k.actor_type, k.actor_key, k.name) for k in keys])


def _key_literals(key: tuple[str, str, str]) -> tuple[ColumnElement[str], ...]:
    return tuple(literal(part, _KeyText) for part in key)


def _after(position: ColumnElement[int], cursor: _Position) -> ColumnElement[bool]:
    """Rows strictly after `cursor` in (position, key) order, as one row-value comparison that
    SQLite and PostgreSQL both answer from the index. Typed literals: PostgreSQL would otherwise
    cast the microseconds to a 32-bit INTEGER."""
    at, key = cursor
    return tuple_(position, *_KEY_COLUMNS) > tuple_(
        literal(at, BigInteger), *_key_literals((key.actor_type, key.actor_key, key.name))
    )


def _scheduled_select(until_us: int, cursor: _Position | None) -> Select[Any]:
    """Unfinished rows without a pending fire, due by `until_us`, by (due_us, key)."""
    statement = select(REMINDERS_TABLE, _r.due_us.label("pos")).where(
        _r.finished == false(),
        _r.pending_scheduled_us.is_(None),
        _r.due_us <= until_us,
    )
    if cursor is not None:
        statement = statement.where(_after(_r.due_us, cursor))
    return statement.order_by(_r.due_us, *_KEY_COLUMNS)


def _pending_select(cursor: _Position | None) -> Select[Any]:
    """Rows with a pending fire, by (pending_scheduled_us, key)."""
    statement = select(REMINDERS_TABLE, _r.pending_scheduled_us.label("pos")).where(
        _r.pending_scheduled_us.is_not(None)
    )
    if cursor is not None:
        statement = statement.where(_after(_r.pending_scheduled_us, cursor))
    return statement.order_by(_r.pending_scheduled_us, *_KEY_COLUMNS)


def _row_position(row: Row[Any]) -> _Position:
    return (row.pos, ReminderKey(row.actor_type, row.actor_key, row.name))


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


# -- rows ----------------------------------------------------------------------------------------


def _row_values(record: StoredReminder, payload: str) -> dict[str, Any]:
    def micros(value: datetime | None) -> int | None:
        return None if value is None else to_micros(value)

    return {
        "actor_type": record.key.actor_type,
        "actor_key": record.key.actor_key,
        "name": record.key.name,
        "due_us": to_micros(record.due_at),
        "anchor_us": to_micros(record.anchor_at),
        "period_us": None if record.period is None else record.period // _US,
        "max_count": record.max_count,
        "fire_count": record.fire_count,
        "missed": record.missed,
        "payload": payload,
        "pending_fire": record.pending_fire,
        "pending_scheduled_us": micros(record.pending_scheduled_at),
        "finished": record.finished,
        "claimed_by": record.claimed_by,
        "claimed_until_us": micros(record.claimed_until),
        "created_us": to_micros(record.created_at),
        "updated_us": to_micros(record.updated_at),
    }


def _decode_row(row: RowMapping) -> StoredReminder | UndecodableReminder:
    key = ReminderKey(str(row["actor_type"]), str(row["actor_key"]), str(row["name"]))

    def time(column: str) -> datetime:
        try:
            return from_micros(row[column])
        except ValueError as error:
            raise ValueError(f"{column}: {error}") from None

    def optional_time(column: str) -> datetime | None:
        return None if row[column] is None else time(column)

    try:
        period_us = row["period_us"]
        if period_us is not None and (
            isinstance(period_us, bool) or not isinstance(period_us, int) or period_us <= 0
        ):
            raise ValueError(f"period_us {period_us!r} is not a positive number of microseconds")
        try:
            payload = decode_payload(row["payload"])
        except ValueError as error:
            raise ValueError(f"payload is not valid JSON: {error}") from None
        record = StoredReminder(
            key=key,
            due_at=time("due_us"),
            anchor_at=time("anchor_us"),
            period=None if period_us is None else timedelta(microseconds=period_us),
            max_count=row["max_count"],
            fire_count=row["fire_count"],
            missed=row["missed"],
            payload=payload,
            pending_fire=row["pending_fire"],
            pending_scheduled_at=optional_time("pending_scheduled_us"),
            finished=row["finished"],
            claimed_by=row["claimed_by"],
            claimed_until=optional_time("claimed_until_us"),
            created_at=time("created_us"),
            updated_at=time("updated_us"),
        )
        validate_reminder(record, times_checked=True)
    except (ValueError, TypeError, OverflowError) as error:
        return UndecodableReminder(key, str(error))
    return record


def _serializer(engine: Engine) -> AbstractContextManager[Any]:
    """A lock around every use of an in-memory SQLite database, whose one connection all threads
    share; nothing for other databases, which give each thread a connection of its own.

    The lock belongs to the engine, not to the store: several stores handed one engine share it.
    """
    if engine.dialect.name != "sqlite" or not _is_memory_sqlite(engine.url):
        return nullcontext()
    if not isinstance(engine.pool, StaticPool):
        raise ValueError(
            f"the in-memory SQLite engine {engine!r} must use StaticPool (see "
            "create_store_engine): with another pool each thread sees a database of its own"
        )
    with _engine_locks_guard:
        lock = _engine_locks.get(engine)
        if lock is None:
            lock = _engine_locks[engine] = threading.RLock()
        return lock


def _write_serializer(engine: Engine) -> AbstractContextManager[Any]:
    """A lock around every write transaction on one SQLite file within this process.

    SQLite lets one writer in at a time and makes the others wait in its busy handler, which
    sleeps in steps of milliseconds; with many threads acknowledging fires, that sleeping set the
    fire rate. Waiting on a Python lock instead wakes the next writer the moment the lock is
    free. Readers are not serialized (WAL lets them run beside the writer), and writers in other
    processes still meet the busy timeout. The lock belongs to the file, so every engine and
    store on it in this process shares it.
    """
    if engine.dialect.name != "sqlite" or _is_memory_sqlite(engine.url):
        return nullcontext()
    path = os.path.realpath(engine.url.database or "")
    with _engine_locks_guard:
        lock = _file_write_locks.get(path)
        if lock is None:
            lock = _file_write_locks[path] = threading.RLock()
        return lock


_file_write_locks: dict[str, threading.RLock] = {}
_engine_locks: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_engine_locks_guard = threading.Lock()
