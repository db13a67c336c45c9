"""Subscription-renewal example: a 30-day renewal and a 23-day reminder, across a restart.

Usage: python -m examples.subscription_renewal [--keep] [--verbose]

Each subscription is a virtual actor of type "subscription" (key: the subscription id). When a
subscription is activated it registers two durable one-shot reminders: "renewal-reminder" after
23 days (sends a "renewal_reminder" notification if the subscription is still active) and
"renewal" after 30 days (expires the subscription). A manual renewal replaces both with new ones
counted from the renewal.

Everything runs on a `ManualClock` starting 2026-03-01, so 50 days pass in well under a second:

- day 0    sub-001 and sub-002 are activated;
- day 10   the reminders are listed, the actor system is shut down, a new one is opened on the
           same SQLite file and the same clock, and the reminders are listed again: two per
           subscription, with the same next fire times;
- day 20   sub-002 is renewed by hand: its reminders move to day 43 and day 50;
- day 23   sub-001's renewal reminder fires (one second earlier nothing has fired);
- day 30   sub-001's renewal fires and the subscription expires (again: not a second early);
- day 43   sub-002's renewal reminder fires;   day 50  sub-002 expires.

Every fire checks that `ReminderFired.scheduled_at` is exactly the start of the subscription's
period plus 23 or 30 days, and that it was handled at that virtual instant. An actor's fields live
in memory only, so each subscription also keeps its state in a small JSON file next to the
database. The program ends with a table and one `SUMMARY {json}` line for scripts; the exit
status is 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired, ReminderInfo

SUBSCRIPTION_TYPE = "subscription"
RENEWAL = "renewal"
RENEWAL_REMINDER = "renewal-reminder"
RENEWAL_AFTER = timedelta(days=30)
REMINDER_AFTER = timedelta(days=23)
DELAYS = {RENEWAL: RENEWAL_AFTER, RENEWAL_REMINDER: REMINDER_AFTER}
# Subscriptions sleep between events; each reminder has to activate its subscription (and reload
# its state from disk) to be handled.
IDLE_TIMEOUT = "1h"

ACTIVE = "active"
EXPIRED = "expired"

START = datetime(2026, 3, 1, tzinfo=UTC)
RESTART_AT = timedelta(days=10)
MANUAL_RENEWAL_AT = timedelta(days=20)
END_AT = timedelta(days=50)
# How far before a due time the program looks, to show that nothing fires early.
JUST_BEFORE = timedelta(seconds=1)
ASK_TIMEOUT_S = 5.0


# -- messages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivateSubscription:
    """The subscription was paid for the first time; the answer is its state."""

    customer_id: str
    plan: str


@dataclass(frozen=True, slots=True)
class RenewSubscription:
    """The customer renewed by hand: a new 30-day period starts now; the answer is its state."""


@dataclass(frozen=True, slots=True)
class GetSubscription:
    """Asks for a copy of the state (None for a subscription never activated)."""


@dataclass(frozen=True, slots=True)
class GetReminders:
    """Asks for the subscription's stored reminders."""


# -- durable subscription state --------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class HandledFire:
    """A reminder fire the subscription handled, checked against the time it was expected."""

    name: str
    fire_count: int
    scheduled_at: datetime
    handled_at: datetime
    expected_at: datetime
    outcome: str

    @property
    def on_time(self) -> bool:
        return self.scheduled_at == self.expected_at == self.handled_at

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fire_count": self.fire_count,
            "scheduled_at": self.scheduled_at.isoformat(),
            "handled_at": self.handled_at.isoformat(),
            "expected_at": self.expected_at.isoformat(),
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HandledFire:
        return cls(
            name=data["name"],
            fire_count=data["fire_count"],
            scheduled_at=datetime.fromisoformat(data["scheduled_at"]),
            handled_at=datetime.fromisoformat(data["handled_at"]),
            expected_at=datetime.fromisoformat(data["expected_at"]),
            outcome=data["outcome"],
        )


