"""Durable reminder storage: the records, the `ReminderStore` interface and its shared plumbing.

Nothing about a reminder lives only in memory. Everything it needs to survive a crash is in one
row: when it is due next, its phase anchor, how often it has fired, and the fire
that was recorded but not yet acknowledged. Backends implement `ReminderStore`; `BaseReminderStore`
holds what every backend shares (validation, payload encoding, reporting undecodable rows), so a
backend is only the storage itself.

Rules every backend keeps:

- Times are aware UTC `datetime`s in the API and whole microseconds since the Unix epoch in storage
  (`to_micros`/`from_micros`): exact, portable, and cheap to index.
- No method reads a clock. Whatever depends on the time takes `now` (or `until`) as an argument, so
  a `ManualClock` drives the store exactly as it drives the rest of the system.
- Every method that changes something is durable when it returns, and either changes everything it
  describes or nothing.
- A row that cannot be decoded is never deleted or changed by the store's own processing: it is
  skipped by every query that returns records, logged once (event `reminder.undecodable`) and
  reported by `errors()`. Only an explicit `upsert` or `delete` of its key (a re-registration or an
  unregistration) replaces or removes it.
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import structlog

from ._errors import PlexSpacesError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "MISSED_POLICIES",
    "BaseReminderStore",
    "FireChange",
    "NodeLeases",
    "ReminderKey",
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

MISSED_POLICIES: Final = ("once", "skip", "all")
"""The missed-tick policies a stored reminder may carry."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


class SchemaVersionError(PlexSpacesError, RuntimeError):
    """The database holds reminder tables of a schema version this code does not understand."""


class StoreClosedError(PlexSpacesError, RuntimeError):
    """A reminder store was used after `close()`."""


class StoreUnavailableError(PlexSpacesError, ConnectionError):
    """The database behind the store cannot be reached (server down, network gone, file locked
    for longer than the busy timeout). Nothing was changed by the call that raised it; the
    reminder service retries its own work with backoff until the database is back."""


# -- times ---------------------------------------------------------------------------------------


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of the aware datetime `value` (any offset), exactly.

    Raises:
        ValueError: `value` is naive or not a datetime. The message names the value.
    """
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a datetime; expected an aware datetime")
    if value.utcoffset() is None:
        raise ValueError(
            f"datetime {value!r} is naive; pass an aware one, "
            "for example datetime(..., tzinfo=datetime.UTC)"
        )
    return (value - _EPOCH) // _ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime `micros` microseconds after the Unix epoch.

    Raises:
        ValueError: `micros` is not an int, or is outside the range of `datetime`.
    """
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise ValueError(f"time {micros!r} is not a whole number of microseconds")
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"time {micros!r} microseconds is outside the datetime range") from None


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ReminderKey:
    """What identifies a reminder: its actor's type and key, and its name within that actor.

    Keys order field by field, by code point: the same order the stores use for ties in due time.
    """

    actor_type: str
    actor_key: str
    name: str

    def __str__(self) -> str:
        return f"{self.actor_type}/{self.actor_key}:{self.name}"


