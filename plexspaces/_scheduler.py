"""The one scheduler of an actor system: every timer and reminder deadline lives in its heap."""

from __future__ import annotations

import heapq
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import structlog

from ._duration import Duration, parse_duration

if TYPE_CHECKING:
    from ._clock import Clock

__all__ = ["KeyedEntry", "ScheduledCall", "Scheduler"]

_log = structlog.get_logger("plexspaces.scheduler")

# Cancelled entries stay in the heap until they reach the top (cheap cancel). Once they are more
# than half of a large heap, the heap is rebuilt without them so memory follows the live count.
_COMPACT_MIN = 1024
# Due calls taken from the heap per lock hold on the system clock; keeps pushes from other threads
# from waiting behind a long burst.
_BATCH = 1024


KeyedEntry: TypeAlias = tuple[float, int, int, str, float | None]
"""A keyed entry: `(when, sequence, owner, name, period)`, all plain values.

An owner (see `Scheduler.add_owner`) that arms many deadlines, such as the timer facet with its
thousands of timers, puts these in the heap instead of a `ScheduledCall` each: a tuple of plain
values holds no reference the cyclic garbage collector must follow, so it untracks the tuple,
and a million armed timers cost it nothing. The owner's map says which entry of a name is
current (`owner_map[name] is entry`); any other is stale and dropped when it comes up."""

