"""What every scenario shares: the run's settings, results with goals, rounds, memory, children."""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: children run from here so `benchmarks` and `tests` import."""

T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """Settings of one run."""

    quick: bool
    rounds: int
    workdir: Path
    """A scratch directory for database files, removed at the end of the run."""

    @property
    def fewer_rounds(self) -> int:
        """Rounds for the scenarios that start thousands of threads per side and round (thread
        creation costs about 1 ms here): one fewer, at least one."""
        return max(1, self.rounds - 1)

    @property
    def more_rounds(self) -> int:
        """Rounds for the scenarios whose rounds take well under a second: three times as many,
        so that the median holds when the machine's speed changes from one second to the next
        (it does on a shared virtual machine)."""
        return 3 * self.rounds

    def pick(self, *, quick: int, full: int) -> int:
        """A size for this mode."""
        return quick if self.quick else full

    def pick_seconds(self, *, quick: float, full: float) -> float:
        """A duration for this mode."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Goal:
    """A target from the issue, checked either on the ratio (project / peer) or on the project's
    own value."""

    on: Literal["ratio", "project"]
    op: Literal[">=", "<="]
    target: float
    label: str

    def met(self, project: float, peer: float | None) -> bool | None:
        """True or False; None when it cannot be judged (the peer did not run)."""
        if self.on == "ratio":
            if peer is None or peer == 0:
                return None
            value = project / peer
        else:
            value = project
        return value >= self.target if self.op == ">=" else value <= self.target


TIMES = "\N{MULTIPLICATION SIGN}"
NOTHING = "\N{EN DASH}"
"""Shown where a row has no value, ratio or goal."""


def at_least(target: float) -> Goal:
    """The project's ratio to the peer must be at least `target`."""
    return Goal("ratio", ">=", target, f"≥ {target:g}{TIMES}")


def at_most(target: float, meaning: str | None = None) -> Goal:
    """The project's ratio to the peer must be at most `target` (`meaning` says it in words)."""
    label = f"≤ {target:g}{TIMES}"
    return Goal("ratio", "<=", target, f"{meaning} ({label})" if meaning else label)


def project_at_least(target: float, label: str) -> Goal:
    """The project's own value must be at least `target`."""
    return Goal("project", ">=", target, label)


def project_at_most(target: float, label: str) -> Goal:
    """The project's own value must be at most `target`."""
    return Goal("project", "<=", target, label)


@dataclass(frozen=True)
class Metric:
    """One row of the report. A peer value of None (the peer did not run, or has nothing to
    compare) shows as `peer_missing`."""

    label: str
    unit: str
    project: float
    peer: float | None
    goal: Goal | None = None
    peer_missing: str = "n/a"

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.peer == 0:
            return None
        return self.project / self.peer

    @property
    def status(self) -> str:
        if self.goal is None:
            return "info"
        met = self.goal.met(self.project, self.peer)
        if met is None:
            return "n/a"
        return "met" if met else "not met"


@dataclass
class ScenarioResult:
    """What a scenario reports: rows, notes (how it was measured, what was missing) and lateness
    samples in milliseconds for the chart, keyed by series name."""

    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One benchmark: `run` measures the project and its peer and returns the rows."""

    number: int
    name: str
    title: str
    peer: str
    run: Callable[[Config], ScenarioResult]
    in_quick: bool = True
    """Whether `--quick` runs it without being named by `--only`."""


# -- rounds --------------------------------------------------------------------------------------


def alternate(
    rounds: int, project: Callable[[], T], peer: Callable[[], T]
) -> tuple[list[T], list[T]]:
    """Run both sides `rounds` times, alternating which goes first, after a garbage collection
    each time; the results of each side in order."""
    ours: list[T] = []
    theirs: list[T] = []
    for index in range(rounds):
        order = [(project, ours), (peer, theirs)]
        if index % 2:
            order.reverse()
        for side, results in order:
            gc.collect()
            results.append(side())
    return ours, theirs


def repeat(rounds: int, side: Callable[[], T]) -> list[T]:
    """Run one side `rounds` times (when there is no peer to alternate with)."""
    results: list[T] = []
    for _ in range(rounds):
        gc.collect()
        results.append(side())
    return results


def warm_up(*sides: Callable[[], object]) -> None:
    """Run each side once and drop the result (imports, caches, first-use allocations)."""
    for side in sides:
        gc.collect()
        side()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def median_of(results: Sequence[dict[str, float]], key: str) -> float:
    return median([result[key] for result in results])


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def lateness_summary(lateness_ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of lateness samples in milliseconds, and how many there were."""
    ordered = sorted(lateness_ms)
    return {
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "delivered": float(len(ordered)),
    }


