"""Timers against a bare heapq scheduler and threading.Timer: arming a million, arming and
cancelling ten thousand, and lateness under load (scenarios 3, 4 and 5)."""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pykka

from benchmarks.measure import (
    Config,
    LatenessLog,
    Metric,
    Scenario,
    ScenarioResult,
    alternate,
    at_least,
    at_most,
    in_child,
    lateness_summary,
    median,
    median_of,
    project_at_least,
    project_at_most,
    settled_rss,
    traced,
    warm_up,
)
from facets.timer import TimerFacet, TimerRegistration
from plexspaces import Actor, ActorRef, ActorSystem, TimerFired

HOUR = 3600.0


class HeapTimers:
    """The peer scheduler: a bare heapq of `(when, sequence, name, period)` under one lock, served
    by one thread that hands each due entry to `deliver(when, name)` and re-arms periodic ones."""

    def __init__(self, deliver: Callable[[float, str], None]) -> None:
        self._deliver = deliver
        self._heap: list[tuple[float, int, str, float | None]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="heap-timers", daemon=True)
        self._thread.start()

    def arm(self, when: float, name: str, period: float | None) -> None:
        entry = (when, next(self._sequence), name, period)
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._wake.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _serve(self) -> None:
        heap = self._heap
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        return
                    if not heap:
                        self._wake.wait()
                        continue
                    now = time.time()
                    delay = heap[0][0] - now
                    if delay <= 0:
                        break
                    self._wake.wait(delay)
                due = []
                while heap and heap[0][0] <= now:
                    due.append(heapq.heappop(heap))
            for when, _, name, period in due:
                self._deliver(when, name)
                if period is not None:
                    self.arm(when + period, name, period)


def _system(config: Config) -> ActorSystem:
    return ActorSystem(storage_url=f"sqlite:///{config.workdir / 'timers.db'}", name="bench")


class _Host(Actor):
    """Hosts a TimerFacet and records the lateness of each TimerFired it handles."""

    def __init__(self, log: LatenessLog | None = None) -> None:
        super().__init__()
        self.log = log

    def on_start(self) -> None:
        self.attach_facet(TimerFacet(), priority=50)

    def on_receive(self, message: Any) -> Any:
        if type(message) is TimerFired and self.log is not None:
            self.log.record(message.scheduled_at.timestamp())
        return None


def _timer_facet(system: ActorSystem, ref: ActorRef) -> TimerFacet:
    return system.facet_service.get_facet(ref.actor_id, TimerFacet)


# -- 3. arm a million timers ---------------------------------------------------------------------


def _names(count: int) -> list[str]:
    return [f"timer-{index}" for index in range(count)]


def _arm_project(config: Config, actors: int, per_actor: int) -> float:
    names = _names(per_actor)
    with _system(config) as system:
        facets = [_timer_facet(system, system.spawn(_Host)) for _ in range(actors)]
        started = time.perf_counter()
        for timers in facets:
            register = timers.register_periodic
            for name in names:
                register(name, "1h")
        elapsed = time.perf_counter() - started
        if len(system.scheduler) < actors * per_actor:
            raise RuntimeError(f"{len(system.scheduler)} timers armed, not {actors * per_actor}")
    return actors * per_actor / elapsed


def _arm_project_batch(config: Config, actors: int, per_actor: int) -> float:
    # The registrations are made before timing, as the names are: they say what to arm.
    batch = [TimerRegistration(name, interval="1h", periodic=True) for name in _names(per_actor)]
    with _system(config) as system:
        facets = [_timer_facet(system, system.spawn(_Host)) for _ in range(actors)]
        started = time.perf_counter()
        for timers in facets:
            timers.register_timers(batch)
        elapsed = time.perf_counter() - started
        if len(system.scheduler) < actors * per_actor:
            raise RuntimeError(f"{len(system.scheduler)} timers armed, not {actors * per_actor}")
    return actors * per_actor / elapsed


def _arm_peer(actors: int, per_actor: int) -> float:
    names = _names(per_actor)
    timers = HeapTimers(lambda when, name: None)
    try:
        clock = time.time
        started = time.perf_counter()
        for _ in range(actors):
            arm = timers.arm
            for name in names:
                arm(clock() + HOUR, name, HOUR)
        return actors * per_actor / (time.perf_counter() - started)
    finally:
        timers.close()


