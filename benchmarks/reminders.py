"""Durable reminders on SQLite against APScheduler 3.x: registration, a restart with many
stored reminders, and a restart with a million stored of which many are overdue (scenarios 6, 8
and 15); what the reminder scenarios share (the actor, the system, the peer, fresh files)."""

from __future__ import annotations

import gc
import itertools
import shutil
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.measure import (
    NOTHING,
    Config,
    Goal,
    LatenessLog,
    Metric,
    Scenario,
    ScenarioResult,
    alternate,
    at_least,
    child_result,
    median,
    median_of,
    peak_rss_bytes,
    project_at_least,
    project_at_most,
    repeat,
    rss_bytes,
    start_child,
    warm_up,
)
from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired, ReminderRegistration

TYPE = "bench"
NOT_INSTALLED = "not installed"
PEER_MISSING = (
    "APScheduler is not installed, so the peer did not run: pip install 'apscheduler>=3.10,<4' "
    "(the bench extra)"
)
_files = itertools.count()


def peer_module() -> ModuleType | None:
    """The APScheduler peer module, or None when APScheduler is not installed."""
    try:
        from benchmarks import apscheduler_peer
    except ImportError:
        return None
    return apscheduler_peer


def fresh_file(config: Config, side: str) -> Path:
    return config.workdir / f"{side}-{next(_files)}.db"


class Reminded(Actor):
    """A virtual actor with ReminderFacet that records the lateness of each ReminderFired (a fire
    delivered again, with the same name and fire count, counts as a duplicate)."""

    def __init__(self, log: LatenessLog | None) -> None:
        super().__init__()
        self.log = log

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet())

    def on_receive(self, message: Any) -> Any:
        if type(message) is ReminderFired and self.log is not None:
            self.log.record(
                message.scheduled_at.timestamp(),
                (self.ctx.actor_id, message.reminder_name, message.fire_count),
            )
        return None


def project_system(
    path: Path, log: LatenessLog | None, *, clock: ManualClock | None = None
) -> ActorSystem:
    system = ActorSystem(storage_url=f"sqlite:///{path}", clock=clock, name="bench")
    system.register_virtual(TYPE, Reminded, log)
    return system


def activate_facets(system: ActorSystem, count: int, prefix: str = "k") -> list[ReminderFacet]:
    """Activate `count` keys (`k0`, `k1`, ... by default) and return their reminder facets; an
    untimed set-up step."""
    facets = []
    for index in range(count):
        ref = system.virtual(TYPE, f"{prefix}{index}")
        ref.ask("ping", timeout=30)
        facets.append(system.facet_service.get_facet(ref.actor_id, ReminderFacet))
    return facets


def at_time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- 6. registration -----------------------------------------------------------------------------


def _register_project(config: Config, count: int, actors: int) -> float:
    with project_system(fresh_file(config, "project"), None) as system:
        facets = activate_facets(system, actors)
        started = time.perf_counter()
        for index in range(count):
            facets[index % actors].register_reminder(f"r{index}", due="1h", payload={"n": index})
        return count / (time.perf_counter() - started)


def _register_peer(peer: ModuleType, config: Config, count: int) -> float:
    scheduler = peer.Scheduler(fresh_file(config, "peer"))
    scheduler.start()
    try:
        started = time.perf_counter()
        for index in range(count):
            scheduler.add(f"r{index}", time.time() + 3600, "unused")
        return count / (time.perf_counter() - started)
    finally:
        scheduler.close()


def _register_project_batches(config: Config, count: int, actors: int) -> float:
    with project_system(fresh_file(config, "project"), None) as system:
        facets = activate_facets(system, actors)
        started = time.perf_counter()
        for first, facet in enumerate(facets):
            facet.register_reminders(
                [
                    ReminderRegistration(f"r{index}", due="1h", payload={"n": index})
                    for index in range(first, count, actors)
                ]
            )
        return count / (time.perf_counter() - started)


