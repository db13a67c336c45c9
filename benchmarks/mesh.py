"""Messages to virtual actors on another node (scenario 25): asks and acknowledged tells from a
client-only node to actors hosted by a node process, over a real nats-server, against nats-py's
own request/reply loop between the same two kinds of process (the peer).

A throwaway nats-server and a durable PostgreSQL server (the nodes' shared store) on loopback.
The hosting node runs in a child process (`host`); the sending side runs in this process. The
peer has the same shape: a child process answers on a subject (`raw_responder`), and this process
sends requests with `nats-py` from one event loop, as many in flight as the project has sender
threads.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import (
    NOTHING,
    Config,
    Metric,
    Scenario,
    ScenarioResult,
    at_least,
    child_result,
    median,
    percentile,
    project_at_least,
    project_at_most,
    start_child,
)
from benchmarks.postgres import _durable_server

ACTORS = 100
SENDERS = 8
SUBJECT = "bench.raw"
TIMEOUT_S = 30.0


def host(url: str, nats: str, stop_file: str) -> dict[str, Any]:
    """The hosting node (a child process): serve `echo` actors until `stop_file` exists."""
    from plexspaces import Actor, ActorSystem

    class EchoActor(Actor):
        def on_receive(self, message: Any) -> Any:
            return message

    with ActorSystem(
        storage_url=url, cluster=True, transport=nats, node_id="host", name="host", lease="10s"
    ) as system:
        system.register_virtual("echo", EchoActor)
        system.reminders  # noqa: B018 - join the cluster: serve and heartbeat
        for index in range(ACTORS):
            system.virtual("echo", f"e{index}").ask("warm", timeout=TIMEOUT_S)
        Path(stop_file + ".ready").touch()
        while not Path(stop_file).exists():
            time.sleep(0.05)  # a child waiting for its parent's signal
    return {}


def raw_responder(nats: str, stop_file: str) -> dict[str, Any]:
    """The peer's responder (a child process): echo every request on `SUBJECT` until
    `stop_file` exists."""
    import nats as nats_py
    from nats.aio.msg import Msg

    async def serve() -> None:
        connection = await nats_py.connect(nats)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await connection.subscribe(SUBJECT, cb=echo)
        await connection.flush()
        Path(stop_file + ".ready").touch()
        while not Path(stop_file).exists():
            await asyncio.sleep(0.05)
        await connection.close()

    asyncio.run(serve())
    return {}


def _wait_ready(stop_file: Path, process: Any) -> None:
    deadline = time.monotonic() + 120
    ready = Path(str(stop_file) + ".ready")
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"benchmark child did not start: {child_result(process, 1)!r}")
        time.sleep(0.05)  # waiting for a child process to say it is ready


def _project(url: str, nats: str, count: int, workdir: Path) -> dict[str, float]:
    from plexspaces import ActorSystem

    stop_file = workdir / "stop-host"
    child = start_child(host, url=url, nats=nats, stop_file=str(stop_file))
    try:
        _wait_ready(stop_file, child)
        with ActorSystem(
            storage_url=url,
            cluster=True,
            transport=nats,
            node_id="client",
            name="client",
            hosts_actors=False,
        ) as client:
            refs = [client.virtual("echo", f"e{index}") for index in range(ACTORS)]
            for ref in refs:
                ref.ask("warm", timeout=TIMEOUT_S)  # every holder looked up once
            asks = _threads(
                SENDERS, count, lambda n, i: refs[(n * 7 + i) % ACTORS].ask(i, timeout=TIMEOUT_S)
            )
            tells = _threads(SENDERS, count, lambda n, i: refs[(n * 7 + i) % ACTORS].tell(i))
    finally:
        stop_file.touch()
        child_result(child, timeout=120)
    return {
        "asks_per_s": asks["per_s"],
        "ask_p50_ms": asks["p50_ms"],
        "ask_p99_ms": asks["p99_ms"],
        "tells_per_s": tells["per_s"],
    }


def _threads(threads: int, count: int, send: Any) -> dict[str, float]:
    """`count` sends split over `threads` threads (sender n sends i = 0, 1, ...): per second
    and the latency percentiles in ms."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        mine = []
        for i in range(count // threads):
            started = time.perf_counter()
            send(n, i)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def _peer(nats: str, count: int, workdir: Path) -> dict[str, float]:
    import nats as nats_py

    stop_file = workdir / "stop-raw"
    child = start_child(raw_responder, nats=nats, stop_file=str(stop_file))
    try:
        _wait_ready(stop_file, child)

        async def run() -> dict[str, float]:
            connection = await nats_py.connect(nats)
            await connection.request(SUBJECT, b"warm", timeout=TIMEOUT_S)
            latencies: list[float] = []

            async def worker() -> None:
                for i in range(count // SENDERS):
                    started = time.perf_counter()
                    await connection.request(SUBJECT, str(i).encode(), timeout=TIMEOUT_S)
                    latencies.append(time.perf_counter() - started)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(SENDERS)))
            elapsed = time.perf_counter() - began
            await connection.close()
            latencies.sort()
            return {
                "asks_per_s": len(latencies) / elapsed,
                "ask_p99_ms": percentile(latencies, 99) * 1e3,
            }

        return asyncio.run(run())
    finally:
        stop_file.touch()
        child_result(child, timeout=60)