# -- memory --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size now (Linux); elsewhere its peak, which only grows."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_bytes() -> int:
    """The highest resident set size of this process's own memory so far (Linux `VmHWM`: unlike
    `ru_maxrss`, it does not carry over the parent's peak into a freshly started child);
    elsewhere `ru_maxrss`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Trace Python allocations; yields a function giving the bytes allocated since the start
    and still alive (after a garbage collection)."""
    gc.collect()
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()

    def grown() -> int:
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        return current - baseline

    try:
        yield grown
    finally:
        tracemalloc.stop()


# -- children ------------------------------------------------------------------------------------

RESULT_MARK = "BENCHMARK-RESULT "


def start_child(function: Callable[..., Any], **arguments: Any) -> subprocess.Popen[str]:
    """Run `function(**arguments)` in a fresh Python process (see `benchmarks.child`); its
    result comes back through `child_result`. Memory measured there starts from a clean heap,
    with no freed arenas or cached thread stacks left by earlier rounds."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.child",
        f"{function.__module__}:{function.__name__}",
        json.dumps(arguments),
    ]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def child_result(process: subprocess.Popen[str], timeout: float = 300.0) -> Any:
    """The JSON result of a child started by `start_child`; RuntimeError if it failed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"benchmark child {process.args!r} ran over {timeout:g} s") from None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            if process.returncode == 0:
                return json.loads(line[len(RESULT_MARK) :])
            break
    raise RuntimeError(
        f"benchmark child {process.args!r} failed with exit status {process.returncode}:\n"
        f"{(stderr or stdout)[-3000:]}"
    )


def in_child(function: Callable[..., Any], **arguments: Any) -> Any:
    """`function(**arguments)` run in a fresh process; its JSON result."""
    return child_result(start_child(function, **arguments))


# -- waiting -------------------------------------------------------------------------------------


class Countdown:
    """Counts handled messages from any thread; `wait` returns once `expected` were counted."""

    def __init__(self, expected: int) -> None:
        self._left = expected
        self._lock = threading.Lock()
        self._done = threading.Event()

    def tick(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class LatenessLog:
    """Records, from any thread, how late each handled message was on `time.time()` (the
    project's system clock); `wait` returns once `expected` distinct messages were recorded.

    A message recorded with a `key` that was recorded before (a fire delivered again) counts as
    a duplicate, not as one more delivery."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.lateness_ms: list[float] = []
        self.first_at: float | None = None
        self.last_at = 0.0
        self.duplicates = 0
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        if expected == 0:
            self._done.set()

    def record(self, scheduled_at: float, key: Hashable | None = None) -> None:
        """A message due at `scheduled_at` (POSIX seconds), identified by `key` if given, is
        being handled now."""
        now = time.time()
        with self._lock:
            if key is not None:
                if key in self._seen:
                    self.duplicates += 1
                    return
                self._seen.add(key)
            self.lateness_ms.append((now - scheduled_at) * 1000)
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            if len(self.lateness_ms) == self.expected:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    @property
    def count(self) -> int:
        """Distinct messages recorded so far."""
        with self._lock:
            return len(self.lateness_ms)