@dataclass(slots=True)
class SubscriptionState:
    """Everything a subscription knows; written to its JSON file after every change."""

    subscription_id: str
    customer_id: str
    plan: str
    status: str
    activated_at: datetime
    # Start of the current 30-day period: the activation, or the latest manual renewal.
    period_start: datetime
    renewed_at: list[datetime] = field(default_factory=list)
    expired_at: datetime | None = None
    notifications: list[datetime] = field(default_factory=list)
    fires: list[HandledFire] = field(default_factory=list)

    def has_handled(self, fired: ReminderFired) -> bool:
        """Whether this exact fire was handled already (delivery is at-least-once)."""
        return any(
            fire.name == fired.reminder_name
            and fire.fire_count == fired.fire_count
            and fire.scheduled_at == fired.scheduled_at
            for fire in self.fires
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "customer_id": self.customer_id,
            "plan": self.plan,
            "status": self.status,
            "activated_at": self.activated_at.isoformat(),
            "period_start": self.period_start.isoformat(),
            "renewed_at": [moment.isoformat() for moment in self.renewed_at],
            "expired_at": _iso(self.expired_at),
            "notifications": [moment.isoformat() for moment in self.notifications],
            "fires": [fire.to_json() for fire in self.fires],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubscriptionState:
        return cls(
            subscription_id=data["subscription_id"],
            customer_id=data["customer_id"],
            plan=data["plan"],
            status=data["status"],
            activated_at=datetime.fromisoformat(data["activated_at"]),
            period_start=datetime.fromisoformat(data["period_start"]),
            renewed_at=[datetime.fromisoformat(text) for text in data["renewed_at"]],
            expired_at=_time(data["expired_at"]),
            notifications=[datetime.fromisoformat(text) for text in data["notifications"]],
            fires=[HandledFire.from_json(fire) for fire in data["fires"]],
        )

    def copy(self) -> SubscriptionState:
        """A deep copy, safe to hand to another thread."""
        return SubscriptionState.from_json(self.to_json())


class StateFile:
    """One subscription's state on disk: `<directory>/<subscription_id>.json`.

    Only the subscription's own actor writes it, and a virtual actor has one activation at a
    time, so no lock is needed. Each save replaces the file atomically.
    """

    def __init__(self, directory: Path, subscription_id: str) -> None:
        self.path = directory / f"{subscription_id}.json"

    def load(self) -> SubscriptionState | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return SubscriptionState.from_json(json.loads(text))

    def save(self, state: SubscriptionState) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


# -- the actor -------------------------------------------------------------------------------------


class SubscriptionActor(Actor):
    """One subscription: activation, manual renewal, the renewal reminder and the expiry.

    `state_dir` is set on a subclass made per run (see `subscription_actor_class`), because a
    virtual actor is constructed by the system with no arguments.
    """

    state_dir: ClassVar[Path]

    def __init__(self) -> None:
        super().__init__()
        self.state: SubscriptionState | None = None
        self._file: StateFile | None = None

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), priority=100, config={"idle_timeout": IDLE_TIMEOUT})
        self.attach_facet(ReminderFacet(), priority=50, config={})
        key = self.ctx.actor_key
        assert key is not None  # always set on a virtual actor
        self._file = StateFile(self.state_dir, key)
        self.state = self._file.load()
        self.ctx.log.info(
            "actor.activated", status=None if self.state is None else self.state.status
        )

    def on_receive(self, message: Any) -> Any:
        match message:
            case ActivateSubscription():
                return self._activate(message)
            case RenewSubscription():
                return self._renew()
            case ReminderFired():
                self._on_reminder(message)
            case GetSubscription():
                return None if self.state is None else self.state.copy()
            case GetReminders():
                return self.facet(ReminderFacet).list_reminders()
            case _:
                return super().on_receive(message)
        return None

    def _activate(self, request: ActivateSubscription) -> SubscriptionState:
        if self.state is not None:
            # Activating twice must not move the renewal date.
            self.ctx.log.warning("subscription.already_activated", status=self.state.status)
            return self.state.copy()
        now = self.ctx.clock.now()
        # Reminders first, state second: a crash in between leaves reminders that find no
        # subscription and do nothing, never an active subscription that cannot expire.
        self._register_period_reminders()
        key = self.ctx.actor_key
        assert key is not None
        self.state = SubscriptionState(
            subscription_id=key,
            customer_id=request.customer_id,
            plan=request.plan,
            status=ACTIVE,
            activated_at=now,
            period_start=now,
        )
        self._save()
        self.ctx.log.info(
            "subscription.activated",
            customer_id=request.customer_id,
            plan=request.plan,
            reminder_at=_day(now + REMINDER_AFTER),
            renewal_at=_day(now + RENEWAL_AFTER),
        )
        return self.state.copy()

    def _renew(self) -> SubscriptionState | None:
        state = self.state
        if state is None:
            self.ctx.log.warning("subscription.unknown")
            return None
        now = self.ctx.clock.now()
        reminders = self.facet(ReminderFacet)
        old = {info.name: info.next_fire_at for info in reminders.list_reminders()}
        # Registering under the same names cancels the old reminders and stores the new ones in
        # one step each, so there is no moment, and no crash, that leaves the subscription
        # active without a renewal reminder (unregister_reminder followed by register_reminder
        # would have such a moment).
        self._register_period_reminders()
        state.status = ACTIVE
        state.period_start = now
        state.renewed_at.append(now)
        self._save()
        self.ctx.log.info(
            "subscription.renewed",
            cancelled={name: _day(at) for name, at in old.items()},
            reminder_at=_day(now + REMINDER_AFTER),
            renewal_at=_day(now + RENEWAL_AFTER),
        )
        return state.copy()

    def _register_period_reminders(self) -> None:
        reminders = self.facet(ReminderFacet)
        reminders.register_reminder(RENEWAL_REMINDER, due=REMINDER_AFTER)
        reminders.register_reminder(RENEWAL, due=RENEWAL_AFTER)

    def _on_reminder(self, fired: ReminderFired) -> None:
        now = self.ctx.clock.now()
        state = self.state
        self.ctx.log.info(
            "reminder.fired",
            reminder=fired.reminder_name,
            fire_count=fired.fire_count,
            scheduled_at=_day(fired.scheduled_at),
        )
        if state is None or fired.reminder_name not in DELAYS:
            self.ctx.log.warning("reminder.ignored", reminder=fired.reminder_name)
            return
        if state.has_handled(fired):
            self.ctx.log.info("reminder.duplicate", reminder=fired.reminder_name)
            return
        expected_at = state.period_start + DELAYS[fired.reminder_name]
        if fired.scheduled_at != expected_at or now != expected_at:
            # Recorded and reported by the program; raising here would only make the reminder
            # service deliver the fire again.
            self.ctx.log.error(
                "reminder.off_schedule",
                reminder=fired.reminder_name,
                expected_at=expected_at.isoformat(),
                scheduled_at=fired.scheduled_at.isoformat(),
                handled_at=now.isoformat(),
            )
        if fired.reminder_name == RENEWAL_REMINDER:
            outcome = self._send_renewal_reminder(state, now)
        else:
            outcome = self._expire(state, now)
        state.fires.append(
            HandledFire(
                name=fired.reminder_name,
                fire_count=fired.fire_count,
                scheduled_at=fired.scheduled_at,
                handled_at=now,
                expected_at=expected_at,
                outcome=outcome,
            )
        )
        # Saved before the handler returns, so before the fire is acknowledged.
        self._save()

    def _send_renewal_reminder(self, state: SubscriptionState, now: datetime) -> str:
        if state.status != ACTIVE:
            return f"skipped: subscription is {state.status}"
        days_left = (state.period_start + RENEWAL_AFTER - now).days
        state.notifications.append(now)
        self.ctx.log.info(
            "notification.renewal_reminder",
            customer_id=state.customer_id,
            plan=state.plan,
            text=f"Your {state.plan} subscription expires in {days_left} days.",
        )
        return "renewal_reminder sent"

    def _expire(self, state: SubscriptionState, now: datetime) -> str:
        if state.status != ACTIVE:
            return f"skipped: subscription is {state.status}"
        state.status = EXPIRED
        state.expired_at = now
        self.ctx.log.info("subscription.expired", customer_id=state.customer_id)
        return "subscription expired"

    def _save(self) -> None:
        assert self._file is not None
        assert self.state is not None
        self._file.save(self.state)


