"""Timers example: a heartbeat, a one-shot cleanup and a fast poll on one actor.

Usage: python -m examples.timers_example [--duration SECONDS] [--verbose]

The actor attaches `TimerFacet` in `on_start`; the program then tells it `RegisterTimers`, and the
actor registers three timers through the facet service:

1. "heartbeat": periodic, every 2 s (first fire at 2 s);
2. "cleanup": one-shot, after 5 s (then removed);
3. "poll": periodic, every 500 ms.

Each fire arrives as a typed `TimerFired` message and is logged with its lateness: how long after
its scheduled time the actor got to handle it. After the run the program asks the actor for its
statistics, checks that the fired one-shot is gone, stops the actor, checks that its timers were
cancelled and its id is free, shuts the system down, and prints a summary followed by one
`SUMMARY {json}` line for scripts. The exit status is 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from facets.timer import TimerFacet
from plexspaces import Actor, ActorSystem, Duration, TimerFired, parse_duration

ACTOR_ID = "timer-actor"
HEARTBEAT_INTERVAL = "2s"
CLEANUP_DELAY = "5s"
POLL_INTERVAL = "500ms"
TIMER_NAMES = ("heartbeat", "cleanup", "poll")
DEFAULT_DURATION_S = 8.0
# The program waits this much longer than --duration before it asks for statistics, so that a
# tick due exactly at the end of the run (the heartbeat at 8 s) has been handled and counted. It
# stays well below the poll interval, so it never lets in one more poll tick.
SETTLE_S = 0.25
ASK_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RegisterTimers:
    """Asks the actor to register the example's three timers."""

    heartbeat_interval: Duration = HEARTBEAT_INTERVAL
    cleanup_delay: Duration = CLEANUP_DELAY
    poll_interval: Duration = POLL_INTERVAL


@dataclass(frozen=True, slots=True)
class TimerStats:
    """What the actor saw, per timer name; the answer to `ask("stats")`.

    The actor hands out copies, so the caller's thread may read them while the actor goes on.
    """

    fires: dict[str, int]
    missed: dict[str, int]
    lateness_ms: dict[str, list[float]]


