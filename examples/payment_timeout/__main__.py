"""Payment timeout: an order must be paid within 15 minutes, with a payment reminder at 10.

Usage: python -m examples.payment_timeout

Each order is a virtual actor of type "order" (key: the order id). Creating it registers two
durable one-shot reminders: "payment-reminder" after 10 minutes (notify the customer) and
"payment-timeout" after 15 minutes (cancel the order if still unpaid). Paying cancels both.

Time is a `ManualClock`, so 30 virtual minutes run in a fraction of a second. At 09:07 the process
"restarts": the actor system is shut down and a new one opens the same SQLite file; the reminders
come back from the store, each order's status from its own JSON file.
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

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
REMINDER_AFTER = timedelta(minutes=10)
TIMEOUT_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class CreateOrder:
    customer_id: str
    total: str


@dataclass(frozen=True)
class PaymentReceived:
    amount: str


@dataclass(frozen=True)
class GetStatus:
    """Answered with the order's status and its pending reminders, as text."""


def hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


class OrderActor(Actor):
    """One order. Reminders are durable; the order's own fields are kept in `<state_dir>/<id>.json`
    because an actor's memory is gone when the process stops."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.order: dict[str, Any] | None = None

    def on_start(self) -> None:
        # Runs on every activation: attach the facets, reload what the last activation saved.
        # The short idle timeout makes orders sleep between events, so reminders wake them up.
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "2m"})
        self.attach_facet(ReminderFacet())
        self.path = self.state_dir / f"{self.ctx.actor_key}.json"
        if self.path.exists():
            self.order = json.loads(self.path.read_text())

    def save(self) -> None:
        # Replace the file atomically: a crash leaves the old state or the new, never half.
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.order))
        os.replace(partial, self.path)

    def say(self, text: str) -> None:
        sys.stdout.write(
            f"{hhmm(self.ctx.clock.now())}  {self.ctx.actor_key}: {text}" + "\n"
        )  # one write: whole lines from every thread

    def on_receive(self, message: Any) -> Any:
        match message:
            case CreateOrder(customer_id, total):
                if self.order is None:  # placing an order twice keeps its payment window
                    reminders = self.facet(ReminderFacet)
                    # Reminders first, state second: a crash in between leaves reminders that
                    # find no order, never an unpaid order with nothing to time it out.
                    reminders.register_reminder("payment-reminder", due=REMINDER_AFTER)
                    reminders.register_reminder("payment-timeout", due=TIMEOUT_AFTER)
                    self.order = {"customer": customer_id, "total": total, "fired": []}
                    self.order["status"] = "awaiting_payment"
                    self.save()
                    now = self.ctx.clock.now()
                    self.say(
                        f"created for {customer_id}, {total}; reminder at "
                        f"{hhmm(now + REMINDER_AFTER)}, timeout at {hhmm(now + TIMEOUT_AFTER)}"
                    )
                return self.order
            case PaymentReceived(amount) if self.order is not None:
                if self.order["status"] == "awaiting_payment":
                    # State first, reminders second: a fire in between finds the order paid.
                    self.order["status"] = "paid"
                    self.save()
                    reminders = self.facet(ReminderFacet)
                    cancelled = [
                        name
                        for name in ("payment-reminder", "payment-timeout")
                        if reminders.unregister_reminder(name)  # False: already fired
                    ]
                    self.say(f"paid {amount}; cancelled {', '.join(cancelled)}")
                return self.order
            case ReminderFired(reminder_name=name, fire_count=count) if self.order is not None:
                # Delivery is at-least-once: a fire redelivered after a crash is recognised by
                # (name, fire_count), saved with the state change it caused.
                if [name, count] in self.order["fired"]:
                    return None
                self.order["fired"].append([name, count])
                due = hhmm(message.scheduled_at)
                if self.order["status"] != "awaiting_payment":
                    self.say(f"{name} (due {due}) ignored: order is {self.order['status']}")
                elif name == "payment-reminder":
                    self.say(f"{name} (due {due}): notify {self.order['customer']}, 5 min left")
                elif name == "payment-timeout":
                    self.order["status"] = "cancelled"
                    self.say(f"{name} (due {due}): cancelled")
                self.save()  # before returning, so before the fire is acknowledged
            case GetStatus() if self.order is not None:
                pending = self.facet(ReminderFacet).list_reminders()
                due = ", ".join(f"{r.name} {hhmm(r.next_fire_at)}" for r in pending)
                return f"{self.order['status']}, {due or 'no reminders'}"
            case _:
                return super().on_receive(message)
        return None


def open_system(url: str, clock: ManualClock, state_dir: Path) -> ActorSystem:
    system = ActorSystem(storage_url=url, clock=clock)
    # Every activation is OrderActor(state_dir). Registering the type also resumes its reminders.
    system.register_virtual("order", OrderActor, state_dir)
    return system


def advance_to(clock: ManualClock, minute: int) -> None:
    """Move virtual time to `minute` after 09:00, firing every reminder due on the way."""
    clock.advance(START + timedelta(minutes=minute) - clock.now())


def status(system: ActorSystem, order_id: str) -> str:
    return system.virtual("order", order_id).ask(GetStatus(), timeout=5)


def main() -> None:
    clock = ManualClock(start=START)
    state_dir = Path(tempfile.mkdtemp(prefix="plexspaces-payments-"))  # a fresh store per run
    url = f"sqlite:///{state_dir / 'payments.db'}"

    def send(system: ActorSystem, minute: int, order_id: str, message: Any) -> None:
        advance_to(clock, minute)
        system.virtual("order", order_id).ask(message, timeout=5)

    system = open_system(url, clock, state_dir)
    send(system, 0, "ord-100", CreateOrder("cust-42", "99.99"))
    send(system, 0, "ord-101", CreateOrder("cust-7", "25.00"))
    send(system, 0, "ord-102", CreateOrder("cust-13", "310.50"))
    send(system, 5, "ord-100", PaymentReceived("99.99"))
    advance_to(clock, 7)
    existing = ["ord-100", "ord-101", "ord-102"]
    before = {order_id: status(system, order_id) for order_id in existing}
    for order_id in existing:
        print(f"09:07  before restart  {order_id}: {before[order_id]}")
    system.shutdown()  # a clean stop; examples/reminders_example kills a process instead

    system = open_system(url, clock, state_dir)
    after = {order_id: status(system, order_id) for order_id in existing}
    for order_id in existing:
        print(f"09:07  after restart   {order_id}: {after[order_id]}")
    send(system, 9, "ord-103", CreateOrder("cust-42", "42.00"))
    send(system, 12, "ord-101", PaymentReceived("25.00"))
    advance_to(clock, 30)

    for order_id in [*existing, "ord-103"]:
        print(f"09:30  final           {order_id}: {status(system, order_id)}")
    system.shutdown()
    shutil.rmtree(state_dir)


if __name__ == "__main__":
    main()
