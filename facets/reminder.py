"""`ReminderFacet`: durable reminders for a virtual actor.

Reminders are stored through the system's store (an embedded SQLite file by default) and survive
deactivation, crashes and restarts: they keep their fire count and `max_count`, resume with the
remaining time, and activate the virtual actor they belong to when they fire. Each fire arrives
as a `ReminderFired` message; delivery is at-least-once (a fire recorded but not acknowledged
before a crash is delivered again with the same `fire_count`), so handlers should be idempotent
on `(reminder_name, fire_count)`.

A reminder must be able to re-create its actor, so this facet belongs on virtual actors
(registered with `ActorSystem.register_virtual`); attaching it to a spawned actor is an error.
Detaching the facet or deactivating the actor keeps its reminders; `unregister_reminder` removes
one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from plexspaces import (
    ActorContext,
    ConfigSpec,
    Duration,
    Facet,
    FacetError,
    FacetNotAttachedError,
    ReminderInfo,
    ReminderRegistration,
    ReminderService,
    RetryPolicy,
    positive_duration,
)

__all__ = ["DEFAULT_MIN_PERIOD", "ReminderFacet", "ReminderInfo", "ReminderRegistration"]

DEFAULT_MIN_PERIOD = timedelta(seconds=1)


class ReminderFacet(Facet):
    """Durable reminders of one virtual actor.

    Config:
        min_period: the shortest period a periodic reminder may have (duration, default "1s").
        retry: the failure policy of reminders registered without one: a `RetryPolicy`, or a
            mapping of its fields (`{"max_attempts": 5, "backoff": "2s"}`). Default: retry for
            ever, 1 s doubling to 60 s.

    Every method works on this actor's reminders only and may be called from any thread.
    """

    facet_type = "reminder"
    config_schema: ClassVar[dict[str, ConfigSpec]] = {
        "min_period": positive_duration,
        "retry": RetryPolicy.of,
    }

    def __init__(self) -> None:
        super().__init__()
        self._service: ReminderService | None = None
        self._type = ""
        self._key = ""
        self._min_period = DEFAULT_MIN_PERIOD
        self._retry: RetryPolicy | None = None

    def on_attach(self, ctx: ActorContext, config: Mapping[str, Any]) -> None:
        if ctx.actor_type is None or ctx.actor_key is None:
            raise FacetError(
                f"ReminderFacet needs a virtual actor, and {ctx.actor_id!r} was spawned: a "
                "reminder must be able to re-create its actor. Register the class with "
                "system.register_virtual(type_name, cls) and address it through "
                "system.virtual(type_name, key)"
            )
        self._min_period = config.get("min_period", DEFAULT_MIN_PERIOD)
        self._retry = config.get("retry")
        self._type, self._key = ctx.actor_type, ctx.actor_key
        self._service = ctx.system.reminders

    def register_reminder(
        self,
        name: str,
        *,
        due: Duration | datetime | None = None,
        period: Duration | None = None,
        max_count: int | None = None,
        payload: Any = None,
        missed: str = "once",
        cron: str | None = None,
        tz: str | ZoneInfo | None = None,
        expires_at: datetime | None = None,
        ttl: Duration | None = None,
        overwrite: bool = True,
        retry: RetryPolicy | None = None,
    ) -> ReminderInfo:
        """Store a reminder, replacing one of the same name; durable when this returns.

        Give exactly one of `due` (a one-shot, or with `period` a periodic reminder) and `cron`
        (a calendar reminder).

        Args:
            name: non-empty, unique per actor.
            due: when it first fires: a duration from now, or an aware `datetime` (one in the
                past fires at once).
            period: repeat every `period` on the phase of `due`; None for a one-shot. Also
                "R5/PT1S" (every second, 5 times: sets `max_count`), "R/PT1S" and "@every 1h".
            max_count: fire at most this many times in all (kept across restarts).
            payload: JSON-compatible value delivered in every `ReminderFired`.
            missed: periodic ticks that fell due while nothing could fire them: "once" (default)
                fires one of them, then goes on on the original phase; "skip" fires none and
                goes on at the next tick; "all" fires each of them (up to `max_count`). A tick is
                missed when it is more than one period late (for a calendar reminder: when the
                tick after it is past too).
            cron: five cron fields ("0 9 * * MON-FRI"), read in `tz`; it first fires at the
                first tick after now. See the guide for clock changes and month ends.
            tz: the IANA zone of `cron` ("Europe/Prague"); default "UTC". Only with `cron`.
            expires_at: an aware datetime: no fire at or after it, and the reminder is then
                deleted. Must come after the first fire.
            ttl: the same as a duration from now (give one of `expires_at` and `ttl`).
            overwrite: False refuses to replace an existing reminder of this name
                (`ReminderExistsError`), decided atomically by the store.
            retry: what happens when the handler raises (see `RetryPolicy`): delivered again
                after a backoff, and after `max_attempts` failed deliveries dead-lettered while
                the reminder goes on. None: the facet's `retry` config, else retry for ever.

        Raises:
            ValueError: a bad name, due, period, cron, tz, expiry, max_count, payload or policy;
                nothing is stored.
            ReminderExistsError: `overwrite=False` and the reminder exists; nothing is stored.
        """
        return self._require().register(
            self._type,
            self._key,
            name,
            due=due,
            period=period,
            max_count=max_count,
            payload=payload,
            missed=missed,
            min_period=self._min_period,
            cron=cron,
            tz=tz,
            expires_at=expires_at,
            ttl=ttl,
            overwrite=overwrite,
            retry=self._retry if retry is None else retry,
        )

    def register_reminders(
        self, registrations: Iterable[ReminderRegistration]
    ) -> list[ReminderInfo]:
        """Store several reminders in one transaction (much faster than one call each):
        all of them, or none if any is refused. Each replaces one of the same name (unless
        its `overwrite` is False); a name may appear once per call. Durable when this returns.

        Raises:
            ValueError: a registration breaks a rule of `register_reminder`, or a name repeats;
                nothing is stored.
            ReminderExistsError: a registration with `overwrite=False` names an existing
                reminder; nothing is stored.
        """
        service = self._require()
        if self._retry is not None and isinstance(registrations, Iterable):
            default = self._retry
            registrations = [
                replace(registration, retry=default)
                if isinstance(registration, ReminderRegistration) and registration.retry is None
                else registration
                for registration in registrations
            ]
        return service.register_many(
            self._type, self._key, registrations, min_period=self._min_period
        )

    def unregister_reminder(self, name: str) -> bool:
        """Delete the reminder `name` (durably); False if there was none."""
        return self._require().unregister(self._type, self._key, name)

    def get_reminder(self, name: str) -> ReminderInfo | None:
        """The reminder `name`, or None (also once its last fire was acknowledged)."""
        return self._require().get(self._type, self._key, name)

    def list_reminders(self) -> list[ReminderInfo]:
        """This actor's reminders, soonest first."""
        return self._require().list_actor(self._type, self._key)

    def _require(self) -> ReminderService:
        if self._service is None:
            raise FacetNotAttachedError(
                "ReminderFacet is not attached to a virtual actor; attach it from the actor's "
                "on_start with self.attach_facet(ReminderFacet())"
            )
        return self._service
