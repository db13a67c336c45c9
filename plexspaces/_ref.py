"""`ActorRef`: the safe handle through which everything talks to an actor."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pykka

from . import _pykka
from ._duration import Duration, duration_seconds
from ._errors import ActorStoppedError, AskTimeoutError, PlexSpacesError

if TYPE_CHECKING:
    from ._actor import FacetSpec, _Cell, _Queued
    from ._facet import Facet
    from ._system import ActorSystem

__all__ = ["DEFAULT_ASK_TIMEOUT", "ActorRef", "VirtualActorRef"]

F = TypeVar("F", bound="Facet")

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
            ValueError: `timeout` is not a duration, or is longer than `MAX_DURATION` (checked
                before the message is sent).
            AskTimeoutError: no answer within `timeout`.
            ActorStoppedError: the actor is not running, or stopped before answering.
            PlexSpacesError: an actor asked itself (it would wait for its own answer for ever).
        """
        seconds = _seconds(timeout)
        self._refuse_self_ask(self._cell)
        return self._answer(self._pykka.ask(message, block=False), message, seconds, timeout)

    def _refuse_self_ask(self, cell: _Cell | None) -> None:
        if cell is not None and cell.thread is threading.current_thread():
            raise PlexSpacesError(
                f"actor {self.actor_id!r} asked itself; it would wait for its own answer for ever "
                "(call the method directly or use tell)"
            )

    def _answer(
        self, future: pykka.Future[Any], message: Any, seconds: float | None, timeout: object
    ) -> Any:
        try:
            return future.get(timeout=seconds)
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

        Raises:
            ValueError: `timeout` is not a duration, or is longer than `MAX_DURATION` (checked
                before anything is stopped).
            AskTimeoutError: the actor did not stop within `timeout`.
        """
        seconds = _seconds(timeout)
        if self._cell.thread is threading.current_thread():
            if not self._pykka.is_alive():
                return False
            self._pykka.stop(block=False)
            return True
        try:
            return self._pykka.stop(block=True, timeout=seconds)
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

    @overload
    def attach_facet(
        self, facet: F, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def attach_facet(
        self, facet: type[F], *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def attach_facet(
        self, facet: str, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> Facet: ...

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

    def _stopped(self) -> ActorStoppedError:
        return ActorStoppedError(f"actor {self.actor_id!r} is not running")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return id(self._cell)

    def __repr__(self) -> str:
        state = "alive" if self.is_alive() else "stopped"
        return f"<ActorRef {self.actor_id!r} {state}>"


class VirtualActorRef(ActorRef):
    """Ref of a virtual actor: valid for ever, it activates the actor on demand.

    `tell`, `ask` and `attach_facet` activate the actor when it is not active (one activation per
    key, even under concurrent first messages). Messages sent while an activation closes reach
    the next one. `stop()` deactivates the current activation; the next message starts another.
    """

    __slots__ = ("_system", "actor_key", "actor_type")

    def __init__(self, system: ActorSystem, actor_type: str, actor_key: str) -> None:
        self.actor_id = f"{actor_type}/{actor_key}"
        self.actor_type = actor_type
        self.actor_key = actor_key
        self._system = system
        self._cell = None  # type: ignore[assignment]
        self._pykka = None  # type: ignore[assignment]

    def tell(self, message: Any) -> None:
        """Send `message`, activating the actor if it is not active, and return.

        While an activation starts or closes, the message waits for the next one and `tell`
        returns at once. A `tell` that starts an activation returns once its `on_start` has run,
        and raises the exception that `on_start` raised.
        """
        system = self._system
        router = system._routing()
        if router is not None:
            router.tell(self, message)
            return
        _, queued, started = system._route(
            self, lambda cell: cell.actor_ref.tell(message), lambda: _pykka.Envelope(message)
        )
        if queued is not None and started and system._may_wait(self):
            _wait_placed(queued)

    def ask(self, message: Any, timeout: Duration | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """As `ActorRef.ask`, activating the actor if it is not active; `timeout` bounds the
        whole call, a slow `on_start` or a closing activation included (the message still
        reaches the activation afterwards)."""
        seconds = _seconds(timeout)
        self._refuse_self_ask(self._system._activation(self))
        router = self._system._routing()
        if router is not None:
            return router.ask(self, message, seconds, timeout)
        reply: pykka.Future[Any] = pykka.ThreadingFuture()
        future, _, _ = self._system._route(
            self,
            lambda cell: cell.actor_ref.ask(message, block=False),
            lambda: _pykka.Envelope(message, reply_to=reply),
        )
        return self._answer(reply if future is None else future, message, seconds, timeout)

    def stop(self, timeout: Duration | None = None) -> bool:
        """Deactivate the current activation and wait until it has released everything (unless
        called from the actor itself). Also waits for a deactivation already under way, and
        for an activation still in on_start to start before it is stopped. False if nothing was
        active."""
        seconds = _seconds(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        cell = self._system._activation(self)
        if cell is None:
            return False
        waits = cell.thread is not threading.current_thread()
        if waits and not cell.started.wait(_left(deadline)):
            raise AskTimeoutError(f"actor {self.actor_id!r} did not stop within {timeout!r}")
        self._system._deactivate(cell, only_if_idle=False)
        if waits and not cell.terminated.wait(_left(deadline)):
            raise AskTimeoutError(f"actor {self.actor_id!r} did not stop within {timeout!r}")
        return True

    def wait_stopped(self, timeout: Duration | None = None) -> bool:
        """Wait until the current activation (if any) has stopped and released everything."""
        seconds = _seconds(timeout)
        cell = self._system._activation(self)
        return cell is None or cell.terminated.wait(seconds)

    @overload
    def attach_facet(
        self, facet: F, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def attach_facet(
        self, facet: type[F], *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def attach_facet(
        self, facet: str, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> Facet: ...

    def attach_facet(
        self,
        facet: FacetSpec,
        *,
        priority: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> Facet:
        system = self._system
        live, queued, _ = system._route(
            self, lambda cell: cell, lambda: _pykka.Envelope(_control_noop())
        )
        cell = live
        if queued is not None:
            if not system._may_wait(self):
                raise PlexSpacesError(
                    f"actor {self.actor_id!r} is starting or closing; attach facets from its "
                    "own hooks with self.attach_facet"
                )
            cell = _wait_placed(queued)
        assert cell is not None
        result: Facet = cell.on_actor_thread(lambda: cell.attach(facet, priority, config))
        return result

    def detach_facet(self, facet: str | type[Facet]) -> bool:
        cell = self._system._activation(self)
        if cell is None:
            return False
        result: bool = cell.on_actor_thread(lambda: cell.detach(facet))
        return result

    def is_alive(self) -> bool:
        """Whether the actor is active now (a virtual actor exists logically for ever)."""
        return self._system._activation(self) is not None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VirtualActorRef)
            and other._system is self._system
            and other.actor_id == self.actor_id
        )

    def __hash__(self) -> int:
        return hash((id(self._system), self.actor_id))

    def __repr__(self) -> str:
        state = "active" if self.is_alive() else "inactive"
        return f"<VirtualActorRef {self.actor_id!r} {state}>"


def _left(deadline: float | None) -> float | None:
    """Seconds left until a monotonic `deadline`, as a wait timeout (None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _wait_placed(queued: _Queued) -> _Cell:
    """Wait until a queued message is in its activation's mailbox; raise why it never got there."""
    assert queued.placed is not None
    queued.placed.wait()
    if queued.error is not None:
        raise queued.error
    assert queued.cell is not None
    return queued.cell


def _control_noop() -> Any:
    from ._actor import _Control

    return _Control(lambda: None)


def _seconds(timeout: Duration | None) -> float | None:
    """A timeout in seconds, or None for no limit. Refused as `parse_duration` refuses it, so
    also when infinite or longer than `MAX_DURATION` (no thread wait could take it)."""
    return None if timeout is None else duration_seconds(timeout)
