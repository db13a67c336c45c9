"""The clock seam: the only place the runtime reads the time.

A `Clock` tells the time and decides how a `Scheduler` is driven. `SystemClock` gives each scheduler
one thread that sleeps until the next deadline. `ManualClock` runs no thread at all: time stands
still until a test calls `advance()`, which fires what fell due, in due order, on the caller's
thread.
"""

from __future__ import annotations

import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from ._duration import Duration, parse_duration

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["Clock", "ManualClock", "SystemClock"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_log = structlog.get_logger("plexspaces.clock")

# How long `ManualClock.advance` waits, by default, for an actor to take a fire out of its mailbox
# before it moves time on regardless (an actor blocked in a long handler must not hang a test).
DEFAULT_HANDOFF_TIMEOUT = timedelta(seconds=10)


class Clock(ABC):
    """Source of time for an actor system, and the driver of its scheduler."""

    @abstractmethod
    def time(self) -> float:
        """The current time as POSIX seconds (what the scheduler's deadlines are in)."""

    def now(self) -> datetime:
        """The current time as an aware UTC `datetime`."""
        return datetime.fromtimestamp(self.time(), UTC)

    @abstractmethod
    def _drive(self, scheduler: Scheduler) -> None:
        """Start running `scheduler`'s due calls (called once, when the scheduler starts)."""

    @abstractmethod
    def _release(self, scheduler: Scheduler) -> None:
        """Stop running `scheduler`'s calls and wait until none is running."""


class SystemClock(Clock):
    """Wall-clock time; each scheduler gets one thread that waits for its next deadline."""

    def time(self) -> float:
        return time.time()

    def _drive(self, scheduler: Scheduler) -> None:
        scheduler._start_thread()

    def _release(self, scheduler: Scheduler) -> None:
        scheduler._stop_thread()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock(Clock):
    """Virtual time for tests and simulations.

    Time moves only when `advance()` is called. Several actor systems may share one `ManualClock`
    (for example a system and its restarted successor); `advance()` fires the due calls of all of
    them, in due order.

    Args:
        start: the initial time, an aware `datetime`. Default: now, truncated to the millisecond.
        handoff_timeout: how long `advance()` waits for an actor to take a fire out of its
            mailbox before moving on (default 10 s). A timer fire delivered while its actor is
            busy in a handler is never waited for; this bounds the wait for an actor that was idle
            when its fire came and then blocked before taking it. `0` never waits, which makes
            coalescing of fires depend on thread timing.
    """

    def __init__(
        self,
        start: datetime | None = None,
        *,
        handoff_timeout: Duration = DEFAULT_HANDOFF_TIMEOUT,
    ) -> None:
        if start is None:
            wall = datetime.now(UTC)
            start = wall.replace(microsecond=wall.microsecond // 1000 * 1000)
        elif not isinstance(start, datetime) or start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(
                f"ManualClock start {start!r} must be an aware datetime "
                "(for example datetime(2026, 1, 1, tzinfo=timezone.utc))"
            )
        # Whole microseconds since the epoch: exact, so now() == start + advanced, always.
        self._micros = _to_micros(start)
        self._handoff_timeout = parse_duration(handoff_timeout).total_seconds()
        self._advance_lock = threading.RLock()
        self._schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()
        self._schedulers_lock = threading.Lock()

    def time(self) -> float:
        return self._micros / 1_000_000

    def now(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self._micros)

    def advance(self, duration: Duration) -> None:
        """Move time forward by `duration`, firing everything that falls due, in due order.

        Each call runs at the time it was due (`now()` inside it reads its deadline). Calls already
        due before this advance (such as overdue reminders loaded at start) run first. Fires are
        delivered to actors' mailboxes asynchronously; before moving on to the next deadline this
        waits until each actor has taken its fire out of the mailbox, so a slow-actor rule ("at
        most one undelivered fire per timer") gives the same result on every run. An `ask` sent
        after `advance()` returns is answered after those fires are handled. A timer fire delivered
        to an actor that is busy in a handler is not waited for: it waits in the mailbox (and a
        timer's later ticks coalesce into it). `advance(0)` runs what is already due.

        Raises:
            ValueError: `duration` is negative, not a duration, or longer than `MAX_DURATION`
                (about 100 years, so that `now()` stays a valid `datetime`). Time does not move.
        """
        step = parse_duration(duration)
        with self._advance_lock:
            target = self._micros + _timedelta_micros(step)
            while True:
                scheduler, when = self._earliest_due(target)
                if scheduler is None:
                    break
                self._micros = max(self._micros, _due_micros(when))
                handoff = _Handoff(self._handoff_timeout)
                _current_handoff.value = handoff
                try:
                    scheduler._run_due(self.time())
                    # Work that the due calls gathered into one batch (a batch of reminder
                    # fires) runs now, still inside the step, so its deliveries are handed off.
                    handoff.run_deferred()
                finally:
                    _current_handoff.value = None
                handoff.wait()
            self._micros = max(self._micros, target)

    def _earliest_due(self, target_micros: int) -> tuple[Scheduler | None, float]:
        best: Scheduler | None = None
        best_when = 0.0
        with self._schedulers_lock:
            schedulers = list(self._schedulers)
        for scheduler in schedulers:
            when = scheduler._next_deadline()
            if when is None or _due_micros(when) > target_micros:
                continue
            if best is None or when < best_when:
                best, best_when = scheduler, when
        return best, best_when

    def _drive(self, scheduler: Scheduler) -> None:
        with self._schedulers_lock:
            self._schedulers.add(scheduler)

    def _release(self, scheduler: Scheduler) -> None:
        # A closed scheduler runs no more calls, even in an advance() already under way.
        with self._schedulers_lock:
            self._schedulers.discard(scheduler)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now().isoformat()})"


