"""Actors against raw pykka: tell throughput, ask round trip, memory per idle actor, virtual
actor activations (scenarios 1, 2, 9 and 10)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pykka

from benchmarks.measure import (
    Config,
    Countdown,
    Metric,
    Scenario,
    ScenarioResult,
    alternate,
    at_least,
    at_most,
    in_child,
    median,
    percentile,
    settled_rss,
    traced,
    warm_up,
)
from facets.timer import TimerFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, Facet

ASK_TIMEOUT = 30.0
"""Both sides ask with the same timeout (the project's default)."""


def _system(config: Config) -> ActorSystem:
    # Nothing here opens the store; the URL only keeps it out of the current directory.
    return ActorSystem(storage_url=f"sqlite:///{config.workdir / 'actors.db'}", name="bench")


# -- 1. tell throughput --------------------------------------------------------------------------


class _Audit(Facet):
    """An intercepting facet that does the least an interceptor can: count."""

    facet_type = "audit"

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def before_message(self, message: Any) -> Any:
        self.seen += 1
        return None


class _Counting(Actor):
    """Counts messages; TimerFacet (one hourly timer) and the `_Audit` interceptor attached."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_start(self) -> None:
        self.attach_facet(TimerFacet(), priority=50)
        self.facet(TimerFacet).register_periodic("hourly", "1h")
        self.attach_facet(_Audit(), priority=10)

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


class _PykkaCounting(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


def _tell_rate(tell: Callable[[Any], None], ask: Callable[[Any], Any], count: int) -> float:
    """Messages per second from the first tell until an ask queued behind the last is answered."""
    started = time.perf_counter()
    for _ in range(count):
        tell(1)
    handled = ask("count")
    elapsed = time.perf_counter() - started
    if handled != count:
        raise RuntimeError(f"the actor handled {handled} of {count} messages")
    return count / elapsed


def _tell_project(config: Config, count: int) -> float:
    with _system(config) as system:
        ref = system.spawn(_Counting)
        return _tell_rate(ref.tell, lambda message: ref.ask(message, timeout=ASK_TIMEOUT), count)


def _tell_peer(count: int) -> float:
    ref = _PykkaCounting.start()
    try:
        return _tell_rate(ref.tell, lambda message: ref.ask(message, timeout=ASK_TIMEOUT), count)
    finally:
        ref.stop()


def tell_throughput(config: Config) -> ScenarioResult:
    count = config.pick(quick=20_000, full=100_000)
    warm_up(lambda: _tell_project(config, count // 10), lambda: _tell_peer(count // 10))
    ours, theirs = alternate(
        config.more_rounds, lambda: _tell_project(config, count), lambda: _tell_peer(count)
    )
    return ScenarioResult(
        metrics=[
            Metric("tell throughput", "msg/s", median(ours), median(theirs), at_least(0.9)),
        ],
        notes=[
            f"{count:,} tells from one thread to one actor, timed until an ask queued behind "
            f"them is answered; median of {config.more_rounds} short rounds per side. Project "
            "actor: TimerFacet (one hourly timer) and a facet whose before_message counts; "
            "peer: a pykka ThreadingActor with the same on_receive."
        ],
    )


# -- 2. ask round trip ---------------------------------------------------------------------------


class _Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


class _PykkaEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def _round_trips_us(ask: Callable[[Any], Any], count: int) -> list[float]:
    clock = time.perf_counter
    trips: list[float] = []
    for index in range(count):
        started = clock()
        ask(index)
        trips.append((clock() - started) * 1e6)
    trips.sort()
    return trips


def _ask_project(config: Config, count: int) -> list[float]:
    with _system(config) as system:
        ref = system.spawn(_Echo)
        return _round_trips_us(lambda message: ref.ask(message, timeout=ASK_TIMEOUT), count)


def _ask_peer(count: int) -> list[float]:
    ref = _PykkaEcho.start()
    try:
        return _round_trips_us(lambda message: ref.ask(message, timeout=ASK_TIMEOUT), count)
    finally:
        ref.stop()


def ask_round_trip(config: Config) -> ScenarioResult:
    count = config.pick(quick=2_000, full=10_000)
    warm_up(lambda: _ask_project(config, count // 10), lambda: _ask_peer(count // 10))
    ours, theirs = alternate(
        config.more_rounds, lambda: _ask_project(config, count), lambda: _ask_peer(count)
    )

    def at(trips: list[list[float]], percent: float) -> float:
        return median([percentile(round_trips, percent) for round_trips in trips])

    return ScenarioResult(
        metrics=[
            Metric("ask round trip p50", "µs", at(ours, 50), at(theirs, 50), at_most(1.2)),
            Metric("ask round trip p99", "µs", at(ours, 99), at(theirs, 99)),
        ],
        notes=[
            f"{count:,} sequential asks per round ({config.more_rounds} short rounds per side) "
            f"to an actor that returns the message (no facets), both with timeout="
            f"{ASK_TIMEOUT:g} s; percentiles per round, then the median over rounds."
        ],
    )


# -- 9. memory per idle actor --------------------------------------------------------------------


class _Idle(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


class _PykkaIdle(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def idle_actor_memory(side: str, count: int, workdir: str, tracing: bool) -> float:
    """Bytes per idle actor (RSS, or traced Python heap), in a fresh process: `count` actors
    started after one warm-up actor, each answering one ask so all are settled and idle. The
    actors are left running: the child process ends right after reporting."""
    start: Callable[[], Any]
    if side == "project":
        system = ActorSystem(storage_url=f"sqlite:///{Path(workdir) / 'idle.db'}", name="bench")
        start = partial(system.spawn, _Idle)
    else:
        start = _PykkaIdle.start
    start().ask("ping", timeout=ASK_TIMEOUT)

    def make() -> None:
        refs = [start() for _ in range(count)]
        for ref in refs:
            ref.ask("ping", timeout=ASK_TIMEOUT)

    if tracing:
        with traced() as grown:
            make()
            return grown() / count
    before = settled_rss()
    make()
    return (settled_rss() - before) / count


def _memory_per_actor(config: Config, count: int, tracing: bool) -> Metric:
    def probe(side: str) -> float:
        return float(
            in_child(
                idle_actor_memory,
                side=side,
                count=count,
                workdir=str(config.workdir),
                tracing=tracing,
            )
        )

    ours, theirs = alternate(1, partial(probe, "project"), partial(probe, "peer"))
    what = "traced Python heap" if tracing else "RSS"
    return Metric(
        f"{what} per idle actor, {count:,} actors",
        "B",
        ours[0],
        theirs[0],
        None if tracing else at_most(1.1),
    )


def actor_memory(config: Config) -> ScenarioResult:
    small, large = config.pick(quick=200, full=1_000), config.pick(quick=1_000, full=10_000)
    return ScenarioResult(
        metrics=[
            _memory_per_actor(config, small, tracing=False),
            _memory_per_actor(config, large, tracing=False),
            _memory_per_actor(config, small, tracing=True),
        ],
        notes=[
            "Each figure comes from one fresh process per side: after one warm-up actor, N "
            "actors are started (project: ActorSystem.spawn of an Actor with no facets; peer: "
            "pykka ThreadingActor.start) and each answers one ask. RSS (/proc/self/statm) "
            "includes each thread's stack, which tracemalloc cannot see; the traced-heap row "
            "shows the Python objects alone and is reported, not judged. Memory figures vary "
            "by well under 1% between processes, so one process per side is measured."
        ],
    )


# -- 10. virtual actor activations ---------------------------------------------------------------


class _Activated(Actor):
    """A virtual actor with no facets: the activation machinery alone."""

    def __init__(self, countdown: Countdown) -> None:
        super().__init__()
        self.countdown = countdown

    def on_receive(self, message: Any) -> Any:
        self.countdown.tick()
        return None


class _ActivatedWithIdleFacet(_Activated):
    """The usual virtual actor: VirtualActorFacet attached in on_start."""

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1h"})


class _PykkaActivated(pykka.ThreadingActor):
    def __init__(self, countdown: Countdown) -> None:
        super().__init__()
        self.countdown = countdown

    def on_receive(self, message: Any) -> Any:
        self.countdown.tick()
        return None


def _activate_project(config: Config, cls: type[_Activated], count: int) -> float:
    countdown = Countdown(count)
    with _system(config) as system:
        system.register_virtual("bench", cls, countdown)
        started = time.perf_counter()
        for index in range(count):
            system.virtual("bench", f"k{index}").tell("hello")
        if not countdown.wait(120):
            raise RuntimeError("virtual actors did not all handle their first message")
        return count / (time.perf_counter() - started)


def _activate_peer(count: int) -> float:
    countdown = Countdown(count)
    started = time.perf_counter()
    refs = [_PykkaActivated.start(countdown) for _ in range(count)]
    for ref in refs:
        ref.tell("hello")
    if not countdown.wait(120):
        raise RuntimeError("pykka actors did not all handle their first message")
    rate = count / (time.perf_counter() - started)
    pykka.get_all([ref.stop(block=False) for ref in refs])
    return rate


def activations(config: Config) -> ScenarioResult:
    count = config.pick(quick=1_000, full=10_000)
    warm_up(
        lambda: _activate_project(config, _ActivatedWithIdleFacet, count // 20),
        lambda: _activate_peer(count // 20),
    )
    ours, theirs = alternate(
        config.fewer_rounds,
        lambda: _activate_project(config, _Activated, count),
        lambda: _activate_peer(count),
    )
    with_facet = _activate_project(config, _ActivatedWithIdleFacet, count)
    return ScenarioResult(
        metrics=[
            Metric(
                f"activations, {count:,} keys", "/s", median(ours), median(theirs), at_least(0.8)
            ),
            Metric(
                f"activations with VirtualActorFacet, {count:,} keys",
                "/s",
                with_facet,
                median(theirs),
            ),
        ],
        notes=[
            f"{count:,} distinct keys, one tell each, timed until every actor has handled its "
            "message. Project: system.virtual(type, key).tell (activates the key: spawns its "
            "actor and waits for on_start); peer: pykka ThreadingActor.start() then tell. The "
            "second row attaches VirtualActorFacet (idle_timeout 1h) in on_start, as a typical "
            "virtual actor does (one round, reported, not judged). Starting 10,000 threads per "
            f"side costs seconds here, so {config.fewer_rounds} round(s) per side."
        ],
    )


SCENARIOS = [
    Scenario(1, "tell", "tell throughput, two facets attached", "raw pykka", tell_throughput),
    Scenario(2, "ask", "ask round trip", "raw pykka", ask_round_trip),
    Scenario(9, "actor-memory", "memory per idle actor", "raw pykka", actor_memory),
    Scenario(10, "activation", "virtual actor activations", "pykka start", activations),
]
