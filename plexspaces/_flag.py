"""`Flag`: a one-way `threading.Event` without a lock of its own, for the flags every actor has."""

from __future__ import annotations

import threading

__all__ = ["Flag"]

_flags_changed = threading.Condition(threading.Lock())
"""Notified whenever any `Flag` is set; shared by all of them (see `Flag`)."""


class Flag:
    """A one-way flag with `threading.Event`'s `is_set`, `set` and `wait`, for the three every
    actor has (started, terminated, and pykka's `actor_stopped`).

    An Event brings its own lock, condition and waiter deque (about 1.2 KB); with thousands of
    idle actors that was most of what an actor cost beyond pykka's own. These flags share one
    condition instead: setting one wakes every waiter, and each waiter checks its own flag. Waits
    are few (a spawner for `started`, a stop or shutdown for `terminated`, nobody for
    `actor_stopped`), so the shared wake-ups cost little.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with _flags_changed:
            self._set = True
            _flags_changed.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with _flags_changed:
            return _flags_changed.wait_for(self.is_set, timeout)
