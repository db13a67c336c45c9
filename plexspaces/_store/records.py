"""The records of the reminder store, their times, and the rules a record keeps.

A reminder is one `StoredReminder` under its `ReminderKey`. Times are aware UTC `datetime`s in the
API and whole microseconds since the Unix epoch in storage (`to_micros`/`from_micros`).
`validate_reminder` is the one check of a record: a store refuses to write a record that breaks
it, and reports a stored row that breaks it as an `UndecodableReminder`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .._calendar import calendar_schedule
from .._errors import PlexSpacesError
from .._retry import RetryPolicy

__all__ = [
    "BUCKETS",
    "MAX_STORED_INT",
    "MISSED_POLICIES",
    "BucketCountError",
    "DeadLetter",
    "FireChange",
    "FireFailure",
    "NodeInfo",
    "NodeLeases",
    "ReminderKey",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreUnavailableError",
    "StoredReminder",
    "UndecodableReminder",
    "bucket_of",
    "from_micros",
    "to_micros",
    "validate_reminder",
]

MISSED_POLICIES: Final = ("once", "skip", "all")
"""The missed-tick policies a stored reminder may carry."""

MAX_STORED_INT: Final = 2**63 - 1
"""The largest count, and period in microseconds, a store holds: its integer columns are 64-bit
(BIGINT). A record beyond it is refused before a driver would raise `OverflowError`."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)
# The times `from_micros` can return: a datetime whose UTC value lies outside them (an aware
# datetime.max with a negative offset, say) can be given but never read back.
_MIN_MICROS: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND
_MAX_MICROS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND


BUCKETS: Final = 256
"""How many hash buckets the reminders of a cluster fall into (`bucket_of`). The live nodes that
host actors share the buckets out between them, and each node fires the reminders of the buckets
it holds. Every node of one cluster must use the same number: the store records it, and a node
with another number is refused (`BucketCountError`). 256 buckets keep each node's share within a
few percent of an even split for clusters of up to about 25 nodes."""