_Owner: TypeAlias = tuple[
    MutableMapping[str, Any], Callable[[KeyedEntry], None], Callable[[KeyedEntry], None]
]


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

    Besides `ScheduledCall`s, the heap holds keyed entries of owners with many deadlines (see
    `add_owner`): `lock` is the scheduler's lock, which such an owner also guards its own state
    with, and `sequence` numbers the entries it makes for `push_many_locked`.
    """

    def __init__(self, clock: Clock, *, name: str = "plexspaces-scheduler") -> None:
        self.clock = clock
        self.name = name
        # Entries are `(when, sequence, call)` for a ScheduledCall, or a keyed `KeyedEntry`; the
        # sequence is unique, so comparisons never reach the third item.
        self._heap: list[Any] = []
        self.sequence = itertools.count()
        # Hot paths take the plain lock (a C-level context manager); the condition shares it.
        self._lock = threading.Lock()
        self.lock = self._lock
        self._condition = threading.Condition(self._lock)
        self._cancelled_in_heap = 0
        # Keyed entries in the heap that are no longer their owner's current one (or whose owner
        # is gone). Kept exact under the lock: owners report each entry they replace or drop
        # while it is in the heap (`discard_locked`), and popping a stale entry uncounts it.
        self._stale = 0
        self._owners: dict[int, _Owner] = {}
        self._owner_ids = itertools.count(1)
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
            for entry in self._heap:
                if len(entry) == 3:
                    entry[2]._queued = False
                    entry[2]._counted = False
            self._heap.clear()
            self._cancelled_in_heap = 0
            self._stale = 0

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
            entry = (when, next(self.sequence), call)
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
            sequence = self.sequence
            entries: list[Any] = []
            for call in calls:
                if call.cancelled:
                    continue
                call._scheduler = self
                call._queued = True
                entries.append((call.when, next(sequence), call))
            return self.push_many_locked(entries)

    # -- keyed entries (owners with many deadlines) ----------------------------------------------

    # An owner keeps a map of name -> its current heap entry. Every method below whose name ends
    # in `_locked` is called with `lock` held, by the owner, which guards its own map with the
    # same lock: one lock per arm, and the liveness of an entry (`map[name] is entry`) reads the
    # same under it for the owner and for the scheduler.

    def add_owner(
        self,
        entries: MutableMapping[str, Any],
        taken: Callable[[KeyedEntry], None],
        run: Callable[[KeyedEntry], None],
    ) -> int:
        """Register an owner of keyed entries; returns its id, the third item of its entries.

        `entries` maps a name to the owner's current `KeyedEntry` for it while that is in the heap,
        and to anything but a tuple while the name's deadline is out of the heap; anything else
        under the name (or no name) makes an entry stale. When a current entry
        comes due, `taken(entry)` is called under `lock` (it must book the entry as out of the
        heap, so that `entries[name]` no longer is it) and then `run(entry)` on the scheduler's
        thread without the lock. `run` must be quick, like `ScheduledCall.run`.
        """
        with self._lock:
            owner = next(self._owner_ids)
            self._owners[owner] = (entries, taken, run)
            return owner

    def remove_owner_locked(self, owner: int) -> None:
        """Forget `owner`: its entries still in the heap become stale. Clears its map."""
        found = self._owners.pop(owner, None)
        if found is None:
            return
        entries = found[0]
        self.discard_locked(sum(1 for value in entries.values() if type(value) is tuple))
        entries.clear()

    def push_locked(
        self, owner: int, name: str, when: float, period: float | None
    ) -> KeyedEntry | None:
        """Put a keyed entry in the heap and return it (None, and nothing armed, once closed).

        The caller then makes it current (`entries[name] = entry`) before the lock is released.
        """
        if self._closed:
            return None
        heap = self._heap
        entry = (when, next(self.sequence), owner, name, period)
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self._condition.notify()
        return entry

    def push_many_locked(self, entries: list[Any]) -> bool:
        """Put keyed entries (sequence numbers from `sequence`) in the heap; False, and none
        armed, once closed. (`schedule_many` puts its calls' entries in the same way.)"""
        if self._closed:
            return False
        heap = self._heap
        top = heap[0] if heap else None
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

    def discard_locked(self, count: int = 1) -> None:
        """Count `count` keyed entries in the heap as stale: their owner replaced or dropped
        them while they were in the heap. Compacts the heap once stale entries are most of it."""
        if count and not self._closed:
            self._stale += count
            self._compact_if_mostly_cancelled()

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
            return len(self._heap) - self._cancelled_in_heap - self._stale

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

    def _is_live(self, entry: Any) -> bool:
        if len(entry) == 3:
            return not entry[2].cancelled
        owner = self._owners.get(entry[2])
        return owner is not None and owner[0].get(entry[3]) is entry

    def _compact_if_mostly_cancelled(self) -> None:
        heap = self._heap
        dead = self._cancelled_in_heap + self._stale
        if dead > _COMPACT_MIN and dead * 2 > len(heap):
            live: list[Any] = []
            keep = live.append
            owners = self._owners
            # _is_live, inlined: this walks every entry of a large heap.
            for entry in heap:
                if len(entry) == 3:
                    if entry[2].cancelled:
                        self._unqueue(entry[2])
                    else:
                        keep(entry)
                    continue
                owner = owners.get(entry[2])
                if owner is not None and owner[0].get(entry[3]) is entry:
                    keep(entry)
            heapq.heapify(live)
            self._heap = live
            self._cancelled_in_heap = 0
            self._stale = 0

    def _unqueue(self, call: ScheduledCall) -> None:
        """Book `call` as out of the heap (under the lock)."""
        call._queued = False
        if call._counted:
            call._counted = False
            self._cancelled_in_heap -= 1

    def _drop_cancelled_top(self) -> None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            entry = heapq.heappop(heap)
            if len(entry) == 3:
                self._unqueue(entry[2])
            else:
                self._stale -= 1

    def _next_deadline(self) -> float | None:
        with self._lock:
            if self._closed:
                return None
            self._drop_cancelled_top()
            return self._heap[0][0] if self._heap else None

    def _pop_due_locked(
        self, now: float, limit: int
    ) -> list[ScheduledCall | tuple[Callable[[KeyedEntry], None], KeyedEntry]]:
        heap = self._heap
        owners = self._owners
        pop = heapq.heappop
        due: list[ScheduledCall | tuple[Callable[[KeyedEntry], None], KeyedEntry]] = []
        while heap and heap[0][0] <= now and len(due) < limit:
            entry: Any = pop(heap)
            if len(entry) == 3:
                call = entry[2]
                self._unqueue(call)
                if not call.cancelled:
                    due.append(call)
                continue
            keyed: KeyedEntry = entry
            owner = owners.get(keyed[2])
            if owner is None or owner[0].get(keyed[3]) is not entry:
                self._stale -= 1
                continue
            owner[1](keyed)
            due.append((owner[2], keyed))
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

    def _run_batch(
        self, batch: list[ScheduledCall | tuple[Callable[[KeyedEntry], None], KeyedEntry]]
    ) -> None:
        for call in batch:
            if self._closed:
                return
            try:
                if type(call) is tuple:
                    call[0](call[1])
                elif not call.cancelled:  # type: ignore[union-attr]
                    call.run()  # type: ignore[union-attr]
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
