"""The reminder store's interfaces, one for each kind of caller.

- `ReminderRecords`: the reminders and their fires, what the reminder service keeps and fires.
- `LeaseStore`: claims on due reminders and activation leases of virtual actors, for several
  nodes on one database.
- `AdminScans`: what an operator's tools read (the `plexspaces` command).
- `DeadLetterStore`: fires whose handler failed as often as their retry policy allows, kept
  until they are re-driven.

`ReminderStore` is all four: the interface a backend implements and everything else uses.

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

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from .records import (
    DeadLetter,
    FireChange,
    FireFailure,
    NodeInfo,
    NodeLeases,
    ReminderKey,
    StoredReminder,
    UndecodableReminder,
)

__all__ = ["AdminScans", "DeadLetterStore", "LeaseStore", "ReminderRecords", "ReminderStore"]


class ReminderRecords(ABC):
    """The reminders and their fires: registering and listing them, finding what is due,
    recording a fire before it is delivered and acknowledging it after."""

    @abstractmethod
    def upsert(self, reminder: StoredReminder, *, create_only: bool = False) -> None:
        """Insert `reminder`, or replace the whole row of its key (a re-registration: new counts,
        no pending fire, no claim unless `reminder` says so).

        With `create_only`, an unfinished reminder under the key is left as it is and
        `ReminderExistsError` is raised; decided by the database in the write itself, so of
        two concurrent calls exactly one succeeds. A finished one (its last fire recorded) is
        replaced.

        Raises:
            ReminderExistsError: `create_only` and an unfinished reminder has the key.
            ValueError: the record breaks `validate_reminder` or its payload is not JSON (see
                `encode_payload`). Nothing is stored.
        """

    @abstractmethod
    def upsert_many(
        self,
        reminders: Iterable[StoredReminder],
        *,
        create_only: Collection[ReminderKey] = frozenset(),
    ) -> int:
        """`upsert` every record of `reminders` in one transaction: all of them, or none. The
        keys in `create_only` are written as `upsert(..., create_only=True)` writes them: if any
        of them is taken, `ReminderExistsError` is raised and nothing is written.

        Every record is checked before anything is written; of several records with one key, the
        last one is stored. Returns how many reminders were written (distinct keys).

        Raises:
            ValueError: a record breaks `validate_reminder` or its payload is not JSON (the
                message names it), or `reminders` is not an iterable of records. Nothing is
                stored.
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
        one without is the matching `reschedule` to `next_due_at`. A change with neither
        deletes a reminder that expired (only one with `expires_at`), under the same
        compare-and-set as a fire; its entry is the record as it was. Fencing (`node_id`,
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
                `next_due_at` for a reminder without `expires_at`, or names a reminder another
                change of the batch names too; or a datetime is naive. Nothing is changed.
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
    def record_failure(
        self, record: StoredReminder, error: FireFailure, *, now: datetime
    ) -> StoredReminder | None:
        """The pending fire of `record` was delivered and its handler raised `error`: count the
        failed delivery (`attempts` + 1), keep `error` as `last_error`, `updated_at` = `now`. The
        fire stays pending, to be delivered again.

        A compare-and-set: applies only while the row holds the registration of `record` with
        the same pending fire and the same `attempts`, so two reports of one failure count once.

        Returns:
            The record as stored afterwards, or None if the compare-and-set failed.

        Raises:
            ValueError: `record` has no pending fire, `error` is not a `FireFailure`, or `now`
                is naive. Nothing is changed.
        """

    @abstractmethod
    def find(
        self,
        limit: int,
        *,
        actor_type: str | None = None,
        name_prefix: str | None = None,
        after: ReminderKey | None = None,
    ) -> list[StoredReminder]:
        """One page of reminders in key order (actor type, actor key, name), finished ones
        included: of one actor type when `actor_type` is given, and whose name starts with
        `name_prefix` when that is given. At most `limit` records, each strictly after `after`
        when given (pass the last record's key for the next page); a shorter page is the last.
        Rows that cannot be decoded are skipped (and reported), never shorten a page.

        Raises:
            ValueError: `limit` is not an int >= 1, a filter is not a non-empty str, or `after`
                is not a `ReminderKey`.
        """

    @abstractmethod
    def count_matching(
        self, *, actor_type: str | None = None, name_prefix: str | None = None
    ) -> int:
        """How many rows `find` would page through, undecodable ones included: one query."""

    @abstractmethod
    def delete_many(self, keys: Collection[ReminderKey]) -> int:
        """Delete the reminders `keys` in one transaction (rows that cannot be decoded
        included: this is an explicit delete); returns how many rows were deleted.

        Raises:
            ValueError: a key is not a `ReminderKey`. Nothing is deleted.
        """

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


class LeaseStore(ABC):
    """Leases of nodes that share one database: a node heartbeats its membership, holds the
    hash buckets it fires the reminders of, claims the due reminders it fires, and holds an
    activation lease on every virtual actor it hosts. A lease lasts until the time its node
    passed and is renewed by that node; one that ran out can be taken by another node. A node is
    dead when its lease ran out, never because a connection dropped."""

    # -- membership ----------------------------------------------------------------------------

    @abstractmethod
    def cluster_id(self) -> str:
        """The id of the cluster of nodes that share this store: made once, with the store's
        tables, and the same for every node that opens it. Nodes find each other on a
        transport by it, apart from the nodes of any other store."""

    @abstractmethod
    def heartbeat(
        self, node_id: str, *, hosts_actors: bool, lease_until: datetime, now: datetime
    ) -> None:
        """Record that node `node_id` is alive until `lease_until` (and whether it hosts actors).

        A node without a row, or whose last lease ended before `now` (it was counted dead
        meanwhile), joins anew: its `started_at` becomes `now`. Otherwise only the lease and
        `hosts_actors` change.

        Raises:
            ValueError: `node_id` is not a non-empty str, a datetime is naive, or `lease_until`
                is not later than `now`. Nothing is stored.
        """

    @abstractmethod
    def live_nodes(self, now: datetime) -> list[NodeInfo]:
        """Every node whose lease holds at `now` (`lease_until >= now`), ordered by node id."""

    @abstractmethod
    def leave(self, node_id: str) -> int:
        """Node `node_id` leaves the cluster (a clean shutdown): its row is deleted and every
        bucket it holds is released at once, with its reminder claims in them, so the other
        nodes take them over on their next round instead of after the lease. Returns how many
        buckets were released."""

    # -- buckets -------------------------------------------------------------------------------

    @abstractmethod
    def prepare_buckets(self, buckets: int) -> None:
        """Make sure the store holds the cluster's `buckets` bucket rows, creating them (unowned)
        when it holds none. Idempotent, and safe for nodes starting at once.

        Raises:
            BucketCountError: the store holds another number of buckets (a node of another
                version divides reminders differently); the message names both numbers.
            ValueError: `buckets` is not an int of at least 1.
        """

    @abstractmethod
    def bucket_owners(self, now: datetime) -> dict[int, str]:
        """The node holding each bucket whose lease holds at `now` (`lease_until >= now`);
        buckets nobody holds, or whose lease ran out, are absent."""

    @abstractmethod
    def claim_buckets(
        self, node_id: str, *, count: int, lease_until: datetime, now: datetime
    ) -> list[int]:
        """Take up to `count` buckets that nobody holds or whose lease ran out (`lease_until <
        now`) for `node_id` until `lease_until`, lowest first, atomically: nodes claiming at once
        get disjoint sets (on PostgreSQL rows another node is taking are skipped, not waited
        for). Returns the buckets taken, ascending; fewer than `count` when not enough are free.

        Raises:
            ValueError: `count` is not an int >= 0, a datetime is naive, or `lease_until` is not
                later than `now`.
        """

    @abstractmethod
    def renew_buckets(self, node_id: str, *, lease_until: datetime, now: datetime) -> list[int]:
        """Extend to `lease_until` every bucket lease `node_id` still holds (`lease_until >=
        now`); returns those buckets, ascending. A lease that ran out is not renewed: another
        node may have taken the bucket meanwhile."""

    @abstractmethod
    def release_buckets(self, node_id: str, buckets: Collection[int] | None = None) -> int:
        """Drop the leases of `node_id` on `buckets` (all of its buckets when None), and in the
        same transaction its claims on the reminders of those buckets, so the bucket's next
        holder claims them at once. Returns how many bucket leases were dropped."""

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
        buckets: Collection[int] | None = None,
        follow_activations: bool = True,
    ) -> list[StoredReminder]:
        """Claim up to `limit` reminders that `due` would return, for node `node_id`.

        A reminder is claimable when it is unclaimed, its claim expired (`claimed_until < now`),
        or (with `include_own`) `node_id` holds it already; and, with `follow_activations`, when
        its actor has no live activation lease held by another node (see `claim_activation`):
        the node that holds an actor's activation is then the one that fires its reminders.
        `buckets`, when given, limits the claim to reminders in those buckets (see `bucket_of`)
        and, with `follow_activations`, to those of actors `node_id` holds a live activation
        of. `actor_types`, when given, limits the claim to those actor types (the ones this node
        serves). Claimed reminders get
        `claimed_by = node_id` and `claimed_until = lease_until`, atomically: two nodes claiming
        at once get disjoint sets. Returns the claimed records in position order, each strictly
        after `after` when given (pass the last record's `position` for the next page). A node
        that loses a race may get fewer than `limit` even though more are due; it gets them on
        its next call.
        """

    @abstractmethod
    def renew_claims(
        self,
        node_id: str,
        *,
        lease_until: datetime,
        now: datetime,
        buckets: Collection[int] | None = None,
        follow_activations: bool = True,
    ) -> int:
        """Extend to `lease_until` every claim `node_id` still holds (`claimed_until >= now`);
        with `buckets`, only its claims in those buckets (and, with `follow_activations`, on the
        actors it holds a live activation of): a claim left in a bucket the node lost runs out.

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
    def held_activations(self, node_id: str, *, now: datetime) -> set[tuple[str, str, str]]:
        """`(actor_type, actor_key, activation_id)` of every live activation lease (`lease_until
        >= now`) that `node_id` holds: one query, for a node to check the activations it runs
        against the leases it still has.

        Raises:
            ValueError: a bad node id, or `now` is naive.
        """

    @abstractmethod
    def release_activations(self, node_id: str) -> int:
        """Drop every activation lease of `node_id` (a clean shutdown); returns how many."""

    @abstractmethod
    def activation_holder(self, actor_type: str, actor_key: str, *, now: datetime) -> str | None:
        """The node holding a live activation lease of the actor (`lease_until >= now`), or
        None."""


class AdminScans(ABC):
    """What an operator's tools read (the `plexspaces` command): every reminder, page by page,
    and the nodes that hold leases."""

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
    def lease_holders(self, now: datetime) -> list[NodeLeases]:
        """Every node that holds a reminder claim or an activation lease, live or expired at
        `now`, ordered by node id: which nodes keep renewing their leases and which stopped.

        Raises:
            ValueError: `now` is naive.
        """


class DeadLetterStore(ABC):
    """Fires whose handler failed as often as their `RetryPolicy` allows. A dead letter is kept
    until it is re-driven successfully: nothing deletes one otherwise. Ids are positive, ordered
    by when the letter was first stored, and never reused within a database."""

    @abstractmethod
    def dead_letter(
        self, record: StoredReminder, error: FireFailure, *, now: datetime
    ) -> tuple[DeadLetter, StoredReminder | None] | None:
        """The pending fire of `record` failed for the last time: store it as a dead letter
        (its attempts `record.attempts + 1`, `error`, dead at `now`) and, in the same
        transaction, clear the pending fire so the reminder goes on with its next tick (its
        `last_error` kept, `attempts` back to 0), or delete the reminder when that fire was its
        last. The same compare-and-set as `record_failure`.

        Returns:
            The dead letter and the reminder as stored afterwards (None when it was deleted), or
            None if the compare-and-set failed: nothing was stored.

        Raises:
            ValueError: as `record_failure`. Nothing is changed.
        """

    @abstractmethod
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
        """One page of dead letters by id, each with an id above `after` when given (pass the
        last one's id for the next page), of the actor type, actor key and reminder name given,
        among `ids` when given, and with a re-drive asked for when `requested`. A letter whose
        payload cannot be decoded is skipped and reported (event `dead_letter.undecodable`),
        never deleted.

        Raises:
            ValueError: `limit` is not an int >= 1, `after` or an id is not an int >= 0, or a
                filter is not a non-empty str.
        """

    @abstractmethod
    def request_retry(self, ids: Collection[int], *, now: datetime) -> int:
        """Ask for the dead letters `ids` to be delivered again: their `retry_requested_at`
        becomes `now` (one already asked for keeps its time). A node serving the actor type
        takes them (`take_retries`); a node that is down takes them when it starts. Returns how
        many of `ids` exist.

        Raises:
            ValueError: an id is not an int >= 0, or `now` is naive. Nothing is changed.
        """

    @abstractmethod
    def take_retries(
        self,
        node_id: str,
        *,
        now: datetime,
        lease_until: datetime,
        limit: int,
        actor_types: Collection[str] | None = None,
    ) -> list[DeadLetter]:
        """Take up to `limit` requested re-drives (oldest request first) for node `node_id` to
        deliver, atomically: those not held by another node whose hold lasts past `now`, of
        `actor_types` when given. Each is held by `node_id` until `lease_until`, so two nodes
        never take one letter at once, and one whose node died is taken again later.

        Raises:
            ValueError: a bad node id, naive datetime, `limit` or actor type.
        """

    @abstractmethod
    def finish_retry(self, letter_id: int, node_id: str) -> bool:
        """The re-drive of `letter_id` taken by `node_id` was handled: delete the letter. True if
        it was deleted (False: it is gone, or another node holds it now)."""

    @abstractmethod
    def fail_retry(
        self, letter_id: int, node_id: str, error: FireFailure, *, now: datetime
    ) -> bool:
        """The re-drive of `letter_id` taken by `node_id` failed with `error`: back to a plain
        dead letter (one attempt more, `error`, dead at `now`, no request, no holder). True if
        it was changed."""


class ReminderStore(ReminderRecords, LeaseStore, AdminScans, DeadLetterStore):
    """Durable storage of reminders: what the reminder service needs, and no more.

    Implementations are safe to call from many threads at once. Every method that changes a row
    is atomic and durable when it returns. Methods whose answer depends on the time take it as an
    argument and never read a clock.
    """
