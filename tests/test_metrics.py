"""`ActorSystem.metrics()` moves when things happen, and the Prometheus export serves it."""

from __future__ import annotations

import json
import math
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest

from facets.reminder import ReminderFacet
from facets.timer import TimerFacet
from plexspaces import (
    LATENCY_BUCKETS,
    Actor,
    ActorSystem,
    Facet,
    ManualClock,
    Metrics,
    ReminderFired,
    TimerFired,
)
from plexspaces.prometheus import serve_metrics

WAIT = 5.0


class Ticker(Actor):
    def on_start(self) -> None:
        self.attach_facet(TimerFacet(), config={})
        self.fires = 0

    def on_receive(self, message: Any) -> Any:
        match message:
            case TimerFired():
                self.fires += 1
            case ("periodic", name, interval):
                self.facet(TimerFacet).register_periodic(name, interval)
            case ("cancel", name):
                return self.facet(TimerFacet).unregister_timer(name)
            case "fires":
                return self.fires
        return None


class Reminded(Actor):
    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired():
                return None
            case ("remind", name, kwargs):
                self.facet(ReminderFacet).register_reminder(name, **kwargs)
            case "ping":
                return "pong"
        return None


class Gate(Actor):
    """Blocks in its first message until `gate` is set, so later messages queue up."""

    def __init__(self, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.entered = entered

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.entered.set()
            self.gate.wait(WAIT)
        return None


def test_a_fresh_system_reports_zeros_and_every_standard_metric(system: ActorSystem) -> None:
    snapshot = system.metrics()
    assert snapshot.timer_fires == 0
    assert snapshot.reminder_fires == 0
    assert snapshot.activations == snapshot.deactivations == 0
    assert snapshot.timers_armed == 0
    assert snapshot.gauges["actors"] == 0
    assert snapshot.timer_lateness.count == 0
    assert math.isnan(snapshot.timer_lateness.p99)
    assert snapshot.reminders_stored is None  # the store was never opened
    json.dumps(snapshot.as_dict(), allow_nan=True)


def test_timer_metrics_follow_registrations_and_fires(
    system: ActorSystem, clock: ManualClock
) -> None:
    ref = system.spawn(Ticker)
    ref.ask(("periodic", "a", "1s"))
    ref.ask(("periodic", "b", "2s"))
    assert system.metrics().timers_armed == 2
    clock.advance("4s")
    assert ref.ask("fires") == 6
    snapshot = system.metrics()
    assert snapshot.timer_fires == 6
    lateness = snapshot.timer_lateness
    assert lateness.count == 6
    # On a ManualClock a fire is taken out of the mailbox at its deadline: no lateness.
    assert lateness.p50 == lateness.max == 0.0
    assert lateness.buckets[0] == (LATENCY_BUCKETS[0], 6)
    assert ref.ask(("cancel", "a")) is True
    assert system.metrics().timers_armed == 1
    ref.stop()
    assert system.metrics().timers_armed == 0


def test_reminder_and_activation_metrics_follow_fires(
    system: ActorSystem, clock: ManualClock
) -> None:
    system.register_virtual("rem", Reminded)
    ref = system.virtual("rem", "k")
    ref.ask(("remind", "once", {"due": "1s"}))
    ref.ask(("remind", "every", {"due": "1s", "period": "1s", "max_count": 3}))
    snapshot = system.metrics()
    assert snapshot.activations == 1
    assert snapshot.reminders_stored == 2
    assert snapshot.reminders_armed == 2
    clock.advance("3s")
    assert ref.ask("ping") == "pong"
    snapshot = system.metrics()
    assert snapshot.reminder_fires == 4
    assert snapshot.reminder_tardiness.count == 4
    assert snapshot.reminder_tardiness.max == 0.0
    assert snapshot.reminders_stored == 0  # the one-shot and the max_count one are done
    ref.stop()
    assert system.metrics().deactivations == 1
    ref.ask("ping")
    assert system.metrics().activations == 2


def test_a_failing_reminder_handler_counts_a_failure(
    system: ActorSystem, clock: ManualClock
) -> None:
    class Failing(Reminded):
        def on_receive(self, message: Any) -> Any:
            if isinstance(message, ReminderFired):
                raise RuntimeError("boom")
            return super().on_receive(message)

    system.register_virtual("failing", Failing)
    ref = system.virtual("failing", "k")
    ref.ask(("remind", "r", {"due": "1s"}))
    clock.advance("1s")
    ref.ask("ping")
    snapshot = system.metrics()
    assert snapshot.counters["reminder.failures"] == 1
    assert snapshot.reminder_fires == 0


def test_mailbox_depth_is_reported_per_actor_type(system: ActorSystem) -> None:
    gate, entered = threading.Event(), threading.Event()
    ref = system.spawn(Gate, gate, entered)
    ref.tell("block")
    assert entered.wait(WAIT)
    for _ in range(5):
        ref.tell("queued")
    try:
        assert system.metrics().mailbox_depth == {"Gate": 5}
    finally:
        gate.set()
    ref.ask("done")
    assert system.metrics().mailbox_depth == {"Gate": 0}


class Audit(Facet):
    """A facet of the user's own that records through ctx.metrics and reports a gauge."""

    facet_type = "audit"

    def on_attach(self, ctx: Any, config: Mapping[str, Any]) -> None:
        self.seen = 0
        self.counter = ctx.metrics.counter("audit.messages")

    def before_message(self, message: Any) -> Any:
        self.seen += 1
        self.counter.add()
        return None

    def facet_metrics(self) -> Mapping[str, float]:
        return {"seen": self.seen}


def test_facets_record_their_own_counters_and_gauges(system: ActorSystem) -> None:
    refs = [system.spawn(Ticker) for _ in range(3)]
    for ref in refs:
        ref.attach_facet(Audit())
        ref.ask("fires")
        ref.ask("fires")
    snapshot = system.metrics()
    assert snapshot.counters["audit.messages"] == 6
    assert snapshot.gauges["audit.seen"] == 6


def test_metric_names_are_checked() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="metric name ''"):
        metrics.counter("")
    with pytest.raises(ValueError, match="metric name 5"):
        metrics.histogram(5)  # type: ignore[arg-type]
    assert metrics.counter("x") is metrics.counter("x")


def test_prometheus_serves_the_snapshot(system: ActorSystem, clock: ManualClock) -> None:
    ref = system.spawn(Ticker, actor_id="ticker")
    ref.ask(("periodic", "a", "1s"))
    clock.advance("3s")
    assert ref.ask("fires") == 3
    with serve_metrics(system, port=0, addr="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            body = response.read().decode()
    labels = f'node="{system.node_id}",system="{system.name}"'
    assert f"plexspaces_timer_fires_total{{{labels}}} 3.0" in body
    assert f"plexspaces_timer_armed{{{labels}}} 1.0" in body
    assert f'plexspaces_timer_lateness_seconds_bucket{{le="+Inf",{labels}}} 3.0' in body
    assert f"plexspaces_timer_lateness_seconds_count{{{labels}}} 3.0" in body
    assert f"plexspaces_actors{{{labels}}} 1.0" in body
    assert 'plexspaces_mailbox_depth{actor_type="Ticker",' in body