def _traced_bytes_per_timer(config: Config, side: str, count: int) -> float:
    names = _names(count)
    if side == "project":
        with _system(config) as system:
            register = _timer_facet(system, system.spawn(_Host)).register_periodic
            with traced() as grown:
                for name in names:
                    register(name, "1h")
                return grown() / count
    timers = HeapTimers(lambda when, name: None)
    try:
        with traced() as grown:
            for name in names:
                timers.arm(time.time() + HOUR, name, HOUR)
            return grown() / count
    finally:
        timers.close()


def arm_a_million(config: Config) -> ScenarioResult:
    actors = 10
    per_actor = config.pick(quick=1_000, full=100_000)
    total = actors * per_actor
    subset = config.pick(quick=10_000, full=100_000)
    warm_up(
        lambda: _arm_project(config, actors, per_actor // 10),
        lambda: _arm_peer(actors, per_actor // 10),
    )
    ours, theirs = alternate(
        config.rounds,
        lambda: _arm_project(config, actors, per_actor),
        lambda: _arm_peer(actors, per_actor),
    )
    batched, peer_again = alternate(
        config.rounds,
        lambda: _arm_project_batch(config, actors, per_actor),
        lambda: _arm_peer(actors, per_actor),
    )
    return ScenarioResult(
        metrics=[
            Metric(
                f"arm {total:,} timers, one call each",
                "/s",
                median(ours),
                median(theirs),
                at_least(0.3),
            ),
            Metric(
                f"arm {total:,} timers, batch path",
                "/s",
                median(batched),
                median(peer_again),
                at_least(0.5),
            ),
            Metric(
                "memory per armed timer",
                "B",
                _traced_bytes_per_timer(config, "project", subset),
                _traced_bytes_per_timer(config, "peer", subset),
                project_at_most(200, "≤ 200 B"),
            ),
        ],
        notes=[
            f"{total:,} periodic timers with a 1 h interval, {per_actor:,} on each of {actors} "
            "actors, through TimerFacet.register_periodic(name, '1h'); peer: HeapTimers.arm("
            "time.time() + 3600, name, 3600), a heapq of (when, sequence, name, period) tuples "
            "under one lock, served by one thread. Batch path: TimerFacet.register_timers with "
            f"one list of {per_actor:,} TimerRegistration(name, interval='1h', periodic=True) "
            "per actor, against the peer again in the same rounds. Names and registrations are "
            "made before timing. Memory: "
            f"tracemalloc while arming {subset:,} timers on one actor (one run per side; "
            "deterministic), names excluded."
        ],
    )


# -- 4. arm and cancel ten thousand timers -------------------------------------------------------


def _noop() -> None:
    pass


H = TypeVar("H")


def _arm_then_cancel(
    arm: Callable[[str], H], cancel: Callable[[H], object], names: list[str]
) -> tuple[float, int]:
    """Seconds spent arming a timer per name and then cancelling each, and the RSS growth while
    all were armed (the reading itself not timed)."""
    before = settled_rss()
    started = time.perf_counter()
    armed = [arm(name) for name in names]
    armed_in = time.perf_counter() - started
    grown = settled_rss() - before
    started = time.perf_counter()
    for handle in armed:
        cancel(handle)
    return armed_in + time.perf_counter() - started, grown


def _start_timer(name: str) -> threading.Timer:
    timer = threading.Timer(HOUR, _noop)
    timer.start()
    return timer


def _cancel_timer(timer: threading.Timer) -> None:
    # A cancelled Timer's thread (and its stack) is gone only once it has ended.
    timer.cancel()
    timer.join()


def arm_and_cancel_probe(side: str, count: int, workdir: str) -> dict[str, float]:
    """In a fresh process: arm `count` one-shot timers due in an hour, then cancel each; the
    seconds that took and the RSS growth while all were armed. A tenth as many go first, as a
    warm-up."""
    names = _names(count)
    if side == "project":
        system = ActorSystem(storage_url=f"sqlite:///{Path(workdir) / 'cancel.db'}")
        timers = _timer_facet(system, system.spawn(_Host))

        def arm(name: str) -> str:
            timers.register_one_shot(name, "1h")
            return name

        run = partial(_arm_then_cancel, arm, timers.unregister_timer)
    else:
        run = partial(_arm_then_cancel, _start_timer, _cancel_timer)
    run(names[: count // 10])
    seconds, grown = run(names)
    return {"seconds": seconds, "rss": grown}


def arm_and_cancel(config: Config) -> ScenarioResult:
    count = config.pick(quick=1_000, full=10_000)
    ours, theirs = alternate(
        config.fewer_rounds,
        lambda: in_child(
            arm_and_cancel_probe, side="project", count=count, workdir=str(config.workdir)
        ),
        lambda: in_child(
            arm_and_cancel_probe, side="peer", count=count, workdir=str(config.workdir)
        ),
    )
    return ScenarioResult(
        metrics=[
            Metric(
                f"arm and cancel {count:,} timers",
                "ms",
                median_of(ours, "seconds") * 1000,
                median_of(theirs, "seconds") * 1000,
                at_most(0.05, "20 times faster"),
            ),
            Metric(
                f"memory while {count:,} timers are armed (RSS)",
                "B",
                median_of(ours, "rss"),
                median_of(theirs, "rss"),
                at_most(0.05, "20 times less"),
            ),
        ],
        notes=[
            f"{count:,} one-shot timers due in 1 h armed, then each cancelled, in a fresh process "
            f"per side and round ({config.fewer_rounds} round(s); a tenth as many first as a "
            "warm-up). Project: register_one_shot, then unregister_timer, on one actor; peer: "
            "threading.Timer start() each, then cancel() and join() each (a cancelled Timer's "
            "thread is gone only once it has ended). Memory: RSS growth while all are armed "
            "(a threading.Timer's thread stack is invisible to tracemalloc)."
        ],
    )


# -- 5. lateness of a hundred thousand timers ----------------------------------------------------


def _due_times(count: int, lead: float, window: float) -> list[float]:
    base = time.time() + lead
    return [base + window * index / count for index in range(count)]


def _lateness_project(config: Config, count: int, lead: float, window: float) -> dict[str, Any]:
    names = _names(count)
    log = LatenessLog(count)
    with _system(config) as system:
        register = _timer_facet(system, system.spawn(_Host, log)).register_one_shot
        due = _due_times(count, lead, window)
        clock = time.time
        for name, when in zip(names, due, strict=True):
            register(name, max(0.0, when - clock()))
        armed_at = clock()
        log.wait(lead + window + 60)
    return {"lateness": log.lateness_ms, "overran": armed_at > due[0]}


def _lateness_peer(count: int, lead: float, window: float) -> dict[str, Any]:
    names = _names(count)
    log = LatenessLog(count)
    fired: queue.Queue[float | None] = queue.Queue()

    def consume() -> None:
        while (when := fired.get()) is not None:
            log.record(when)

    consumer = threading.Thread(target=consume, name="heap-timers-consumer")
    consumer.start()
    timers = HeapTimers(lambda when, name: fired.put(when))
    try:
        due = _due_times(count, lead, window)
        for name, when in zip(names, due, strict=True):
            timers.arm(when, name, None)
        armed_at = time.time()
        log.wait(lead + window + 60)
    finally:
        timers.close()
        fired.put(None)
        consumer.join()
    return {"lateness": log.lateness_ms, "overran": armed_at > due[0]}


def timer_lateness(config: Config) -> ScenarioResult:
    count = config.pick(quick=10_000, full=100_000)
    window = config.pick_seconds(quick=0.5, full=2.0)
    lead = config.pick_seconds(quick=0.3, full=1.0)
    warm_up(
        lambda: _lateness_project(config, count // 10, 0.2, 0.2),
        lambda: _lateness_peer(count // 10, 0.2, 0.2),
    )
    ours, theirs = alternate(
        config.rounds,
        lambda: _lateness_project(config, count, lead, window),
        lambda: _lateness_peer(count, lead, window),
    )
    summaries = [[lateness_summary(run["lateness"]) for run in runs] for runs in (ours, theirs)]

    def row(key: str, label: str, unit: str, goal: Any = None) -> Metric:
        return Metric(label, unit, median_of(summaries[0], key), median_of(summaries[1], key), goal)

    result = ScenarioResult(
        metrics=[
            row("p50", "lateness p50", "ms"),
            row("p99", "lateness p99", "ms", project_at_most(2.0, "≤ 2 ms")),
            row("max", "lateness max", "ms"),
            Metric(
                "fires delivered (worst round)",
                "count",
                min(summary["delivered"] for summary in summaries[0]),
                min(summary["delivered"] for summary in summaries[1]),
                project_at_least(count, f"all {count:,}"),
            ),
        ],
        notes=[
            f"{count:,} one-shot timers due evenly over {window:g} s, starting {lead:g} s after "
            "registration began, all on one actor; lateness = time.time() when the actor handles "
            "TimerFired minus its scheduled_at. Peer: HeapTimers putting each due entry into a "
            "queue.Queue read by one consumer thread, lateness taken when the consumer gets it. "
            "Percentiles per round, then the median over rounds."
        ],
        samples={
            "PlexSpaces": [value for run in ours for value in run["lateness"]],
            "heapq + queue.Queue": [value for run in theirs for value in run["lateness"]],
        },
    )
    overran = sum(run["overran"] for run in ours), sum(run["overran"] for run in theirs)
    if any(overran):
        result.notes.append(
            f"registration overran the {lead:g} s lead in {overran[0]} project and {overran[1]} "
            "peer round(s): the first timers fell due while later ones were still being armed"
        )
    return result


# -- 18. sliding expiration: a one-shot re-armed by every message ----------------------------------


class _Sliding(Actor):
    """Counts messages; with `rearm`, each message re-arms the one-shot "idle" timeout (1 h), the
    sliding-expiration idiom. A fire of the timeout is counted: it must never arrive."""

    def __init__(self, rearm: bool) -> None:
        super().__init__()
        self.rearm = rearm
        self.count = 0
        self.timeouts = 0

    def on_start(self) -> None:
        self.timers = self.attach_facet(TimerFacet())

    def on_receive(self, message: Any) -> Any:
        if type(message) is TimerFired:
            self.timeouts += 1
            return None
        if message == "count":
            return self.count, self.timeouts
        self.count += 1
        if self.rearm:
            self.timers.register_one_shot("idle", "1h")
        return None


class _PykkaSliding(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.count, 0
        self.count += 1
        return None


def _sliding_rate(ref: Any, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        ref.tell(1)
    handled, timeouts = ref.ask("count", timeout=30)
    elapsed = time.perf_counter() - started
    if (handled, timeouts) != (count, 0):
        raise RuntimeError(f"{handled} of {count} messages handled, {timeouts} stale timeouts")
    return count / elapsed


def _sliding_project(config: Config, count: int, rearm: bool) -> float:
    with _system(config) as system:
        ref = system.spawn(_Sliding, rearm)
        rate = _sliding_rate(ref, count)
        if rearm and len(system.scheduler) != 1:
            raise RuntimeError(f"{len(system.scheduler)} timers armed after re-arming, not 1")
        return rate


def _sliding_peer(count: int) -> float:
    ref = _PykkaSliding.start()
    try:
        return _sliding_rate(ref, count)
    finally:
        ref.stop()


def sliding_expiration(config: Config) -> ScenarioResult:
    count = config.pick(quick=10_000, full=100_000)
    warm_up(
        lambda: _sliding_project(config, count // 10, rearm=True),
        lambda: _sliding_peer(count // 10),
    )
    rearmed, plain, theirs = [], [], []
    for _ in range(config.rounds):
        rearmed += alternate(
            1, lambda: _sliding_project(config, count, True), lambda: _sliding_peer(count)
        )[0]
        pair = alternate(
            1, lambda: _sliding_project(config, count, False), lambda: _sliding_peer(count)
        )
        plain += pair[0]
        theirs += pair[1]
    return ScenarioResult(
        metrics=[
            Metric(
                "tell throughput, one-shot re-armed per message",
                "msg/s",
                median(rearmed),
                median(theirs),
                at_least(0.7),
            ),
            Metric(
                "tell throughput, timer facet, no re-arm",
                "msg/s",
                median(plain),
                median(theirs),
            ),
        ],
        notes=[
            f"{count:,} tells from one thread to one actor, timed until an ask queued behind them "
            "is answered. Project: the actor has TimerFacet and, in the first row, re-arms the "
            "one-shot 'idle' (1 h) on every message through register_one_shot (each replaces "
            "the last: one timer stays armed, and a fire of a replaced one must never arrive; "
            "a round with one fails). Peer: a pykka ThreadingActor counting the same messages, "
            "its rounds interleaved with both project rows."
        ],
    )


SCENARIOS = [
    Scenario(3, "timers-arm", "arm a million timers", "bare heapq + one thread", arm_a_million),
    Scenario(4, "timers-cancel", "arm and cancel timers", "threading.Timer", arm_and_cancel),
    Scenario(
        5, "timer-lateness", "timer lateness under load", "heapq into queue.Queue", timer_lateness
    ),
    Scenario(18, "timer-sliding", "sliding expiration", "raw pykka tell", sliding_expiration),
]
