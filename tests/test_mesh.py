"""Virtual actors across node processes: three nodes (`tests/mesh_node.py`) on one PostgreSQL
database and one nats-server of the test's own, 3,000 `device` actors with ten periodic
reminders each (30,000, every 5 s), and sender threads on every node asking and telling keys
spread over all nodes. Every actor journals what it handles (activations, messages, fires); the
checks read the journals, the senders' reports and the tables:

- healthy: every ask from any node is answered, nothing raises ActorActiveElsewhereError, each
  sender's messages reach each actor in order, each once; bucket ownership within ±10 % of even;
- one node SIGKILLed under traffic: every ask is still answered, the ones that waited for the dead
  node within lease + poll + 2 s of the kill (plus room for a loaded machine); no acknowledged
  tell to a surviving node is lost; at most one duplicate fire per reminder; the survivors share
  the buckets evenly within two leases, and again with the restarted node;
- the nats-server restarted: asks that need it fail with TransportUnavailableError while it is
  down, and succeed again after, with no acknowledged tell lost;
- over the whole run, the activation intervals of one key never overlap across nodes.

The figures (ask rate and latencies, failover, duplicates) are printed (`pytest -s`).
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from . import natsserver

ROOT = Path(__file__).resolve().parent.parent
NODES = 3
ACTORS = 3000
REMINDERS_PER_ACTOR = 10
PERIOD = "5s"
LEASE_S = 3.0
POLL_S = 1.0
SENDERS = 4
"""Sender threads per node."""
BUCKETS = 256
FAILOVER_BOUND_S = LEASE_S + POLL_S + 2.0
SLACK_S = 6.0
"""Room for a loaded 2-core CI machine on top of the bounds (the measured figures are printed)."""


@dataclass
class Node:
    node_id: str
    label: str
    journal: Path
    process: subprocess.Popen[str]
    replies: list[dict[str, Any]]
    ready: threading.Event
    lock: threading.Condition

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float) -> dict[str, Any]:
        """The next reply, waiting up to `timeout` seconds for it."""
        with self.lock:
            if not self.lock.wait_for(lambda: bool(self.replies), timeout):
                raise AssertionError(f"{self.node_id}: no reply within {timeout}s")
            return self.replies.pop(0)

    def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(command)
        return self.reply(timeout)


def start_node(
    pg_url: str, nats_url: str, node_id: str, tmp_path: Path, label: str | None = None
) -> Node:
    label = label or node_id
    journal = tmp_path / f"{label}.journal"
    config = {
        "url": pg_url,
        "nats": nats_url,
        "node_id": node_id,
        "journal": str(journal),
        "lease": f"{LEASE_S}s",
        "poll_interval": f"{POLL_S}s",
    }
    stderr = (tmp_path / f"{node_id}.err").open("a")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mesh_node", json.dumps(config)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    node = Node(node_id, label, journal, process, [], threading.Event(), threading.Condition())

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            if "ready" in message:
                node.ready.set()
                continue
            with node.lock:
                node.replies.append(message)
                node.lock.notify_all()

    threading.Thread(target=read, daemon=True).start()
    if not node.ready.wait(60):
        raise AssertionError(
            f"{node_id} did not start: {(tmp_path / f'{node_id}.err').read_text()}"
        )
    return node


@pytest.fixture
def nodes(
    pg_url: str, make_nats_server: Callable[..., natsserver.NatsServer], tmp_path: Path
) -> Iterator[tuple[list[Node], natsserver.NatsServer, str]]:
    server = make_nats_server()
    started = [start_node(pg_url, server.url, f"node-{n}", tmp_path) for n in range(NODES)]
    yield started, server, pg_url
    for node in started:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in started:
        try:
            node.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def bucket_shares(pg_url: str) -> Counter[str]:
    """How many buckets each node holds with a live lease."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT owner, COUNT(*) FROM plexspaces_buckets "
                    "WHERE owner IS NOT NULL AND lease_until_us >= :now GROUP BY owner"
                ),
                {"now": int(time.time() * 1e6)},
            ).all()
    finally:
        engine.dispose()
    return Counter({str(owner): int(count) for owner, count in rows})


