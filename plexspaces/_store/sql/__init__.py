"""The SQLAlchemy reminder store: an embedded SQLite file by default, PostgreSQL for several nodes.

One module per piece, composed into `SqlReminderStore` (`store`):

- `engine`: the engine, the tables and their schema version, and `SqlStoreBase`, which owns the
  engine and its connections;
- `reminders`: reminder records and their fires, one at a time;
- `fires`: fires and acknowledgements in batches, many compare-and-sets in one transaction;
- `leases`: reminder claims and activation leases;
- `admin`: the operator's scans and lease holders, and reading the schema version.

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

from .engine import (
    ACTIVATIONS_TABLE,
    BUCKETS_TABLE,
    NODES_TABLE,
    REMINDERS_TABLE,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    create_store_engine,
)
from .store import SqlReminderStore

__all__ = [
    "ACTIVATIONS_TABLE",
    "BUCKETS_TABLE",
    "NODES_TABLE",
    "REMINDERS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "SqlReminderStore",
    "create_store_engine",
]
