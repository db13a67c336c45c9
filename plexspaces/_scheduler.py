"""The one scheduler of an actor system: every timer and reminder deadline lives in its heap."""

from __future__ import annotations

import heapq
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from ._duration import Duration, parse_duration

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = ["ScheduledCall", "Scheduler"]

_log = structlog.get_logger("plexspaces.scheduler")

# Cancelled entries stay in the heap until they reach the top (cheap cancel). Once they are more
# than half of a large heap, the heap is rebuilt without them so memory follows the live count.
_COMPACT_MIN = 1024
# Due calls taken from the heap per lock hold on the system clock; keeps pushes from other threads
# from waiting behind a long burst.
_BATCH = 1024


class ScheduledCall(ABC):
    """Something to run at a deadline on the scheduler's thread.

    Subclass it and implement `run()` to keep per-call state in one object (the timer facet does),
    or use `Scheduler.call_at()` with a plain function. `run()` must be quick: it runs on the one
    thread that serves every deadline of the system. An exception from it is logged and dropped.
    """

    __slots__ = ("_counted", "_queued", "_scheduler", "cancelled", "when")

    def __init__(self) -> None:
        self.when = 0.0
        self.cancelled = False
        self._queued = False
        # Whether this call's cancellation is counted in its scheduler's `_cancelled_in_heap`;
        # read and written only under the scheduler's lock.
        self._counted = False
        self._scheduler: Scheduler | None = None

    @abstractmethod
    def run(self) -> None:
        """Called once `when` has been reached, unless cancelled first."""

    def cancel(self) -> None:
        """Stop this call from running. Idempotent; safe from any thread."""
        if self.cancelled:
            return
        self.cancelled = True
        if self._scheduler is not None:
            self._scheduler._note_cancelled(self)


class _FunctionCall(ScheduledCall):
    __slots__ = ("_function",)

    def __init__(self, function: Callable[[], object]) -> None:
        super().__init__()
        self._function = function

    def run(self) -> None:
        self._function()

    def __repr__(self) -> str:
        return f"<scheduled {self._function!r} at {self.when}>"


