"""The SQL backend's engine and schema, and `SqlStoreBase`: what every piece of
`SqlReminderStore` builds on. It owns the engine, hands out connections and write transactions,
creates the tables and decodes rows.

One row per reminder in `plexspaces_reminders`; `plexspaces_schema` records the schema version of
the tables, so a newer database is refused instead of misread. Times are BIGINT microseconds since
the Unix epoch (UTC), the payload is JSON text.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

import structlog
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    event,
    insert,
    inspect,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import URL, Connection, Dialect, Engine, Row, create_engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from ..base import BaseReminderStore
from ..codec import ROW_COLUMNS, _decode_values
from ..records import (
    ReminderKey,
    SchemaVersionError,
    StoreClosedError,
    StoredReminder,
    StoreUnavailableError,
    UndecodableReminder,
    bucket_of,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "ACTIVATIONS_TABLE",
    "BUCKETS_TABLE",
    "CLUSTER_TABLE",
    "COLUMNS_ADDED",
    "DEAD_LETTERS_TABLE",
    "METADATA",
    "NODES_TABLE",
    "REMINDERS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "SqlStoreBase",
    "create_store_engine",
]

SCHEMA_VERSION: Final = 2
"""The version of the reminder tables this code reads and writes. An older database is upgraded
in place when a store opens it (`COLUMNS_ADDED`); a newer one is refused."""

_upgrade_log = structlog.get_logger("plexspaces.store")

SCHEMA_COMPONENT: Final = "reminders"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite connection waits for another writer (thread or process) before failing."""

MIN_SQLITE_VERSION: Final = (3, 35, 0)
"""Row values, `INSERT ... ON CONFLICT DO UPDATE` and `RETURNING` need SQLite 3.35 (2021) or
newer."""

_SCHEMA_ATTEMPTS: Final = 5

_metadata = MetaData()
METADATA: Final = _metadata
"""Every table of the store (those of `SCHEMA_TABLE` and the ones it versions)."""

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
    # `bucket_of(actor_type, actor_key)`, written with every row, so a node claims the reminders
    # of the buckets it holds in one indexed query. Nullable because version 1 had no such
    # column: opening the store fills it in (`_fill_buckets`).
    Column("bucket", Integer, nullable=True),
    # Added in schema version 2 (COLUMNS_ADDED) too: calendar schedules and expiry.
    Column("cron", String, nullable=True),
    Column("tz", String, nullable=True),
    Column("expires_us", BigInteger, nullable=True),
    # The failure policy (all NULL: the default) and the fire history.
    Column("retry_max_attempts", BigInteger, nullable=True),
    Column("retry_backoff_us", BigInteger, nullable=True),
    Column("retry_max_backoff_us", BigInteger, nullable=True),
    Column("attempts", BigInteger, nullable=True),
    Column("last_fired_us", BigInteger, nullable=True),
    Column("last_handled_us", BigInteger, nullable=True),
    Column("last_error_type", Text, nullable=True),
    Column("last_error_text", Text, nullable=True),
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
# A node's claim of the due reminders of its buckets. On the bucket alone: a fire never changes
# it (one that also held due_us cost about 15 % of the fire rate on SQLite). Every row is in it,
# though, so inserting a reminder and deleting one whose last fire was handled both write to it:
# on SQLite, where a single node never looks a row up by bucket, that doubled the lateness of
# one-shot fires under 5,000 a second. There it is made by the first cluster node that opens the
# store (`prepare_buckets`); on PostgreSQL, with the other tables.
BUCKET_INDEX: Final = Index("ix_plexspaces_reminders_bucket", _r.bucket)
# The fill of rows without a bucket (`_fill_buckets`, on every open): only those rows are in it,
# so it costs a write nothing, and finds that there are none at once.
Index(
    "ix_plexspaces_reminders_unbucketed",
    _r.bucket,
    sqlite_where=_r.bucket.is_(None),
    postgresql_where=_r.bucket.is_(None),
)

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