class TimerActor(Actor):
    """Runs the three scenarios and keeps, per timer, the fires it handled and their lateness."""

    def __init__(self) -> None:
        super().__init__()
        self.fires = dict.fromkeys(TIMER_NAMES, 0)
        self.missed = dict.fromkeys(TIMER_NAMES, 0)
        self.lateness_ms: dict[str, list[float]] = {name: [] for name in TIMER_NAMES}

    def on_start(self) -> None:
        # Timers are opt-in: an actor has none until this facet is attached.
        self.attach_facet(TimerFacet(), priority=50, config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case RegisterTimers():
                self._register(message)
            case TimerFired(timer_name="heartbeat"):
                self._handle_fire(message, action="keep-alive sent")
            case TimerFired(timer_name="cleanup"):
                self._handle_fire(message, action="expired entries dropped")
            case TimerFired(timer_name="poll"):
                self._handle_fire(message, action="resource polled")
            case "stats":
                return self._stats()
            case _:
                return super().on_receive(message)
        return None

    def on_stop(self) -> None:
        # Facets are still attached here; they are detached, and the timers cancelled, right after.
        still_armed = [info.name for info in self.facet(TimerFacet).list_timers()]
        self.ctx.log.info("actor.stopping", timers_to_cancel=still_armed)

    def _register(self, request: RegisterTimers) -> None:
        # The facet service reaches any live actor's facets by id. A lookup by name gives the
        # `Facet` base type, so narrow it before using the timer API.
        timers = self.ctx.facet_service.get_facet(self.ctx.actor_id, "timer")
        if not isinstance(timers, TimerFacet):
            raise TypeError(f"facet 'timer' of {self.ctx.actor_id!r} is {timers!r}")
        registered_at = self.ctx.clock.now()
        timers.register_periodic("heartbeat", request.heartbeat_interval)
        timers.register_one_shot("cleanup", request.cleanup_delay)
        timers.register_periodic("poll", request.poll_interval)
        registered = {info.name: info for info in timers.list_timers()}
        for scenario, name in enumerate(TIMER_NAMES, start=1):
            info = registered[name]
            first_fire = info.next_fire_at - registered_at
            self.ctx.log.info(
                "timer.registered",
                scenario=scenario,
                timer=name,
                kind="periodic" if info.periodic else "one-shot",
                first_fire_in_ms=round(first_fire / timedelta(milliseconds=1)),
            )

    def _handle_fire(self, fired: TimerFired, *, action: str) -> None:
        # Lateness is measured here, in the handler, so it covers both the scheduler's wake-up and
        # the wait in the mailbox: what the actor actually experiences.
        lateness = (self.ctx.clock.now() - fired.scheduled_at) / timedelta(milliseconds=1)
        name = fired.timer_name
        self.fires[name] += 1
        self.missed[name] += fired.missed
        self.lateness_ms[name].append(lateness)
        self.ctx.log.info(
            "timer.fired",
            timer=name,
            fire_count=fired.fire_count,
            lateness_ms=round(lateness, 2),
            missed=fired.missed,
            action=action,
        )

    def _stats(self) -> TimerStats:
        return TimerStats(
            fires=dict(self.fires),
            missed=dict(self.missed),
            lateness_ms={name: list(values) for name, values in self.lateness_ms.items()},
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything the summary reports."""

    duration_s: float
    elapsed_s: float
    stats: TimerStats
    listed_before_stop: list[str]
    timers_after_stop: int
    id_free_after_stop: bool
    timers_of_respawned_actor: int
    scheduler_armed_after_stop: int
    actors_after_shutdown: int
    interrupted: bool

    @property
    def run_s(self) -> float:
        """How long the timers ran: the requested duration, or less if interrupted."""
        return min(self.elapsed_s, self.duration_s) if self.interrupted else self.duration_s

    @property
    def one_shot_removed(self) -> bool:
        return self.stats.fires["cleanup"] == 1 and "cleanup" not in self.listed_before_stop

    def problems(self) -> list[str]:
        """The checks that failed, each as a sentence; empty when the run behaved."""
        found: list[str] = []
        if self.stats.fires["cleanup"] > 1:
            found.append(f"the one-shot 'cleanup' fired {self.stats.fires['cleanup']} times")
        if self.stats.fires["cleanup"] == 1 and not self.one_shot_removed:
            found.append("the one-shot 'cleanup' is still registered after it fired")
        if self.stats.fires["cleanup"] == 0 and "cleanup" not in self.listed_before_stop:
            found.append("the one-shot 'cleanup' was removed without firing")
        for name in ("heartbeat", "poll"):
            if name not in self.listed_before_stop:
                found.append(f"the periodic timer {name!r} was no longer registered before stop")
        if self.timers_after_stop:
            found.append(f"{self.timers_after_stop} timer(s) still listed after stop")
        if not self.id_free_after_stop:
            found.append(f"actor id {ACTOR_ID!r} was not free after stop")
        if self.timers_of_respawned_actor:
            found.append(f"the re-spawned actor had {self.timers_of_respawned_actor} stale timers")
        if self.scheduler_armed_after_stop:
            found.append(f"{self.scheduler_armed_after_stop} scheduler entries armed after stop")
        if self.actors_after_shutdown:
            found.append(f"{self.actors_after_shutdown} actor(s) still running after shutdown")
        return found


def run(duration_s: float, log: FilteringBoundLogger) -> RunResult:
    """Run the three scenarios for `duration_s` seconds, then check the clean-up."""
    interrupted = False
    # Timers live in memory only: the storage URL is resolved but nothing is opened.
    with ActorSystem() as system:
        started = system.clock.now()
        ref = system.spawn(TimerActor, actor_id=ACTOR_ID)
        facets = [facet.facet_type for facet in system.facet_service.list_facets(ACTOR_ID)]
        log.info("actor.spawned", actor_id=ref.actor_id, facets=facets)
        # Kept after the actor stops, to show that stopping cancelled every timer.
        timers = system.facet_service.get_facet(ACTOR_ID, TimerFacet)

        ref.tell(RegisterTimers())
        log.info("run.waiting", duration_s=duration_s)
        try:
            # The program's run time: block until it is over; the timers do the work.
            threading.Event().wait(duration_s + SETTLE_S)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("run.interrupted")

        stats = ref.ask("stats", timeout=ASK_TIMEOUT_S)
        if not isinstance(stats, TimerStats):
            raise TypeError(f"actor {ACTOR_ID!r} answered 'stats' with {stats!r}")
        elapsed_s = (system.clock.now() - started).total_seconds()
        listed_before_stop = [info.name for info in timers.list_timers()]
        log.info("timers.listed", before_stop=listed_before_stop)

        # stop() returns once on_stop has run, the facets are detached and the id is free.
        ref.stop()
        timers_after_stop = len(timers.list_timers())
        id_free = system.lookup(ACTOR_ID) is None and ACTOR_ID not in system.actor_ids()
        # The same id again: a fresh actor starts with no timers (in-memory timers are not
        # carried over from a previous incarnation).
        again = system.spawn(TimerActor, actor_id=ACTOR_ID)
        respawned_timers = len(system.facet_service.get_facet(ACTOR_ID, TimerFacet).list_timers())
        log.info("actor.respawned", actor_id=again.actor_id, timers=respawned_timers)
        again.stop()
        scheduler_armed = len(system.scheduler)
        log.info(
            "cleanup.checked",
            timers_after_stop=timers_after_stop,
            id_free=id_free,
            scheduler_armed=scheduler_armed,
        )
    log.info("system.stopped", actors=len(system.actor_ids()))

    return RunResult(
        duration_s=duration_s,
        elapsed_s=elapsed_s,
        stats=stats,
        listed_before_stop=listed_before_stop,
        timers_after_stop=timers_after_stop,
        id_free_after_stop=id_free,
        timers_of_respawned_actor=respawned_timers,
        scheduler_armed_after_stop=scheduler_armed,
        actors_after_shutdown=len(system.actor_ids()),
        interrupted=interrupted,
    )


# -- reporting -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile `q` (0 to 100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def lateness_summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of `values`, in milliseconds rounded to 0.01."""
    figures = {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": percentile(values, 100),
    }
    return {key: None if value is None else round(value, 2) for key, value in figures.items()}


def expected_fires(duration_s: float) -> dict[str, int]:
    """Fires each timer makes in `duration_s` seconds, ticks due exactly at the end included."""

    def seconds(value: Duration) -> float:
        return parse_duration(value).total_seconds()

    return {
        "heartbeat": math.floor(duration_s / seconds(HEARTBEAT_INTERVAL)),
        "cleanup": 1 if duration_s >= seconds(CLEANUP_DELAY) else 0,
        "poll": math.floor(duration_s / seconds(POLL_INTERVAL)),
    }


def summary_record(result: RunResult) -> dict[str, Any]:
    """The machine-readable summary (printed after `SUMMARY `)."""
    stats = result.stats
    every_lateness = [value for values in stats.lateness_ms.values() for value in values]
    return {
        **{name: stats.fires[name] for name in TIMER_NAMES},
        "expected": expected_fires(result.run_s),
        "missed": stats.missed,
        "lateness_ms": lateness_summary(every_lateness),
        "lateness_ms_by_timer": {
            name: lateness_summary(stats.lateness_ms[name]) for name in TIMER_NAMES
        },
        "one_shot_removed": result.one_shot_removed,
        "timers_after_stop": result.timers_after_stop,
        "scheduler_armed_after_stop": result.scheduler_armed_after_stop,
        "id_free_after_stop": result.id_free_after_stop,
        "duration_s": result.duration_s,
        "elapsed_s": round(result.elapsed_s, 3),
        "interrupted": result.interrupted,
        "problems": result.problems(),
    }


def print_summary(result: RunResult) -> None:
    """The human summary, then the `SUMMARY {json}` line."""
    stats = result.stats
    expected = expected_fires(result.run_s)
    kinds = {"heartbeat": "periodic", "cleanup": "one-shot", "poll": "periodic"}

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print()
    if result.interrupted:
        headline = f"interrupted after {result.run_s:.2f} s of {result.duration_s:g} s"
    else:
        headline = f"after {result.duration_s:g} s"
    print(
        f"Timers example: summary {headline} (statistics read {result.elapsed_s:.2f} s after start)"
    )
    print(f"  {'timer':<10} {'kind':<9} {'fires':>5} {'expected':>8}   lateness ms p50 / p99 / max")
    for name in TIMER_NAMES:
        late = lateness_summary(stats.lateness_ms[name])
        print(
            f"  {name:<10} {kinds[name]:<9} {stats.fires[name]:>5} {expected[name]:>8}   "
            f"{ms(late['p50'])} / {ms(late['p99'])} / {ms(late['max'])}"
        )
    if stats.fires["cleanup"]:
        removed = "yes" if result.one_shot_removed else "no"
        print(f"  one-shot 'cleanup' fired and was removed: {removed}")
    else:
        waiting = "yes" if "cleanup" in result.listed_before_stop else "no"
        print(f"  one-shot 'cleanup' not due yet ({CLEANUP_DELAY}), still registered: {waiting}")
    print(
        f"  after stop: {result.timers_after_stop} timers listed, "
        f"{result.scheduler_armed_after_stop} scheduler entries armed, "
        f"id {ACTOR_ID!r} free: {'yes' if result.id_free_after_stop else 'no'}, "
        f"re-spawned actor had {result.timers_of_respawned_actor} timers"
    )
    problems = result.problems()
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    outcome = "FAILED" if problems else "interrupted" if result.interrupted else "ok"
    print(f"  result: {outcome}")
    print("SUMMARY " + json.dumps(summary_record(result)), flush=True)


# -- program ---------------------------------------------------------------------------------------


def configure_logging(*, verbose: bool) -> None:
    """Console logging: time, level, event and the bound keys (actor_id, timer, ...)."""
    # Colours only on a terminal, so piped output (test.sh) stays plain text.
    colors = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        # The runtime logs its lifecycle (actor started, facet attached, ...) at debug level.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
    )


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.timers_example",
        description="Three in-memory timers (heartbeat, one-shot cleanup, fast poll) on one actor.",
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        default=DEFAULT_DURATION_S,
        metavar="SECONDS",
        help=f"how long the timers run (default: {DEFAULT_DURATION_S:g})",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show the runtime's debug events"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(verbose=args.verbose)
    log: FilteringBoundLogger = structlog.get_logger("timers_example")
    if args.duration < parse_duration(CLEANUP_DELAY).total_seconds():
        log.warning("run.short", note=f"the one-shot 'cleanup' ({CLEANUP_DELAY}) will not fire")
    result = run(args.duration, log)
    print_summary(result)
    if result.interrupted:
        return 130
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
