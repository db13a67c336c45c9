"""Durable reminder storage: the records, the `ReminderStore` interface and its shared plumbing.

Nothing about a reminder lives only in memory. Everything it needs to survive a crash is in one
row: when it is due next, its phase anchor, how often it has fired, and the fire
that was recorded but not yet acknowledged. Backends implement `ReminderStore`; `BaseReminderStore`
holds what every backend shares (validation, payload encoding, reporting undecodable rows), so a
backend is only the storage itself.

One module each:

- `records`: `ReminderKey`, `StoredReminder` and the other records, times as microseconds,
  `validate_reminder`, and the store's errors;
- `codec`: payloads as JSON text;
- `interfaces`: `ReminderStore`, made of `ReminderRecords`, `LeaseStore` and `AdminScans`, with
  the rules every backend keeps;
- `base`: `BaseReminderStore`.
"""

from __future__ import annotations

from .base import BaseReminderStore
from .codec import decode_payload, encode_payload
from .interfaces import AdminScans, LeaseStore, ReminderRecords, ReminderStore
from .records import (
    MISSED_POLICIES,
    NodeLeases,
    ReminderKey,
    SchemaVersionError,
    StoreClosedError,
    StoredReminder,
    StoreUnavailableError,
    UndecodableReminder,
    from_micros,
    to_micros,
    validate_reminder,
)

__all__ = [
    "MISSED_POLICIES",
    "AdminScans",
    "BaseReminderStore",
    "LeaseStore",
    "NodeLeases",
    "ReminderKey",
    "ReminderRecords",
    "ReminderStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreUnavailableError",
    "StoredReminder",
    "UndecodableReminder",
    "decode_payload",
    "encode_payload",
    "from_micros",
    "to_micros",
    "validate_reminder",
]