NODES_TABLE: Final = Table(
    "plexspaces_nodes",
    _metadata,
    Column("node_id", String, primary_key=True),
    Column("hosts_actors", Boolean, nullable=False),
    Column("started_us", BigInteger, nullable=False),
    Column("heartbeat_us", BigInteger, nullable=False),
    Column("lease_until_us", BigInteger, nullable=False),
)
"""One row per node of a cluster that joined and has not left: alive while its lease holds."""

_n = NODES_TABLE.c

BUCKETS_TABLE: Final = Table(
    "plexspaces_buckets",
    _metadata,
    Column("bucket", Integer, primary_key=True),
    Column("owner", String, nullable=True),
    Column("lease_until_us", BigInteger, nullable=True),
)
"""One row per hash bucket of the cluster (so the row count is the cluster's bucket count): the
node holding it, and until when; both NULL when nobody does."""

_b = BUCKETS_TABLE.c
Index("ix_plexspaces_buckets_owner", _b.owner)

DEAD_LETTERS_TABLE: Final = Table(
    "plexspaces_dead_letters",
    _metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("actor_type", _KeyText, nullable=False),
    Column("actor_key", _KeyText, nullable=False),
    Column("name", _KeyText, nullable=False),
    Column("fire_count", BigInteger, nullable=False),
    Column("max_count", BigInteger, nullable=True),
    Column("scheduled_us", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("error_text", Text, nullable=False),
    Column("attempts", BigInteger, nullable=False),
    Column("dead_us", BigInteger, nullable=False),
    # A re-drive asked for (and when), and the node delivering it until when.
    Column("retry_requested_us", BigInteger, nullable=True),
    Column("retry_by", String, nullable=True),
    Column("retry_until_us", BigInteger, nullable=True),
    sqlite_autoincrement=True,  # ids are never reused, so an id in a log names one fire
)
"""Fires whose handler failed as often as their `RetryPolicy` allows: kept until re-driven."""

_d = DEAD_LETTERS_TABLE.c
Index("ix_plexspaces_dead_letters_actor", _d.actor_type, _d.actor_key, _d.name, _d.id)
# Re-drives asked for: NULL for almost every row.
Index("ix_plexspaces_dead_letters_retry", _d.retry_requested_us, _d.id)

COLUMNS_ADDED: Final[dict[int, tuple[tuple[Table, str], ...]]] = {
    2: (
        (REMINDERS_TABLE, "bucket"),
        (REMINDERS_TABLE, "cron"),
        (REMINDERS_TABLE, "tz"),
        (REMINDERS_TABLE, "expires_us"),
        (REMINDERS_TABLE, "retry_max_attempts"),
        (REMINDERS_TABLE, "retry_backoff_us"),
        (REMINDERS_TABLE, "retry_max_backoff_us"),
        (REMINDERS_TABLE, "attempts"),
        (REMINDERS_TABLE, "last_fired_us"),
        (REMINDERS_TABLE, "last_handled_us"),
        (REMINDERS_TABLE, "last_error_type"),
        (REMINDERS_TABLE, "last_error_text"),
    ),
}
"""The columns each schema version added to a table that existed before it, by version: opening a
database of an older version adds them (`ALTER TABLE ... ADD COLUMN`, so each must be nullable or
have a server default) in the same transaction that records the new version. Tables and indexes
that are new in a version need no entry: they are created when missing."""

CLUSTER_TABLE: Final = Table(
    "plexspaces_cluster",
    _metadata,
    Column("singleton", Integer, primary_key=True),
    Column("cluster_id", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
)
"""One row: the id of the cluster of nodes that share this database, made when the tables are
created. Nodes use it to find each other on a transport without mixing with the nodes of
another database."""

SCHEMA_TABLE: Final = Table(
    "plexspaces_schema",
    _metadata,
    Column("component", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)
"""The schema version of each component's tables: `("reminders", SCHEMA_VERSION)`."""

_Position = tuple[int, ReminderKey]
_Page = tuple[Sequence[Row[Any]], bool]


def normalize_url(url: str | URL) -> URL:
    """`url` parsed, with the usual PostgreSQL spellings (`postgres://`, `postgresql://`, as in
    a `DATABASE_URL`) mapped to the psycopg 3 driver the store uses.

    Raises:
        sqlalchemy.exc.ArgumentError, ValueError: `url` is not a SQLAlchemy URL.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_store_engine(url: str | URL) -> Engine:
    """An engine set up the way `SqlReminderStore` sets up the engines it creates.

    A new SQLite file is created readable and writable by its owner only (0600; its `-wal` and
    `-shm` files follow). SQLite files get WAL journaling (readers never block the writer), a 30 s
    busy timeout (writers from other threads and processes queue instead of failing) and
    `synchronous=NORMAL` (durable across process crashes; a power cut may lose the last commits,
    never corrupt the file).
    An in-memory SQLite database gets one connection shared by every thread (the store
    serializes access to it); it lasts as long as the engine. Other databases get a plain
    pool: a connection that died with a restarted server is found on first use, and the store
    then runs the call again once on a fresh connection (see `SqlReminderStore`), instead of
    paying a round trip to check every connection before use.

    Raises:
        FileNotFoundError: the directory of a SQLite file does not exist.
    """
    parsed = normalize_url(url)
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
        _create_private(database)
    engine = create_engine(parsed)
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _create_private(database: str) -> None:
    """Create a new SQLite file readable and writable by its owner only (0600). SQLite would
    create it with the umask's mode, usually 0644 (readable by every user of the machine), and
    gives its `-wal` and `-shm` files the mode of the database file, so those are private too.
    An existing file keeps its mode: its owner chose it."""
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


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
S = TypeVar("S", bound="SqlStoreBase")


def _reconnecting(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], R]:
    """Run a store method once more when it failed on a pooled connection that had died (the
    server restarted, or a network path dropped it): SQLAlchemy then has replaced the pool, and
    the second run gets a fresh connection. Safe because every change the store makes is a
    compare-and-set or idempotent: a change that did commit before the connection died is
    found by the second run's guard and not made twice. A server that is down fails the fresh
    connection too, and that error is raised."""

    def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
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


class SqlStoreBase(BaseReminderStore):
    """What every piece of `SqlReminderStore` shares: the engine (created from a URL and then
    owned, or handed over and never disposed), connections that report an unreachable database
    as `StoreUnavailableError`, write transactions, the schema, and decoding rows in pages.
    `SqlReminderStore` documents the arguments and errors."""

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
        self._cluster_id: str | None = None
        self._dialect = engine.dialect.name
        # Only PostgreSQL is relied on for row locks; elsewhere the guarded update alone decides.
        self._locks_rows = self._dialect == "postgresql"
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

    def _rows(
        self, statement: Select[Any], params: dict[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        with self._connection() as connection:
            return connection.execute(statement, params).all()

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
            recorded = connection.execute(
                select(s.version).where(s.component == SCHEMA_COMPONENT)
            ).scalar_one_or_none()
            found = _schema_version(recorded, self._engine)
            if found is not None and found > SCHEMA_VERSION:
                # Checked before anything else is created: a newer schema is left untouched.
                url = self._engine.url.render_as_string(hide_password=True)
                newer = "newer than" if found > SCHEMA_VERSION else "older than"
                raise SchemaVersionError(
                    f"the reminder tables in {url} have schema version {found}, {newer} version "
                    f"{SCHEMA_VERSION} that this version of plexspaces reads and writes; use the "
                    "plexspaces version that wrote them, or another database"
                )
            if found is not None and found < SCHEMA_VERSION:
                self._upgrade(connection, found)
            for table in _metadata.sorted_tables:
                if table is SCHEMA_TABLE:
                    continue
                connection.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                    if index is BUCKET_INDEX and self._dialect == "sqlite":
                        continue  # made by a cluster node (see BUCKET_INDEX)
                    connection.execute(CreateIndex(index, if_not_exists=True))
            _fill_buckets(connection)
            if connection.execute(select(CLUSTER_TABLE.c.cluster_id)).first() is None:
                connection.execute(
                    insert(CLUSTER_TABLE).values(
                        singleton=1,
                        cluster_id=uuid.uuid4().hex,
                        created_us=time.time_ns() // 1000,
                    )
                )
            if found is None:
                connection.execute(
                    insert(SCHEMA_TABLE).values(component=SCHEMA_COMPONENT, version=SCHEMA_VERSION)
                )
            elif found < SCHEMA_VERSION:
                connection.execute(
                    update(SCHEMA_TABLE)
                    .where(SCHEMA_TABLE.c.component == SCHEMA_COMPONENT)
                    .values(version=SCHEMA_VERSION)
                )

    def _upgrade(self, connection: Connection, found: int) -> None:
        """Add the columns of every version after `found` to the tables that lack them. Nothing
        is dropped or rewritten: rows keep their data, and a new column starts NULL (or at its
        server default)."""
        present: dict[str, set[str]] = {}
        inspector = inspect(connection)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for table, name in COLUMNS_ADDED.get(version, ()):
                if table.name not in present:
                    if not inspector.has_table(table.name):
                        continue  # created whole, with the column, below
                    present[table.name] = {c["name"] for c in inspector.get_columns(table.name)}
                if name in present[table.name]:
                    continue
                column = table.c[name]
                ddl = CreateColumn(column).compile(dialect=connection.dialect)
                connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
                present[table.name].add(name)
        url = self._engine.url.render_as_string(hide_password=True)
        _upgrade_log.info(
            "store.schema_upgraded", url=url, from_version=found, to_version=SCHEMA_VERSION
        )

    def cluster_id(self) -> str:
        cached = self._cluster_id
        if cached is None:
            with self._connection() as connection:
                found = connection.execute(select(CLUSTER_TABLE.c.cluster_id)).scalar_one()
            cached = self._cluster_id = str(found)
        return cached

    # -- decoding ----------------------------------------------------------------------------------

    def _decode(self, row: Row[Any]) -> StoredReminder | None:
        found = self._decode_all([row])
        return found[0] if found else None

    def _decode_all(self, rows: Sequence[Row[Any]]) -> list[StoredReminder]:
        """The records of `rows` (rows of a statement selecting the reminder table's columns),
        leaving out (and reporting) those that do not decode."""
        if not rows:
            return []
        values: Sequence[Sequence[Any]] = rows
        if tuple(rows[0]._fields[: len(ROW_COLUMNS)]) != ROW_COLUMNS:
            values = [tuple(row._mapping[column] for column in ROW_COLUMNS) for row in rows]
        times: dict[int, datetime] = {}
        found: list[StoredReminder] = []
        for row_values in values:
            decoded = _decode_values(row_values, times)
            if isinstance(decoded, UndecodableReminder):
                self._report_undecodable(decoded)
            else:
                found.append(decoded)
        return found

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

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()


def _fill_buckets(connection: Connection) -> None:
    """Give every reminder row without a bucket its bucket: the rows of a database upgraded from
    version 1, or written meanwhile by a process of that version. One query of a partial index
    (of those rows alone) finds none on every later open; each actor's rows are then updated by
    its primary key."""
    actors = connection.execute(
        select(_r.actor_type, _r.actor_key).where(_r.bucket.is_(None)).distinct()
    ).all()
    if not actors:
        return
    statement = (
        update(REMINDERS_TABLE)
        .where(_r.actor_type == bindparam("t"), _r.actor_key == bindparam("k"), _r.bucket.is_(None))
        .values(bucket=bindparam("b"))
    )
    params = [
        {"t": row.actor_type, "k": row.actor_key, "b": bucket_of(row.actor_type, row.actor_key)}
        for row in actors
        if isinstance(row.actor_type, str) and isinstance(row.actor_key, str)
    ]
    if params:
        connection.execute(statement, params)
    _upgrade_log.info("store.buckets_filled", actors=len(params))


def _schema_version(recorded: Any, engine: Engine) -> int | None:
    """The schema version the database records (None: no version row), refusing a value that
    is not an integer: SQLite keeps text such as 'abc' in an INTEGER column, and comparing it
    with a version would fail with a TypeError far from its cause."""
    if recorded is None or (isinstance(recorded, int) and not isinstance(recorded, bool)):
        return recorded
    url = engine.url.render_as_string(hide_password=True)
    raise SchemaVersionError(
        f"the reminder tables in {url} record schema version {recorded!r} in "
        f"{SCHEMA_TABLE.name}, which is not an integer; this version of plexspaces reads and "
        f"writes schema version {SCHEMA_VERSION}. The table was changed by something other "
        "than plexspaces: restore it, or use another database"
    )


# -- statements through the driver ---------------------------------------------------------------


def _execute_many(connection: Connection, statement: Any, params: list[dict[str, Any]]) -> int:
    """Run `statement` once per parameter set through the driver's executemany; rows matched.

    The statement is compiled once per dialect, and the parameter sets go to the driver as they
    are: for thousands of sets SQLAlchemy's per-set parameter processing would cost more than
    the database takes to run them. Only for statements whose parameters need no bind
    processor: ints, strings, bools and NULLs (every column of the reminder tables)."""
    sql, order = _driver_sql(connection.dialect, statement)
    rows: list[Any] = params if order is None else list(map(order, params))
    return connection.exec_driver_sql(sql, rows).rowcount


_driver_statements: dict[
    tuple[str, str, Any], tuple[str, Callable[[dict[str, Any]], Any] | None]
] = {}


def _driver_sql(
    dialect: Dialect, statement: Any
) -> tuple[str, Callable[[dict[str, Any]], Any] | None]:
    """The SQL text of `statement` for `dialect`, and for a driver that takes positional
    parameters, what turns a parameter set into them in order (None for named ones)."""
    # Keyed by what decides the SQL text, and by the statement itself (kept alive by the key):
    # an id() could be reused by another object once the first is gone.
    cache_key = (dialect.name, dialect.paramstyle, statement)
    found = _driver_statements.get(cache_key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        order = None
        if compiled.positional:
            names = list(compiled.positiontup)
            getter = itemgetter(*names)
            # itemgetter of one name gives the value, not a 1-tuple.
            order = getter if len(names) > 1 else (lambda params: (getter(params),))
        found = _driver_statements[cache_key] = (compiled.string, order)
    return found


# -- keyset pages --------------------------------------------------------------------------------


def _key_literals(key: tuple[str, str, str]) -> tuple[ColumnElement[str], ...]:
    return tuple(literal(part, _KeyText) for part in key)


def _after(position: ColumnElement[int], cursor: _Position | Any) -> ColumnElement[bool]:
    """Rows strictly after `cursor` in (position, key) order, as one row-value comparison that
    SQLite and PostgreSQL both answer from the index. Typed literals: PostgreSQL would otherwise
    cast the microseconds to a 32-bit INTEGER. `cursor` may also be a row value of typed bind
    parameters, for a statement built once."""
    if not isinstance(cursor, tuple):
        compared: ColumnElement[bool] = tuple_(position, *_KEY_COLUMNS) > cursor
        return compared
    at, key = cursor
    return tuple_(position, *_KEY_COLUMNS) > tuple_(
        literal(at, BigInteger), *_key_literals((key.actor_type, key.actor_key, key.name))
    )


def _row_position(row: Row[Any]) -> _Position:
    return (row.pos, ReminderKey(row.actor_type, row.actor_key, row.name))


# -- errors and locks ----------------------------------------------------------------------------


def _unavailable(engine: Engine, error: DBAPIError) -> StoreUnavailableError:
    """The error for a database that cannot be reached: its URL (no password) and why."""
    url = engine.url.render_as_string(hide_password=True)
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    return StoreUnavailableError(f"the reminder database {url} is unavailable: {reason}")


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