def subscription_actor_class(state_dir: Path) -> type[SubscriptionActor]:
    """`SubscriptionActor` bound to a state directory (virtual actors are built with `cls()`)."""

    class BoundSubscriptionActor(SubscriptionActor):
        pass

    BoundSubscriptionActor.state_dir = state_dir
    return BoundSubscriptionActor


# -- the scenario ----------------------------------------------------------------------------------

SUBSCRIPTIONS = {
    "sub-001": ActivateSubscription(customer_id="cust-42", plan="premium"),
    "sub-002": ActivateSubscription(customer_id="cust-7", plan="basic"),
}
RENEWED_BY_HAND = "sub-002"

# When each subscription's reminders must fire, in days after the start.
EXPECTED_FIRE_DAYS = {
    "sub-001": {RENEWAL_REMINDER: 23.0, RENEWAL: 30.0},
    "sub-002": {RENEWAL_REMINDER: 43.0, RENEWAL: 50.0},
}
# Each subscription's two reminders, next fire in days, when the process restarts on day 10.
EXPECTED_AT_RESTART = {
    "sub-001": {RENEWAL_REMINDER: 23.0, RENEWAL: 30.0},
    "sub-002": {RENEWAL_REMINDER: 23.0, RENEWAL: 30.0},
}


def _day(moment: datetime | None) -> str | None:
    """A moment as "day N HH:MM:SS" after the start, the way the log shows it."""
    if moment is None:
        return None
    offset = moment - START
    clock_time = (datetime.min + timedelta(seconds=offset.seconds)).strftime("%H:%M:%S")
    return f"day {offset.days} {clock_time}"


