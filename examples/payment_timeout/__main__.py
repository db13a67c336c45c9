"""Payment-timeout example: orders that must be paid within 15 minutes, with a reminder at 10.

Usage: python -m examples.payment_timeout [--keep] [--verbose]

Each order is a virtual actor of type "order" (key: the order id). Creating an order registers two
durable one-shot reminders on it: "payment-reminder" after 10 minutes (sends the customer a
notification) and "payment-timeout" after 15 minutes (cancels the order if it is still awaiting
payment). A payment cancels both reminders and marks the order paid.

Everything runs on a `ManualClock`, so 30 minutes of order traffic take well under a second:

- 09:00  ord-100, ord-101 and ord-102 are created;
- 09:05  ord-100 is paid (both reminders cancelled: no notification, no cancellation);
- 09:07  the process "restarts": the actor system is shut down and a new one is opened on the
         same SQLite file and the same clock; the reminders resume from the file;
- 09:09  ord-103 is created (by the new system);
- 09:10  payment reminders for ord-101 and ord-102;
- 09:12  ord-101 is paid (its timeout is cancelled; the reminder had already fired);
- 09:15  ord-102 times out and is cancelled;
- 09:19  payment reminder for ord-103;   09:24  ord-103 times out and is cancelled.

Reminders are durable, but an actor's fields live in memory and vanish with the process, so each
order also keeps its state in a small JSON file of its own, next to the database. The program ends
with a table, checks that no order is left awaiting payment and that every reminder fired at
exactly its virtual time, and prints one `SUMMARY {json}` line for scripts. The exit status is 0
when every check holds.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired, ReminderInfo

ORDER_TYPE = "order"
PAYMENT_REMINDER = "payment-reminder"
PAYMENT_TIMEOUT = "payment-timeout"
REMINDER_AFTER = timedelta(minutes=10)
TIMEOUT_AFTER = timedelta(minutes=15)
# Short enough that orders deactivate between events, so each reminder has to activate its order
# (and reload its state from disk) to be handled.
IDLE_TIMEOUT = "2m"

AWAITING_PAYMENT = "awaiting_payment"
PAID = "paid"
CANCELLED = "cancelled"

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
RESTART_AT = timedelta(minutes=7)
END_AT = timedelta(minutes=30)
ASK_TIMEOUT_S = 5.0


# -- messages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateOrder:
    """An order was placed; the answer is the order's state."""

    customer_id: str
    total: str


@dataclass(frozen=True, slots=True)
class PaymentReceived:
    """The payment provider confirmed the payment; the answer is the order's state."""

    amount: str


@dataclass(frozen=True, slots=True)
class GetOrder:
    """Asks for a copy of the order's state (None for an order never created)."""


@dataclass(frozen=True, slots=True)
class GetReminders:
    """Asks for the order's stored reminders."""


# -- durable order state ---------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _required_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class Notification:
    """A message sent to the customer."""

    kind: str
    customer_id: str
    text: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class HandledFire:
    """A reminder fire the order handled, and what it did about it."""

    name: str
    fire_count: int
    scheduled_at: datetime
    handled_at: datetime
    outcome: str


