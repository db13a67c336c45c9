"""Request/reply between nodes: the transport (`NatsTransport.request` from threads) against its
peer, raw nats-py request/reply in its own event loop, on the same nats-server in the same run.

Both sides run a responder and a requester on two connections of one process, with the same
16-byte body echoed back; `concurrency` requesters (threads for the transport, coroutines for
raw nats-py) each make `n // concurrency` requests one after the other. The difference is the
cost of crossing threads: handing each request to the loop thread and waking the caller.

    scripts/run python -m benchmarks.transport          # both, at concurrency 1 and 8
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.measure import percentile

BODY = b"0123456789abcdef"
TIMEOUT_S = 10.0


def _summary(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "requests_per_s": len(ordered) / elapsed_s,
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
    }


def raw_nats_request_reply(url: str, n: int, concurrency: int) -> dict[str, float]:
    """`n` requests by `concurrency` coroutines with nats-py's own `request`, in one event loop
    (the peer): requests per second and the median and 99th percentile latency in ms."""
    import nats
    from nats.aio.msg import Msg

    async def run() -> dict[str, float]:
        responder = await nats.connect(url)
        requester = await nats.connect(url)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("bench.raw", cb=echo)
        await responder.flush()
        await requester.request("bench.raw", BODY, timeout=TIMEOUT_S)  # warm-up
        latencies: list[float] = []

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                await requester.request("bench.raw", BODY, timeout=TIMEOUT_S)
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        await requester.close()
        await responder.close()
        return _summary(latencies, elapsed)

    return asyncio.run(run())


def transport_request_reply(url: str, n: int, concurrency: int) -> dict[str, float]:
    """`n` requests by `concurrency` threads with `NatsTransport.request`: requests per second
    and the median and 99th percentile latency in ms."""
    from plexspaces._transport import open_transport

    responder = open_transport(url, name="bench")
    requester = open_transport(url, name="bench")
    try:
        responder.start("responder", lambda body, reply: reply(body))
        requester.request("responder", BODY, TIMEOUT_S)  # warm-up
        latencies: list[float] = []
        lock = threading.Lock()

        def worker(count: int) -> None:
            mine: list[float] = []
            for _ in range(count):
                started = time.perf_counter()
                requester.request("responder", BODY, TIMEOUT_S)
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [
            threading.Thread(target=worker, args=(n // concurrency,)) for _ in range(concurrency)
        ]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return _summary(latencies, elapsed)
    finally:
        requester.close()
        responder.close()


def compare(url: str, n: int = 5000, rounds: int = 3) -> list[dict[str, Any]]:
    """Both sides at concurrency 1 and 8, `rounds` times each, alternating which goes first;
    the median round of each, by requests per second."""
    sides: dict[str, Callable[[str, int, int], dict[str, float]]] = {
        "raw nats-py": raw_nats_request_reply,
        "NatsTransport": transport_request_reply,
    }
    rows: list[dict[str, Any]] = []
    for concurrency in (1, 8):
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                results[name].append(sides[name](url, n, concurrency))
        for name, runs in results.items():
            runs.sort(key=lambda run: run["requests_per_s"])
            rows.append({"side": name, "concurrency": concurrency, **runs[len(runs) // 2]})
    return rows


def main() -> None:
    from tests.natsserver import NatsServer

    server = NatsServer()
    try:
        rows = compare(server.url)
    finally:
        server.close()
    print(f"{'side':<14} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['side']:<14} {row['concurrency']:>4} {row['requests_per_s']:>9.0f} "
            f"{row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
        )


if __name__ == "__main__":
    main()