def _due_micros(when: float) -> int:
    """The first whole microsecond at which a deadline of `when` seconds is due: `when` rounded
    to the nearest microsecond, or one more if that reads as earlier than `when` (a deadline such
    as 10 s / 3 is never a whole number of microseconds; rounding it down would leave it never
    due and `advance()` stepping to it for ever)."""
    micros = round(when * 1_000_000)
    if micros / 1_000_000 < when:
        micros += 1
    return micros


def _to_micros(moment: datetime) -> int:
    return _timedelta_micros(moment - _EPOCH)


def _timedelta_micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Handoff:
    """Fires delivered during one step of `ManualClock.advance`, and the wait for their pick-up."""

    __slots__ = ("_deferred", "_limit", "_pending")

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._pending: list[tuple[threading.Event, Callable[[], bool]]] = []
        self._deferred: list[Callable[[], None]] = []

    def defer(self, function: Callable[[], None]) -> None:
        """Run `function` once at the end of this step, after every call due in it ran (once
        however often it is deferred): how due calls are gathered into one batch."""
        if function not in self._deferred:
            self._deferred.append(function)

    def run_deferred(self) -> None:
        while self._deferred:
            function = self._deferred.pop(0)
            try:
                function()
            except Exception:
                # As for a due call: one faulty batch must not stop time for everything else.
                _log.exception("clock.deferred_failed", call=repr(function))

    def track(self, picked_up: threading.Event, alive: Callable[[], bool]) -> None:
        """Remember a delivery; `alive` tells whether the recipient still runs."""
        self._pending.append((picked_up, alive))

    def wait(self) -> None:
        if self._limit <= 0:
            return
        # Real time on purpose: this bounds how long a test thread waits for another thread.
        deadline = time.monotonic() + self._limit
        for picked_up, alive in self._pending:
            # Short slices, so a recipient that stops with the fire still queued is noticed.
            while not picked_up.wait(min(0.02, self._limit)):
                if not alive():
                    break
                if time.monotonic() >= deadline:
                    _log.warning("clock.handoff_timeout", waited_s=self._limit)
                    return


class _HandoffSlot(threading.local):
    value: _Handoff | None = None


_current_handoff = _HandoffSlot()


def current_handoff() -> _Handoff | None:
    """The hand-off of the `ManualClock.advance` step running on this thread, if any."""
    return _current_handoff.value
