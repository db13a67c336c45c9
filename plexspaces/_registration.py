"""Reminder registrations: what a facet asks for, what it is told back, and the checks between.

`ReminderRegistration` is one reminder as a facet registers it, `ReminderInfo` one as a facet
lists it; `new_record` turns a registration into the `StoredReminder` the store keeps, refusing
what cannot be stored or fired (with a `ValueError` naming the field and the value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._duration import Duration, parse_duration
from ._retry import RetryPolicy, retry_policy
from ._store import MISSED_POLICIES, FireFailure, ReminderKey, StoredReminder, encode_payload

__all__ = ["ReminderInfo", "ReminderRegistration", "info_of", "new_record"]


@dataclass(frozen=True, slots=True)
class ReminderRegistration:
    """One reminder to register, for `ReminderFacet.register_reminders` (the arguments of
    `register_reminder`, as a value)."""

    name: str
    due: Duration | datetime
    period: Duration | None = None
    max_count: int | None = None
    payload: Any = None
    missed: str = "once"
    retry: RetryPolicy | None = None


@dataclass(frozen=True, slots=True)
class ReminderInfo:
    """A stored reminder, as `ReminderFacet.list_reminders` reports it.

    Attributes:
        name: the reminder's name.
        fire_count: fires recorded so far (kept across restarts).
        max_count: the most fires it makes, or None.
        next_fire_at: when it fires next (aware UTC); None once its last fire was recorded.
        period: the period of a periodic reminder, None for a one-shot.
        missed: the missed-tick policy ("once", "skip" or "all").
        payload: the JSON payload.
        pending_fire: the `fire_count` of a fire recorded but not yet acknowledged (being
            handled, or to be delivered again after a crash), else None.
        last_fired_at: when its last fire was recorded (aware UTC), or None.
        last_handled_at: when a handler last returned for one of its fires, or None.
        last_error: what the handler of its last failed delivery raised (`type`, `text`);
            None once a fire was handled since.
        attempts: failed deliveries of the pending fire so far (0 without one).
        retry: its failure policy; None for the default `RetryPolicy()`.
        actor_type, actor_key: the virtual actor it belongs to.
    """

    name: str
    fire_count: int
    max_count: int | None
    next_fire_at: datetime | None
    period: timedelta | None
    missed: str
    payload: Any
    pending_fire: int | None = None
    last_fired_at: datetime | None = None
    last_handled_at: datetime | None = None
    last_error: FireFailure | None = None
    attempts: int = 0
    retry: RetryPolicy | None = None
    actor_type: str | None = None
    actor_key: str | None = None


def info_of(record: StoredReminder) -> ReminderInfo:
    """What a facet is told of a stored reminder."""
    return ReminderInfo(
        name=record.key.name,
        fire_count=record.fire_count,
        max_count=record.max_count,
        next_fire_at=None if record.finished else record.due_at,
        period=record.period,
        missed=record.missed,
        payload=record.payload,
        pending_fire=record.pending_fire,
        last_fired_at=record.last_fired_at,
        last_handled_at=record.last_handled_at,
        last_error=record.last_error,
        attempts=record.attempts,
        retry=record.retry,
        actor_type=record.key.actor_type,
        actor_key=record.key.actor_key,
    )


def new_record(
    actor_type: str,
    actor_key: str,
    registration: ReminderRegistration,
    now: datetime,
    min_period: timedelta,
) -> StoredReminder:
    """The stored reminder a registration makes, checked: fresh (nothing fired, nothing
    pending, unclaimed), due at its first fire, registered at `now`.

    Raises:
        ValueError: naming the field and the value that is not accepted.
    """
    if not isinstance(registration, ReminderRegistration):
        raise ValueError(f"{registration!r} is not a ReminderRegistration")
    name = registration.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"reminder name {name!r} must be a non-empty string")
    due_at = _due_at(registration.due, now)
    period_td = _period(registration.period, min_period)
    max_count = registration.max_count
    if max_count is not None and (
        isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1
    ):
        raise ValueError(f"max_count {max_count!r} must be None or an int of at least 1")
    missed = registration.missed
    if missed not in MISSED_POLICIES:
        raise ValueError(f"missed {missed!r} must be one of {', '.join(MISSED_POLICIES)}")
    retry = None if registration.retry is None else retry_policy(registration.retry)
    key = ReminderKey(actor_type, actor_key, name)
    # Refuse what JSON cannot carry back unchanged, and hand back what the store will.
    payload = json.loads(encode_payload(key, registration.payload))
    return StoredReminder(
        key=key,
        due_at=due_at,
        anchor_at=due_at,
        period=period_td,
        max_count=max_count,
        fire_count=0,
        missed=missed,
        payload=payload,
        pending_fire=None,
        pending_scheduled_at=None,
        finished=False,
        claimed_by=None,
        claimed_until=None,
        created_at=now,
        updated_at=now,
        retry=retry,
    )


# -- validation --------------------------------------------------------------------------------


def _due_at(due: Duration | datetime, now: datetime) -> datetime:
    if isinstance(due, datetime):
        if due.tzinfo is None or due.utcoffset() is None:
            raise ValueError(
                f"due {due!r} is a naive datetime; pass an aware one "
                "(for example datetime(..., tzinfo=timezone.utc)) or a duration"
            )
        try:
            return due.astimezone(UTC)
        except OverflowError:
            raise ValueError(
                f"due {due!r} is outside the datetime range in UTC; accepted are times from "
                "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
            ) from None
    try:
        delay = parse_duration(due)
    except ValueError as error:
        raise ValueError(f"reminder due: {error}") from None
    return now + delay


def _period(period: Duration | None, minimum: timedelta) -> timedelta | None:
    if period is None:
        return None
    try:
        value = parse_duration(period)
    except ValueError as error:
        raise ValueError(f"reminder period: {error}") from None
    if value <= timedelta(0) or value < minimum:
        raise ValueError(
            f"reminder period {period!r} is shorter than the minimum "
            f"{minimum.total_seconds():g}s (the facet's min_period)"
        )
    return value