@dataclass(frozen=True, slots=True)
class StoredReminder:
    """One stored reminder, as a store returns it and as `upsert` takes it.

    Attributes:
        key: the reminder's identity.
        due_at: when the next fire is due (aware UTC). For a finished reminder, the due time of its
            last fire.
        anchor_at: the phase anchor. Tick k of a periodic reminder (1-based, counted from its
            registration) is due at `anchor_at + (k - 1) * period`; for a one-shot it is the due
            time. Missed-tick policies use it to stay on the original phase.
        period: the period of a periodic reminder, None for a one-shot.
        max_count: the most fires the reminder makes, or None for no limit.
        fire_count: fires recorded so far (kept across restarts; never above `max_count`).
        missed: the missed-tick policy, one of `MISSED_POLICIES`.
        payload: the JSON value handed to every fire.
        pending_fire: the `fire_count` of a fire recorded but not yet acknowledged, else None.
            While set it equals `fire_count`, and no further fire can be recorded.
        pending_scheduled_at: when that pending fire was due; set exactly when `pending_fire` is.
        finished: the last fire was recorded (one-shot fired, or `max_count` reached). Always
            comes with a pending fire: the row is deleted when that fire is acknowledged.
        claimed_by: the node id holding a lease on the reminder, or None.
        claimed_until: until when that lease holds (inclusive); set exactly when `claimed_by` is.
        created_at: when the reminder was (last) registered.
        updated_at: when a registration, fire, acknowledgement or reschedule last changed it.
            Claims and lease renewals do not count as changes.
    """

    key: ReminderKey
    due_at: datetime
    anchor_at: datetime
    period: timedelta | None
    max_count: int | None
    fire_count: int
    missed: str
    payload: Any
    pending_fire: int | None
    pending_scheduled_at: datetime | None
    finished: bool
    claimed_by: str | None
    claimed_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def position(self) -> tuple[datetime, ReminderKey]:
        """Where `ReminderStore.due` places this record; pass the last one's as `after`.

        A record with a pending fire is placed by that fire's due time (it is redelivered), any
        other by `due_at`.
        """
        when = self.pending_scheduled_at if self.pending_scheduled_at is not None else self.due_at
        return (when, self.key)


@dataclass(frozen=True, slots=True)
class FireChange:
    """One change the fire pipeline asks of a reminder it holds (`ReminderStore.record_fires`).

    Attributes:
        record: the reminder exactly as the caller last read or wrote it: the compare-and-set.
        scheduled_at: record a fire that was due at this time. None: record no fire, only move
            the next fire to `next_due_at` (skipping missed ticks).
        next_due_at: when the fire after this one is due; None when this fire is the last.
    """

    record: StoredReminder
    scheduled_at: datetime | None
    next_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class UndecodableReminder:
    """A stored row that could not be decoded: kept in the store, never fired.

    Attributes:
        key: the row's key, as stored.
        error: what is wrong with it.
    """

    key: ReminderKey
    error: str


@dataclass(frozen=True, slots=True)
class NodeLeases:
    """The leases one node holds in the store at one moment (`ReminderStore.lease_holders`).

    Attributes:
        node_id: the node.
        live_claims: its reminder claims that still hold (`claimed_until >= now`).
        expired_claims: its reminder claims that ran out before `now`.
        live_activations: its activation leases that still hold (`lease_until >= now`).
        expired_activations: its activation leases that ran out before `now`.
        lease_until: the latest end among all of them. A node renews all its live leases
            together, so once this is in the past the node has stopped renewing: it crashed, was
            killed, or lost the database, at about this time minus its lease.
    """

    node_id: str
    live_claims: int
    expired_claims: int
    live_activations: int
    expired_activations: int
    lease_until: datetime


# -- validation and payloads ---------------------------------------------------------------------


