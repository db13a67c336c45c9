"""What an actor (and each of its facets) sees of the runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _pykka
from ._errors import ActorNotFoundError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from ._actor import _Cell
    from ._clock import Clock
    from ._facet import Facet
    from ._metrics import Metrics
    from ._ref import ActorRef
    from ._scheduler import Scheduler
    from ._system import ActorSystem

__all__ = ["ActorContext", "FacetService"]

F = TypeVar("F", bound="Facet")


class ActorContext:
    """An actor's view of the runtime, available as `self.ctx` from `on_start` on.

    Attributes:
        actor_id: the actor's id (`"<type>/<key>"` for a virtual actor).
        system: the `ActorSystem` the actor runs in.
        ref: the actor's own `ActorRef`.
        log: a structlog logger bound with `actor_id`.
    """

    __slots__ = ("_cell", "actor_id", "log", "ref", "system")

    def __init__(
        self,
        cell: _Cell,
        actor_id: str,
        system: ActorSystem,
        ref: ActorRef,
        log: FilteringBoundLogger,
    ) -> None:
        self._cell = cell
        self.actor_id = actor_id
        self.system = system
        self.ref = ref
        self.log = log

    @property
    def facet_service(self) -> FacetService:
        """Look up the facets of any live actor of the system by actor id."""
        return self.system.facet_service

    @property
    def clock(self) -> Clock:
        """The system's clock: the only source of time for actors and facets."""
        return self.system.clock

    @property
    def metrics(self) -> Metrics:
        """The system's metrics recorders: `metrics.counter(name).add()`,
        `metrics.histogram(name).observe(seconds)`; read back through `ActorSystem.metrics()`."""
        return self.system._metrics

    @property
    def scheduler(self) -> Scheduler:
        """The system's one scheduler, for facets that need deadlines."""
        return self.system.scheduler

    @property
    def actor_type(self) -> str | None:
        """A virtual actor's type name (`"order"`), or None for a spawned actor."""
        slot = self._cell.slot
        return slot.ref.actor_type if slot is not None else None

    @property
    def actor_key(self) -> str | None:
        """A virtual actor's key (`"ord-100"`), or None for a spawned actor."""
        slot = self._cell.slot
        return slot.ref.actor_key if slot is not None else None

    def deactivate(self, *, if_idle: bool = False) -> bool:
        """End this activation after the current message; True if it will end.

        For a virtual actor the next message (or reminder) activates it again, and messages
        already in the mailbox are handled first. With `if_idle`, nothing happens (False) unless
        the mailbox is empty, so no message waits on an activation that is going away. For a
        spawned actor this stops it, like `ref.stop()`.
        """
        cell = self._cell
        if cell.slot is not None:
            return self.system._deactivate(cell, only_if_idle=if_idle)
        if (if_idle and not _pykka.inbox_empty(cell)) or not cell.actor_ref.is_alive():
            return False
        cell.actor_ref.stop(block=False)
        return True

    def stop(self) -> bool:
        """Stop this actor after its current message (messages already queued are handled
        first); the actor's own way to do what `ref.stop()` does from outside, without waiting.
        False if it is already stopping. For a virtual actor this ends the activation, like
        `deactivate()`: the next message activates it again."""
        return self.deactivate()

    def call_soon(self, function: Callable[[], object]) -> bool:
        """Queue `function` to run on the actor's thread, unseen by interceptors (facets use it
        to act from the scheduler thread). False if the actor is no longer running."""
        return self._cell.call_soon(function)

    def deliver(
        self,
        message: Any,
        *,
        guard: Callable[[], object] | None = None,
        handled: Callable[[], object] | None = None,
    ) -> bool:
        """Put `message` into this actor's mailbox from any thread (facets use this for fires).

        `guard`, if given, runs on the actor's thread when the message is taken out of the mailbox;
        when it returns False the message is discarded before any interceptor or the actor sees it
        (this is how a fire of a replaced or cancelled timer is dropped). When it returns another
        object than True or False, that object is delivered in the message's place (how a timer
        fire that waited reports the ticks coalesced into it meanwhile). `handled`, if given, runs
        on the actor's thread once the handler has returned (not when the guard discarded the
        message or the handler raised), and a `ManualClock.advance` that waits for the message
        waits for that too: how a fixed-delay timer arms its next tick at the time its fire was
        handled. Returns False, and delivers nothing, if the actor is no longer running.
        """
        return self._cell.deliver(message, guard, handled=handled)

    def __repr__(self) -> str:
        return f"<ActorContext actor_id={self.actor_id!r}>"


class FacetService:
    """Facets of the system's live actors, by actor id and facet type (or class)."""

    __slots__ = ("_system",)

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    @overload
    def get_facet(self, actor_id: str, facet: type[F]) -> F: ...

    @overload
    def get_facet(self, actor_id: str, facet: str) -> Facet: ...

    def get_facet(self, actor_id: str, facet: str | type[Facet]) -> Facet:
        """The facet of type `facet` (a `facet_type` name or a class) attached to `actor_id`.

        Raises:
            ActorNotFoundError: no live actor has that id.
            FacetNotAttachedError: the actor has no such facet.
        """
        return self._cell(actor_id).facet(facet)

    def list_facets(self, actor_id: str) -> list[Facet]:
        """The facets attached to `actor_id`, highest priority first."""
        return list(self._cell(actor_id).facets)

    def _cell(self, actor_id: str) -> _Cell:
        cell = self._system._live_cell(actor_id)
        if cell is None:
            raise ActorNotFoundError(f"no live actor with id {actor_id!r}")
        return cell