@dataclass(slots=True)
class OrderState:
    """Everything an order knows; written to its JSON file after every change."""

    order_id: str
    customer_id: str
    total: str
    status: str
    created_at: datetime
    paid_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    notifications: list[Notification] = field(default_factory=list)
    fires: list[HandledFire] = field(default_factory=list)

    def has_handled(self, fired: ReminderFired) -> bool:
        """Whether this exact fire was handled already (delivery is at-least-once)."""
        return any(
            fire.name == fired.reminder_name and fire.fire_count == fired.fire_count
            for fire in self.fires
        )

    def fire_of(self, name: str) -> HandledFire | None:
        return next((fire for fire in self.fires if fire.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "total": self.total,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "paid_at": _iso(self.paid_at),
            "cancelled_at": _iso(self.cancelled_at),
            "cancel_reason": self.cancel_reason,
            "notifications": [
                {
                    "kind": note.kind,
                    "customer_id": note.customer_id,
                    "text": note.text,
                    "sent_at": _iso(note.sent_at),
                }
                for note in self.notifications
            ],
            "fires": [
                {
                    "name": fire.name,
                    "fire_count": fire.fire_count,
                    "scheduled_at": _iso(fire.scheduled_at),
                    "handled_at": _iso(fire.handled_at),
                    "outcome": fire.outcome,
                }
                for fire in self.fires
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderState:
        return cls(
            order_id=data["order_id"],
            customer_id=data["customer_id"],
            total=data["total"],
            status=data["status"],
            created_at=_required_time(data["created_at"]),
            paid_at=_time(data["paid_at"]),
            cancelled_at=_time(data["cancelled_at"]),
            cancel_reason=data["cancel_reason"],
            notifications=[
                Notification(
                    kind=note["kind"],
                    customer_id=note["customer_id"],
                    text=note["text"],
                    sent_at=_required_time(note["sent_at"]),
                )
                for note in data["notifications"]
            ],
            fires=[
                HandledFire(
                    name=fire["name"],
                    fire_count=fire["fire_count"],
                    scheduled_at=_required_time(fire["scheduled_at"]),
                    handled_at=_required_time(fire["handled_at"]),
                    outcome=fire["outcome"],
                )
                for fire in data["fires"]
            ],
        )

    def copy(self) -> OrderState:
        """A deep copy, safe to hand to another thread."""
        return OrderState.from_json(self.to_json())


class OrderFile:
    """One order's state on disk: `<directory>/<order_id>.json`.

    Only the order's own actor writes it, and a virtual actor has one activation at a time, so no
    lock is needed. Each save replaces the file atomically: a crash leaves the old state or the
    new one, never half of each.
    """

    def __init__(self, directory: Path, order_id: str) -> None:
        self.path = directory / f"{order_id}.json"

    def load(self) -> OrderState | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return OrderState.from_json(json.loads(text))

    def save(self, state: OrderState) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


# -- the actor -------------------------------------------------------------------------------------


class OrderActor(Actor):
    """One order: creation, payment, the payment reminder and the payment timeout.

    `state_dir` is set on a subclass made per run (see `order_actor_class`), because a virtual
    actor is constructed by the system with no arguments.
    """

    state_dir: ClassVar[Path]

    def __init__(self) -> None:
        super().__init__()
        self.order: OrderState | None = None
        self._file: OrderFile | None = None

    def on_start(self) -> None:
        # Runs on every activation: attach the facets, then reload the state the last
        # activation (possibly in another process) wrote.
        self.attach_facet(VirtualActorFacet(), priority=100, config={"idle_timeout": IDLE_TIMEOUT})
        self.attach_facet(ReminderFacet(), priority=50, config={})
        order_id = self.ctx.actor_key
        assert order_id is not None  # always set on a virtual actor
        self._file = OrderFile(self.state_dir, order_id)
        self.order = self._file.load()
        self.ctx.log.info(
            "actor.activated", status=None if self.order is None else self.order.status
        )

    def on_receive(self, message: Any) -> Any:
        match message:
            case CreateOrder():
                return self._create(message)
            case PaymentReceived():
                return self._pay(message)
            case ReminderFired():
                self._on_reminder(message)
            case GetOrder():
                return None if self.order is None else self.order.copy()
            case GetReminders():
                return self.facet(ReminderFacet).list_reminders()
            case _:
                return super().on_receive(message)
        return None

    def _create(self, request: CreateOrder) -> OrderState:
        if self.order is not None:
            # Placing the same order twice must not restart its payment window.
            self.ctx.log.warning("order.already_created", status=self.order.status)
            return self.order.copy()
        now = self.ctx.clock.now()
        reminders = self.facet(ReminderFacet)
        payload = {"customer_id": request.customer_id}
        # Reminders first, state second: a crash in between leaves reminders that find no order
        # and do nothing, never an order awaiting payment with nothing to time it out.
        reminders.register_reminder(PAYMENT_REMINDER, due=REMINDER_AFTER, payload=payload)
        reminders.register_reminder(PAYMENT_TIMEOUT, due=TIMEOUT_AFTER, payload=payload)
        order_id = self.ctx.actor_key
        assert order_id is not None
        self.order = OrderState(
            order_id=order_id,
            customer_id=request.customer_id,
            total=request.total,
            status=AWAITING_PAYMENT,
            created_at=now,
        )
        self._save()
        self.ctx.log.info(
            "order.created",
            customer_id=request.customer_id,
            total=request.total,
            reminder_at=_clock_time(now + REMINDER_AFTER),
            timeout_at=_clock_time(now + TIMEOUT_AFTER),
        )
        return self.order.copy()

    def _pay(self, payment: PaymentReceived) -> OrderState | None:
        order = self.order
        if order is None:
            self.ctx.log.warning("payment.unknown_order", amount=payment.amount)
            return None
        if order.status != AWAITING_PAYMENT:
            self.ctx.log.warning("payment.ignored", status=order.status, amount=payment.amount)
            return order.copy()
        order.status = PAID
        order.paid_at = self.ctx.clock.now()
        # State first, reminders second: a crash in between leaves fires that find the order paid
        # and do nothing.
        self._save()
        reminders = self.facet(ReminderFacet)
        cancelled = [
            name
            for name in (PAYMENT_REMINDER, PAYMENT_TIMEOUT)
            if reminders.unregister_reminder(name)
        ]
        self.ctx.log.info("payment.received", amount=payment.amount, reminders_cancelled=cancelled)
        return order.copy()

    def _on_reminder(self, fired: ReminderFired) -> None:
        self.ctx.log.info(
            "reminder.fired",
            reminder=fired.reminder_name,
            fire_count=fired.fire_count,
            scheduled_at=_clock_time(fired.scheduled_at),
        )
        order = self.order
        if order is None:
            self.ctx.log.warning("reminder.no_order", reminder=fired.reminder_name)
            return
        if order.has_handled(fired):
            # A redelivery after a crash between our save and the acknowledgement.
            self.ctx.log.info(
                "reminder.duplicate", reminder=fired.reminder_name, fire_count=fired.fire_count
            )
            return
        handlers: dict[str, Callable[[OrderState, ReminderFired], str]] = {
            PAYMENT_REMINDER: self._send_payment_reminder,
            PAYMENT_TIMEOUT: self._time_out,
        }
        handler = handlers.get(fired.reminder_name)
        if handler is None:
            self.ctx.log.warning("reminder.unknown", reminder=fired.reminder_name)
            return
        outcome = handler(order, fired)
        order.fires.append(
            HandledFire(
                name=fired.reminder_name,
                fire_count=fired.fire_count,
                scheduled_at=fired.scheduled_at,
                handled_at=self.ctx.clock.now(),
                outcome=outcome,
            )
        )
        # Saved before the handler returns, so before the fire is acknowledged: the state and
        # the record that this fire was handled land together.
        self._save()

    def _send_payment_reminder(self, order: OrderState, fired: ReminderFired) -> str:
        if order.status != AWAITING_PAYMENT:
            return f"skipped: order is {order.status}"
        payload = fired.payload if isinstance(fired.payload, dict) else {}
        customer_id = str(payload.get("customer_id", order.customer_id))
        minutes_left = round((TIMEOUT_AFTER - REMINDER_AFTER) / timedelta(minutes=1))
        text = f"Your order {order.order_id} is awaiting payment. {minutes_left} minutes left."
        order.notifications.append(
            Notification(
                kind=PAYMENT_REMINDER,
                customer_id=customer_id,
                text=text,
                sent_at=self.ctx.clock.now(),
            )
        )
        self.ctx.log.info("notification.sent", customer_id=customer_id, text=text)
        return "notification sent"

    def _time_out(self, order: OrderState, fired: ReminderFired) -> str:
        if order.status != AWAITING_PAYMENT:
            return f"skipped: order is {order.status}"
        order.status = CANCELLED
        order.cancelled_at = self.ctx.clock.now()
        order.cancel_reason = "payment_timeout"
        self.ctx.log.info(
            "order.cancelled", reason=order.cancel_reason, due=_clock_time(fired.scheduled_at)
        )
        return "order cancelled"

    def _save(self) -> None:
        assert self._file is not None
        assert self.order is not None
        self._file.save(self.order)


def order_actor_class(state_dir: Path) -> type[OrderActor]:
    """`OrderActor` bound to a state directory (the system builds virtual actors with `cls()`)."""

    class BoundOrderActor(OrderActor):
        pass

    BoundOrderActor.state_dir = state_dir
    return BoundOrderActor


# -- the scenario ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """At `at` after the start, send `message` to order `order_id`."""

    at: timedelta
    order_id: str
    message: CreateOrder | PaymentReceived


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


SCENARIO = (
    Step(minutes(0), "ord-100", CreateOrder(customer_id="cust-42", total="99.99")),
    Step(minutes(0), "ord-101", CreateOrder(customer_id="cust-7", total="25.00")),
    Step(minutes(0), "ord-102", CreateOrder(customer_id="cust-13", total="310.50")),
    Step(minutes(5), "ord-100", PaymentReceived(amount="99.99")),
    # (the restart happens at RESTART_AT = 7 minutes)
    Step(minutes(9), "ord-103", CreateOrder(customer_id="cust-42", total="42.00")),
    Step(minutes(12), "ord-101", PaymentReceived(amount="25.00")),
)
ORDER_IDS = ("ord-100", "ord-101", "ord-102", "ord-103")

# What the run must end with: status, notifications sent, and the reminders that fired, each at
# its minute after the start.
EXPECTED_STATUS = {"ord-100": PAID, "ord-101": PAID, "ord-102": CANCELLED, "ord-103": CANCELLED}
EXPECTED_NOTIFICATIONS = {"ord-100": 0, "ord-101": 1, "ord-102": 1, "ord-103": 1}
EXPECTED_FIRES_AT_MIN = {
    "ord-100": {},
    "ord-101": {PAYMENT_REMINDER: 10.0},
    "ord-102": {PAYMENT_REMINDER: 10.0, PAYMENT_TIMEOUT: 15.0},
    "ord-103": {PAYMENT_REMINDER: 19.0, PAYMENT_TIMEOUT: 24.0},
}

# Status and reminders (next fire, minutes after the start) of the orders when the process
# restarts at 7 minutes; the same must come back after the restart.
EXPECTED_AT_RESTART = {
    "ord-100": {"status": PAID, "reminders": {}},
    "ord-101": {
        "status": AWAITING_PAYMENT,
        "reminders": {PAYMENT_REMINDER: 10.0, PAYMENT_TIMEOUT: 15.0},
    },
    "ord-102": {
        "status": AWAITING_PAYMENT,
        "reminders": {PAYMENT_REMINDER: 10.0, PAYMENT_TIMEOUT: 15.0},
    },
}


def _clock_time(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def minute_of(moment: datetime) -> float:
    """Minutes from the start of the scenario."""
    return (moment - START) / timedelta(minutes=1)


def advance_to(clock: ManualClock, at: timedelta) -> None:
    """Move virtual time to `at` after the start, firing every reminder due on the way."""
    clock.advance(max(timedelta(0), START + at - clock.now()))


def open_system(url: str, clock: ManualClock, actor_class: type[OrderActor]) -> ActorSystem:
    system = ActorSystem(storage_url=url, clock=clock, name="payments")
    # Registering the type is also what resumes its stored reminders.
    system.register_virtual(ORDER_TYPE, actor_class)
    return system


def ask(system: ActorSystem, order_id: str, message: Any) -> Any:
    return system.virtual(ORDER_TYPE, order_id).ask(message, timeout=ASK_TIMEOUT_S)


def play(
    system: ActorSystem, clock: ManualClock, steps: Sequence[Step], log: FilteringBoundLogger
) -> None:
    for step in steps:
        advance_to(clock, step.at)
        log.info("event.sent", order_id=step.order_id, message=step.message)
        ask(system, step.order_id, step.message)


def reminder_times(infos: Sequence[ReminderInfo]) -> dict[str, float | None]:
    """Each reminder's next fire, in minutes after the start."""
    return {
        info.name: None if info.next_fire_at is None else minute_of(info.next_fire_at)
        for info in infos
    }


def snapshot(system: ActorSystem, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Status and stored reminders of each order, read through the order itself."""
    result: dict[str, dict[str, Any]] = {}
    for order_id in order_ids:
        order = ask(system, order_id, GetOrder())
        infos = ask(system, order_id, GetReminders())
        result[order_id] = {
            "status": None if order is None else order.status,
            "reminders": reminder_times(infos),
        }
    return result


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything the summary reports."""

    orders: dict[str, OrderState | None]
    before_restart: dict[str, dict[str, Any]]
    after_restart: dict[str, dict[str, Any]]
    reminders_left: dict[str, list[str]]
    virtual_minutes: float
    elapsed_s: float

    def awaiting_payment(self) -> list[str]:
        return [
            order_id
            for order_id, order in self.orders.items()
            if order is None or order.status == AWAITING_PAYMENT
        ]

    def fires_on_time(self) -> bool:
        """Every handled fire was due exactly its delay after creation, and handled then."""
        delays = {PAYMENT_REMINDER: REMINDER_AFTER, PAYMENT_TIMEOUT: TIMEOUT_AFTER}
        for order in self.orders.values():
            if order is None:
                continue
            for fire in order.fires:
                if fire.scheduled_at != order.created_at + delays[fire.name]:
                    return False
                if fire.handled_at != fire.scheduled_at:
                    return False
        return True

    def problems(self) -> list[str]:
        """The checks that failed, each as a sentence; empty when the run behaved."""
        found: list[str] = []
        for order_id in ORDER_IDS:
            order = self.orders[order_id]
            status = None if order is None else order.status
            if status != EXPECTED_STATUS[order_id]:
                found.append(f"{order_id} is {status!r}, expected {EXPECTED_STATUS[order_id]!r}")
            sent = 0 if order is None else len(order.notifications)
            if sent != EXPECTED_NOTIFICATIONS[order_id]:
                found.append(
                    f"{order_id} sent {sent} notification(s), "
                    f"expected {EXPECTED_NOTIFICATIONS[order_id]}"
                )
            fired = {} if order is None else fired_at_minutes(order)
            if fired != EXPECTED_FIRES_AT_MIN[order_id]:
                found.append(
                    f"{order_id} reminders fired at {fired}, "
                    f"expected {EXPECTED_FIRES_AT_MIN[order_id]}"
                )
        if self.awaiting_payment():
            found.append(f"orders stuck awaiting payment: {self.awaiting_payment()}")
        if not self.fires_on_time():
            found.append("a reminder fired at another time than its delay after creation")
        if self.before_restart != EXPECTED_AT_RESTART:
            found.append(f"at the restart the orders were {self.before_restart}")
        if self.after_restart != self.before_restart:
            found.append("statuses or reminders changed across the restart")
        for order_id, names in self.reminders_left.items():
            if names:
                found.append(f"{order_id} still has reminders {names}")
        return found


def fired_at_minutes(order: OrderState) -> dict[str, float]:
    return {fire.name: minute_of(fire.scheduled_at) for fire in order.fires}


def simulate(workdir: Path, log: FilteringBoundLogger, clock: ManualClock) -> RunResult:
    started = time.perf_counter()
    url = f"sqlite:///{workdir / 'payments.db'}"
    state_dir = workdir / "orders"
    state_dir.mkdir()
    actor_class = order_actor_class(state_dir)
    log.info("run.started", database=url, order_state=str(state_dir))

    # The orders that exist when the process restarts.
    existing = list(dict.fromkeys(s.order_id for s in SCENARIO if s.at < RESTART_AT))
    system = open_system(url, clock, actor_class)
    try:
        play(system, clock, [s for s in SCENARIO if s.at < RESTART_AT], log)
        advance_to(clock, RESTART_AT)
        before = snapshot(system, existing)
        log.info("system.restarting", orders=before)
    finally:
        # A clean stop here; examples/reminders_example shows a hard kill.
        system.shutdown()

    system = open_system(url, clock, actor_class)
    try:
        # Fresh activations: statuses come back from the order files, reminders from the store.
        after = snapshot(system, existing)
        log.info("system.restarted", orders=after)
        play(system, clock, [s for s in SCENARIO if s.at >= RESTART_AT], log)
        advance_to(clock, END_AT)
        orders = {order_id: ask(system, order_id, GetOrder()) for order_id in ORDER_IDS}
        left = {
            order_id: [info.name for info in ask(system, order_id, GetReminders())]
            for order_id in ORDER_IDS
        }
    finally:
        system.shutdown()
    return RunResult(
        orders=orders,
        before_restart=before,
        after_restart=after,
        reminders_left=left,
        virtual_minutes=minute_of(clock.now()),
        elapsed_s=time.perf_counter() - started,
    )


# -- reporting -------------------------------------------------------------------------------------


def summary_record(result: RunResult) -> dict[str, Any]:
    """The machine-readable summary (printed after `SUMMARY `)."""

    def minute(moment: datetime | None) -> float | None:
        return None if moment is None else minute_of(moment)

    orders: dict[str, Any] = {}
    for order_id, order in result.orders.items():
        if order is None:
            orders[order_id] = None
            continue
        orders[order_id] = {
            "status": order.status,
            "customer_id": order.customer_id,
            "created_at_min": minute(order.created_at),
            "paid_at_min": minute(order.paid_at),
            "cancelled_at_min": minute(order.cancelled_at),
            "notifications": len(order.notifications),
            "notified_at_min": [minute_of(note.sent_at) for note in order.notifications],
            "fired_at_min": fired_at_minutes(order),
        }
    return {
        "orders": orders,
        "statuses": {o: (None if s is None else s.status) for o, s in result.orders.items()},
        "notifications": {
            o: (0 if s is None else len(s.notifications)) for o, s in result.orders.items()
        },
        "notifications_total": sum(
            len(s.notifications) for s in result.orders.values() if s is not None
        ),
        "awaiting_payment": result.awaiting_payment(),
        "fires_on_time": result.fires_on_time(),
        "restart": {
            "at_min": RESTART_AT / timedelta(minutes=1),
            "before": result.before_restart,
            "after": result.after_restart,
            "preserved": result.before_restart == result.after_restart,
        },
        "reminders_left": sum(len(names) for names in result.reminders_left.values()),
        "virtual_minutes": result.virtual_minutes,
        "elapsed_s": round(result.elapsed_s, 3),
        "problems": result.problems(),
    }


def print_summary(result: RunResult) -> None:
    """The human summary, then the `SUMMARY {json}` line."""

    def at(moment: datetime | None) -> str:
        return "-" if moment is None else moment.strftime("%H:%M")

    print()
    print(
        f"Payment timeout: {len(result.orders)} orders, {result.virtual_minutes:g} virtual "
        f"minutes in {result.elapsed_s:.2f} s, restart at {at(START + RESTART_AT)}"
    )
    print(
        f"  {'order':<8} {'customer':<9} {'status':<10} {'created':>7} {'reminded':>8} "
        f"{'paid':>5} {'cancelled':>9}"
    )
    for order_id, order in result.orders.items():
        if order is None:
            print(f"  {order_id:<8} (never created)")
            continue
        reminded = ", ".join(at(note.sent_at) for note in order.notifications) or "-"
        print(
            f"  {order_id:<8} {order.customer_id:<9} {order.status:<10} "
            f"{at(order.created_at):>7} {reminded:>8} {at(order.paid_at):>5} "
            f"{at(order.cancelled_at):>9}"
        )
    print(f"  across the restart at {at(START + RESTART_AT)} (status, reminders due):")
    for order_id, before in result.before_restart.items():
        after = result.after_restart.get(order_id)
        due = ", ".join(
            f"{name} {at(None if m is None else START + minutes(m))}"
            for name, m in before["reminders"].items()
        )
        same = "same after restart" if before == after else f"CHANGED to {after}"
        print(f"    {order_id:<8} {before['status']:<17} {due or 'no reminders':<45} {same}")
    left = sum(len(names) for names in result.reminders_left.values())
    print(f"  awaiting payment at the end: {result.awaiting_payment() or 'none'}")
    print(f"  reminders left: {left}; every fire exactly on time: {result.fires_on_time()}")
    problems = result.problems()
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print(f"  result: {'FAILED' if problems else 'ok'}")
    print("SUMMARY " + json.dumps(summary_record(result)), flush=True)


# -- program ---------------------------------------------------------------------------------------


def configure_logging(clock: ManualClock, *, verbose: bool) -> None:
    """Console logging stamped with the virtual time, so the log reads like the scenario."""
    colors = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def virtual_time(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = _clock_time(clock.now())
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
        prog="python -m examples.payment_timeout",
        description="Orders with a durable 10-minute payment reminder and 15-minute timeout.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary database and order files"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show the runtime's debug events"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    clock = ManualClock(start=START)
    configure_logging(clock, verbose=args.verbose)
    log: FilteringBoundLogger = structlog.get_logger("payment_timeout")
    # A fresh database and state directory per run, never in the working directory.
    workdir = Path(tempfile.mkdtemp(prefix="plexspaces-payments-"))
    try:
        result = simulate(workdir, log, clock)
    finally:
        if args.keep:
            log.info("run.kept", directory=str(workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(result)
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