class Scheduler:
    """A heap of deadlines served by one thread (or by `ManualClock.advance`).

    Deadlines are POSIX seconds on the system's clock. Pushing a deadline earlier than every other
    wakes the thread through a condition; cancelling is O(1) and the entry is dropped lazily.
    """

    def __init__(self, clock: Clock, *, name: str = "plexspaces-scheduler") -> None:
        self.clock = clock
        self.name = name
        self._heap: list[tuple[float, int, ScheduledCall]] = []
        self._sequence = itertools.count()
        # Hot paths take the plain lock (a C-level context manager); the condition shares it.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._cancelled_in_heap = 0
        self._closed = False
        self._started = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving deadlines (a thread on the system clock; nothing on a `ManualClock`)."""
        if self._started:
            return
        self._started = True
        self.clock._drive(self)

    def close(self) -> None:
        """Stop serving deadlines, drop every pending call and join the thread. Idempotent."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._condition.notify_all()
        if self._started:
            self.clock._release(self)
        with self._condition:
            for _, _, call in self._heap:
                call._queued = False
                call._counted = False
            self._heap.clear()
            self._cancelled_in_heap = 0

    @property
    def closed(self) -> bool:
        return self._closed

    # -- scheduling ------------------------------------------------------------------------------

    def call_at(self, when: float, function: Callable[[], object]) -> ScheduledCall:
        """Run `function()` on the scheduler thread at `when` (POSIX seconds on the clock)."""
        call = _FunctionCall(function)
        self.schedule(call, when)
        return call

    def call_later(self, delay: Duration, function: Callable[[], object]) -> ScheduledCall:
        """Run `function()` on the scheduler thread after `delay`."""
        return self.call_at(self.clock.time() + parse_duration(delay).total_seconds(), function)

    def schedule(self, call: ScheduledCall, when: float) -> bool:
        """Arm `call` for `when`. Returns False (and arms nothing) once the scheduler is closed.

        A call is in the heap at most once: re-arm it from its own `run()`, or arm a new object.
        """
        call.when = when
        call._scheduler = self
        with self._lock:
            if self._closed or call.cancelled:
                return False
            heap = self._heap
            entry = (when, next(self._sequence), call)
            heapq.heappush(heap, entry)
            call._queued = True
            if heap[0] is entry:
                self._condition.notify()
        return True

    def schedule_many(self, calls: Sequence[ScheduledCall]) -> bool:
        """Arm each of `calls` for its own `when`, under one hold of the lock (a batch).

        Returns False (and arms none) once the scheduler is closed. A call already cancelled is
        skipped. As for `schedule`, a call is in the heap at most once.
        """
        with self._lock:
            if self._closed:
                return False
            heap = self._heap
            top = heap[0] if heap else None
            sequence = self._sequence
            entries = []
            for call in calls:
                if call.cancelled:
                    continue
                call._scheduler = self
                call._queued = True
                entries.append((call.when, next(sequence), call))
            if len(entries) > len(heap):
                # Many into few: one O(n) heapify beats a push (O(log n)) each.
                heap.extend(entries)
                heapq.heapify(heap)
            else:
                push = heapq.heappush
                for entry in entries:
                    push(heap, entry)
            if heap and heap[0] is not top:
                self._condition.notify()
        return True

    def cancel_many(self, calls: Iterable[ScheduledCall]) -> None:
        """`cancel()` each of `calls`, taking the lock once rather than once per call."""
        with self._lock:
            for call in calls:
                if call.cancelled:
                    continue
                call.cancelled = True
                if call._queued and not call._counted and call._scheduler is self:
                    call._counted = True
                    self._cancelled_in_heap += 1
            self._compact_if_mostly_cancelled()

    def __len__(self) -> int:
        """Armed calls, not counting cancelled ones still waiting to be dropped."""
        # Under the lock: the two numbers change together there, and read apart they could be
        # one pop out of step.
        with self._lock:
            return len(self._heap) - self._cancelled_in_heap

    # -- internals used by the clocks -------------------------------------------------------------

    # `cancelled` is set without the lock (cancel() is called from any thread), so the heap's
    # own threads may pop an entry between the flag and the count below. The count therefore
    # follows `_counted`, decided under the lock: an entry is counted at most once, only while
    # queued, and uncounted exactly when it leaves the heap. A cancellation that loses the race
    # is never counted, so len() cannot drift (it once went negative).

    def _note_cancelled(self, call: ScheduledCall) -> None:
        with self._lock:
            if not call._queued or call._counted:
                return
            call._counted = True
            self._cancelled_in_heap += 1
            self._compact_if_mostly_cancelled()

    def _compact_if_mostly_cancelled(self) -> None:
        heap = self._heap
        if self._cancelled_in_heap > _COMPACT_MIN and self._cancelled_in_heap * 2 > len(heap):
            live = [entry for entry in heap if not entry[2].cancelled]
            for entry in heap:
                if entry[2].cancelled:
                    self._unqueue(entry[2])
            heapq.heapify(live)
            self._heap = live
            self._cancelled_in_heap = 0

    def _unqueue(self, call: ScheduledCall) -> None:
        """Book `call` as out of the heap (under the lock)."""
        call._queued = False
        if call._counted:
            call._counted = False
            self._cancelled_in_heap -= 1

    def _drop_cancelled_top(self) -> None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            self._unqueue(heapq.heappop(heap)[2])

    def _next_deadline(self) -> float | None:
        with self._lock:
            if self._closed:
                return None
            self._drop_cancelled_top()
            return self._heap[0][0] if self._heap else None

    def _pop_due_locked(self, now: float, limit: int) -> list[ScheduledCall]:
        heap = self._heap
        due: list[ScheduledCall] = []
        while heap and heap[0][0] <= now and len(due) < limit:
            call = heapq.heappop(heap)[2]
            self._unqueue(call)
            if not call.cancelled:
                due.append(call)
        return due

    def _run_due(self, now: float) -> None:
        """Run every call due at `now` (used by `ManualClock.advance`)."""
        while True:
            with self._lock:
                if self._closed:
                    return
                batch = self._pop_due_locked(now, _BATCH)
            if not batch:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[ScheduledCall]) -> None:
        for call in batch:
            if call.cancelled or self._closed:
                continue
            try:
                call.run()
            except Exception:
                # One faulty callback must not stop every other deadline of the system.
                _log.exception("scheduler.call_failed", scheduler=self.name, call=repr(call))

    # -- the thread (system clock) -----------------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _serve(self) -> None:
        clock = self.clock
        condition = self._condition
        while True:
            with condition:
                while True:
                    if self._closed:
                        return
                    # Read self._heap afresh each time: compaction replaces the list, and a local
                    # kept across the wait would hold every cancelled entry until the next wake.
                    self._drop_cancelled_top()
                    if not self._heap:
                        condition.wait()
                        continue
                    now = clock.time()
                    delay = self._heap[0][0] - now
                    if delay <= 0:
                        break
                    condition.wait(delay)
                batch = self._pop_due_locked(now, _BATCH)
            self._run_batch(batch)

    def __repr__(self) -> str:
        return f"<Scheduler {self.name!r} armed={len(self)} clock={self.clock!r}>"