def cross_node(config: Config) -> ScenarioResult:
    try:
        from tests.natsserver import NatsServer
    except ImportError as error:
        return ScenarioResult(notes=[f"skipped: the NATS test helpers need {error.name}"])
    started = _durable_server()
    if isinstance(started, ScenarioResult):
        return started
    server, scratch_database = started
    count = config.pick(quick=2_000, full=20_000)
    rounds = config.fewer_rounds
    project: list[dict[str, float]] = []
    peer: list[dict[str, float]] = []
    try:
        nats = NatsServer()
        try:
            with tempfile.TemporaryDirectory() as directory:
                for index in range(rounds):
                    workdir = Path(directory) / str(index)
                    workdir.mkdir()
                    sides = [("project", project), ("peer", peer)]
                    for side, results in sides if index % 2 == 0 else reversed(sides):
                        if side == "project":
                            with scratch_database(server) as url:
                                results.append(_project(url, nats.url, count, workdir))
                        else:
                            results.append(_peer(nats.url, count, workdir))
        finally:
            nats.close()
    finally:
        server.close()

    def of(results: list[dict[str, float]], key: str) -> float:
        return median([result[key] for result in results])

    return ScenarioResult(
        metrics=[
            Metric(
                "cross-node asks (client-only node -> actors on a node process)",
                "/s",
                of(project, "asks_per_s"),
                of(peer, "asks_per_s"),
                at_least(0.5),
            ),
            Metric(
                "cross-node asks, absolute",
                "/s",
                of(project, "asks_per_s"),
                None,
                project_at_least(1_500, "≥ 1,500/s"),
                peer_missing=NOTHING,
            ),
            Metric(
                "cross-node ask latency p99",
                "ms",
                of(project, "ask_p99_ms"),
                of(peer, "ask_p99_ms"),
                project_at_most(25, "≤ 25 ms"),
            ),
            Metric(
                "cross-node tells, acknowledged (enqueued on the hosting node)",
                "/s",
                of(project, "tells_per_s"),
                None,
                project_at_least(5_000, "≥ 5,000/s"),
                peer_missing=NOTHING,
            ),
        ],
        notes=[
            f"{count:,} asks, then {count:,} tells, from {SENDERS} threads of a client-only "
            f"node (this process) to {ACTORS} virtual actors active on a node process, over one "
            "nats-server on loopback (pickle codec; a durable PostgreSQL holds the activation "
            "directory, looked up once per actor before the timed part). Peer: nats-py's "
            f"request/reply from one event loop with {SENDERS} requests in flight to a "
            "responder process echoing on a subject. A tell returns once the hosting node has "
            "put the message into the actor's mailbox."
        ],
    )


SCENARIOS = [
    Scenario(
        25,
        "cross-node",
        "asks and tells to virtual actors on another node",
        "nats-py request/reply",
        cross_node,
    ),
]
