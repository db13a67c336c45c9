"""Failed fires on SQL: `SqlDeadLetters`, counting failed deliveries of a pending fire, and the
dead letters a fire becomes once its retry policy gives up.

A failure is one guarded UPDATE; a dead letter is the guarded UPDATE (or DELETE, for a reminder
whose last fire it was) of the reminder and the INSERT of the letter in one transaction, so a
fire is never both pending and dead, and never neither.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from functools import cache
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Delete,
    String,
    Update,
    bindparam,
    delete,
    false,
    func,
    insert,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Row

from ..codec import decode_payload, json_text
from ..records import (
    DeadLetter,
    FireFailure,
    StoredReminder,
    from_micros,
    to_micros,
)
from .engine import DEAD_LETTERS_TABLE, REMINDERS_TABLE, SqlStoreBase, _r, _reconnecting
from .reminders import _KEY_MATCH, _key_params, _param

__all__ = ["SqlDeadLetters"]

_d = DEAD_LETTERS_TABLE.c
_IDS_CHUNK: Final = 500


class SqlDeadLetters(SqlStoreBase):
    """`record_failure` and the `DeadLetterStore` part of `SqlReminderStore`."""

    @_reconnecting
    def record_failure(
        self, record: StoredReminder, error: FireFailure, *, now: datetime
    ) -> StoredReminder | None:
        params = self._failure_params(record, error, now)
        with self._write() as connection:
            changed = connection.execute(_failure_statement(), params).rowcount
        if changed != 1:
            return None
        return replace(record, attempts=record.attempts + 1, last_error=error, updated_at=now)

    @_reconnecting
    def dead_letter(
        self, record: StoredReminder, error: FireFailure, *, now: datetime
    ) -> tuple[DeadLetter, StoredReminder | None] | None:
        params = self._failure_params(record, error, now)
        assert record.pending_fire is not None
        assert record.pending_scheduled_at is not None
        attempts = record.attempts + 1
        letter = {
            "actor_type": record.key.actor_type,
            "actor_key": record.key.actor_key,
            "name": record.key.name,
            "fire_count": record.pending_fire,
            "max_count": record.max_count,
            "scheduled_us": to_micros(record.pending_scheduled_at),
            "payload": json_text(record.payload),
            "error_type": error.type,
            "error_text": error.text,
            "attempts": attempts,
            "dead_us": params["p_now"],
        }
        with self._write() as connection:
            # The reminder first: the transaction begins by writing (see the package docs).
            statement = _dead_delete_statement() if record.finished else _dead_clear_statement()
            if connection.execute(statement, params).rowcount != 1:
                connection.rollback()
                return None
            inserted = connection.execute(insert(DEAD_LETTERS_TABLE).values(letter))
            letter_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        after = (
            None
            if record.finished
            else replace(
                record,
                pending_fire=None,
                pending_scheduled_at=None,
                attempts=0,
                last_error=error,
                updated_at=now,
            )
        )
        dead = DeadLetter(
            id=letter_id,
            actor_type=record.key.actor_type,
            actor_key=record.key.actor_key,
            reminder_name=record.key.name,
            fire_count=record.pending_fire,
            max_count=record.max_count,
            scheduled_at=record.pending_scheduled_at,
            payload=record.payload,
            error=error,
            attempts=attempts,
            dead_at=now,
        )
        return dead, after

    def _failure_params(
        self, record: StoredReminder, error: FireFailure, now: datetime
    ) -> dict[str, Any]:
        if not isinstance(record, StoredReminder):
            raise ValueError(f"{record!r} is not a StoredReminder")
        if record.pending_fire is None or record.pending_scheduled_at is None:
            raise ValueError(f"reminder {record.key} has no pending fire that could have failed")
        if not isinstance(error, FireFailure) or not self._is_storable(error):
            raise ValueError(
                f"error {error!r} must be a FireFailure with a non-empty type and text "
                "without NUL characters"
            )
        return {
            **_key_params(record.key),
            "p_fire": record.pending_fire,
            "p_scheduled": to_micros(record.pending_scheduled_at),
            "p_created": to_micros(record.created_at),
            "p_attempts": record.attempts,
            "p_now": self._check_time(now, "now"),
            "p_error_type": error.type,
            "p_error_text": error.text,
        }

    @staticmethod
    def _is_storable(error: FireFailure) -> bool:
        return (
            isinstance(error.type, str)
            and bool(error.type)
            and isinstance(error.text, str)
            and "\x00" not in error.type + error.text
        )

    # -- dead letters ------------------------------------------------------------------------------

    @_reconnecting
    def dead_letters(
        self,
        limit: int,
        *,
        after: int | None = None,
        actor_type: str | None = None,
        actor_key: str | None = None,
        name: str | None = None,
        ids: Collection[int] | None = None,
        requested: bool = False,
    ) -> list[DeadLetter]:
        self._check_count(limit, "limit", 1)
        filters: list[ColumnElement[bool]] = []
        if requested:
            filters.append(_d.retry_requested_us.is_not(None))
        if after is not None:
            filters.append(_d.id > self._check_count(after, "after", 0))
        for column, value, what in (
            (_d.actor_type, actor_type, "actor_type"),
            (_d.actor_key, actor_key, "actor_key"),
            (_d.name, name, "name"),
        ):
            if value is not None:
                filters.append(column == self._check_text(value, what))
        if ids is not None:
            wanted = self._check_ids(ids)
            if not wanted:
                return []
            filters.append(_d.id.in_(wanted))
        found: list[DeadLetter] = []
        while len(found) < limit:
            want = limit - len(found)
            rows = self._rows(
                select(DEAD_LETTERS_TABLE).where(*filters).order_by(_d.id).limit(want)
            )
            found.extend(letter for letter in map(self._letter, rows) if letter is not None)
            if len(rows) < want:
                break
            filters.append(_d.id > rows[-1].id)
        return found

    def _check_ids(self, ids: Collection[int]) -> list[int]:
        if isinstance(ids, int | str | bytes) or not isinstance(ids, Collection):
            raise ValueError(f"ids {ids!r} must be a collection of dead letter ids (int)")
        return sorted({self._check_count(letter_id, "dead letter id", 0) for letter_id in ids})

    def _letter(self, row: Row[Any]) -> DeadLetter | None:
        try:
            return DeadLetter(
                id=int(row.id),
                actor_type=row.actor_type,
                actor_key=row.actor_key,
                reminder_name=row.name,
                fire_count=int(row.fire_count),
                max_count=None if row.max_count is None else int(row.max_count),
                scheduled_at=from_micros(row.scheduled_us),
                payload=decode_payload(row.payload),
                error=FireFailure(str(row.error_type), str(row.error_text)),
                attempts=int(row.attempts),
                dead_at=from_micros(row.dead_us),
                retry_requested_at=(
                    None if row.retry_requested_us is None else from_micros(row.retry_requested_us)
                ),
            )
        except (TypeError, ValueError) as error:
            # Kept as it is: reported, and left for an operator to look at.
            self._log.error("dead_letter.undecodable", id=row.id, error=str(error))
            return None

    @_reconnecting
    def request_retry(self, ids: Collection[int], *, now: datetime) -> int:
        wanted = self._check_ids(ids)
        now_us = self._check_time(now, "now")
        found = 0
        with self._write() as connection:
            for begin in range(0, len(wanted), _IDS_CHUNK):
                chunk = wanted[begin : begin + _IDS_CHUNK]
                connection.execute(
                    update(DEAD_LETTERS_TABLE)
                    .where(_d.id.in_(chunk), _d.retry_requested_us.is_(None))
                    .values(retry_requested_us=now_us)
                )
                found += int(
                    connection.execute(
                        select(func.count()).select_from(DEAD_LETTERS_TABLE).where(_d.id.in_(chunk))
                    ).scalar_one()
                )
        return found

    @_reconnecting
    def take_retries(
        self,
        node_id: str,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        actor_types: Collection[str] | None = None,
    ) -> list[DeadLetter]:
        self._check_node_id(node_id)
        now_us = self._check_time(now, "now")
        lease_us = self._check_time(lease_until, "lease_until")
        self._check_count(limit, "limit", 1)
        types = self._check_types(actor_types)
        if types is not None and not types:
            return []
        free = or_(_d.retry_by.is_(None), _d.retry_until_us < now_us, _d.retry_by == node_id)
        candidates = select(_d.id).where(_d.retry_requested_us.is_not(None), free)
        if types is not None:
            candidates = candidates.where(_d.actor_type.in_(types))
        candidates = candidates.order_by(_d.retry_requested_us, _d.id).limit(limit)
        # One statement, so it begins by writing; the outer guard is checked again on each row,
        # so of two nodes racing for one letter only one takes it.
        statement = (
            update(DEAD_LETTERS_TABLE)
            .where(
                _d.id.in_(candidates.scalar_subquery()), _d.retry_requested_us.is_not(None), free
            )
            .values(retry_by=node_id, retry_until_us=lease_us)
            .returning(*DEAD_LETTERS_TABLE.c)
        )
        with self._write() as connection:
            rows = connection.execute(statement).all()
        letters = [letter for letter in map(self._letter, rows) if letter is not None]
        return sorted(letters, key=lambda letter: (letter.retry_requested_at, letter.id))

    @_reconnecting
    def finish_retry(self, letter_id: int, node_id: str) -> bool:
        self._check_count(letter_id, "dead letter id", 0)
        self._check_node_id(node_id)
        with self._write() as connection:
            deleted = connection.execute(
                delete(DEAD_LETTERS_TABLE).where(_d.id == letter_id, _d.retry_by == node_id)
            ).rowcount
        return deleted == 1

    @_reconnecting
    def fail_retry(
        self, letter_id: int, node_id: str, error: FireFailure, *, now: datetime
    ) -> bool:
        self._check_count(letter_id, "dead letter id", 0)
        self._check_node_id(node_id)
        if not isinstance(error, FireFailure) or not self._is_storable(error):
            raise ValueError(f"error {error!r} must be a FireFailure")
        now_us = self._check_time(now, "now")
        with self._write() as connection:
            changed = connection.execute(
                update(DEAD_LETTERS_TABLE)
                .where(_d.id == letter_id, _d.retry_by == node_id)
                .values(
                    attempts=_d.attempts + 1,
                    error_type=error.type,
                    error_text=error.text,
                    dead_us=now_us,
                    retry_requested_us=None,
                    retry_by=None,
                    retry_until_us=None,
                )
            ).rowcount
        return changed == 1


# -- statements ----------------------------------------------------------------------------------


def _failure_guard() -> list[ColumnElement[bool]]:
    """The row holds the registration the caller read, with the same pending fire, failed as
    often as the caller saw."""
    return [
        _KEY_MATCH,
        _r.pending_fire == _param("p_fire"),
        _r.pending_scheduled_us == _param("p_scheduled"),
        _r.created_us == _param("p_created"),
        func.coalesce(_r.attempts, 0) == _param("p_attempts"),
    ]


def _error_values() -> dict[str, Any]:
    return {
        "last_error_type": bindparam("p_error_type", type_=String),
        "last_error_text": bindparam("p_error_text", type_=String),
        "updated_us": _param("p_now"),
    }


@cache
def _failure_statement() -> Update:
    return (
        update(REMINDERS_TABLE)
        .where(*_failure_guard())
        .values(attempts=func.coalesce(_r.attempts, 0) + 1, **_error_values())
    )


@cache
def _dead_clear_statement() -> Update:
    return (
        update(REMINDERS_TABLE)
        .where(*_failure_guard(), _r.finished == false())
        .values(
            pending_fire=null(), pending_scheduled_us=null(), attempts=null(), **_error_values()
        )
    )


@cache
def _dead_delete_statement() -> Delete:
    return delete(REMINDERS_TABLE).where(*_failure_guard(), _r.finished == true())
