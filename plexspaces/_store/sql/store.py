"""`SqlReminderStore`: the SQL backend, composed of its pieces over `SqlStoreBase`."""

from __future__ import annotations

from .admin import SqlAdminScans
from .dead_letters import SqlDeadLetters
from .fires import SqlFires
from .leases import SqlLeaseStore

__all__ = ["SqlReminderStore"]


class SqlReminderStore(SqlFires, SqlLeaseStore, SqlAdminScans, SqlDeadLetters):
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
