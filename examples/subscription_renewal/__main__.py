"""Subscription renewal: a 30-day renewal and a 23-day renewal reminder, across a restart.

Usage: python -m examples.subscription_renewal

Each subscription is a virtual actor of type "subscription" (key: its id). Activating it registers
two durable one-shot reminders: "renewal-reminder" after 23 days (notify the customer) and
"renewal" after 30 days (the subscription expires). A manual renewal registers both again under
the same names, which replaces them with reminders counted from the renewal.

Time is a `ManualClock` starting 2026-03-01, so 50 virtual days run in a fraction of a second. On
day 10 the process "restarts": the actor system is shut down and a new one opens the same SQLite
file; the reminders come back from the store, each subscription's state from its own JSON file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired

START = datetime(2026, 3, 1, tzinfo=UTC)
REMINDER_AFTER = timedelta(days=23)
RENEWAL_AFTER = timedelta(days=30)


@dataclass(frozen=True)
class Activate:
    customer_id: str
    plan: str


@dataclass(frozen=True)
class Renew:
    """The customer renewed by hand: a new 30-day period starts now."""


@dataclass(frozen=True)
class GetStatus:
    """Answered with the status, the notifications sent and the pending reminders, as text."""


def day(moment: datetime) -> str:
    """A moment as "day N" after the start, then the time of day (to the microsecond) unless 0."""
    offset = moment - START
    within_day = offset - timedelta(days=offset.days)
    if not within_day:
        return f"day {offset.days}"
    return f"day {offset.days} {(datetime.min + within_day).time().isoformat()}"


class SubscriptionActor(Actor):
    """One subscription. Reminders are durable; its own fields are kept in `<state_dir>/<id>.json`
    because an actor's memory is gone when the process stops."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.sub: dict[str, Any] | None = None

    def on_start(self) -> None:
        # Runs on every activation. Subscriptions sleep between events (idle timeout 1 hour), so
        # each reminder fire wakes its subscription, which reloads its state first.
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1h"})
        self.attach_facet(ReminderFacet())
        self.path = self.state_dir / f"{self.ctx.actor_key}.json"
        if self.path.exists():
            self.sub = json.loads(self.path.read_text())

    def save(self) -> None:
        # Replace the file atomically: a crash leaves the old state or the new, never half.
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.sub))
        os.replace(partial, self.path)

    def say(self, text: str) -> None:
        sys.stdout.write(
            f"{day(self.ctx.clock.now()):<7} {self.ctx.actor_key}: {text}" + "\n"
        )  # one write: whole lines from every thread

    def start_period(self) -> None:
        # Registering under an existing name replaces that reminder in one step, so no moment
        # (and no crash) leaves an active subscription without its renewal.
        reminders = self.facet(ReminderFacet)
        reminders.register_reminder("renewal-reminder", due=REMINDER_AFTER)
        reminders.register_reminder("renewal", due=RENEWAL_AFTER)
        now = self.ctx.clock.now()
        self.say(f"reminder on {day(now + REMINDER_AFTER)}, renewal on {day(now + RENEWAL_AFTER)}")

    def on_receive(self, message: Any) -> Any:
        match message:
            case Activate(customer_id, plan) if self.sub is None:
                # Reminders first, state second: a crash in between leaves reminders that find
                # no subscription, never an active subscription that cannot expire.
                self.say(f"activated for {customer_id}, plan {plan}")
                self.start_period()
                self.sub = {"customer": customer_id, "plan": plan, "status": "active"}
                self.sub |= {"notified": 0, "fired": []}
                self.save()
            case Renew() if self.sub is not None:
                self.say("renewed by hand")
                self.start_period()
                self.sub["status"] = "active"
                self.save()
            case ReminderFired(reminder_name=name, fire_count=count) if self.sub is not None:
                # Delivery is at-least-once: a fire redelivered after a crash is recognised by
                # (name, fire_count, scheduled_at), saved with the state change it caused.
                fire = [name, count, message.scheduled_at.isoformat()]
                if fire in self.sub["fired"]:
                    return None
                self.sub["fired"].append(fire)
                due = day(message.scheduled_at)
                if self.sub["status"] != "active":
                    self.say(f"{name} (due {due}) ignored: {self.sub['status']}")
                elif name == "renewal-reminder":
                    self.sub["notified"] += 1
                    self.say(f"{name} (due {due}): {self.sub['plan']} expires in 7 days")
                elif name == "renewal":
                    self.sub["status"] = "expired"
                    self.say(f"{name} (due {due}): expired")
                self.save()  # before returning, so before the fire is acknowledged
            case GetStatus() if self.sub is not None:
                pending = self.facet(ReminderFacet).list_reminders()
                due = ", ".join(f"{r.name} {day(r.next_fire_at)}" for r in pending)
                return (
                    f"{self.sub['status']}, {self.sub['notified']} notified, "
                    f"{due or 'no reminders'}"
                )
            case _:
                return super().on_receive(message)
        return None


def open_system(url: str, clock: ManualClock, state_dir: Path) -> ActorSystem:
    system = ActorSystem(storage_url=url, clock=clock)
    # Every activation is SubscriptionActor(state_dir). Registering also resumes its reminders.
    system.register_virtual("subscription", SubscriptionActor, state_dir)
    return system


def main() -> None:
    clock = ManualClock(start=START)
    state_dir = Path(tempfile.mkdtemp(prefix="plexspaces-subscriptions-"))  # fresh per run
    url = f"sqlite:///{state_dir / 'subscriptions.db'}"
    keys = ["sub-001", "sub-002"]

    def advance_to(at: timedelta) -> None:
        clock.advance(START + at - clock.now())  # fires every reminder due on the way

    def show(label: str) -> None:
        for key in keys:
            text = system.virtual("subscription", key).ask(GetStatus(), timeout=5)
            print(f"{day(clock.now()):<7} {label:<14} {key}: {text}")

    system = open_system(url, clock, state_dir)
    system.virtual("subscription", "sub-001").ask(Activate("cust-42", "premium"), timeout=5)
    system.virtual("subscription", "sub-002").ask(Activate("cust-7", "basic"), timeout=5)
    advance_to(timedelta(days=10))
    show("before restart")
    system.shutdown()  # a clean stop; examples/reminders_example kills a process instead

    system = open_system(url, clock, state_dir)
    show("after restart")
    advance_to(timedelta(days=20))
    system.virtual("subscription", "sub-002").ask(Renew(), timeout=5)
    # One second before each of sub-001's due times nothing has fired; at it, it has.
    for at in (REMINDER_AFTER, RENEWAL_AFTER):
        advance_to(at - timedelta(seconds=1))
        show("just before")
        advance_to(at)
    advance_to(timedelta(days=50))
    show("final")
    system.shutdown()
    shutil.rmtree(state_dir)


if __name__ == "__main__":
    main()
