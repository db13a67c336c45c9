"""Scale: a million timers in one scheduler, armed and cancelled, without leaking heap entries.

Numbers are printed (visible with `pytest -s`), never asserted: they depend on the machine.
"""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
import tracemalloc

import pytest

from facets.timer import TimerFacet
from plexspaces import Actor, ActorSystem

ACTORS = 10
TIMERS = 1_000_000
PER_ACTOR = TIMERS // ACTORS
SUBSET = 100_000


class Idle(Actor):
    """An actor that only hosts timers."""


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


@pytest.mark.slow
def test_a_million_timers_are_armed_and_cancelled(real_system: ActorSystem) -> None:
    """1,000,000 periodic timers over 10 actors: all counted, then cancelled and compacted away."""
    scheduler = real_system.scheduler
    refs = [real_system.spawn(Idle) for _ in range(ACTORS)]
    facets = [ref.attach_facet(TimerFacet(), priority=50) for ref in refs]
    threads_before = len(threading.enumerate())
    names = [f"timer-{index}" for index in range(PER_ACTOR)]
    gc.collect()
    rss_before = _max_rss_bytes()

    started = time.perf_counter()
    for timers in facets:
        register = timers.register_periodic
        for name in names:
            register(name, "1h")
    arm_seconds = time.perf_counter() - started
    rss_grown = _max_rss_bytes() - rss_before

    assert len(scheduler) == TIMERS
    assert all(len(timers) == PER_ACTOR for timers in facets)
    assert len(threading.enumerate()) == threads_before  # still the one scheduler thread

    # Half the actors cancel timer by timer, the other half by stopping.
    started = time.perf_counter()
    for timers in facets[: ACTORS // 2]:
        unregister = timers.unregister_timer
        for name in names:
            assert unregister(name)
    for ref in refs[ACTORS // 2 :]:
        ref.stop()
    cancel_seconds = time.perf_counter() - started

    assert len(scheduler) == 0
    assert all(len(timers) == 0 for timers in facets)
    # Cancelled entries were compacted out as they piled up, not left to wait an hour for their
    # deadlines (internal check: the heap list itself).
    assert len(scheduler._heap) < TIMERS // 100

    print(
        f"\n{TIMERS:,} timers over {ACTORS} actors: armed in {arm_seconds:.2f} s "
        f"({TIMERS / arm_seconds:,.0f}/s), cancelled in {cancel_seconds:.2f} s "
        f"({TIMERS / cancel_seconds:,.0f}/s); peak RSS grew {rss_grown / 2**20:,.0f} MiB "
        f"(~{rss_grown / TIMERS:,.0f} bytes per timer); heap entries left {len(scheduler._heap)}"
    )


@pytest.mark.slow
def test_memory_per_timer_on_a_subset(real_system: ActorSystem) -> None:
    """100,000 timers: traced memory per timer is reported, and all of it is freed on cancel."""
    ref = real_system.spawn(Idle)
    timers = ref.attach_facet(TimerFacet(), priority=50)
    names = [f"timer-{index}" for index in range(SUBSET)]
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        for name in names:
            timers.register_periodic(name, "1h")
        armed, _ = tracemalloc.get_traced_memory()
        assert len(real_system.scheduler) == SUBSET
        ref.stop()
        gc.collect()
        released, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    per_timer = (armed - baseline) / SUBSET
    left_per_timer = (released - baseline) / SUBSET
    print(
        f"\n{SUBSET:,} timers: ~{per_timer:,.0f} traced bytes per timer while armed, "
        f"~{left_per_timer:,.1f} per timer left after stop"
    )
    assert len(real_system.scheduler) == 0
    # Compaction and the facet's own clean-up give back what arming took (allowing for the
    # scheduler's small remainder of not yet compacted entries and allocator noise).
    assert released - baseline < (armed - baseline) / 10
