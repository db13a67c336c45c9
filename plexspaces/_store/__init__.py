"""Durable reminder storage: the records, the `ReminderStore` interface and its shared plumbing.

Nothing about a reminder lives only in memory. Everything it needs to survive a crash is in one
row: when it is due next, its phase anchor, how often it has fired, and the fire
that was recorded but not yet acknowledged. Backends implement `ReminderStore`; `BaseReminderStore`
holds what every backend shares (validation, payload encoding, reporting undecodable rows), so a
backend is only the storage itself.

One module each:

- `records`: `ReminderKey`, `StoredReminder` and the other records, times as microseconds,
  `validate_reminder`, and the store's errors;
- `codec`: payloads as JSON text, and records as rows of the reminder table;
- `interfaces`: `ReminderStore`, made of `ReminderRecords`, `LeaseStore` and `AdminScans`, with
  the rules every backend keeps;
- `base`: `BaseReminderStore`;
- `sql`: the SQLAlchemy backend, `SqlReminderStore`. It is imported on first use of one of its
  names here, so that `import plexspaces` does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BaseReminderStore
from .codec import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    decode_payload,
    encode_payload,
    json_text,
    stored_payload,
)
from .interfaces import AdminScans, DeadLetterStore, LeaseStore, ReminderRecords, ReminderStore
from .records import (
    BUCKETS,
    MAX_STORED_INT,
    MISSED_POLICIES,
    BucketCountError,
    DeadLetter,
    FireChange,
    FireFailure,
    NodeInfo,
    NodeLeases,
    ReminderKey,
    SchemaVersionError,
    StoreClosedError,
    StoredReminder,
    StoreUnavailableError,
    UndecodableReminder,
    bucket_of,
    from_micros,
    to_micros,
    validate_reminder,
)

if TYPE_CHECKING:
    from .sql import (
        ACTIVATIONS_TABLE,
        BUCKETS_TABLE,
        NODES_TABLE,
        REMINDERS_TABLE,
        SCHEMA_TABLE,
        SCHEMA_VERSION,
        SqlReminderStore,
        create_store_engine,
    )

__all__ = [
    "ACTIVATIONS_TABLE",
    "BUCKETS",
    "BUCKETS_TABLE",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "MAX_STORED_INT",
    "MISSED_POLICIES",
    "NODES_TABLE",
    "REMINDERS_TABLE",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "AdminScans",
    "BaseReminderStore",
    "BucketCountError",
    "DeadLetter",
    "DeadLetterStore",
    "FireChange",
    "FireFailure",
    "LeaseStore",
    "NodeInfo",
    "NodeLeases",
    "ReminderKey",
    "ReminderRecords",
    "ReminderStore",
    "SchemaVersionError",
    "SqlReminderStore",
    "StoreClosedError",
    "StoreUnavailableError",
    "StoredReminder",
    "UndecodableReminder",
    "bucket_of",
    "create_store_engine",
    "decode_payload",
    "encode_payload",
    "from_micros",
    "json_text",
    "stored_payload",
    "to_micros",
    "validate_reminder",
]


def __getattr__(name: str) -> Any:
    # Every name of __all__ is bound at import but the SQL backend's: those are looked up in it
    # on first use, because importing it imports SQLAlchemy.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import sql

    value = getattr(sql, name)
    globals()[name] = value
    return value