def validate_reminder(record: StoredReminder, *, times_checked: bool = False) -> None:
    """Check that `record` is a reminder a store may hold; the payload is checked separately.

    The same rules decide whether a stored row can be decoded, so a store never returns a record
    that it would refuse to store. `times_checked` skips checking that the times are aware
    datetimes, for a record whose times were just made by `from_micros` (decoding a row).

    Raises:
        ValueError: the first rule broken, naming the reminder, the field and the value.
    """
    if not isinstance(record, StoredReminder):
        raise ValueError(f"{record!r} is not a StoredReminder")
    key = _check_key(record.key)
    if not times_checked:
        for field in ("due_at", "anchor_at", "created_at", "updated_at"):
            _check_time(getattr(record, field), field, key)
    period = record.period
    if period is not None and (not isinstance(period, timedelta) or period <= timedelta(0)):
        raise ValueError(f"reminder {key}: period {period!r} must be None or a positive timedelta")
    max_count = record.max_count
    if max_count is not None and (not _is_int(max_count) or max_count < 1):
        raise ValueError(f"reminder {key}: max_count {max_count!r} must be None or an int >= 1")
    fire_count = record.fire_count
    if not _is_int(fire_count) or fire_count < 0:
        raise ValueError(f"reminder {key}: fire_count {fire_count!r} must be an int >= 0")
    if max_count is not None and fire_count > max_count:
        raise ValueError(
            f"reminder {key}: fire_count {fire_count!r} is above max_count {max_count!r}"
        )
    if record.missed not in MISSED_POLICIES:
        raise ValueError(
            f"reminder {key}: missed policy {record.missed!r} must be one of "
            f"{', '.join(map(repr, MISSED_POLICIES))}"
        )
    pending = record.pending_fire
    if (pending is None) != (record.pending_scheduled_at is None):
        raise ValueError(
            f"reminder {key}: pending_fire {pending!r} and pending_scheduled_at "
            f"{record.pending_scheduled_at!r} must both be set or both be None"
        )
    if pending is not None:
        if not _is_int(pending) or pending != fire_count or pending < 1:
            raise ValueError(
                f"reminder {key}: pending_fire {pending!r} must equal fire_count {fire_count!r} "
                "(only the last recorded fire can be unacknowledged)"
            )
        if not times_checked:
            _check_time(record.pending_scheduled_at, "pending_scheduled_at", key)
    if not isinstance(record.finished, bool):
        raise ValueError(f"reminder {key}: finished {record.finished!r} must be a bool")
    if record.finished and pending is None:
        raise ValueError(
            f"reminder {key}: a finished reminder must have a pending fire "
            "(the row is deleted when its last fire is acknowledged)"
        )
    claimed_by = record.claimed_by
    if (claimed_by is None) != (record.claimed_until is None):
        raise ValueError(
            f"reminder {key}: claimed_by {claimed_by!r} and claimed_until "
            f"{record.claimed_until!r} must both be set or both be None"
        )
    if claimed_by is not None:
        if not isinstance(claimed_by, str) or not claimed_by:
            raise ValueError(f"reminder {key}: claimed_by {claimed_by!r} must be a non-empty str")
        if not times_checked:
            _check_time(record.claimed_until, "claimed_until", key)


def encode_payload(key: ReminderKey, payload: Any) -> str:
    """The JSON text of `payload`, refusing anything that would not come back as it went in.

    NaN and infinities are refused (not JSON), and so are dict keys that are not strings: JSON
    would turn `{1: "a"}` into `{"1": "a"}`, and a handler looking up `payload[1]` would fail only
    when the reminder fires, perhaps weeks later. Tuples are accepted and come back as lists.

    Raises:
        ValueError: naming the reminder, where in the payload the problem is, and the value.
    """
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        problem = _find_non_json(payload) or str(error)
        raise ValueError(
            f"payload of reminder {key} is not JSON (dict with str keys, list, str, int, finite "
            f"float, bool, None): {problem}"
        ) from None
    lossy = _find_non_json(payload)
    if lossy is not None:
        raise ValueError(f"payload of reminder {key} would not come back as stored: {lossy}")
    return text


def decode_payload(text: Any) -> Any:
    """The value of the stored JSON `text`; strict, so a store never hands out what it refuses.

    Raises:
        ValueError: `text` is not a string of JSON, or holds NaN or an infinity.
    """
    if not isinstance(text, str):
        raise ValueError(f"payload {text!r} is not JSON text")
    return _STRICT_JSON.decode(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"payload holds {name}, which is not JSON")


# One decoder for every row: json.loads with an option builds a new decoder on each call.
_STRICT_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant)


def _find_non_json(payload: Any) -> str | None:
    """Where `payload` stops being plain JSON, described for an error message; None if it is.

    Iterative, so deep nesting costs no recursion, and each container is visited once, so a
    cycle (which json.dumps reports) cannot loop.
    """
    stack: list[tuple[str, Any]] = [("payload", payload)]
    seen: set[int] = set()
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | int):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {value!r}; JSON has no NaN or infinity"
            continue
        if id(value) in seen:
            continue
        if isinstance(value, dict):
            seen.add(id(value))
            for item_key, item in value.items():
                if not isinstance(item_key, str):
                    return (
                        f"{path} has the dict key {item_key!r}; JSON keys are strings, so it "
                        "would come back as another key"
                    )
                stack.append((f"{path}[{item_key!r}]", item))
        elif isinstance(value, list | tuple):
            seen.add(id(value))
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
        else:
            return f"{path} is {value!r} of type {type(value).__name__}"
    return None


