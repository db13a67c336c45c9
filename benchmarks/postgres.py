"""Reminder fire rate on PostgreSQL: with one node and with three (scenario 11), and a burst of
10,000 due at one instant on one node (scenario 17); no peer.

A throwaway durable server (tests/pgserver.PostgresServer(durable=True): fsync and synchronous
commit on) and a new database per run. In scenario 11 each node is a separate process (an
ActorSystem with its own node_id on the shared database, a cluster); each registers its share of
the reminders, all due at one instant, and reports when it handled each fire. Scenario 17 runs
its one node in this process, as the SQLite bursts do.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.fires import FIRE_WAIT as BURST_WAIT
from benchmarks.fires import (
    FireRun,
    at_once,
    delivered_row,
    delivery_notes,
    rate_row,
    store,
)
from benchmarks.measure import (
    NOTHING,
    Config,
    LatenessLog,
    Metric,
    Scenario,
    ScenarioResult,
    child_result,
    lateness_summary,
    median,
    project_at_least,
    start_child,
    warm_up,
)
from benchmarks.reminders import TYPE, Reminded, activate_facets
from plexspaces import ActorSystem

ACTORS = 60
"""Virtual actors in all, split evenly between the nodes."""
FIRE_WAIT = 120.0


def node(url: str, node_id: str, actors: int, per_actor: int, due: float) -> dict[str, Any]:
    """One node (run in its own process): register `actors` x `per_actor` reminders due at `due`
    on actors of its own, then handle their fires."""
    log = LatenessLog(actors * per_actor)
    due_at = datetime.fromtimestamp(due, UTC)
    started = time.time()
    with ActorSystem(storage_url=url, node_id=node_id, name=node_id) as system:
        system.register_virtual(TYPE, Reminded, log)
        facets = activate_facets(system, actors, prefix=f"{node_id}-k")
        began = time.time()
        for index in range(actors * per_actor):
            facets[index % actors].register_reminder(f"r{index}", due=due_at)
        registered_at = time.time()
        log.wait(FIRE_WAIT)
    return {
        "ready_in": began - started,
        "registration_rate": actors * per_actor / (registered_at - began),
        "registered_at": registered_at,
        "last_at": log.last_at,
        "lateness": log.lateness_ms,
    }


def _run(url: str, nodes: int, total: int, lead: float) -> dict[str, Any]:
    due = time.time() + lead
    processes = [
        start_child(
            node,
            url=url,
            node_id=f"node{index}",
            actors=ACTORS // nodes,
            per_actor=total // ACTORS,
            due=due,
        )
        for index in range(nodes)
    ]
    reports = [child_result(process, timeout=FIRE_WAIT + 120) for process in processes]
    lateness = [value for report in reports for value in report["lateness"]]
    return {
        "rate": len(lateness) / (max(report["last_at"] for report in reports) - due),
        "delivered": len(lateness),
        "p99": lateness_summary(lateness)["p99"],
        "registration_rate": sum(report["registration_rate"] for report in reports),
        "overran": sum(report["registered_at"] > due for report in reports),
    }


def _durable_server() -> tuple[Any, Any] | ScenarioResult:
    """A throwaway durable PostgreSQL server and the function that makes a scratch database
    on it, or the result that says why the scenario was skipped."""
    try:
        from tests.pgserver import PostgresServer, scratch_database
    except ImportError as error:
        return ScenarioResult(notes=[f"skipped: the PostgreSQL test helpers need {error.name}"])
    try:
        return PostgresServer(durable=True), scratch_database
    except RuntimeError as error:
        return ScenarioResult(notes=[f"skipped: no PostgreSQL server could be started: {error}"])


def fire_rate(config: Config) -> ScenarioResult:
    started = _durable_server()
    if isinstance(started, ScenarioResult):
        return started
    server, scratch_database = started
    total = config.pick(quick=600, full=2_400)
    # Node processes need about 2 s to start and activate their actors, then register at more
    # than 1,000 reminders a second each.
    lead = 3.0 + total / 1000
    runs: dict[int, list[dict[str, Any]]] = {1: [], 3: []}
    try:
        for index in range(config.fewer_rounds):
            for nodes in (1, 3) if index % 2 == 0 else (3, 1):
                with scratch_database(server) as url:
                    runs[nodes].append(_run(url, nodes, total, lead))
    finally:
        server.close()
    result = ScenarioResult(
        notes=[
            f"{total:,} one-shot reminders all due at one instant, {lead:g} s after the node "
            f"processes start, on {ACTORS} virtual actors split evenly between the nodes; each "
            "node registers the reminders of its own actors. Rate = fires handled by all nodes "
            "/ (last handled - due instant). A fresh database per run on one durable server "
            "(fsync on); nodes run as a cluster (claims and leases), poll_interval 1 s."
        ]
    )
    for nodes in (1, 3):
        label = "1 node" if nodes == 1 else f"{nodes} nodes"

        def row(text: str, unit: str, key: str, runs: list[dict[str, Any]] = runs[nodes]) -> Metric:
            return Metric(
                text, unit, median([run[key] for run in runs]), None, peer_missing=NOTHING
            )

        result.metrics += [
            row(f"fire rate, {label}", "/s", "rate"),
            row(f"lateness p99 (all due at once), {label}", "ms", "p99"),
            row(f"fires delivered, {label}", "count", "delivered"),
            row(f"registrations, {label} (all nodes together)", "/s", "registration_rate"),
        ]
    overran = sum(run["overran"] for group in runs.values() for run in group)
    if overran:
        result.notes.append(
            f"{overran} node run(s) were still registering when the reminders fell due"
        )
    return result


# -- 17. a burst on one node ---------------------------------------------------------------------

BURST_ACTORS = 100


def _burst_lead(count: int) -> float:
    """Seconds from the end of the set-up to the due instant: storing on PostgreSQL with fsync
    costs a commit per actor."""
    return 1.0 + count / 5_000


def _burst_run(url: str, count: int) -> FireRun:
    log = LatenessLog(count)
    with ActorSystem(storage_url=url, name="bench") as system:
        system.register_virtual(TYPE, Reminded, log)
        facets = activate_facets(system, BURST_ACTORS)
        due = time.time() + _burst_lead(count)
        store(facets, at_once(count), due)
        stored_at = time.time()
        complete = log.wait(BURST_WAIT)
        ended_at = time.time()
    return FireRun(log, due, stored_at, complete, ended_at)


def burst(config: Config) -> ScenarioResult:
    started = _durable_server()
    if isinstance(started, ScenarioResult):
        return started
    server, scratch_database = started
    count = config.pick(quick=1_000, full=10_000)
    rounds = config.fewer_rounds

    def one_run(size: int) -> FireRun:
        with scratch_database(server) as url:
            return _burst_run(url, size)

    try:
        warm_up(lambda: one_run(count // 10))
        runs = [one_run(count) for _ in range(rounds)]
    finally:
        server.close()
    metrics = [
        rate_row(
            f"fires/s, {count:,} due at one instant, 1 node",
            runs,
            None,
            project_at_least(5_000, "≥ 5,000/s"),
            NOTHING,
        ),
        *(
            Metric(
                f"lateness {key} (from the due instant)",
                "ms",
                median([run.summary()[key] for run in runs]),
                None,
                peer_missing=NOTHING,
            )
            for key in ("p50", "p99")
        ),
    ]
    delivered = delivered_row(runs, None, NOTHING)
    metrics.append(delivered)
    notes = [
        f"{count:,} one-shot reminders all due at one instant on {BURST_ACTORS} virtual actors "
        "(active) of one node (an ActorSystem on the database, in this process, with the "
        "defaults for PostgreSQL: a cluster of one, with claims and leases), stored through "
        f"register_reminders, one call per actor, {_burst_lead(count):g} s before the due "
        "instant. Rate = fires handled / (last handled - due instant). A durable server "
        f"(fsync and synchronous commit on), a new database per run; {rounds} round(s) after "
        "one warm-up run at a tenth of the size.",
        *delivery_notes({"PlexSpaces": runs}),
    ]
    return ScenarioResult(metrics=metrics, notes=notes)


SCENARIOS = [
    Scenario(
        11, "postgres", "PostgreSQL fire rate, 1 and 3 nodes", "none", fire_rate, in_quick=False
    ),
    Scenario(
        17,
        "postgres-burst",
        "PostgreSQL, reminders due at one instant, one node",
        "none",
        burst,
        in_quick=False,
    ),
]
