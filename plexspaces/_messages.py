"""Messages the runtime puts into an actor's mailbox, and the interceptor sentinel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, final

__all__ = ["DROP", "ReminderFired", "TimerFired"]


@final
class _Drop:
    """Type of `DROP`."""

    _instance: _Drop | None = None

    def __new__(cls) -> _Drop:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "plexspaces.DROP"

    def __reduce__(self) -> str:
        return "DROP"


DROP: Final = _Drop()
"""Returned by `Facet.before_message` to discard a message before the actor sees it."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer of the actor's `TimerFacet` fell due.

    Attributes:
        timer_name: the name the timer was registered under.
        fire_count: which tick this is, counting from 1 since the timer was registered. Ticks
            coalesced while the actor was busy are counted too, so the count may jump.
        scheduled_at: when this tick was due (aware UTC); the difference to the clock's `now()`
            when it is handled is the lateness.
        payload: the payload given at registration.
        missed: ticks of a periodic timer that this fire stands for besides its own: they fell
            due while it waited in the mailbox (it then carries the latest of them), or while
            the scheduler was stalled. They were not queued (a slow actor is not flooded), only
            counted here.
    """

    timer_name: str
    fire_count: int
    scheduled_at: datetime
    payload: Any = None
    missed: int = 0


@dataclass(frozen=True, slots=True)
class ReminderFired:
    """A durable reminder of the actor's `ReminderFacet` fell due.

    Attributes:
        reminder_name: the name the reminder was registered under.
        fire_count: which fire this is, counting from 1, kept across restarts. A fire recorded but
            not acknowledged before a crash is delivered again with the same count, so handlers can
            be idempotent on `(reminder_name, fire_count)`.
        max_count: the most fires the reminder makes, or None for no limit.
        scheduled_at: when this fire was due (aware UTC).
        payload: the JSON-compatible payload given at registration.
    """

    reminder_name: str
    fire_count: int
    max_count: int | None
    scheduled_at: datetime
    payload: Any = None