def _check_key(key: Any) -> ReminderKey:
    if not isinstance(key, ReminderKey):
        raise ValueError(f"{key!r} is not a ReminderKey")
    for field in ("actor_type", "actor_key", "name"):
        value = getattr(key, field)
        if not isinstance(value, str) or not value:
            raise ValueError(f"reminder key {key!r}: {field} {value!r} must be a non-empty str")
    return key


def _check_time(value: Any, field: str, key: ReminderKey | None = None) -> int:
    try:
        return to_micros(value)
    except ValueError as error:
        where = f"reminder {key}: " if key is not None else ""
        raise ValueError(f"{where}{field}: {error}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the interface -------------------------------------------------------------------------------


class ReminderStore(ABC):
    """Durable storage of reminders: what the reminder service needs, and no more.

    Implementations are safe to call from many threads at once. Every method that changes a row
    is atomic and durable when it returns. Methods whose answer depends on the time take it as an
    argument and never read a clock.
    """

    @abstractmethod
    def upsert(self, reminder: StoredReminder) -> None:
        """Insert `reminder`, or replace the whole row of its key (a re-registration: new counts,
        no pending fire, no claim unless `reminder` says so).

        Raises:
            ValueError: the record breaks `validate_reminder` or its payload is not JSON (see
                `encode_payload`). Nothing is stored.
        """

    @abstractmethod
    def delete(self, key: ReminderKey) -> bool:
        """Delete the reminder `key`; True if there was one (even one that could not be decoded)."""

    @abstractmethod
    def get(self, key: ReminderKey) -> StoredReminder | None:
        """The reminder `key`, or None if there is none (or its row cannot be decoded)."""

    @abstractmethod
    def list_actor(self, actor_type: str, actor_key: str) -> list[StoredReminder]:
        """Every reminder of one actor, finished ones included, ordered by (due_at, name)."""

    @abstractmethod
    def due(
        self,
        until: datetime,
        limit: int,
        *,
        after: tuple[datetime, ReminderKey] | None = None,
    ) -> list[StoredReminder]:
        """One page of the reminders that need a fire delivered, in position order.

        A reminder is returned if it has a pending fire (recorded, never acknowledged: it must be
        delivered again, whatever `until` is), or if it is not finished and `due_at <= until`.
        Its position (`StoredReminder.position`) is `(pending_scheduled_at, key)` when it has a
        pending fire, else `(due_at, key)`. The page holds at most `limit` records, ordered by
        position, each strictly after `after` when given: pass the last record's `position` to
        get the next page. A page shorter than `limit` is the last one. Claims are ignored (see
        `claim_due` for several nodes).

        Raises:
            ValueError: `until` or `after` holds a naive datetime, or `limit` is not an int >= 1.
        """

    @abstractmethod
    def next_due_at(self, *, after: datetime | None = None) -> datetime | None:
        """The earliest `due_at` among unfinished reminders (strictly after `after` if given),
        or None: how long a service may sleep before it has to look again."""

    @abstractmethod
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
        """Record one fire, before it is delivered, as a compare-and-set in one transaction.

        Succeeds only if the reminder exists, is not finished, has no pending fire, its
        `fire_count` equals `expected_fire_count` (and its `due_at` equals `expected_due_at`
        when given), and `max_count` is not reached. Then `fire_count` goes up by one, the new
        count becomes the pending fire due at `scheduled_at`, `due_at` becomes `next_due_at`, and
        `updated_at` becomes `now`. The reminder is finished instead when `next_due_at` is None or
        this fire reaches `max_count` (its `due_at` then stays as it was).

        Passing `expected_due_at` makes a re-registration that happened meanwhile fail the
        compare-and-set even when it has the same `fire_count`.

        Passing `node_id` (with `lease_until`) fences the fire: it succeeds only if no other node
        holds a live claim on the reminder, and the same transaction claims it for `node_id`
        until `lease_until`. A node whose lease ran out while another took over can then never
        record a fire of a reminder that is no longer its own.

        Returns:
            The updated record, or None if the compare-and-set failed (the reminder is gone,
            changed, already has a pending fire, or cannot be decoded).
        """

    @abstractmethod
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
        """Move the next fire to `due_at` without recording a fire (skipping missed ticks).

        The same compare-and-set as `record_fire`, fencing included: the reminder exists, is not
        finished, has no pending fire, its `fire_count` (and `due_at`, if `expected_due_at` is
        given) is as expected, and (with `node_id`) no other node holds a live claim on it.
        Returns the updated record, or None if the compare-and-set failed.
        """

    @abstractmethod
    def acknowledge(
        self,
        key: ReminderKey,
        fire_count: int,
        *,
        now: datetime,
        scheduled_at: datetime | None = None,
    ) -> None:
        """The pending fire `fire_count` was handled: clear it, or delete a finished reminder.

        Does nothing unless the reminder's pending fire is `fire_count` (and was due at
        `scheduled_at`, when given: that tells a fire of an earlier registration apart), so it is
        idempotent and an acknowledgement that comes late changes nothing.
        """

    @abstractmethod
    def record_fires(
        self,
        changes: Sequence[FireChange],
        *,
        now: datetime,
        node_id: str | None = None,
        lease_until: datetime | None = None,
    ) -> list[StoredReminder | None]:
        """Apply many fires (and reschedules) in one transaction, each its own compare-and-set.

        A change with `scheduled_at` is `record_fire(record.key, expected_fire_count=
        record.fire_count, expected_due_at=record.due_at, scheduled_at=..., next_due_at=...)`;
        one without is the matching `reschedule` to `next_due_at`. Fencing (`node_id`,
        `lease_until`) is as for those methods, for every change. A change applies only while
        the row still holds the registration of `record` (payload, anchor, period, max_count,
        missed policy, created_at), so a row re-registered or edited since the caller read it is
        never changed on the strength of an old read. A change whose compare-and-set fails does
        not affect the others.

        Returns:
            One entry per change, in order: the record as stored afterwards, or None where the
            compare-and-set failed (the row is gone, changed, held by another node, or cannot
            be decoded).

        Raises:
            ValueError: a change is not a `FireChange`, has neither `scheduled_at` nor
                `next_due_at`, or names a reminder another change of the batch names too; or a
                datetime is naive. Nothing is changed.
        """

    @abstractmethod
    def acknowledge_fires(self, fires: Sequence[StoredReminder], *, now: datetime) -> int:
        """Acknowledge many handled fires in one transaction: `acknowledge(record.key,
        record.pending_fire, scheduled_at=record.pending_scheduled_at)` for each record, which
        is the reminder as its fire was recorded. A finished reminder is deleted. A row that no
        longer holds the registration of its record (re-registered or edited meanwhile) is left
        alone. Idempotent, like `acknowledge`.

        Returns:
            How many rows were acknowledged (cleared or deleted).

        Raises:
            ValueError: a record has no pending fire, or appears twice. Nothing is changed.
        """

    @abstractmethod
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
        """Claim up to `limit` reminders that `due` would return, for node `node_id`.

        A reminder is claimable when it is unclaimed, its claim expired (`claimed_until < now`),
        or (with `include_own`) `node_id` holds it already; and when its actor has no live
        activation lease held by another node (see `claim_activation`): the node that holds an
        actor's activation is the one that fires its reminders. `actor_types`, when given,
        limits the claim to those actor types (the ones this node serves). Claimed reminders get
        `claimed_by = node_id` and `claimed_until = lease_until`, atomically: two nodes claiming
        at once get disjoint sets. Returns the claimed records in position order, each strictly
        after `after` when given (pass the last record's `position` for the next page). A node
        that loses a race may get fewer than `limit` even though more are due; it gets them on
        its next call.
        """

    @abstractmethod
    def renew_claims(self, node_id: str, *, lease_until: datetime, now: datetime) -> int:
        """Extend to `lease_until` every claim `node_id` still holds (`claimed_until >= now`).

        A claim that expired is not renewed: another node may have taken the reminder over
        meanwhile. The node takes it back, if nobody did, through `claim_due`. Returns how many
        claims were renewed.
        """

    @abstractmethod
    def release_claims(self, node_id: str, keys: Collection[ReminderKey] | None = None) -> int:
        """Drop the claims of `node_id`: all of them (a clean shutdown), or those on `keys`.
        Returns how many were dropped."""

    # -- activation leases ---------------------------------------------------------------------

    @abstractmethod
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
        """Take the activation lease of one virtual actor for node `node_id`, atomically.

        Succeeds when nobody holds it, its lease expired (`lease_until < now`), or `node_id`
        holds it already; the lease then names `activation_id` and lasts until `lease_until`.

        Returns:
            None when the lease is now held by `node_id`, else the id of the node holding it.
        """

    @abstractmethod
    def release_activation(self, actor_type: str, actor_key: str, activation_id: str) -> bool:
        """Drop the activation lease of one actor if it still names `activation_id` (so a late
        release never drops the lease of a newer activation); True if one was dropped."""

    @abstractmethod
    def renew_activations(self, node_id: str, *, lease_until: datetime, now: datetime) -> int:
        """Extend to `lease_until` every activation lease `node_id` still holds
        (`lease_until >= now`); returns how many were renewed."""

    @abstractmethod
    def release_activations(self, node_id: str) -> int:
        """Drop every activation lease of `node_id` (a clean shutdown); returns how many."""

    @abstractmethod
    def activation_holder(self, actor_type: str, actor_key: str, *, now: datetime) -> str | None:
        """The node holding a live activation lease of the actor (`lease_until >= now`), or
        None."""

    @abstractmethod
    def count(self) -> int:
        """How many rows the store holds (undecodable ones included): one cheap query."""

    @abstractmethod
    def errors(self) -> list[UndecodableReminder]:
        """Every stored row that cannot be decoded, ordered by key: checks the whole store."""

    @abstractmethod
    def close(self) -> None:
        """Release what the store holds. Idempotent; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- operator tools (the `plexspaces` command) -----------------------------------------------

    @abstractmethod
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
        """One page of every stored reminder, in `(due_at, key)` order: what an operator browses.

        Unlike `due`, finished reminders and reminders with a pending fire are included, each
        placed by its `due_at`. `actor_type` and `actor_key` keep the reminders of that type or
        key; `due_after` and `due_before` keep those with `due_after < due_at < due_before`. The
        page holds at most `limit` records, each strictly after `after` when given: pass the last
        record's `(due_at, key)` to get the next page. A page shorter than `limit` is the last
        one. Rows that cannot be decoded are skipped (see `errors`) and never shorten a page.

        Raises:
            ValueError: `limit` is not an int >= 1, a datetime is naive, `after` is not a
                `(datetime, ReminderKey)` position, or a filter is not a non-empty str.
        """

    @abstractmethod
    def upsert_many(self, reminders: Iterable[StoredReminder]) -> int:
        """`upsert` every record of `reminders` in one transaction: all of them, or none.

        Every record is checked before anything is written; of several records with one key, the
        last one is stored. Returns how many reminders were written (distinct keys).

        Raises:
            ValueError: a record breaks `validate_reminder` or its payload is not JSON (the
                message names it), or `reminders` is not an iterable of records. Nothing is
                stored.
        """

    @abstractmethod
    def lease_holders(self, now: datetime) -> list[NodeLeases]:
        """Every node that holds a reminder claim or an activation lease, live or expired at
        `now`, ordered by node id: which nodes keep renewing their leases and which stopped.

        Raises:
            ValueError: `now` is naive.
        """


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
        if not _is_int(value) or value < minimum:
            raise ValueError(f"{what} {value!r} must be an int >= {minimum}")
        return value

    @staticmethod
    def _check_text(value: str, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} {value!r} must be a non-empty str")
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
