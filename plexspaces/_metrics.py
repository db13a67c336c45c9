"""Metrics of an actor system: counters and latency histograms recorded as things happen, gauges
read when a snapshot is taken. No dependency; `plexspaces.prometheus` exports them.

The runtime records:

| name | kind | what |
|---|---|---|
| `timer.fires` | counter | timer fires taken out of a mailbox |
| `timer.lateness` | histogram | seconds from a timer fire's due time to its pick-up by the actor |
| `reminder.fires` | counter | reminder fires handled and acknowledged |
| `reminder.failures` | counter | reminder fires whose handler raised (retried later) |
| `reminder.tardiness` | histogram | seconds from a reminder fire's due time to its handler's end |
| `actor.activations` | counter | virtual actor activations |
| `actor.deactivations` | counter | virtual actor activations that ended |

Facets may record their own through `ActorContext.metrics` and report gauges through
`Facet.facet_metrics()`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "LATENCY_BUCKETS",
    "HistogramSnapshot",
    "LatencyHistogram",
    "MetricCounter",
    "Metrics",
    "MetricsSnapshot",
]

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds (seconds) of the latency histograms' buckets: 0.5 ms to 5 min."""

_RECENT: Final = 4096
"""Samples each histogram keeps for its quantiles: the most recent ones."""


class MetricCounter:
    """A count that only goes up. `add` is safe from any thread."""

    __slots__ = ("_lock", "_value", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._value = 0
        self._lock = threading.Lock()

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int:
        return self._value


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram at one moment.

    Attributes:
        count: observations so far.
        sum: their total (seconds).
        buckets: `(upper bound, observations <= bound)` for each of `LATENCY_BUCKETS`
            (cumulative, as Prometheus has them); the rest are above the last bound.
        p50, p90, p99, max: quantiles of the most recent observations (up to 4096), or NaN when
            there are none.
    """

    count: int
    sum: float
    buckets: tuple[tuple[float, int], ...]
    p50: float
    p90: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "buckets": {str(bound): count for bound, count in self.buckets},
        }


class LatencyHistogram:
    """Latencies in seconds: fixed buckets for export, recent samples for quantiles.
    `observe` is safe from any thread."""

    __slots__ = ("_bucket_counts", "_count", "_lock", "_recent", "_sum", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._count = 0
        self._sum = 0.0
        self._recent: deque[float] = deque(maxlen=_RECENT)

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self._bucket_counts[index] += 1
            self._count += 1
            self._sum += seconds
            self._recent.append(seconds)

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._bucket_counts)
            recent = sorted(self._recent)
            count, total = self._count, self._sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, bucket in zip(LATENCY_BUCKETS, counts, strict=False):
            running += bucket
            cumulative.append((bound, running))
        return HistogramSnapshot(
            count=count,
            sum=total,
            buckets=tuple(cumulative),
            p50=_quantile(recent, 0.50),
            p90=_quantile(recent, 0.90),
            p99=_quantile(recent, 0.99),
            max=recent[-1] if recent else math.nan,
        )


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What `ActorSystem.metrics()` returns: every metric of the system at one moment.

    Attributes:
        counters: every counter by name (see the module's table).
        histograms: every latency histogram by name.
        gauges: values read at the snapshot: `actors` (live), `reminders.armed` (in the
            scheduler), `reminders.stored` (rows in the store, when the store is open), and each
            facet's gauges summed over the actors, as `"<facet type>.<name>"` (the timer facet
            reports `timer.armed`).
        mailbox_depth: messages waiting, summed per actor type (the virtual type, or the class
            name of a spawned actor).
    """

    counters: dict[str, int]
    histograms: dict[str, HistogramSnapshot]
    gauges: dict[str, float]
    mailbox_depth: dict[str, int] = field(default_factory=dict)

    @property
    def timers_armed(self) -> int:
        return int(self.gauges.get("timer.armed", 0))

    @property
    def timer_fires(self) -> int:
        return self.counters.get("timer.fires", 0)

    @property
    def timer_lateness(self) -> HistogramSnapshot:
        return self.histograms["timer.lateness"]

    @property
    def reminders_armed(self) -> int:
        return int(self.gauges.get("reminders.armed", 0))

    @property
    def reminders_stored(self) -> int | None:
        stored = self.gauges.get("reminders.stored")
        return None if stored is None else int(stored)

    @property
    def reminder_fires(self) -> int:
        return self.counters.get("reminder.fires", 0)

    @property
    def reminder_tardiness(self) -> HistogramSnapshot:
        return self.histograms["reminder.tardiness"]

    @property
    def activations(self) -> int:
        return self.counters.get("actor.activations", 0)

    @property
    def deactivations(self) -> int:
        return self.counters.get("actor.deactivations", 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready)."""
        return {
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "histograms": {name: hist.as_dict() for name, hist in self.histograms.items()},
            "mailbox_depth": dict(self.mailbox_depth),
        }


class Metrics:
    """The recorders of one actor system (`ActorContext.metrics`). Counters and histograms are
    created on first use by name and live as long as the system."""

    STANDARD_COUNTERS: Final = (
        "timer.fires",
        "reminder.fires",
        "reminder.failures",
        "actor.activations",
        "actor.deactivations",
    )
    STANDARD_HISTOGRAMS: Final = ("timer.lateness", "reminder.tardiness")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, MetricCounter] = {
            name: MetricCounter(name) for name in self.STANDARD_COUNTERS
        }
        self._histograms: dict[str, LatencyHistogram] = {
            name: LatencyHistogram(name) for name in self.STANDARD_HISTOGRAMS
        }

    def counter(self, name: str) -> MetricCounter:
        """The counter `name` (created at 0 on first use)."""
        found = self._counters.get(name)
        if found is None:
            with self._lock:
                found = self._counters.setdefault(name, MetricCounter(_checked(name)))
        return found

    def histogram(self, name: str) -> LatencyHistogram:
        """The latency histogram `name` (created empty on first use)."""
        found = self._histograms.get(name)
        if found is None:
            with self._lock:
                found = self._histograms.setdefault(name, LatencyHistogram(_checked(name)))
        return found

    def snapshot(self, gauges: dict[str, float], mailbox_depth: dict[str, int]) -> MetricsSnapshot:
        with self._lock:
            counters = list(self._counters.values())
            histograms = list(self._histograms.values())
        return MetricsSnapshot(
            counters={counter.name: counter.value for counter in counters},
            histograms={hist.name: hist.snapshot() for hist in histograms},
            gauges=gauges,
            mailbox_depth=mailbox_depth,
        )


def _checked(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric name {name!r} must be a non-empty string")
    return name
