"""`ActorRef`: the safe handle through which everything talks to an actor."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pykka

from ._duration import Duration, parse_duration
from ._errors import ActorStoppedError, AskTimeoutError, PlexSpacesError

if TYPE_CHECKING:
    from ._actor import FacetSpec, _Cell, _Control
    from ._facet import Facet

__all__ = ["DEFAULT_ASK_TIMEOUT", "ActorRef"]

DEFAULT_ASK_TIMEOUT = 30.0
"""Seconds `ask` waits for an answer when no timeout is given."""


class ActorRef:
    """Handle to an actor: send it messages, ask it questions, attach facets, stop it.

    Safe to share between threads. Comparing two refs compares the actor incarnations they point
    to.
    """

    __slots__ = ("_cell", "_pykka", "actor_id")

    def __init__(self, actor_id: str, cell: _Cell) -> None:
        self.actor_id = actor_id
        self._cell = cell
        self._pykka = cell.actor_ref

    def tell(self, message: Any) -> None:
        """Put `message` into the actor's mailbox and return at once.

        Raises:
            ActorStoppedError: the actor is not running.
        """
        try:
            self._pykka.tell(message)
        except pykka.ActorDeadError:
            raise self._stopped() from None

    def ask(self, message: Any, timeout: Duration | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send `message` and wait for the actor's answer (the return value of `on_receive`).

        `timeout` is a duration (seconds, `timedelta` or a string like "2s"), or None to wait
        without limit. An exception raised by the handler is raised here, and the actor goes on.

        Raises:
            AskTimeoutError: no answer within `timeout`.
            ActorStoppedError: the actor is not running, or stopped before answering.
            PlexSpacesError: an actor asked itself (it would wait for its own answer for ever).
        """
        seconds = _seconds(timeout)
        if self._cell.thread is threading.current_thread():
            raise PlexSpacesError(
                f"actor {self.actor_id!r} asked itself; it would wait for its own answer for ever "
                "(call the method directly or use tell)"
            )
        try:
            return self._pykka.ask(message, timeout=seconds)
        except pykka.Timeout:
            raise AskTimeoutError(
                f"actor {self.actor_id!r} did not answer {message!r} within {timeout!r}"
            ) from None
        except ActorStoppedError:
            raise
        except pykka.ActorDeadError:
            raise self._stopped() from None

    def stop(self, timeout: Duration | None = None) -> bool:
        """Stop the actor and return once it has stopped.

        Messages already in the mailbox are handled first. When `stop` returns, `on_stop` has run,
        every facet was deactivated and detached (so its timers are cancelled), and the id is free
        for a new actor. Called from the actor's own thread, it only asks the actor to stop after
        the current message. Returns False if the actor was not running.
        """
        if self._cell.thread is threading.current_thread():
            if not self._pykka.is_alive():
                return False
            self._pykka.stop(block=False)
            return True
        try:
            return self._pykka.stop(block=True, timeout=_seconds(timeout))
        except pykka.Timeout:
            raise AskTimeoutError(
                f"actor {self.actor_id!r} did not stop within {timeout!r}"
            ) from None

    def wait_stopped(self, timeout: Duration | None = None) -> bool:
        """Wait until the actor has stopped for any reason (stop, failure, shutdown).

        Once it returns True, `on_stop` has run, every facet was released and the id is free.
        Returns False if `timeout` passed first.
        """
        return self._cell.terminated.wait(_seconds(timeout))

    def attach_facet(
        self,
        facet: FacetSpec,
        *,
        priority: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> Facet:
        """Attach a facet from outside the actor; runs on the actor's thread, errors raised here."""
        cell = self._cell
        result: Facet = cell.on_actor_thread(lambda: cell.attach(facet, priority, config))
        return result

    def detach_facet(self, facet: str | type[Facet]) -> bool:
        """Detach a facet from outside the actor; False if none of that type was attached."""
        cell = self._cell
        result: bool = cell.on_actor_thread(lambda: cell.detach(facet))
        return result

    def is_alive(self) -> bool:
        """Whether the actor still runs (it may stop right after this returns)."""
        return self._pykka.is_alive()

    def _ask_control(self, control: _Control) -> Any:
        try:
            return self._pykka.ask(control)
        except ActorStoppedError:
            raise
        except pykka.ActorDeadError:
            raise self._stopped() from None

    def _stopped(self) -> ActorStoppedError:
        return ActorStoppedError(f"actor {self.actor_id!r} is not running")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return id(self._cell)

    def __repr__(self) -> str:
        state = "alive" if self.is_alive() else "stopped"
        return f"<ActorRef {self.actor_id!r} {state}>"


def _seconds(timeout: Duration | None) -> float | None:
    if timeout is None:
        return None
    # Fast path for the common plain number; everything else goes through the one parser.
    if (type(timeout) is float or type(timeout) is int) and timeout >= 0:
        return float(timeout)
    return parse_duration(timeout).total_seconds()
