"""The database goes away and comes back while a system runs on it (a real PostgreSQL server,
stopped and started again; real clock).

While it is down: a registration raises `StoreUnavailableError` and stores nothing, actors keep
answering, timers keep firing. Once it is back: reminders fire again (the service retried with
backoff), with no fire lost, fire counts contiguous, and a reminder that fell due during the
outage fired. Nothing of the failed registration is stored.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from facets.reminder import ReminderFacet
from facets.timer import TimerFacet
from plexspaces import (
    Actor,
    ActorSystem,
    ReminderFired,
    StoreUnavailableError,
    TimerFired,
)
from tests import pgserver

WAIT = 30.0
"""Bound on waiting for something the test expects (never a delay)."""


class Seen:
    """Fires handled, per name, and a wait on them."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.reminders: defaultdict[str, list[int]] = defaultdict(list)
        self.timer_fires = 0

    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


class Device(Actor):
    seen: ClassVar[Seen]

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config={"min_period": "100ms"})
        self.attach_facet(TimerFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(reminder_name=name, fire_count=count):
                with self.seen.changed:
                    self.seen.reminders[name].append(count)
                    self.seen.changed.notify_all()
                return None
            case TimerFired():
                with self.seen.changed:
                    self.seen.timer_fires += 1
                    self.seen.changed.notify_all()
                return None
            case ("reminder", name, kwargs):
                return self.facet(ReminderFacet).register_reminder(name, **kwargs)
            case ("timer", name, interval):
                return self.facet(TimerFacet).register_periodic(name, interval)
            case "names":
                return sorted(info.name for info in self.facet(ReminderFacet).list_reminders())
            case "ping":
                return "pong"
        raise AssertionError(f"unexpected message {message!r}")


@pytest.fixture
def private_server() -> Iterator[pgserver.PostgresServer]:
    """A PostgreSQL server of this test's own: it is stopped and started mid-test."""
    server = pgserver.PostgresServer()
    yield server
    server.close()


@pytest.mark.slow
def test_database_outage_loses_nothing_and_registration_fails_cleanly(
    private_server: pgserver.PostgresServer, make_system: Callable[..., ActorSystem]
) -> None:
    seen = Seen()
    system = make_system(storage_url=private_server.url, node_id="node-a", lease="3s")
    system.register_virtual("dev", type("FaultDevice", (Device,), {"seen": seen}))
    ref = system.virtual("dev", "d1")
    ref.ask(("reminder", "tick", {"due": "200ms", "period": "200ms"}))
    ref.ask(("reminder", "during-outage", {"due": "1500ms"}))
    ref.ask(("timer", "beat", "50ms"))
    assert seen.wait_until(lambda: len(seen.reminders["tick"]) >= 3)

    private_server.stop()
    try:
        # The actor and its timers go on; the store refuses a registration, clearly.
        timer_fires = seen.timer_fires
        assert ref.ask("ping", timeout=WAIT) == "pong"
        with pytest.raises(StoreUnavailableError, match="unavailable") as refused:
            ref.ask(("reminder", "refused", {"due": "1s"}), timeout=WAIT)
        assert "127.0.0.1" in str(refused.value)
        assert seen.wait_until(lambda: seen.timer_fires >= timer_fires + 20)
        # Longer than the lease (3 s): the node's claims run out while the database is away.
        assert not seen.wait_until(lambda: bool(seen.reminders["during-outage"]), timeout=4.0)
        ticks_during_outage = len(seen.reminders["tick"])
    finally:
        private_server.start()

    assert seen.wait_until(lambda: bool(seen.reminders["during-outage"]))
    assert seen.wait_until(lambda: len(seen.reminders["tick"]) >= ticks_during_outage + 5)
    ticks = seen.reminders["tick"]
    # Contiguous from 1: nothing lost, nothing out of order (a duplicate, at-least-once, would
    # repeat the last count; none is expected as no process crashed).
    assert ticks == list(range(1, len(ticks) + 1))
    assert seen.reminders["during-outage"] == [1]
    assert "refused" not in seen.reminders
    assert ref.ask("names", timeout=WAIT) == ["tick"]
    # And registration works again.
    ref.ask(("reminder", "after", {"due": "100ms"}), timeout=WAIT)
    assert seen.wait_until(lambda: seen.reminders["after"] == [1])
