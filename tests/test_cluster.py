"""Several nodes on one PostgreSQL database, as separate processes on the real clock.

Three node processes (`tests/cluster_node.py`) each register the reminders of their own share of
the `device` actors, all anchored on one instant, with `missed="all"` so that every tick is owed
a fire however late. After a healthy phase one node is killed with SIGKILL; the other two must
take its actors and reminders over once its lease has run out. Every handled fire is logged by
the node that handled it; the checks read the logs and the table:

- healthy phase: every tick fired exactly once (no duplicate, no gap), each by the node that
  registered it;
- after the kill: no fire lost (fire_counts contiguous from 1, up to the count stored in the
  table), at most one duplicate per reminder of the dead node (its fire in flight) and none for
  the others, and the dead node's reminders resumed within the lease plus a bound.

The figures (ticks, duplicates, losses, failover time, fire rate) are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog.testing
from sqlalchemy import create_engine, text

from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorActiveElsewhereError, ActorSystem, ManualClock, ReminderFired

ROOT = Path(__file__).resolve().parent.parent
NODES = 3
ACTORS = 100
REMINDERS_PER_ACTOR = 10
PERIOD_S = 2.0
LEASE_S = 3.0
POLL_S = 0.5
KILL_AFTER_S = 12.0
"""Seconds after the anchor (the first tick) at which node 0 is killed."""
RUN_S = 30.0
"""Seconds after the anchor at which the surviving nodes are stopped."""
START_WAIT_S = 120.0
FAILOVER_BOUND_S = LEASE_S + 1.0 + PERIOD_S + 5.0
"""What the test allows for a reminder of the dead node to fire again: its lease, the poll, one
period (the reminder may not be due at once), and room for a loaded CI machine. The measured
figure is printed."""

Reminder = tuple[str, str]


@dataclass
class Fire:
    node: str
    count: int
    scheduled: float
    handled: float


@dataclass
class NodeProcess:
    node_id: str
    log: Path
    process: subprocess.Popen[bytes]
    actors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        text_ = self.log.read_text() if self.log.exists() else ""
        return text_.split("\n")[:-1]  # the last piece is empty, or cut short by a kill


def start_node(
    url: str, node_id: str, tmp_path: Path, actors: list[str], anchor: float
) -> NodeProcess:
    log = tmp_path / f"{node_id}.log"
    config = {
        "url": url,
        "node_id": node_id,
        "log": str(log),
        "lease": f"{LEASE_S}s",
        "poll_interval": f"{POLL_S}s",
        "actors": actors,
        "reminders_per_actor": REMINDERS_PER_ACTOR,
        "period": f"{PERIOD_S}s",
        "anchor": anchor,
        "register": True,
    }
    err = (tmp_path / f"{node_id}.err").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster_node", json.dumps(config)],
        cwd=ROOT,
        stdout=err,
        stderr=err,
    )
    return NodeProcess(node_id, log, process, actors)


def wait_for(predicate: object, timeout: float, what: str) -> None:
    """Poll `predicate` (a callable) until true; a bound on waiting for other processes."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling other processes' files: a wait, not a correctness sleep


def read_fires(nodes: list[NodeProcess]) -> dict[Reminder, list[Fire]]:
    fires: defaultdict[Reminder, list[Fire]] = defaultdict(list)
    for node in nodes:
        for line in node.lines():
            parts = line.split(" ")
            if parts[0] != "fire" or len(parts) != 6:
                continue
            _, key, name, count, scheduled, handled = parts
            fires[(key, name)].append(
                Fire(node.node_id, int(count), float(scheduled), float(handled))
            )
    for found in fires.values():
        found.sort(key=lambda fire: fire.handled)
    return dict(fires)