def registration(config: Config) -> ScenarioResult:
    count = config.pick(quick=500, full=5_000)
    batched = config.pick(quick=2_000, full=20_000)
    actors = 100
    peer = peer_module()
    project_side = partial(_register_project, config, count, actors)
    result = ScenarioResult(
        notes=[
            f"{count:,} one-shot reminders due in 1 h, each durable when the call returns, "
            f"spread over {actors} virtual actors and registered from one thread through "
            "ReminderFacet.register_reminder (payload {'n': i}). Peer: add_job with a date "
            "trigger on a running BackgroundScheduler (each add is one INSERT and wakes the "
            "scheduler loop, as in normal use). A fresh database file per round.",
            f"Batch: {batched:,} reminders through ReminderFacet.register_reminders, one call "
            f"per actor with its {batched // actors:,} ReminderRegistration values (built inside "
            "the timing), each call one transaction. APScheduler 3 has no batch API.",
        ]
    )
    warm_up(partial(_register_project_batches, config, batched // 10, actors))
    batches = repeat(config.rounds, partial(_register_project_batches, config, batched, actors))
    if peer is None:
        ours = repeat(config.rounds, project_side)
        theirs = None
        result.notes.append(PEER_MISSING)
    else:
        warm_up(
            partial(_register_project, config, count // 10, actors),
            partial(_register_peer, peer, config, count // 10),
        )
        ours, peer_rates = alternate(
            config.rounds, project_side, partial(_register_peer, peer, config, count)
        )
        theirs = median(peer_rates)
    result.metrics = [
        Metric(
            "registrations, one call each",
            "/s",
            median(ours),
            theirs,
            at_least(20),
            peer_missing=NOT_INSTALLED,
        ),
        Metric(
            "registrations in batches",
            "/s",
            median(batches),
            None,
            project_at_least(20_000, "≥ 20,000/s"),
            peer_missing="no batch API",
        ),
    ]
    return result


# -- 8. restart with many stored reminders -------------------------------------------------------


def _build_project_store(config: Config, count: int, first_due: float, window: float) -> Path:
    path = fresh_file(config, "project-restart")
    with project_system(path, None) as system:
        facets = activate_facets(system, 100)
        for index in range(count):
            facets[index % 100].register_reminder(
                f"r{index}", due=at_time(first_due + window * index / count)
            )
    return path


def _restart_project(path: Path, count: int, now: float) -> float:
    clock = ManualClock(start=at_time(now))
    started = time.perf_counter()
    system = project_system(path, None, clock=clock)
    try:
        clock.advance(0)  # runs the loader that registering the type scheduled
        elapsed = time.perf_counter() - started
        if len(system.scheduler) < count:
            raise RuntimeError(f"{len(system.scheduler)} of {count} reminders armed")
        return elapsed
    finally:
        system.shutdown()


def _build_peer_store(peer: ModuleType, config: Config, count: int, first_due: float) -> Path:
    path = fresh_file(config, "peer-restart")
    scheduler = peer.Scheduler(path)
    scheduler.start(paused=True)
    try:
        jobs = [(f"r{index}", first_due + index / count) for index in range(count)]
        scheduler.store_many(jobs, "unused")
    finally:
        scheduler.close()
    return path


def _restart_peer(peer: ModuleType, path: Path) -> float:
    started = time.perf_counter()
    scheduler = peer.Scheduler(path)
    scheduler.start()
    try:
        if not scheduler.first_pass.wait(60):
            raise RuntimeError("APScheduler did not finish its first pass within 60 s")
        return time.perf_counter() - started
    finally:
        scheduler.close()


def restart(config: Config) -> ScenarioResult:
    peer = peer_module()
    count = config.pick(quick=5_000, full=100_000)
    first_due = time.time() + 86_400  # tomorrow: registering them arms nothing
    window = 20.0
    restart_at = first_due - 5  # every stored reminder is due within the 30 s horizon
    built = time.perf_counter()
    project_store = _build_project_store(config, count, first_due, window)
    build_seconds = time.perf_counter() - built
    project_side = partial(_restart_project, project_store, count, restart_at)
    result = ScenarioResult(
        notes=[
            f"{count:,} one-shot reminders stored through the public API (100 actors; "
            f"{build_seconds:.0f} s to build), all due within the next {window:g} s of the "
            "restarted system's clock, so the restart must load and arm every one (the service "
            "arms what is due within 30 s). Timed from ActorSystem() through register_virtual "
            "until all are in the scheduler. The restarted system runs on a ManualClock set "
            "5 s before the first due time, so the same store serves every round; its "
            "clock.advance(0) runs the same loading code on the calling thread that the "
            "reminder worker runs on the real clock.",
        ]
    )
    if peer is None:
        ours = repeat(config.rounds, project_side)
        theirs = None
        result.notes.append(PEER_MISSING)
    else:
        peer_store = _build_peer_store(peer, config, count, first_due)
        warm_up(project_side, lambda: _restart_peer(peer, peer_store))
        ours, peer_times = alternate(
            config.rounds, project_side, lambda: _restart_peer(peer, peer_store)
        )
        theirs = median(peer_times)
        result.notes.append(
            "Peer: the same number of date-trigger jobs, stored in one transaction as add_job "
            "stores them (built that way only to save time), then a new BackgroundScheduler on "
            "the file, timed from its creation until its loop has finished the first pass "
            "over the job store. APScheduler never holds "
            "jobs in memory (each wake-up queries the due ones), so that pass is its whole "
            "restart."
        )
    result.metrics = [
        Metric(
            f"restart with {count:,} stored reminders, until all armed",
            "s",
            median(ours),
            theirs,
            project_at_most(2.0, "≤ 2 s"),
            NOT_INSTALLED,
        )
    ]
    return result


# -- 15. restart with a million stored reminders, a tenth of them overdue -------------------------

OVERDUE_RSS_GOAL = 200e6
"""Bytes: 200 MB."""


def build_overdue_store(path: str, stored: int, overdue: int, actors: int) -> dict[str, float]:
    """Run in a child process: store `stored` one-shot reminders on `actors` virtual actors,
    through `register_reminders`, one call per actor; `overdue` of them (the same share on every
    actor) due within the past hour, the others 30 to 395 days ahead. The system runs on a
    ManualClock that is never advanced, so nothing fires while the store is built; each actor is
    deactivated once its reminders are stored."""
    now = time.time()
    day = 86_400.0
    started = time.perf_counter()
    with project_system(Path(path), None, clock=ManualClock()) as system:
        for actor in range(actors):
            ref = system.virtual(TYPE, f"k{actor}")
            ref.ask("ping", timeout=30)
            facet = system.facet_service.get_facet(ref.actor_id, ReminderFacet)
            batch = []
            for index in range(actor, stored, actors):
                if index < overdue:
                    due = now - 3600 + 3600 * index / overdue
                else:
                    due = now + 30 * day + 365 * day * (index - overdue) / (stored - overdue)
                batch.append(ReminderRegistration(f"r{index}", due=at_time(due)))
            facet.register_reminders(batch)
            ref.stop()
    return {"seconds": time.perf_counter() - started}


def restart_overdue_probe(path: str, overdue: int, wait: float) -> dict[str, Any]:
    """Run in a fresh child process: restart on the store at `path` on the real clock and wait
    (at most `wait` seconds) until its `overdue` reminders have been handled. Times are from the
    start of `ActorSystem(...)`; memory is this process's own peak RSS."""
    log = LatenessLog(overdue)
    gc.collect()
    started = time.time()
    system = project_system(Path(path), log)  # ActorSystem(...), then register_virtual
    ready = time.time() - started
    complete = log.wait(wait)
    ended = time.time()
    result = {
        "ready": ready,
        "first": None if log.first_at is None else log.first_at - started,
        "all": (log.last_at if complete else ended) - started,
        "complete": complete,
        "delivered": log.count,
        "duplicates": log.duplicates,
        "peak_rss": peak_rss_bytes(),
        "rss": rss_bytes(),
    }
    # The child exits as soon as the result is out; the store is a copy made for this round.
    del system
    return result


def _copy_store(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def restart_overdue(config: Config) -> ScenarioResult:
    stored = config.pick(quick=20_000, full=1_000_000)
    overdue = stored // 10
    actors = config.pick(quick=100, full=1_000)
    wait = config.pick_seconds(quick=60.0, full=180.0)
    rounds = config.fewer_rounds
    source = fresh_file(config, "project-overdue")
    build = child_result(
        start_child(
            build_overdue_store, path=str(source), stored=stored, overdue=overdue, actors=actors
        ),
        timeout=1800,
    )
    runs: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            copy = fresh_file(config, "project-overdue-copy")
            _copy_store(source, copy)
            try:
                process = start_child(
                    restart_overdue_probe, path=str(copy), overdue=overdue, wait=wait
                )
                runs.append(child_result(process, timeout=wait + 120))
            finally:
                _remove_store(copy)
    finally:
        _remove_store(source)
    size = f"{stored:,} stored, {overdue:,} overdue"

    def row(label: str, unit: str, value: float, goal: Goal | None = None) -> Metric:
        return Metric(label, unit, value, None, goal, NOTHING)

    firsts = [run["first"] for run in runs if run["first"] is not None]
    result = ScenarioResult(
        metrics=[
            row(
                f"first fire handled after restart ({size})",
                "s",
                median(firsts) if firsts else wait,
                project_at_most(1.0, "≤ 1 s"),
            ),
            row(
                f"all {overdue:,} overdue fires handled after restart",
                "s",
                median([run["all"] for run in runs]),
                project_at_most(15.0, "≤ 15 s"),
            ),
            row(
                "peak RSS of the restarted process",
                "B",
                median([run["peak_rss"] for run in runs]),
                project_at_most(OVERDUE_RSS_GOAL, "≤ 200 MB"),
            ),
            row("ActorSystem() and register_virtual returned", "s", median_of(runs, "ready")),
            row(
                "overdue fires delivered (worst round)",
                "count",
                min(run["delivered"] for run in runs),
                project_at_least(overdue, f"all {overdue:,}"),
            ),
        ],
        notes=[
            f"{stored:,} one-shot reminders on {actors:,} virtual actors, stored once before the "
            f"rounds (untimed, {build['seconds']:.0f} s) through register_reminders, one call "
            f"per actor: {overdue:,} due within the past hour (the same share on every actor), "
            "the others 30 to 395 days ahead. Each round copies that file and restarts on the "
            "copy in a fresh process on the real clock, with no warm-up (a restart is cold): "
            "times from the start of ActorSystem(...) (then register_virtual) to the first and "
            "to the last overdue fire handled; peak RSS is that process's own high-water mark "
            f"(VmHWM), imports included. {rounds} round(s); the median is reported.",
        ],
    )
    for index, run in enumerate(runs, start=1):
        if not run["complete"] or run["delivered"] < overdue:
            result.notes.append(
                f"FIRES LOST: round {index} handled {run['delivered']:,} of {overdue:,} overdue "
                f"fires within {wait:g} s (its 'all handled' time is when the wait ended)"
            )
        if run["duplicates"]:
            result.notes.append(f"round {index}: {run['duplicates']:,} fires were delivered twice")
    return result


SCENARIOS = [
    Scenario(
        6, "reminder-register", "durable reminder registration", "APScheduler 3", registration
    ),
    Scenario(8, "restart", "restart with stored reminders", "APScheduler 3", restart),
    Scenario(
        15,
        "restart-overdue",
        "restart with a million stored reminders, a tenth overdue",
        "none",
        restart_overdue,
    ),
]
