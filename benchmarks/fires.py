"""Durable reminder fires on SQLite against APScheduler 3.x: lateness on one actor, bursts due at
one instant on 100 actors and on one, an offered load of 5,000 fires a second, and one slow
activation among busy actors (scenarios 7, 12, 13, 14 and 16).

Every round runs on a fresh database file. The reminders are stored before they fall due, in an
untimed set-up step: on the project side through `ReminderFacet.register_reminders` (one call per
actor) on the running system, on the peer's side as rows of a paused APScheduler that is resumed
once they are stored. Lateness is `time.time()` in the handler minus the time the fire was due.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from benchmarks.measure import (
    NOTHING,
    TIMES,
    Config,
    Goal,
    LatenessLog,
    Metric,
    Scenario,
    ScenarioResult,
    alternate,
    at_least,
    lateness_summary,
    median,
    project_at_least,
    project_at_most,
    repeat,
    warm_up,
)
from benchmarks.reminders import (
    NOT_INSTALLED,
    PEER_MISSING,
    Reminded,
    activate_facets,
    at_time,
    fresh_file,
    peer_module,
    project_system,
)
from facets.reminder import ReminderFacet
from plexspaces import ActorSystem, ReminderRegistration

FIRE_WAIT = 120.0
"""How long a round waits for its fires before reporting what was delivered."""
PROJECT = "PlexSpaces"
PEER = "APScheduler 3"
_logs = itertools.count()


@dataclass(frozen=True)
class FireRun:
    """One round of one side: what was handled, when the first reminder was due, and when
    storing the reminders was done."""

    log: LatenessLog
    first_due: float
    stored_at: float
    complete: bool
    """Every expected fire was handled within the wait."""
    ended_at: float
    """When the wait for the fires ended."""

    @property
    def overran(self) -> bool:
        """Storing the reminders was still going on when the first fell due."""
        return self.stored_at > self.first_due

    def summary(self) -> dict[str, float]:
        if not self.log.lateness_ms:
            return {"p50": FIRE_WAIT * 1000, "p99": FIRE_WAIT * 1000, "max": FIRE_WAIT * 1000}
        return lateness_summary(self.log.lateness_ms)

    def rate(self) -> float:
        """Fires handled per second, from the first due time to the last one handled (to the end
        of the wait if some were not handled)."""
        elapsed = (self.log.last_at if self.complete else self.ended_at) - self.first_due
        return self.log.count / elapsed if elapsed > 0 else 0.0


def lead_for(count: int) -> float:
    """Seconds from the end of the set-up (actors active) to the first due time: enough to store
    `count` reminders on either side several times over (rounds where storing still overran are
    counted in a note)."""
    return 0.3 + count / 10_000


def spread(count: int, window: float) -> list[float]:
    """Offsets of `count` due times spread evenly over `window` seconds."""
    return [window * index / count for index in range(count)]


def at_once(count: int) -> list[float]:
    return [0.0] * count


def batches(offsets: Sequence[float], base: float, actors: int) -> list[list[ReminderRegistration]]:
    """One-shot reminders `r<i>` due at `base + offsets[i]`, dealt round-robin to `actors`."""
    dealt: list[list[ReminderRegistration]] = [[] for _ in range(actors)]
    for index, offset in enumerate(offsets):
        dealt[index % actors].append(ReminderRegistration(f"r{index}", due=at_time(base + offset)))
    return dealt


def store(facets: Sequence[ReminderFacet], offsets: Sequence[float], base: float) -> None:
    for facet, batch in zip(facets, batches(offsets, base, len(facets)), strict=True):
        facet.register_reminders(batch)


def fire_project(config: Config, offsets: Sequence[float], actors: int, lead: float) -> FireRun:
    log = LatenessLog(len(offsets))
    with project_system(fresh_file(config, "project"), log) as system:
        facets = activate_facets(system, actors)
        base = time.time() + lead
        store(facets, offsets, base)
        stored_at = time.time()
        complete = log.wait(FIRE_WAIT)
        ended_at = time.time()
    return FireRun(log, base + min(offsets), stored_at, complete, ended_at)


def fire_peer(peer: ModuleType, config: Config, offsets: Sequence[float], lead: float) -> FireRun:
    log = LatenessLog(len(offsets))
    log_id = f"log-{next(_logs)}"
    peer.LOGS[log_id] = log
    scheduler = peer.Scheduler(fresh_file(config, "peer"))
    scheduler.start(paused=True)
    try:
        base = time.time() + lead
        scheduler.store_many(
            [(f"r{index}", base + offset) for index, offset in enumerate(offsets)], log_id
        )
        scheduler.resume()
        stored_at = time.time()
        complete = log.wait(FIRE_WAIT)
        ended_at = time.time()
    finally:
        scheduler.close()
        del peer.LOGS[log_id]
    return FireRun(log, base + min(offsets), stored_at, complete, ended_at)


def both_sides(
    config: Config,
    peer: ModuleType | None,
    offsets: Sequence[float],
    actors: int,
    rounds: int,
) -> tuple[list[FireRun], list[FireRun] | None]:
    """Warm both sides up on 100 reminders, then alternate `rounds` rounds of each."""
    lead = lead_for(len(offsets))
    project_side = partial(fire_project, config, offsets, actors, lead)
    small = spread(100, 0.2)
    if peer is None:
        warm_up(partial(fire_project, config, small, min(actors, 10), 0.3))
        return repeat(rounds, project_side), None
    warm_up(
        partial(fire_project, config, small, min(actors, 10), 0.3),
        partial(fire_peer, peer, config, small, 0.3),
    )
    return alternate(rounds, project_side, partial(fire_peer, peer, config, offsets, lead))


# -- rows and notes ------------------------------------------------------------------------------


def _median_key(runs: Sequence[FireRun], key: str) -> float:
    return median([run.summary()[key] for run in runs])


def lateness_rows(
    ours: Sequence[FireRun],
    theirs: Sequence[FireRun] | None,
    label: str,
    p99_goal: Goal | None,
    peer_missing: str = NOT_INSTALLED,
) -> list[Metric]:
    """p50, p99 and max lateness (medians of the rounds), and the fires delivered in the worst
    round, which must be all of them."""

    def row(key: str, text: str, goal: Goal | None = None) -> Metric:
        peer_value = None if theirs is None else _median_key(theirs, key)
        return Metric(text, "ms", _median_key(ours, key), peer_value, goal, peer_missing)

    return [
        row("p50", f"lateness p50, {label}"),
        row("p99", "lateness p99", p99_goal),
        row("max", "lateness max"),
        delivered_row(ours, theirs, peer_missing),
    ]


def delivered_row(
    ours: Sequence[FireRun], theirs: Sequence[FireRun] | None, peer_missing: str = NOT_INSTALLED
) -> Metric:
    expected = ours[0].log.expected
    return Metric(
        "fires delivered (worst round)",
        "count",
        min(run.log.count for run in ours),
        None if theirs is None else min(run.log.count for run in theirs),
        project_at_least(expected, f"all {expected:,}"),
        peer_missing,
    )


def rate_row(
    label: str,
    ours: Sequence[FireRun],
    theirs: Sequence[FireRun] | None,
    goal: Goal | None,
    peer_missing: str = NOT_INSTALLED,
) -> Metric:
    return Metric(
        label,
        "/s",
        median([run.rate() for run in ours]),
        None if theirs is None else median([run.rate() for run in theirs]),
        goal,
        peer_missing,
    )


def delivery_notes(sides: dict[str, Sequence[FireRun]]) -> list[str]:
    """Loud notes for fires lost or delivered twice, and a note for rounds whose reminders were
    still being stored when the first fell due."""
    notes = []
    for side, runs in sides.items():
        for index, run in enumerate(runs, start=1):
            if run.log.count < run.log.expected:
                notes.append(
                    f"FIRES LOST: {side} round {index} handled {run.log.count:,} of "
                    f"{run.log.expected:,} fires within {FIRE_WAIT:g} s (its percentiles cover "
                    "the fires handled)"
                )
            if run.log.duplicates:
                notes.append(
                    f"{side} round {index}: {run.log.duplicates:,} fires were delivered twice"
                )
    all_runs = [run for runs in sides.values() for run in runs]
    overran = sum(run.overran for run in all_runs)
    if overran:
        notes.append(
            f"storing the reminders outlasted the lead in {overran} of {len(all_runs)} runs: "
            "the first fell due while later ones were still being stored"
        )
    return notes


def _result(
    metrics: list[Metric],
    notes: list[str],
    ours: Sequence[FireRun],
    theirs: Sequence[FireRun] | None,
    *,
    samples: bool = False,
) -> ScenarioResult:
    sides: dict[str, Sequence[FireRun]] = {PROJECT: ours}
    if theirs is not None:
        sides[PEER] = theirs
    else:
        notes.append(PEER_MISSING)
    result = ScenarioResult(metrics=metrics, notes=notes + delivery_notes(sides))
    if samples:
        result.samples = {
            side: [value for run in runs for value in run.log.lateness_ms]
            for side, runs in sides.items()
        }
    return result


PEER_SET_UP = (
    "Peer: a BackgroundScheduler on a SQLAlchemyJobStore (same SQLite settings), started "
    "paused; the same due times stored as date-trigger jobs, rows as add_job writes them, in "
    "one transaction; then resumed. Each job records its lateness; APScheduler deletes each "
    "fired job from its store."
)


# -- 7. lateness on one actor --------------------------------------------------------------------


def one_actor_lateness(config: Config) -> ScenarioResult:
    peer = peer_module()
    count = config.pick(quick=200, full=2_000)
    window = config.pick_seconds(quick=0.5, full=2.0)
    ours, theirs = both_sides(config, peer, spread(count, window), 1, config.rounds)
    metrics = lateness_rows(
        ours, theirs, f"{count:,} due over {window:g} s, one actor", project_at_most(20, "≤ 20 ms")
    )
    notes = [
        f"{count:,} one-shot reminders due evenly over {window:g} s on one virtual actor "
        f"(active), stored {lead_for(count):g} s before the first is due. Each fire is "
        "recorded in the store before delivery and acknowledged after the handler. " + PEER_SET_UP,
    ]
    return _result(metrics, notes, ours, theirs, samples=True)


# -- 12 and 13. bursts due at one instant --------------------------------------------------------


def _burst(config: Config, actors: int, rate_goal: Goal, ratio_goal: Goal | None) -> ScenarioResult:
    peer = peer_module()
    count = config.pick(quick=1_000, full=10_000)
    ours, theirs = both_sides(config, peer, at_once(count), actors, config.rounds)
    where = "one actor" if actors == 1 else f"{actors} actors"
    metrics = [rate_row(f"fires/s, {count:,} due at one instant, {where}", ours, theirs, rate_goal)]
    if ratio_goal is not None:
        metrics.append(rate_row("fires/s against APScheduler", ours, theirs, ratio_goal))
    metrics += [
        Metric(
            "lateness p50 (from the due instant)",
            "ms",
            _median_key(ours, "p50"),
            None if theirs is None else _median_key(theirs, "p50"),
            None,
            NOT_INSTALLED,
        ),
        Metric(
            "lateness p99",
            "ms",
            _median_key(ours, "p99"),
            None if theirs is None else _median_key(theirs, "p99"),
            None,
            NOT_INSTALLED,
        ),
        delivered_row(ours, theirs),
    ]
    notes = [
        f"{count:,} one-shot reminders all due at one instant, on {where} (active), stored "
        f"{lead_for(count):g} s before. Rate = fires handled / (last handled - due instant). "
        + PEER_SET_UP,
    ]
    return _result(metrics, notes, ours, theirs)


def burst_many_actors(config: Config) -> ScenarioResult:
    return _burst(config, 100, project_at_least(15_000, "≥ 15,000/s"), at_least(5))


def burst_one_actor(config: Config) -> ScenarioResult:
    return _burst(config, 1, project_at_least(5_000, "≥ 5,000/s"), None)


# -- 14. an offered load -------------------------------------------------------------------------


def offered_load(config: Config) -> ScenarioResult:
    peer = peer_module()
    per_second = 5_000
    window = config.pick_seconds(quick=0.4, full=10.0)
    count = int(per_second * window)
    ours, theirs = both_sides(config, peer, spread(count, window), 100, config.rounds)
    metrics = [
        *lateness_rows(
            ours,
            theirs,
            f"{per_second:,}/s offered for {window:g} s, 100 actors",
            project_at_most(50, "≤ 50 ms"),
        ),
        rate_row("fires handled/s (first due to last handled)", ours, theirs, None),
    ]
    notes = [
        f"{count:,} one-shot reminders due evenly over {window:g} s ({per_second:,} a second) "
        f"on 100 virtual actors (active), stored {lead_for(count):g} s before the first is "
        "due. " + PEER_SET_UP,
    ]
    return _result(metrics, notes, ours, theirs, samples=True)


# -- 16. one slow activation among busy actors ---------------------------------------------------

SLOW_TYPE = "bench-slow"


@dataclass
class _Delay:
    """How long a `SlowStart` activation takes; changed between set-up and measurement."""

    seconds: float = 0.0


class SlowStart(Reminded):
    """A virtual actor whose activation takes `delay.seconds` (its `on_start` sleeps first, as
    one loading a large state would)."""

    def __init__(self, log: LatenessLog | None, delay: _Delay) -> None:
        super().__init__(log)
        self.delay = delay

    def on_start(self) -> None:
        time.sleep(self.delay.seconds)
        super().on_start()


@dataclass(frozen=True)
class _SlowRun:
    others: FireRun
    slow: LatenessLog | None


def _slow_round(
    config: Config, offsets: Sequence[float], actors: int, slow_start: float | None
) -> _SlowRun:
    """One round: `offsets` due on `actors` active actors; with `slow_start`, also one reminder
    due in the middle of the window for a virtual actor that is not active and whose activation
    takes `slow_start` seconds."""
    log = LatenessLog(len(offsets))
    slow_log = LatenessLog(1)
    delay = _Delay()
    lead = lead_for(len(offsets)) + 0.5
    with project_system(fresh_file(config, "project"), log) as system:
        system.register_virtual(SLOW_TYPE, SlowStart, slow_log, delay)
        facets = activate_facets(system, actors)
        slow_ref = system.virtual(SLOW_TYPE, "slow")
        if slow_start is not None:
            slow_ref.ask("ping", timeout=30)  # activated quickly, only to reach its facet
        base = time.time() + lead
        store(facets, offsets, base)
        if slow_start is not None:
            middle = base + (min(offsets) + max(offsets)) / 2
            facet = _facet(system, slow_ref.actor_id)
            facet.register_reminders([ReminderRegistration("slow", due=at_time(middle))])
            slow_ref.stop()
            delay.seconds = slow_start
        stored_at = time.time()
        complete = log.wait(FIRE_WAIT)
        ended_at = time.time()
        if slow_start is not None:
            slow_log.wait(FIRE_WAIT)
    others = FireRun(log, base + min(offsets), stored_at, complete, ended_at)
    return _SlowRun(others, slow_log if slow_start is not None else None)


def _facet(system: ActorSystem, actor_id: str) -> ReminderFacet:
    return system.facet_service.get_facet(actor_id, ReminderFacet)


def slow_activation(config: Config) -> ScenarioResult:
    count = config.pick(quick=200, full=1_000)
    window = config.pick_seconds(quick=0.5, full=1.0)
    slow_start = config.pick_seconds(quick=1.0, full=2.0)
    actors = 100
    offsets = spread(count, window)
    rounds = config.fewer_rounds
    with_slow: Callable[[], _SlowRun] = partial(_slow_round, config, offsets, actors, slow_start)
    without: Callable[[], _SlowRun] = partial(_slow_round, config, offsets, actors, None)
    warm_up(partial(_slow_round, config, spread(100, 0.2), 10, None))
    ours, theirs = alternate(rounds, with_slow, without)
    slowed = [run.others for run in ours]
    plain = [run.others for run in theirs]
    slow_lateness = [
        run.slow.lateness_ms[0]
        if run.slow is not None and run.slow.lateness_ms
        else FIRE_WAIT * 1000
        for run in ours
    ]
    missing = "without it"
    metrics = [
        *lateness_rows(
            slowed,
            plain,
            f"{count:,} due over {window:g} s on {actors} active actors",
            Goal("ratio", "<=", 1.2, f"≤ 1.2{TIMES} without it"),
            missing,
        ),
        Metric(
            f"the slow actor's own fire (activation {slow_start:g} s)",
            "ms",
            median(slow_lateness),
            None,
            None,
            NOTHING,
        ),
    ]
    notes = [
        f"{count:,} one-shot reminders due evenly over {window:g} s on {actors} active virtual "
        f"actors; in the 'with' variant, one more reminder due in the middle of the window for "
        f"a virtual actor of another type that is not active and whose on_start takes "
        f"{slow_start:g} s (it fires into that activation). The project column is with the "
        "slow activation, the peer column the same load without it (so the ratio is with ÷ "
        "without), both variants in every round, alternating which goes first; "
        f"{rounds} round(s). The lateness rows are the other actors' fires.",
    ]
    for index, run in enumerate(ours, start=1):
        if run.slow is None or run.slow.count < 1:
            notes.append(
                f"FIRES LOST: round {index}: the slow actor's reminder was not handled within "
                f"{FIRE_WAIT:g} s"
            )
    notes += delivery_notes({"with the slow activation": slowed, "without it": plain})
    return ScenarioResult(
        metrics=metrics,
        notes=notes,
        samples={
            "others, with one slow activation": [v for r in slowed for v in r.log.lateness_ms],
            "others, without it": [v for r in plain for v in r.log.lateness_ms],
        },
    )


SCENARIOS = [
    Scenario(7, "reminder-fire", "durable reminder lateness, one actor", PEER, one_actor_lateness),
    Scenario(
        12, "reminder-burst", "reminders due at one instant, 100 actors", PEER, burst_many_actors
    ),
    Scenario(
        13, "reminder-burst-one", "reminders due at one instant, one actor", PEER, burst_one_actor
    ),
    Scenario(14, "reminder-load", "5,000 reminder fires/s offered, 100 actors", PEER, offered_load),
    Scenario(
        16,
        "slow-activation",
        "one slow activation among busy actors",
        "the same load without it",
        slow_activation,
    ),
]