def even_within(shares: Counter[str], members: list[str], tolerance: float = 0.10) -> bool:
    even = BUCKETS / len(members)
    return (
        set(shares) == set(members)
        and all(abs(shares[member] - even) <= tolerance * even + 1e-9 for member in members)
        and sum(shares.values()) == BUCKETS
    )


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` (reading other processes' state) until true or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # polling other processes: a bounded wait, not a correctness sleep
    return True


def journal_lines(nodes: list[Node]) -> Iterator[tuple[str, list[str]]]:
    """(the process's label, the line's fields) of every journal line."""
    for node in nodes:
        if node.journal.exists():
            for line in node.journal.read_text().splitlines():
                yield node.label, line.split(" ")


def latencies(report: dict[str, Any]) -> list[float]:
    return sorted(x for sender in report["senders"] for x in sender["latencies"])


def errors(report: dict[str, Any]) -> Counter[str]:
    found: Counter[str] = Counter()
    for sender in report["senders"]:
        found.update(sender["errors"])
    return found


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else float("nan")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_nodes_route_asks_and_tells_survive_a_kill_and_a_nats_restart(
    nodes: tuple[list[Node], natsserver.NatsServer, str], tmp_path: Path
) -> None:
    """Cross-node asks and tells are answered from every node, in order, once; a SIGKILLed
    node's actors answer on the others within lease + poll + 2 s; reminders fire at most once
    more per reminder; buckets stay even; a nats-server restart loses no acknowledged tell;
    activations of a key never overlap."""
    started, server, pg_url = nodes
    keys = [f"d{index:04d}" for index in range(ACTORS)]
    for n, node in enumerate(started):
        node.send(
            {
                "op": "register",
                "keys": keys[n::NODES],
                "reminders": REMINDERS_PER_ACTOR,
                "period": PERIOD,
            }
        )
    for node in started:
        assert node.reply(180)["registered"] == ACTORS // NODES
    members = [node.node_id for node in started]
    assert wait_until(lambda: even_within(bucket_shares(pg_url), members), 2 * LEASE_S + 5), (
        bucket_shares(pg_url)
    )

    # Healthy: every node asks and tells keys spread over all nodes.
    for node in started:
        node.send({"op": "traffic", "keys": keys, "seconds": 10, "threads": SENDERS})
    healthy = [node.reply(120) for node in started]
    healthy_latencies = sorted(x for report in healthy for x in latencies(report))
    healthy_errors = sum((errors(report) for report in healthy), Counter())
    asks = len(healthy_latencies)
    rate = asks / max(report["elapsed"] for report in healthy)
    assert healthy_errors == Counter(), healthy_errors

    # SIGKILL node-0 while the other two keep sending.
    victim, survivors = started[0], started[1:]
    for node in survivors:
        node.send({"op": "traffic", "keys": keys, "seconds": 20, "threads": SENDERS})
    time.sleep(3.0)  # let the traffic run before the kill: a scenario step, not a wait for state
    killed_at = time.time()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    during = [node.reply(180) for node in survivors]
    # A message in flight to node-0 when it died may or may not have been handled: its sender
    # gets NodeLostError (at most one per sender thread); every other message is answered.
    kill_errors = sum((errors(report) for report in during), Counter())
    assert set(kill_errors) <= {"NodeLostError"}, kill_errors
    assert kill_errors["NodeLostError"] <= len(survivors) * SENDERS
    slowest = max(x for report in during for x in latencies(report))
    after = survivors[0].call({"op": "ask", "keys": keys, "timeout": 30}, timeout=600)
    assert {answer for answer in after.values()} <= {"node-1", "node-2"}, [
        f"{key}: {answer}" for key, answer in after.items() if answer not in ("node-1", "node-2")
    ][:10]
    survivors_ids = [node.node_id for node in survivors]
    assert wait_until(lambda: even_within(bucket_shares(pg_url), survivors_ids), 2 * LEASE_S + 5), (
        bucket_shares(pg_url)
    )

    # node-0 comes back: the buckets spread over three again.
    revived = start_node(pg_url, server.url, "node-0", tmp_path, label="node-0-again")
    started[0] = revived
    assert wait_until(lambda: even_within(bucket_shares(pg_url), members), 2 * LEASE_S + 5), (
        bucket_shares(pg_url)
    )

    # The nats-server goes away for a while under traffic, then comes back.
    for node in started:
        node.send({"op": "traffic", "keys": keys, "seconds": 12, "threads": SENDERS})
    time.sleep(2.0)  # traffic first, then the outage: a scenario step
    server.stop()
    time.sleep(3.0)  # the outage lasts this long: a scenario step
    server.start()
    outage = [node.reply(180) for node in started]
    outage_errors = sum((errors(report) for report in outage), Counter())
    assert set(outage_errors) <= {"TransportUnavailableError"}, outage_errors
    for node in started:
        node.send({"op": "traffic", "keys": keys, "seconds": 5, "threads": SENDERS})
    recovered = [node.reply(180) for node in started]
    assert sum((errors(report) for report in recovered), Counter()) == Counter()
    for node in started:
        node.send({"op": "quit"})
    for node in started:
        node.process.wait(timeout=120)
    ended_at = time.time()

    # -- the journals --------------------------------------------------------------------------
    handled: defaultdict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    intervals: defaultdict[str, list[list[Any]]] = defaultdict(list)
    open_at: dict[tuple[str, str], float] = {}
    fires: Counter[tuple[str, str, int]] = Counter()
    for label, parts in journal_lines([victim, *started]):
        match parts:
            case ["msg", key, _, sender, seq]:
                handled[(sender, key)].append((label, int(seq)))
            case ["start", key, _, at]:
                open_at[(label, key)] = float(at)
            case ["stop", key, _, at]:
                begun = open_at.pop((label, key), None)
                if begun is not None:
                    intervals[key].append([begun, float(at), label])
            case ["fire", key, name, count, _]:
                fires[(key, name, int(count))] += 1
    for (label, key), begun in open_at.items():
        # Never stopped: killed (node-0's first process) or running until the end.
        intervals[key].append([begun, killed_at if label == "node-0" else ended_at, label])

    problems: list[str] = []
    for key, spans in intervals.items():
        spans.sort()
        for earlier, later in itertools.pairwise(spans):
            if later[0] < earlier[1]:
                problems.append(f"{key}: activations overlap: {earlier} and {later}")
    held_by_victim = {key for (label, key) in open_at if label == "node-0"}
    lost_tells = 0
    for phase, reports in (
        ("healthy", healthy),
        ("kill", during),
        ("nats", outage),
        ("after", recovered),
    ):
        for report in reports:
            for sender in report["senders"]:
                name = sender["sender"]
                for key, last in sender["sent"].items():
                    seen = handled.get((name, key), [])
                    seqs = [seq for _, seq in seen]
                    if len(seqs) != len(set(seqs)):
                        problems.append(f"{name} -> {key}: a message handled twice: {seqs}")
                    per_node: defaultdict[str, list[int]] = defaultdict(list)
                    for label, seq in seen:
                        per_node[label].append(seq)
                    if any(found != sorted(found) for found in per_node.values()):
                        problems.append(f"{name} -> {key}: out of order: {seen}")
                    failed = {seq for failed_key, seq in sender["failed"] if failed_key == key}
                    missing = set(range(1, last + 1)) - set(seqs) - failed
                    if not missing:
                        continue
                    if phase == "kill" and key in held_by_victim:
                        # Enqueued on the node that was then killed: its mailbox died with it.
                        lost_tells += len(missing)
                    else:
                        problems.append(f"{name} -> {key}: acknowledged, never handled: {missing}")
    duplicates = Counter(count - 1 for count in fires.values() if count > 1)
    if any(extra > 1 for extra in duplicates):
        problems.append(f"a reminder fire handled more than twice: {duplicates}")
    reminders_fired = {(key, name) for key, name, _ in fires}

    print(
        f"\nmesh: {NODES} nodes, {ACTORS} actors, {ACTORS * REMINDERS_PER_ACTOR} reminders every "
        f"{PERIOD}; healthy: {asks} asks in {max(r['elapsed'] for r in healthy):.1f}s "
        f"({rate:.0f}/s), p50 {percentile(healthy_latencies, 0.5) * 1e3:.1f} ms, p99 "
        f"{percentile(healthy_latencies, 0.99) * 1e3:.1f} ms; kill: slowest ask "
        f"{slowest:.2f}s (bound {FAILOVER_BOUND_S:.0f}s), in flight at the kill "
        f"{kill_errors['NodeLostError']}; outage errors {dict(outage_errors)}; "
        f"tells lost with the killed node {lost_tells}; reminders fired "
        f"{len(reminders_fired)}, fires {sum(fires.values())}, duplicate fires "
        f"{sum(duplicates.values())}"
    )
    assert problems == [], "\n".join(problems[:30])
    assert slowest <= FAILOVER_BOUND_S + SLACK_S
    assert len(reminders_fired) == ACTORS * REMINDERS_PER_ACTOR
