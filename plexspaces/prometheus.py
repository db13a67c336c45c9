"""Prometheus export of an actor system's metrics (the `prometheus` extra: prometheus-client).

```python
from plexspaces.prometheus import serve_metrics

server = serve_metrics(system, port=9464)   # http://host:9464/metrics; server.close() to stop
```

Every scrape takes one `ActorSystem.metrics()` snapshot. Names are prefixed `plexspaces_`, dots
become underscores, and every metric carries the labels `system` and `node`:

- counters as `plexspaces_<name>_total` (`plexspaces_timer_fires_total`, ...);
- latency histograms in seconds (`plexspaces_timer_lateness_seconds`,
  `plexspaces_reminder_tardiness_seconds`) with the buckets of `plexspaces.LATENCY_BUCKETS`;
- gauges (`plexspaces_actors`, `plexspaces_timer_armed`, `plexspaces_reminders_armed`,
  `plexspaces_reminders_in_flight`, `plexspaces_reminders_stored`, ...) and
  `plexspaces_mailbox_depth{actor_type=...}`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "plexspaces.prometheus needs prometheus-client: pip install 'plexspaces-facets[prometheus]'"
    ) from error

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ._system import ActorSystem

__all__ = ["MetricsServer", "PlexSpacesCollector", "serve_metrics"]

_LABELS = ("system", "node")


def _metric_name(name: str) -> str:
    return "plexspaces_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)


class PlexSpacesCollector(Collector):
    """A prometheus-client collector reading one actor system at every scrape. Register it on a
    registry of your own (`registry.register(PlexSpacesCollector(system))`) to serve it beside
    other metrics."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[Metric]:
        snapshot = self._system.metrics()
        labels = [self._system.name, self._system.node_id]
        for name, value in sorted(snapshot.counters.items()):
            counter = CounterMetricFamily(
                _metric_name(name), f"PlexSpaces counter {name}", labels=_LABELS
            )
            counter.add_metric(labels, value)
            yield counter
        for name, hist in sorted(snapshot.histograms.items()):
            family = HistogramMetricFamily(
                _metric_name(name) + "_seconds",
                f"PlexSpaces latency {name} in seconds",
                labels=_LABELS,
            )
            buckets: list[tuple[str, float]] = [
                (_bound(bound), float(count)) for bound, count in hist.buckets
            ]
            buckets.append(("+Inf", float(hist.count)))
            family.add_metric(labels, buckets, sum_value=hist.sum)
            yield family
        for name, reading in sorted(snapshot.gauges.items()):
            gauge = GaugeMetricFamily(
                _metric_name(name), f"PlexSpaces gauge {name}", labels=_LABELS
            )
            gauge.add_metric(labels, reading)
            yield gauge
        depth = GaugeMetricFamily(
            "plexspaces_mailbox_depth",
            "Messages waiting in mailboxes, per actor type",
            labels=(*_LABELS, "actor_type"),
        )
        for actor_type, count in sorted(snapshot.mailbox_depth.items()):
            depth.add_metric([*labels, actor_type], count)
        yield depth


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class MetricsServer:
    """An HTTP server answering `/metrics` for one system; `close()` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        port: int = self._server.server_port
        return port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def serve_metrics(system: ActorSystem, port: int = 9464, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve the metrics of `system` at `http://addr:port/metrics` in a background thread
    (`port=0` picks a free port: read `server.port`). Returns the server; `close()` stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlexSpacesCollector(system))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread)