def day_of(moment: datetime) -> float:
    return (moment - START) / timedelta(days=1)


def advance_to(clock: ManualClock, at: timedelta) -> None:
    """Move virtual time to `at` after the start, firing every reminder due on the way."""
    clock.advance(max(timedelta(0), START + at - clock.now()))


def open_system(url: str, clock: ManualClock, actor_class: type[SubscriptionActor]) -> ActorSystem:
    system = ActorSystem(storage_url=url, clock=clock, name="subscriptions")
    # Registering the type is also what resumes its stored reminders.
    system.register_virtual(SUBSCRIPTION_TYPE, actor_class)
    return system


def ask(system: ActorSystem, key: str, message: Any) -> Any:
    return system.virtual(SUBSCRIPTION_TYPE, key).ask(message, timeout=ASK_TIMEOUT_S)


def reminders_of(
    system: ActorSystem, keys: Sequence[str] = tuple(SUBSCRIPTIONS)
) -> dict[str, dict[str, datetime | None]]:
    """Each subscription's stored reminders and their next fire time, read through the actor."""
    listed: dict[str, dict[str, datetime | None]] = {}
    for key in keys:
        infos: list[ReminderInfo] = ask(system, key, GetReminders())
        listed[key] = {info.name: info.next_fire_at for info in infos}
    return listed


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the subscriptions looked like at one instant (just before or at a due time)."""

    label: str
    at: datetime
    notifications: dict[str, int]
    statuses: dict[str, str | None]


@dataclass(slots=True)
class RunResult:
    """Everything the summary reports."""

    subscriptions: dict[str, SubscriptionState | None] = field(default_factory=dict)
    before_restart: dict[str, dict[str, datetime | None]] = field(default_factory=dict)
    after_restart: dict[str, dict[str, datetime | None]] = field(default_factory=dict)
    after_renewal: dict[str, datetime | None] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    reminders_left: dict[str, list[str]] = field(default_factory=dict)
    virtual_days: float = 0.0
    elapsed_s: float = 0.0

    def fires_at_days(self, key: str) -> dict[str, float]:
        state = self.subscriptions.get(key)
        return {} if state is None else {f.name: day_of(f.scheduled_at) for f in state.fires}

    def exact_fire_times(self) -> bool:
        """Every fire was due at, and handled at, its period start plus 23 or 30 days."""
        fires = [f for s in self.subscriptions.values() if s is not None for f in s.fires]
        return bool(fires) and all(fire.on_time for fire in fires)

    def checkpoint(self, label: str) -> Checkpoint | None:
        return next((c for c in self.checkpoints if c.label == label), None)

    def problems(self) -> list[str]:
        """The checks that failed, each as a sentence; empty when the run behaved."""
        found: list[str] = []
        before = {k: {n: _days(at) for n, at in r.items()} for k, r in self.before_restart.items()}
        if before != EXPECTED_AT_RESTART:
            found.append(f"before the restart the reminders were {before}")
        if self.after_restart != self.before_restart:
            found.append("the reminders changed across the restart")
        renewal_start = START + MANUAL_RENEWAL_AT
        if self.after_renewal != {
            RENEWAL_REMINDER: renewal_start + REMINDER_AFTER,
            RENEWAL: renewal_start + RENEWAL_AFTER,
        }:
            found.append(f"after the manual renewal the reminders were {self.after_renewal}")
        for key, expected in EXPECTED_FIRE_DAYS.items():
            if self.fires_at_days(key) != expected:
                found.append(f"{key} fired at days {self.fires_at_days(key)}, expected {expected}")
        if not self.exact_fire_times():
            found.append("a fire was not due at, or not handled at, its exact period time")
        found.extend(self._checkpoint_problems())
        final = {k: (None if s is None else s.status) for k, s in self.subscriptions.items()}
        if final != dict.fromkeys(SUBSCRIPTIONS, EXPIRED):
            found.append(f"final statuses {final}, expected every subscription expired")
        notified = {
            k: (0 if s is None else len(s.notifications)) for k, s in self.subscriptions.items()
        }
        if notified != dict.fromkeys(SUBSCRIPTIONS, 1):
            found.append(f"renewal reminders sent {notified}, expected one each")
        for key, names in self.reminders_left.items():
            if names:
                found.append(f"{key} still has reminders {names}")
        return found

    def _checkpoint_problems(self) -> list[str]:
        # (label, subscription, notifications, status) that each checkpoint must show.
        expected = [
            ("day 23 - 1s", "sub-001", 0, ACTIVE),
            ("day 23", "sub-001", 1, ACTIVE),
            ("day 23", "sub-002", 0, ACTIVE),
            ("day 30 - 1s", "sub-001", 1, ACTIVE),
            ("day 30", "sub-001", 1, EXPIRED),
            ("day 30", "sub-002", 0, ACTIVE),
        ]
        found: list[str] = []
        for label, key, notifications, status in expected:
            seen = self.checkpoint(label)
            if seen is None:
                found.append(f"no checkpoint {label!r}")
            elif (seen.notifications[key], seen.statuses[key]) != (notifications, status):
                found.append(
                    f"at {label} {key} had {seen.notifications[key]} notification(s) and "
                    f"status {seen.statuses[key]!r}, expected {notifications} and {status!r}"
                )
        return found


def _days(moment: datetime | None) -> float | None:
    return None if moment is None else day_of(moment)


def take_checkpoint(system: ActorSystem, clock: ManualClock, label: str) -> Checkpoint:
    states: dict[str, SubscriptionState | None] = {
        key: ask(system, key, GetSubscription()) for key in SUBSCRIPTIONS
    }
    return Checkpoint(
        label=label,
        at=clock.now(),
        notifications={k: (0 if s is None else len(s.notifications)) for k, s in states.items()},
        statuses={k: (None if s is None else s.status) for k, s in states.items()},
    )


def simulate(workdir: Path, clock: ManualClock, log: FilteringBoundLogger) -> RunResult:
    started = time.perf_counter()
    result = RunResult()
    url = f"sqlite:///{workdir / 'subscriptions.db'}"
    state_dir = workdir / "subscriptions"
    state_dir.mkdir()
    actor_class = subscription_actor_class(state_dir)
    log.info("run.started", database=url, subscription_state=str(state_dir))

    system = open_system(url, clock, actor_class)
    try:
        for key, activation in SUBSCRIPTIONS.items():
            ask(system, key, activation)
        advance_to(clock, RESTART_AT)
        result.before_restart = reminders_of(system)
        log.info("reminders.before_restart", reminders=_printable(result.before_restart))
    finally:
        system.shutdown()
    log.info("system.stopped")

    system = open_system(url, clock, actor_class)
    try:
        log.info("system.restarted")
        result.after_restart = reminders_of(system)
        log.info("reminders.after_restart", reminders=_printable(result.after_restart))

        advance_to(clock, MANUAL_RENEWAL_AT)
        ask(system, RENEWED_BY_HAND, RenewSubscription())
        result.after_renewal = reminders_of(system, [RENEWED_BY_HAND])[RENEWED_BY_HAND]

        # Look one second before each due time, then at it: nothing early, everything on time.
        for label, at in (
            ("day 23 - 1s", REMINDER_AFTER - JUST_BEFORE),
            ("day 23", REMINDER_AFTER),
            ("day 30 - 1s", RENEWAL_AFTER - JUST_BEFORE),
            ("day 30", RENEWAL_AFTER),
        ):
            advance_to(clock, at)
            result.checkpoints.append(take_checkpoint(system, clock, label))
            log.info("checkpoint", label=label, **_checkpoint_fields(result.checkpoints[-1]))

        advance_to(clock, END_AT)
        result.subscriptions = {key: ask(system, key, GetSubscription()) for key in SUBSCRIPTIONS}
        result.reminders_left = {key: list(r) for key, r in reminders_of(system).items()}
    finally:
        system.shutdown()
    result.virtual_days = day_of(clock.now())
    result.elapsed_s = time.perf_counter() - started
    return result


def _printable(listed: dict[str, dict[str, datetime | None]]) -> dict[str, dict[str, str | None]]:
    return {key: {name: _day(at) for name, at in r.items()} for key, r in listed.items()}


def _checkpoint_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        key: f"{checkpoint.statuses[key]}, {checkpoint.notifications[key]} reminder(s) sent"
        for key in SUBSCRIPTIONS
    }


# -- reporting -------------------------------------------------------------------------------------


def summary_record(result: RunResult) -> dict[str, Any]:
    """The machine-readable summary (printed after `SUMMARY `)."""

    def days(listed: dict[str, dict[str, datetime | None]]) -> dict[str, dict[str, float | None]]:
        return {key: {name: _days(at) for name, at in r.items()} for key, r in listed.items()}

    subscriptions: dict[str, Any] = {}
    for key, state in result.subscriptions.items():
        if state is None:
            subscriptions[key] = None
            continue
        subscriptions[key] = {
            "status": state.status,
            "plan": state.plan,
            "activated_at_day": day_of(state.activated_at),
            "renewed_at_day": [day_of(moment) for moment in state.renewed_at],
            "period_start_day": day_of(state.period_start),
            "expired_at_day": _days(state.expired_at),
            "notified_at_day": [day_of(moment) for moment in state.notifications],
            "fires": [
                {
                    "name": fire.name,
                    "fire_count": fire.fire_count,
                    "scheduled_at": fire.scheduled_at.isoformat(),
                    "expected_at": fire.expected_at.isoformat(),
                    "handled_at": fire.handled_at.isoformat(),
                    "on_time": fire.on_time,
                    "outcome": fire.outcome,
                }
                for fire in state.fires
            ],
            "fired_at_day": result.fires_at_days(key),
        }
    return {
        "subscriptions": subscriptions,
        "statuses": {k: (None if s is None else s.status) for k, s in result.subscriptions.items()},
        "notifications": {
            k: (0 if s is None else len(s.notifications)) for k, s in result.subscriptions.items()
        },
        "restart": {
            "at_day": RESTART_AT / timedelta(days=1),
            "before": days(result.before_restart),
            "after": days(result.after_restart),
            "reminders_before": {k: len(r) for k, r in result.before_restart.items()},
            "reminders_after": {k: len(r) for k, r in result.after_restart.items()},
            "preserved": result.after_restart == result.before_restart,
        },
        "manual_renewal": {
            "key": RENEWED_BY_HAND,
            "at_day": MANUAL_RENEWAL_AT / timedelta(days=1),
            "reminders_after": {name: _days(at) for name, at in result.after_renewal.items()},
        },
        "checkpoints": [
            {
                "label": c.label,
                "at": c.at.isoformat(),
                "notifications": c.notifications,
                "statuses": c.statuses,
            }
            for c in result.checkpoints
        ],
        "exact_fire_times": result.exact_fire_times(),
        "reminders_left": sum(len(names) for names in result.reminders_left.values()),
        "virtual_days": result.virtual_days,
        "elapsed_s": round(result.elapsed_s, 3),
        "problems": result.problems(),
    }


def print_summary(result: RunResult) -> None:
    """The human summary, then the `SUMMARY {json}` line."""
    print()
    print(
        f"Subscription renewal: {len(SUBSCRIPTIONS)} subscriptions, {result.virtual_days:g} "
        f"virtual days in {result.elapsed_s:.2f} s"
    )
    print(f"  reminders across the restart on day {RESTART_AT.days} (next fire):")
    for key, before in result.before_restart.items():
        after = result.after_restart.get(key, {})
        for name, at in before.items():
            same = "same" if after.get(name) == at else f"CHANGED to {after.get(name)}"
            shown = "-" if at is None else at.isoformat()
            print(f"    {key}  {name:<17} {shown}  after restart: {same}")
    print(f"  {RENEWED_BY_HAND} renewed by hand on day {MANUAL_RENEWAL_AT.days}; reminders now:")
    for name, at in result.after_renewal.items():
        print(f"    {RENEWED_BY_HAND}  {name:<17} {'-' if at is None else at.isoformat()}")
    print("  fires (due = period start + 23 d / + 30 d):")
    for key, state in result.subscriptions.items():
        for fire in [] if state is None else state.fires:
            print(
                f"    {key}  {fire.name:<17} due {fire.scheduled_at.isoformat()} "
                f"({_day(fire.scheduled_at)}), exact: {'yes' if fire.on_time else 'NO'}, "
                f"{fire.outcome}"
            )
    for checkpoint in result.checkpoints:
        fields = "; ".join(f"{k}: {v}" for k, v in _checkpoint_fields(checkpoint).items())
        print(f"  at {checkpoint.label:<12} {fields}")
    left = sum(len(names) for names in result.reminders_left.values())
    statuses = {k: (None if s is None else s.status) for k, s in result.subscriptions.items()}
    print(f"  final statuses: {statuses}; reminders left: {left}")
    problems = result.problems()
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print(f"  result: {'FAILED' if problems else 'ok'}")
    print("SUMMARY " + json.dumps(summary_record(result)), flush=True)


# -- program ---------------------------------------------------------------------------------------


def configure_logging(clock: ManualClock, *, verbose: bool) -> None:
    """Console logging stamped with the virtual day and time, so the log reads like the story."""
    colors = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def virtual_time(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = _day(clock.now())
        return event_dict

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            virtual_time,
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        # The runtime logs its lifecycle (activation, deactivation, ...) at debug level.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.subscription_renewal",
        description="Subscriptions with a durable 30-day renewal and a 23-day renewal reminder.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary database and state files"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show the runtime's debug events"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    clock = ManualClock(start=START)
    configure_logging(clock, verbose=args.verbose)
    log: FilteringBoundLogger = structlog.get_logger("subscription_renewal")
    # A fresh database and state directory per run, never in the working directory.
    workdir = Path(tempfile.mkdtemp(prefix="plexspaces-subscriptions-"))
    try:
        result = simulate(workdir, clock, log)
    finally:
        if args.keep:
            log.info("run.kept", directory=str(workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(result)
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
