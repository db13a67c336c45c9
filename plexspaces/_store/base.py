"""`BaseReminderStore`: what every backend shares, so that a backend is only the storage."""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from .codec import encode_payload
from .interfaces import ReminderStore
from .records import (
    MAX_STORED_INT,
    ReminderKey,
    StoredReminder,
    UndecodableReminder,
    _check_key,
    _check_time,
    _is_int,
    _is_text,
    validate_reminder,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["BaseReminderStore"]


class BaseReminderStore(ReminderStore):
    """What every backend shares: argument checks, payload encoding, and reporting rows that
    cannot be decoded (each logged once per store, not once per query that meets it)."""

    def __init__(self, *, log: FilteringBoundLogger | None = None) -> None:
        self._log: FilteringBoundLogger = (
            log if log is not None else structlog.get_logger("plexspaces.store")
        )
        self._reported: set[UndecodableReminder] = set()
        self._reported_lock = threading.Lock()

    def _checked_payload(self, reminder: StoredReminder) -> str:
        """Validate `reminder` for storing; its payload as JSON text."""
        validate_reminder(reminder)
        return encode_payload(reminder.key, reminder.payload)

    def _report_undecodable(self, problem: UndecodableReminder) -> None:
        with self._reported_lock:
            if problem in self._reported:
                return
            self._reported.add(problem)
        self._log.error(
            "reminder.undecodable",
            actor_type=problem.key.actor_type,
            actor_key=problem.key.actor_key,
            name=problem.key.name,
            error=problem.error,
        )

    @staticmethod
    def _check_key(key: ReminderKey) -> ReminderKey:
        return _check_key(key)

    @staticmethod
    def _check_time(value: datetime, what: str) -> int:
        return _check_time(value, what)

    @staticmethod
    def _check_count(value: int, what: str, minimum: int) -> int:
        if not _is_int(value) or not minimum <= value <= MAX_STORED_INT:
            raise ValueError(f"{what} {value!r} must be an int from {minimum} to {MAX_STORED_INT}")
        return value

    @staticmethod
    def _check_text(value: str, what: str) -> str:
        if not _is_text(value):
            raise ValueError(f"{what} {value!r} must be a non-empty str without NUL characters")
        return value

    @classmethod
    def _check_node_id(cls, node_id: str) -> str:
        return cls._check_text(node_id, "node_id")

    @classmethod
    def _check_fence(
        cls, node_id: str | None, lease_until: datetime | None, now_us: int
    ) -> int | None:
        """The lease end (microseconds) of a fenced call, or None for an unfenced one."""
        if node_id is None and lease_until is None:
            return None
        if node_id is None or lease_until is None:
            raise ValueError(
                f"node_id {node_id!r} and lease_until {lease_until!r} go together: pass both "
                "or neither"
            )
        cls._check_node_id(node_id)
        lease_us = _check_time(lease_until, "lease_until")
        if lease_us <= now_us:
            raise ValueError(f"lease_until {lease_until!r} must be later than now")
        return lease_us

    @classmethod
    def _check_types(cls, actor_types: Collection[str] | None) -> list[str] | None:
        if actor_types is None:
            return None
        if isinstance(actor_types, str):
            raise ValueError(f"actor_types {actor_types!r} must be a collection of str, not a str")
        return [cls._check_text(actor_type, "actor type") for actor_type in actor_types]

    @staticmethod
    def _check_position(
        after: tuple[datetime, ReminderKey] | None,
    ) -> tuple[int, ReminderKey] | None:
        if after is None:
            return None
        if not isinstance(after, tuple) or len(after) != 2:
            raise ValueError(f"after {after!r} must be a (datetime, ReminderKey) position")
        return _check_time(after[0], "after"), _check_key(after[1])