def bucket_of(actor_type: str, actor_key: str, buckets: int = BUCKETS) -> int:
    """The bucket of the actor `(actor_type, actor_key)`, from 0 to `buckets - 1`: the same on
    every node, process and Python version (a BLAKE2b digest; Python's `hash()` of a str changes
    from process to process). Every reminder of one actor falls into one bucket."""
    digest = hashlib.blake2b(
        f"{actor_type}\0{actor_key}".encode(errors="surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % buckets


class BucketCountError(PlexSpacesError, RuntimeError):
    """This node divides reminders into another number of buckets than the cluster sharing the
    store: the two would disagree on which node fires which reminder."""


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
        ValueError: `value` is naive, not a datetime, or in UTC outside the years 1 to 9999
            (what `datetime` can hold, so what `from_micros` can give back). The message names
            the value.
    """
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a datetime; expected an aware datetime")
    if value.utcoffset() is None:
        raise ValueError(
            f"datetime {value!r} is naive; pass an aware one, "
            "for example datetime(..., tzinfo=datetime.UTC)"
        )
    micros = (value - _EPOCH) // _ONE_MICROSECOND
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueError(
            f"datetime {value!r} is outside the datetime range in UTC; accepted are times "
            "from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
        )
    return micros


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
        cron: the cron expression of a calendar reminder (its ticks, instead of `period`), or
            None. `anchor_at` is then its first tick.
        tz: the IANA zone `cron` is read in; set exactly when `cron` is.
        expires_at: no fire is recorded at or after this time; the reminder is then deleted.
            None: it does not expire.
        retry: what happens when a handler raises; None for the default `RetryPolicy()`.
        attempts: deliveries of the pending fire whose handler raised (0 without one).
        last_fired_at: when its last fire was recorded, or None.
        last_handled_at: when its last fire was acknowledged (handled), or None.
        last_error: what the handler of its last failed delivery raised, cleared when a fire is
            handled; None when the last delivery did not fail.
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
    cron: str | None = None
    tz: str | None = None
    expires_at: datetime | None = None
    retry: RetryPolicy | None = None
    attempts: int = 0
    last_fired_at: datetime | None = None
    last_handled_at: datetime | None = None
    last_error: FireFailure | None = None

    @property
    def position(self) -> tuple[datetime, ReminderKey]:
        """Where `ReminderStore.due` places this record; pass the last one's as `after`.

        A record with a pending fire is placed by that fire's due time (it is redelivered), any
        other by `due_at`.
        """
        when = self.pending_scheduled_at if self.pending_scheduled_at is not None else self.due_at
        return (when, self.key)


@dataclass(frozen=True, slots=True)
class FireFailure:
    """What a reminder's handler raised: the exception's type name and its text.

    Attributes:
        type: the exception's class name (`"ValueError"`).
        text: `str()` of the exception, at most `MAX_ERROR_TEXT` characters.
    """

    type: str
    text: str

    @classmethod
    def of(cls, error: BaseException) -> FireFailure:
        """The failure `error` describes, its text cut to `MAX_ERROR_TEXT` characters."""
        # Kept storable everywhere: no NUL (PostgreSQL text refuses it), no lone surrogates.
        text = str(error).replace("\x00", "\\x00")
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if len(text) > MAX_ERROR_TEXT:
            text = text[: MAX_ERROR_TEXT - 3] + "..."
        return cls(type(error).__name__ or "Exception", text)


MAX_ERROR_TEXT: Final = 2000
"""The most characters of an exception's text a store keeps."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A reminder fire whose handler failed `RetryPolicy.max_attempts` times: kept, not retried.

    Attributes:
        id: its number in the store (positive, never reused within a database).
        actor_type, actor_key: the virtual actor it belongs to.
        reminder_name: the reminder's name.
        fire_count, max_count, scheduled_at, payload: the fire, as it was delivered (a re-drive
            delivers exactly this `ReminderFired` again).
        error: what the handler raised the last time.
        attempts: deliveries that failed, re-drives included.
        dead_at: when it was (last) dead-lettered.
        retry_requested_at: when a re-drive was asked for and not yet done, else None.
    """

    id: int
    actor_type: str
    actor_key: str
    reminder_name: str
    fire_count: int
    max_count: int | None
    scheduled_at: datetime
    payload: Any
    error: FireFailure
    attempts: int
    dead_at: datetime
    retry_requested_at: datetime | None = None

    @property
    def actor_id(self) -> str:
        """The actor as `"<type>/<key>"`."""
        return f"{self.actor_type}/{self.actor_key}"


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


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One live node of a cluster, as its last heartbeat left it (`ReminderStore.live_nodes`).

    Attributes:
        node_id: the node.
        hosts_actors: whether it hosts virtual actors (and so holds buckets and fires
            reminders); a client-only node only sends to them.
        started_at: when it joined (its first heartbeat since it last left).
        lease_until: until when it counts as alive without another heartbeat.
    """

    node_id: str
    hosts_actors: bool
    started_at: datetime
    lease_until: datetime


# -- validation ----------------------------------------------------------------------------------


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
    if period is not None and period // _ONE_MICROSECOND > MAX_STORED_INT:
        raise ValueError(
            f"reminder {key}: period {period!r} is longer than the {MAX_STORED_INT} "
            "microseconds a store holds"
        )
    max_count = record.max_count
    if max_count is not None and (not _is_int(max_count) or not 1 <= max_count <= MAX_STORED_INT):
        raise ValueError(
            f"reminder {key}: max_count {max_count!r} must be None or an int from 1 to "
            f"{MAX_STORED_INT}"
        )
    fire_count = record.fire_count
    if not _is_int(fire_count) or not 0 <= fire_count <= MAX_STORED_INT:
        raise ValueError(
            f"reminder {key}: fire_count {fire_count!r} must be an int from 0 to {MAX_STORED_INT}"
        )
    if max_count is not None and fire_count > max_count:
        raise ValueError(
            f"reminder {key}: fire_count {fire_count!r} is above max_count {max_count!r}"
        )
    _check_schedule(record, key, times_checked)
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
        if not _is_text(claimed_by):
            raise ValueError(
                f"reminder {key}: claimed_by {claimed_by!r} must be a non-empty str without NUL "
                "characters"
            )
        if not times_checked:
            _check_time(record.claimed_until, "claimed_until", key)
    _check_history(record, key, pending, times_checked=times_checked)


def _check_history(
    record: StoredReminder, key: ReminderKey, pending: int | None, *, times_checked: bool
) -> None:
    """The failure policy and history fields of `record` (see `validate_reminder`)."""
    if record.retry is not None and not isinstance(record.retry, RetryPolicy):
        raise ValueError(f"reminder {key}: retry {record.retry!r} must be None or a RetryPolicy")
    attempts = record.attempts
    if not _is_int(attempts) or not 0 <= attempts <= MAX_STORED_INT:
        raise ValueError(
            f"reminder {key}: attempts {attempts!r} must be an int from 0 to {MAX_STORED_INT}"
        )
    if attempts and pending is None:
        raise ValueError(
            f"reminder {key}: attempts {attempts!r} counts failed deliveries of the pending "
            "fire, and there is none"
        )
    for field in ("last_fired_at", "last_handled_at"):
        value = getattr(record, field)
        if value is not None and not times_checked:
            _check_time(value, field, key)
    error = record.last_error
    if error is not None and not (
        isinstance(error, FireFailure) and _is_text(error.type) and isinstance(error.text, str)
    ):
        raise ValueError(
            f"reminder {key}: last_error {error!r} must be None or a FireFailure with a "
            "non-empty type"
        )


def _check_schedule(record: StoredReminder, key: ReminderKey, times_checked: bool) -> None:
    """The calendar schedule and the expiry of `record`."""
    if (record.cron is None) != (record.tz is None):
        raise ValueError(
            f"reminder {key}: cron {record.cron!r} and tz {record.tz!r} must both be set or both "
            "be None"
        )
    if record.cron is not None:
        if record.period is not None:
            raise ValueError(
                f"reminder {key}: a calendar reminder (cron {record.cron!r}) has no period, "
                f"but period is {record.period!r}"
            )
        try:
            calendar_schedule(record.cron, record.tz)
        except ValueError as error:
            raise ValueError(f"reminder {key}: {error}") from None
    if record.expires_at is not None and not times_checked:
        _check_time(record.expires_at, "expires_at", key)


def _check_key(key: Any) -> ReminderKey:
    if not isinstance(key, ReminderKey):
        raise ValueError(f"{key!r} is not a ReminderKey")
    for field in ("actor_type", "actor_key", "name"):
        value = getattr(key, field)
        if not _is_text(value):
            raise ValueError(
                f"reminder key {key!r}: {field} {value!r} must be a non-empty str without "
                "NUL characters"
            )
    return key


def _is_text(value: Any) -> bool:
    """A non-empty str every backend can store: PostgreSQL text cannot hold NUL (SQLite can), so
    a NUL is refused everywhere and data moves between backends."""
    return isinstance(value, str) and bool(value) and "\x00" not in value


def _check_time(value: Any, field: str, key: ReminderKey | None = None) -> int:
    try:
        return to_micros(value)
    except ValueError as error:
        where = f"reminder {key}: " if key is not None else ""
        raise ValueError(f"{where}{field}: {error}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