@pytest.mark.slow
def test_three_nodes_fire_each_tick_once_and_take_over_a_killed_node(
    pg_url: str, tmp_path: Path
) -> None:
    keys = [f"d{index:03d}" for index in range(ACTORS)]
    shares = {
        f"node-{n}": [key for i, key in enumerate(keys) if i % NODES == n] for n in range(NODES)
    }
    # The first tick comes once every node has had time to start and register.
    anchor = time.time() + 15.0
    nodes = [
        start_node(pg_url, node_id, tmp_path, share, anchor) for node_id, share in shares.items()
    ]
    try:
        for node in nodes:
            wait_for(
                lambda node=node: "ready" in node.lines() or node.process.poll() is not None,
                START_WAIT_S,
                f"{node.node_id} to register its reminders",
            )
            assert node.process.poll() is None, (tmp_path / f"{node.node_id}.err").read_text()
        assert time.time() < anchor, "registration took longer than the head start"
        victim, survivors = nodes[0], nodes[1:]
        wait_for(lambda: time.time() >= anchor + KILL_AFTER_S, KILL_AFTER_S + 20, "the kill time")
        killed_at = time.time()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        wait_for(lambda: time.time() >= anchor + RUN_S, RUN_S + 20, "the end of the run")
        stopped_at = time.time()
        for node in survivors:
            node.process.send_signal(signal.SIGTERM)
        for node in survivors:
            node.process.wait(timeout=60)
            assert node.process.returncode == 0, (tmp_path / f"{node.node_id}.err").read_text()
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait()

    engine = create_engine(pg_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT actor_key, name, fire_count, pending_fire FROM plexspaces_reminders")
        ).all()
    engine.dispose()
    stored = {(row.actor_key, row.name): (row.fire_count, row.pending_fire) for row in rows}
    fires = read_fires(nodes)
    owner = {key: node for node, share in shares.items() for key in share}

    problems: list[str] = []
    duplicates = 0
    losses = 0
    failovers: list[float] = []
    expected_total = 0
    ticks_due = int((stopped_at - anchor) // PERIOD_S) + 1
    for key in keys:
        for index in range(REMINDERS_PER_ACTOR):
            reminder = (key, f"r{index}")
            found = fires.get(reminder, [])
            counts = [fire.count for fire in found]
            stored_count, pending = stored.get(reminder, (0, None))
            expected_total += ticks_due
            # Every tick that fell due before the end was recorded (missed="all": none skipped).
            if stored_count < ticks_due - 1:
                problems.append(
                    f"{reminder}: {stored_count} fires recorded of {ticks_due} ticks due"
                )
            # Nothing lost: every recorded fire was handled, except one still pending at the end.
            handled = set(counts)
            owed = set(range(1, stored_count + 1)) - ({pending} if pending else set())
            lost = owed - handled
            losses += len(lost)
            if lost:
                problems.append(f"{reminder}: fires {sorted(lost)} recorded but never handled")
            extra = len(counts) - len(handled)
            duplicates += extra
            before_kill = [fire.count for fire in found if fire.handled < killed_at]
            if len(before_kill) != len(set(before_kill)):
                problems.append(f"{reminder}: a fire handled twice while every node was healthy")
            if any(fire.node != owner[key] for fire in found if fire.handled < killed_at):
                problems.append(
                    f"{reminder}: fired by a node other than its registrar before the kill"
                )
            if owner[key] == "node-0":
                if extra > 1:
                    problems.append(f"{reminder}: {extra} duplicates after one crash")
                resumed = [fire.handled for fire in found if fire.node != "node-0"]
                if not resumed:
                    problems.append(f"{reminder}: never fired again after node-0 was killed")
                else:
                    failovers.append(resumed[0] - killed_at)
            elif extra:
                problems.append(f"{reminder}: {extra} duplicates on a node that never crashed")

    total_fires = sum(len(found) for found in fires.values())
    healthy = sum(1 for found in fires.values() for fire in found if fire.handled < killed_at)
    failovers.sort()
    print(
        f"\ncluster: {NODES} nodes, {ACTORS * REMINDERS_PER_ACTOR} reminders every {PERIOD_S}s, "
        f"{stopped_at - anchor:.1f}s run; ticks due {expected_total}, fires handled "
        f"{total_fires} ({total_fires / (stopped_at - anchor):.0f}/s; {healthy} before the kill); "
        f"duplicates {duplicates}, losses {losses}; failover after the kill: "
        f"min {failovers[0] if failovers else float('nan'):.2f}s "
        f"max {failovers[-1] if failovers else float('nan'):.2f}s (lease {LEASE_S}s)"
    )
    assert problems == [], "\n".join(problems[:30])
    assert failovers
    assert failovers[-1] <= FAILOVER_BOUND_S


# -- two nodes in one process, on a shared ManualClock ---------------------------------------------


class Counter_(Actor):
    """Records (node, "<key>:<reminder>", fire_count) of every fire it handles."""

    fires: ClassVar[list[tuple[str, str, int]]]

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(reminder_name=name, fire_count=count):
                self.fires.append((self.ctx.system.node_id, f"{self.ctx.actor_key}:{name}", count))
                return None
            case ("register", name, kwargs):
                self.facet(ReminderFacet).register_reminder(name, **kwargs)
                return None
            case "ping":
                return self.ctx.system.node_id
        raise AssertionError(f"unexpected message {message!r}")


def _two_nodes(
    make_system: Callable[..., ActorSystem], url: str, clock: ManualClock, **kwargs: Any
) -> tuple[ActorSystem, ActorSystem, list[tuple[str, str, int]]]:
    fires: list[tuple[str, str, int]] = []
    cls = type("Counter", (Counter_,), {"fires": fires})
    nodes = []
    for node_id in ("node-a", "node-b"):
        node = make_system(storage_url=url, clock=clock, node_id=node_id, **kwargs)
        node.register_virtual("dev", cls)
        nodes.append(node)
    return nodes[0], nodes[1], fires


def test_an_actor_active_on_one_node_is_refused_on_another_naming_the_node(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    a, b, _ = _two_nodes(make_system, pg_url, clock)
    assert a.cluster
    assert b.cluster
    assert a.virtual("dev", "x").ask("ping") == "node-a"
    with pytest.raises(ActorActiveElsewhereError, match="'node-a'") as refused:
        b.virtual("dev", "x").ask("ping")
    assert refused.value.node_id == "node-a"
    assert refused.value.actor_id == "dev/x"
    assert b.actor_ids() == []
    # Another key is free on node b, and x is free once a stops it.
    assert b.virtual("dev", "y").ask("ping") == "node-b"
    a.virtual("dev", "x").stop()
    assert b.virtual("dev", "x").ask("ping") == "node-b"


def test_reminders_fire_once_on_the_node_holding_the_actor_and_move_on_clean_shutdown(
    pg_url: str, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    a, b, fires = _two_nodes(make_system, pg_url, clock, lease="10s", poll_interval="1s")
    for key in ("x", "y"):
        a.virtual("dev", key).ask(("register", "tick", {"due": "1s", "period": "1s"}))
    clock.advance("5s")
    a.virtual("dev", "x").ask("ping")
    a.virtual("dev", "y").ask("ping")
    assert sorted(fires) == sorted(
        ("node-a", f"{key}:tick", count) for count in range(1, 6) for key in ("x", "y")
    )
    assert b.actor_ids() == []
    fires.clear()
    a.shutdown()  # releases its claims and activations at once
    clock.advance("5s")
    for key in ("x", "y"):
        assert b.virtual("dev", key).ask("ping") == "node-b"
    # Node b took both over: every tick after the handover fired once, counts continue.
    assert all(node == "node-b" for node, _, _ in fires)
    assert sorted((name, count) for _, name, count in fires) == sorted(
        (f"{key}:tick", count) for count in range(6, 11) for key in ("x", "y")
    )


def test_two_cluster_nodes_on_one_sqlite_file_never_fire_a_tick_twice(
    tmp_path: Path, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b, fires = _two_nodes(make_system, url, clock, cluster=True, poll_interval="500ms")
    keys = [f"k{index}" for index in range(10)]
    for index, key in enumerate(keys):
        node = a if index % 2 else b
        node.virtual("dev", key).ask(("register", "tick", {"due": "1s", "period": "1s"}))
    clock.advance("10s")
    for index, key in enumerate(keys):
        (a if index % 2 else b).virtual("dev", key).ask("ping")
    # Each tick of each reminder fired exactly once, on the node that holds its actor.
    assert sorted((name, count) for _, name, count in fires) == sorted(
        (f"{key}:tick", count) for key in keys for count in range(1, 11)
    )
    assert Counter(node for node, _, _ in fires) == {"node-a": 50, "node-b": 50}


def test_a_cluster_node_on_a_new_sqlite_file_takes_over_what_another_node_left(
    tmp_path: Path, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """Node b only registers the type (before the file even exists): it still polls, and takes
    over node a's reminders once a has shut down."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    a, b, fires = _two_nodes(make_system, url, clock, cluster=True, poll_interval="500ms")
    a.virtual("dev", "x").ask(("register", "tick", {"due": "1s", "period": "1s"}))
    clock.advance("2s")
    a.shutdown()
    clock.advance("3s")
    assert b.virtual("dev", "x").ask("ping") == "node-b"
    assert [(node, count) for node, _, count in fires] == [
        ("node-a", 1),
        ("node-a", 2),
        ("node-b", 3),
        ("node-b", 4),
        ("node-b", 5),
    ]


def test_the_node_that_takes_reminders_over_logs_how_many_it_claimed(
    tmp_path: Path, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """After node a shuts down, node b's poll claims a's reminders and logs reminder.claimed at
    info with its node id and the count; node b's own reminders are never counted."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b, _ = _two_nodes(make_system, url, clock, cluster=True, poll_interval="500ms")
    for key in ("x", "y"):
        a.virtual("dev", key).ask(("register", "tick", {"due": "1s", "period": "1s"}))
    b.virtual("dev", "z").ask(("register", "tick", {"due": "1s", "period": "1s"}))
    with structlog.testing.capture_logs() as logs:
        clock.advance("2s")
        assert [e for e in logs if e["event"] == "reminder.claimed"] == []
        a.shutdown()  # releases its claims
        clock.advance("1s")
        assert b.virtual("dev", "x").ask("ping") == "node-b"
    claimed = [e for e in logs if e["event"] == "reminder.claimed"]
    assert [(e["log_level"], e["node_id"]) for e in claimed] == [("info", "node-b")] * len(claimed)
    assert sum(e["reminders"] for e in claimed) == 2


def test_a_paused_node_that_lost_an_activation_stops_its_copy_at_its_next_renewal(
    tmp_path: Path, make_system: Callable[..., ActorSystem]
) -> None:
    """A node whose activation lease ran out unrenewed (its clock stood still, as a paused
    process's does) while another node activated the actor stops its own copy at its next
    renewal, logging actor.fenced; one it still holds is taken back instead."""
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    clock_a, clock_b = ManualClock(), ManualClock()
    fires: list[tuple[str, str, int]] = []
    cls = type("Counter", (Counter_,), {"fires": fires})
    a = make_system(storage_url=url, clock=clock_a, node_id="node-a", cluster=True, lease="3s")
    b = make_system(storage_url=url, clock=clock_b, node_id="node-b", cluster=True, lease="3s")
    for node in (a, b):
        node.register_virtual("dev", cls)
    assert a.virtual("dev", "moved").ask("ping") == "node-a"
    assert a.virtual("dev", "kept").ask("ping") == "node-a"
    clock_b.advance("5s")  # node a stands still; its leases run out on node b's clock
    assert b.virtual("dev", "moved").ask("ping") == "node-b"
    assert a.virtual("dev", "moved").is_alive()  # a has not noticed yet
    with structlog.testing.capture_logs() as logs:
        clock_a.advance("5s")  # node a renews: "moved" is node b's now, "kept" nobody's
    assert a.virtual("dev", "moved").wait_stopped(timeout=5)
    assert not a.virtual("dev", "moved").is_alive()
    assert a.virtual("dev", "kept").is_alive()
    fenced = [event for event in logs if event["event"] == "actor.fenced"]
    assert [(event["actor_id"], event["holder"]) for event in fenced] == [("dev/moved", "node-b")]
    # node a holds "kept" again: node b is refused it.
    with pytest.raises(ActorActiveElsewhereError, match="'node-a'"):
        b.virtual("dev", "kept").ask("ping")
