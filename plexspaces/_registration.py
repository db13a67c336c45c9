"""Reminder registrations: what a facet asks for, what it is told back, and the checks between.

`ReminderRegistration` is one reminder as a facet registers it, `ReminderInfo` one as a facet
lists it; `new_record` turns a registration into the `StoredReminder` the store keeps, refusing
what cannot be stored or fired (with a `ValueError` naming the field and the value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ._calendar import calendar_schedule
from ._duration import _ACCEPTED as _DURATION_ACCEPTED
from ._duration import Duration, parse_duration, parse_period, positive_duration
from ._retry import RetryPolicy, retry_policy
from ._store import MISSED_POLICIES, FireFailure, ReminderKey, StoredReminder, stored_payload

__all__ = ["ReminderInfo", "ReminderRegistration", "info_of", "new_record"]


@dataclass(frozen=True, slots=True)
class ReminderRegistration:
    """One reminder to register, for `ReminderFacet.register_reminders` (the arguments of
    `register_reminder`, as a value)."""

    name: str
    due: Duration | datetime | None = None
    period: Duration | None = None
    max_count: int | None = None
    payload: Any = None
    missed: str = "once"
    cron: str | None = None
    tz: str | ZoneInfo | None = None
    expires_at: datetime | None = None
    ttl: Duration | None = None
    overwrite: bool = True
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
        cron: the cron expression of a calendar reminder, else None.
        tz: the zone `cron` is read in, else None.
        next_fire_local: `next_fire_at` in the reminder's zone (`tz`); for a reminder without
            one, the same as `next_fire_at` (UTC).
        expires_at: when it expires (aware UTC): no fire at or after it. None: never.
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
    cron: str | None = None
    tz: str | None = None
    next_fire_local: datetime | None = None
    expires_at: datetime | None = None
    last_fired_at: datetime | None = None
    last_handled_at: datetime | None = None
    last_error: FireFailure | None = None
    attempts: int = 0
    retry: RetryPolicy | None = None
    actor_type: str | None = None
    actor_key: str | None = None


def info_of(record: StoredReminder) -> ReminderInfo:
    """What a facet is told of a stored reminder."""
    next_fire_at = None if record.finished else record.due_at
    next_fire_local = next_fire_at
    if next_fire_at is not None and record.tz is not None:
        next_fire_local = next_fire_at.astimezone(ZoneInfo(record.tz))
    return ReminderInfo(
        name=record.key.name,
        fire_count=record.fire_count,
        max_count=record.max_count,
        next_fire_at=next_fire_at,
        period=record.period,
        missed=record.missed,
        payload=record.payload,
        pending_fire=record.pending_fire,
        cron=record.cron,
        tz=record.tz,
        next_fire_local=next_fire_local,
        expires_at=record.expires_at,
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
    max_count = registration.max_count
    if max_count is not None and (
        isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1
    ):
        raise ValueError(f"max_count {max_count!r} must be None or an int of at least 1")
    cron, tz, due = registration.cron, registration.tz, registration.due
    if cron is None:
        if tz is not None:
            raise ValueError(
                f"tz {tz!r} is given without cron; a zone applies to a calendar schedule "
                "(cron=...) only: a due datetime carries its own zone"
            )
        if due is None:
            raise ValueError(
                f"reminder {name!r} has neither due nor cron (due None, cron None); give "
                "exactly one: cron (with an optional tz) or due (with an optional period), "
                f"where due is an aware datetime or a duration: expected {_DURATION_ACCEPTED}"
            )
        due_at = _due_at(due, now)
        period_td, repeats = _period(registration.period, min_period)
        max_count = _repeats(max_count, repeats, registration.period)
    else:
        if due is not None:
            raise ValueError(
                f"reminder {name!r} has both due {due!r} and cron {cron!r}; give exactly one "
                "(a calendar reminder first fires at the first tick of its schedule)"
            )
        if registration.period is not None:
            raise ValueError(
                f"reminder {name!r} has both cron {cron!r} and period "
                f"{registration.period!r}; a calendar reminder repeats on its cron schedule, "
                "so give one of them"
            )
        schedule = calendar_schedule(cron, "UTC" if tz is None else tz)
        cron, tz = schedule.cron, schedule.tz
        # Strictly after: a reminder registered at 09:00:00 on "0 9 * * *" first fires
        # tomorrow, as a crontab line added at that instant would.
        first = schedule.next_after(now)
        if first is None:
            raise ValueError(f"cron {cron!r} has no tick after {now.isoformat()} within 50 years")
        due_at, period_td = first, None
    expires_at = _expires_at(registration.expires_at, registration.ttl, now)
    if expires_at is not None and due_at >= expires_at:
        raise ValueError(
            f"reminder {name!r} would expire at {expires_at.isoformat()}, at or before its "
            f"first fire at {due_at.isoformat()}, so it would never fire; expiry must come "
            "after the first fire"
        )
    missed = registration.missed
    if missed not in MISSED_POLICIES:
        raise ValueError(f"missed {missed!r} must be one of {', '.join(MISSED_POLICIES)}")
    if not isinstance(registration.overwrite, bool):
        raise ValueError(f"overwrite {registration.overwrite!r} must be True or False")
    retry = None if registration.retry is None else retry_policy(registration.retry)
    key = ReminderKey(actor_type, actor_key, name)
    # Refuse what JSON cannot carry back unchanged, and hand back what the store will.
    _, payload = stored_payload(key, registration.payload)
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
        cron=cron,
        tz=tz if cron is not None else None,
        expires_at=expires_at,
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


def _period(period: Duration | None, minimum: timedelta) -> tuple[timedelta | None, int | None]:
    if period is None:
        return None, None
    try:
        value, repeats = parse_period(period)
    except ValueError as error:
        raise ValueError(f"reminder {error}") from None
    if value < minimum:
        raise ValueError(
            f"reminder period {period!r} is shorter than the minimum "
            f"{minimum.total_seconds():g}s (the facet's min_period)"
        )
    return value, repeats


def _repeats(max_count: int | None, repeats: int | None, period: Duration | None) -> int | None:
    """The fire limit from `max_count` and a repeating interval's count ("R5/PT1S")."""
    if repeats is None:
        return max_count
    if max_count is not None and max_count != repeats:
        raise ValueError(
            f"period {period!r} repeats {repeats} times but max_count is {max_count}; give the "
            "count once, or the same count in both"
        )
    return repeats


def _expires_at(
    expires_at: datetime | None, ttl: Duration | None, now: datetime
) -> datetime | None:
    if expires_at is not None and ttl is not None:
        raise ValueError(
            f"expires_at {expires_at!r} and ttl {ttl!r} are both given; give one: an aware "
            "datetime (expires_at) or a duration from now (ttl)"
        )
    if ttl is not None:
        try:
            return now + positive_duration(ttl)
        except ValueError as error:
            raise ValueError(f"reminder ttl: {error}") from None
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise ValueError(f"expires_at {expires_at!r} is not a datetime; pass an aware datetime")
    if expires_at.utcoffset() is None:
        raise ValueError(
            f"expires_at {expires_at!r} is a naive datetime; pass an aware one (for example "
            "datetime(..., tzinfo=timezone.utc)), or a duration from now as ttl"
        )
    try:
        return expires_at.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"expires_at {expires_at!r} is outside the datetime range in UTC"
        ) from None
