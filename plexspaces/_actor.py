"""The user's `Actor` and the pykka actor (`_Cell`) that hosts it on its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pykka
import structlog

from . import _pykka
from ._clock import current_handoff
from ._context import ActorContext
from ._errors import (
    ActorStoppedError,
    DuplicateFacetError,
    FacetConfigError,
    FacetError,
    FacetNotAttachedError,
    PlexSpacesError,
)
from ._facet import Facet, resolve_facet, validate_config
from ._flag import Flag
from ._messages import DROP
from ._ref import ActorRef, VirtualActorRef

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = ["Actor", "FacetSpec"]

F = TypeVar("F", bound=Facet)
FacetSpec = Facet | type[Facet] | str
"""A facet to attach: an instance, a class (made with no arguments) or an entry-point name."""

_log = structlog.get_logger("plexspaces")


class Actor:
    """Base class of actors. Subclass it and override the hooks you need.

    `on_start` runs on the actor's thread before any message; `on_receive(message)` handles each
    message in turn and its return value answers an `ask`; `on_stop` runs when the actor stops for
    any reason after a successful `on_start` (a stop, a failure in a `tell` handler, deactivation
    or system shutdown). `self.ctx` is available from `on_start` on.

    An exception raised while handling an `ask` is raised to the caller and the actor goes on; an
    exception while handling a `tell` is logged and ends the actor.
    """

    _plex_cell: _Cell | None = None

    def __init__(self) -> None:
        self._plex_cell = None

    # -- hooks -------------------------------------------------------------------------------------

    def on_start(self) -> None:
        """Runs on the actor's thread before the first message; attach facets here."""

    def on_stop(self) -> None:
        """Runs on the actor's thread when it stops; its facets are still attached."""

    def on_receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an `ask`."""
        self.ctx.log.warning("actor.unhandled_message", message=repr(message))
        return None

    # -- runtime ---------------------------------------------------------------------------------

    @property
    def ctx(self) -> ActorContext:
        """The actor's context (id, system, facet service, logger), from `on_start` on."""
        cell = self._plex_cell
        if cell is None:
            raise PlexSpacesError(
                f"{type(self).__name__}.ctx is available from on_start on, once the actor is "
                "spawned by an ActorSystem"
            )
        return cell.ctx

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
        """Attach `facet` (an instance, a class or an entry-point name) and return it, typed as
        what was passed (`self.attach_facet(TimerFacet()).register_periodic(...)` type-checks).

        Raises:
            DuplicateFacetError: a facet of the same `facet_type` is already attached.
            FacetConfigError: the config has an unknown key or an ill-typed value, or `priority`
                is not an int.
            UnknownFacetError: `facet` is a name no installed package publishes.
        """
        cell = self._require_cell()
        attached: Facet = cell.on_actor_thread(lambda: cell.attach(facet, priority, config))
        return attached

    @overload
    def facet_or_attach(
        self, facet: F, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def facet_or_attach(
        self, facet: type[F], *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> F: ...

    @overload
    def facet_or_attach(
        self, facet: str, *, priority: int = 0, config: Mapping[str, Any] | None = None
    ) -> Facet: ...

    def facet_or_attach(
        self,
        facet: FacetSpec,
        *,
        priority: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> Facet:
        """The attached facet of the same `facet_type` as `facet`, else `facet` attached as by
        `attach_facet` and returned: safe to call from a handler that runs more than once.

        An already attached facet is returned as it is: `priority` and `config` apply only when
        this call attaches. Raises what `attach_facet` raises when it attaches.
        """
        cell = self._require_cell()
        found: Facet = cell.on_actor_thread(lambda: cell.facet_or_attach(facet, priority, config))
        return found

    def detach_facet(self, facet: str | type[Facet]) -> bool:
        """Detach the facet of that type or class; False if none was attached."""
        cell = self._require_cell()
        detached: bool = cell.on_actor_thread(lambda: cell.detach(facet))
        return detached

    @overload
    def facet(self, facet: type[F]) -> F: ...

    @overload
    def facet(self, facet: str) -> Facet: ...

    def facet(self, facet: str | type[Facet]) -> Facet:
        """The attached facet of that type name or class, else `FacetNotAttachedError`."""
        return self._require_cell().facet(facet)

    def _require_cell(self) -> _Cell:
        cell = self._plex_cell
        if cell is None:
            raise PlexSpacesError(
                f"{type(self).__name__} is not running: spawn it with ActorSystem.spawn and "
                "attach facets from on_start on"
            )
        return cell


Done = Callable[[BaseException | None], Callable[[], None] | None]
"""Called on the actor's thread once a delivered message was handled: None, or the exception
its handler raised (which then does not end the actor). It may return a function that waits
until what the sender does with the outcome is done (a reminder fire's acknowledgement is
written): the actor calls it before it handles anything but another such delivery, so its own
next message sees the outcome, while a run of fires is not held up by one write each."""


class _Delivery:
    """Envelope for a message put into the mailbox by the runtime (a timer or reminder fire)."""

    __slots__ = ("done", "guard", "handled", "message", "picked_up")

    def __init__(
        self,
        message: Any,
        guard: Callable[[], object] | None,
        picked_up: threading.Event | None,
        done: Done | None = None,
        handled: Callable[[], object] | None = None,
    ) -> None:
        self.message = message
        self.guard = guard
        self.picked_up = picked_up
        self.done = done
        self.handled = handled


class _Control:
    """A function to run on the actor's thread, invisible to interceptors."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function


class _Queued:
    """A message sent to a virtual actor key with no live activation, waiting in its slot."""

    __slots__ = ("cell", "envelope", "error", "placed")

    def __init__(self, envelope: _pykka.Envelope[Any], placed: threading.Event | None) -> None:
        self.envelope = envelope
        # Set once the envelope is in an activation's mailbox (`cell`), or was given up (`error`).
        self.placed = placed
        self.cell: _Cell | None = None
        self.error: BaseException | None = None

    def resolve(self, cell: _Cell | None, error: BaseException | None) -> None:
        self.cell = cell
        self.error = error
        if self.placed is not None:
            self.placed.set()


class _Slot:
    """One virtual actor key: its live activation, the one starting, the one going away, the
    messages waiting for the next, and the lock that orders sends against all of that.

    The lock is only ever held for a few steps (never while waiting for an `on_start` or an
    `on_stop`), so the actor's own thread may take it from any hook.
    """

    __slots__ = (
        "activating",
        "activation_id",
        "cell",
        "lock",
        "pending",
        "ref",
        "removed",
        "retiring",
    )

    def __init__(self, ref: VirtualActorRef) -> None:
        self.ref = ref
        self.lock = threading.Lock()
        # The activation lease this node holds for the key in a cluster, if any.
        self.activation_id: str | None = None
        # The live activation: its on_start has run; messages go straight to its mailbox.
        self.cell: _Cell | None = None
        # An activation is being made (lease, construction, on_start); messages wait in `pending`.
        self.activating = False
        # The activation going away (closing, or failed); the next starts once it has ended.
        self.retiring: _Cell | None = None
        self.removed = False
        # Messages for the next activation, in order: sent while it starts or while the last one
        # closes, queued behind a failure, or sent from on_stop.
        self.pending: list[_Queued] = []

    def idle(self) -> bool:
        return (
            self.cell is None and self.retiring is None and not self.activating and not self.pending
        )


class _Cell(_pykka.FailureHookActor):
    """The pykka actor hosting one user `Actor`: mailbox, thread, facet registry, lifecycle."""

    def __init__(
        self,
        system: ActorSystem,
        actor: Actor,
        actor_id: str,
        slot: _Slot | None,
        created: list[_Cell],
    ) -> None:
        super().__init__()
        self.system = system
        self.actor = actor
        self.actor_id = actor_id
        self.slot = slot
        self.log = _log.bind(actor_id=actor_id)
        # A virtual actor's own ref is its stable address, valid across activations.
        self.ref: ActorRef = slot.ref if slot is not None else ActorRef(actor_id, self)
        self.ctx = ActorContext(self, actor_id, system, self.ref, self.log)
        self.facets: list[Facet] = []
        self._by_type: dict[str, Facet] = {}
        self._before: list[Callable[[Any], Any]] = []
        self._after: list[Callable[[Any, Any], None]] = []
        self._on_receive = actor.on_receive
        # Waits until the outcome of the last acknowledged delivery is written (see `Done`).
        self._unsettled: Callable[[], None] | None = None
        self.thread: threading.Thread | None = None
        self.started = Flag()
        self.terminated = Flag()  # set once the actor released everything it held
        self.start_error: BaseException | None = None
        self.active = False
        # True while a message is being handled: a ManualClock hand-off never waits on a
        # delivery to an actor that is busy (it may be blocked for as long as it likes).
        self.busy = False
        self._terminating = False
        actor._plex_cell = self
        system._adopt(self)
        created.append(self)

    # -- lifecycle (actor thread) ------------------------------------------------------------------

    def on_start(self) -> None:
        self.thread = threading.current_thread()
        self.system._thread_started(self.thread)
        try:
            self.actor.on_start()
            self.active = True
            for facet in list(self.facets):
                facet.on_activate()
        except Exception as error:
            self.start_error = error
            raise
        except BaseException as error:
            # pykka hands only an Exception from on_start to its failure handling; anything
            # else would end the thread with the spawner waiting for `started` for ever.
            self.start_error = error
            self.on_unhandled_failure(type(error), error, error.__traceback__)
            return
        if self.slot is not None:
            # Live: the messages sent while on_start ran go into the mailbox first, in order.
            self.system._activated(self)
        self.log.debug("actor.started", actor_class=type(self.actor).__name__)
        self.started.set()

    def on_stop(self) -> None:
        self._terminate()
        self.log.debug("actor.stopped")

    def on_unhandled_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Replaces pykka's stdlib logging with one structured event bound to the actor id, and
        # releases everything the actor holds (facets, timers, its id) on every way out.
        _pykka.unregister(self.actor_ref)
        slot = self.slot
        given_up: list[_Queued] = []
        if slot is None:
            _pykka.mark_stopped(self)
        elif not self.started.is_set():
            # A virtual actor failing in on_start: the messages sent to it meanwhile fail with
            # it (once it has released everything), and a later message starts a new attempt.
            with slot.lock:
                _pykka.mark_stopped(self)
                slot.activating = False
                slot.retiring = self
                given_up, slot.pending = slot.pending, []
        else:
            # A virtual actor's ref accepted the messages queued behind the failing one: close
            # the gate and keep them for the next activation instead of letting pykka drop them.
            with slot.lock:
                _pykka.mark_stopped(self)
                if slot.cell is self:
                    slot.cell = None
                    slot.retiring = self
                for envelope in _pykka.drain_inbox(self):
                    if _pykka.is_stop_request(envelope):
                        _pykka.answer_stop(envelope)
                    else:
                        slot.pending.append(_Queued(envelope, None))
        if self.started.is_set():
            self.log.error("actor.failed", exc_info=(exc_type, exc_value, traceback))
        else:
            # Raised to whoever started the actor (spawn, or the sender that activated it),
            # who has the traceback: one line here, not a second traceback.
            self.log.warning("actor.start_failed", error=repr(exc_value))
        self._terminate()
        if given_up:
            assert exc_value is not None
            self.system._give_up(self.actor_id, given_up, exc_value)
        self.started.set()

    def _terminate(self) -> None:
        if self._terminating:
            return
        self._terminating = True
        if self.active:
            try:
                self.actor.on_stop()
            except Exception:
                self.log.exception("actor.on_stop_failed")
        self.active = False
        for facet in list(reversed(self.facets)):
            self._release(facet)
        self.facets.clear()
        self._by_type.clear()
        self._rebuild_interceptors()
        last = self.system._forget(self)
        self.terminated.set()
        if self.slot is not None:
            # The key is free: start its next activation if messages wait for one.
            self.system._retired(self)
        if last:
            # The last actor of a system shut down from inside an actor closes the system.
            self.system._finish_shutdown(0)

    def mailbox_depth(self) -> int:
        """Messages waiting in the mailbox."""
        return _pykka.inbox_size(self)

    # -- messages (actor thread) -------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        self.busy = True
        try:
            kind = type(message)
            if kind is not _Delivery and kind is not _Control and self._unsettled is None:
                return self._dispatch(message)  # a user's message: the hot path, one call less
            return self._receive(message)
        finally:
            self.busy = False

    def _receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is _Delivery and message.done is not None:
            return self._handle_acknowledged(message)
        if self._unsettled is not None:
            settle, self._unsettled = self._unsettled, None
            settle()
        if kind is _Delivery and message.handled is not None:
            return self._handle_then_report(message)
        if kind is _Delivery:
            guard = message.guard
            try:
                verdict = True if guard is None else guard()
            finally:
                # After the guard: what it recorded (a timer's fire left the mailbox) is seen by
                # the next step of a ManualClock.advance.
                if message.picked_up is not None:
                    message.picked_up.set()
            if not verdict:
                return None
            # Another object than True is the guard's up-to-date version of the message.
            message = message.message if verdict is True else verdict
            if type(message) is _Control:
                return message.function()
        elif kind is _Control:
            return message.function()
        return self._dispatch(message)

    def _dispatch(self, message: Any) -> Any:
        for before in self._before:
            replacement = before(message)
            if replacement is not None:
                if replacement is DROP:
                    return None
                message = replacement
        result = self._on_receive(message)
        for after in self._after:
            after(message, result)
        return result

    def _handle_then_report(self, delivery: _Delivery) -> Any:
        # A delivery whose sender acts once it was handled (a fixed-delay timer arms its next
        # tick): `handled` runs after the handler returns, and a ManualClock hand-off is released
        # only then, so that tick is armed at the time of the step, before time moves on. A
        # failing handler ends the actor as for any tell; `handled` is not called.
        try:
            guard = delivery.guard
            verdict = True if guard is None else guard()
            if not verdict:
                return None
            message = delivery.message if verdict is True else verdict
            result = self._dispatch(message)
            handled = delivery.handled
            assert handled is not None
            handled()
            return result
        finally:
            if delivery.picked_up is not None:
                delivery.picked_up.set()

    def _handle_acknowledged(self, delivery: _Delivery) -> None:
        # A delivery whose sender needs to know it was handled (a reminder fire, acknowledged
        # in the store): a failing handler is reported to the sender instead of ending the
        # actor, and a ManualClock hand-off is released only after the acknowledgement, so the
        # next tick is armed before time moves on.
        done = delivery.done
        assert done is not None
        error: BaseException | None = None
        try:
            if delivery.guard is None or delivery.guard():
                self._dispatch(delivery.message)
        except Exception as failure:
            error = failure
        try:
            self._unsettled = done(error)
        finally:
            if delivery.picked_up is not None:
                delivery.picked_up.set()

    # -- delivery (any thread) ---------------------------------------------------------------------

    def deliver(
        self,
        message: Any,
        guard: Callable[[], object] | None,
        done: Done | None = None,
        handled: Callable[[], object] | None = None,
    ) -> bool:
        handoff = current_handoff()
        picked_up = None
        if (
            handoff is not None
            and self.thread is not threading.current_thread()
            and (done is not None or not self.busy)
        ):
            # A timer fire (or a control) is followed by the hand-off only when the actor is
            # idle: a busy actor keeps it in its mailbox, and the clock does not wait for it. An
            # acknowledged delivery (a reminder fire) is always followed, so its next tick is
            # armed before time moves on.
            picked_up = threading.Event()
        try:
            self.actor_ref.tell(_Delivery(message, guard, picked_up, done, handled))
        except pykka.ActorDeadError:
            return False
        if handoff is not None and picked_up is not None:
            handoff.track(picked_up, self.actor_ref.is_alive)
        return True

    def on_actor_thread(self, function: Callable[[], Any]) -> Any:
        """Run `function` on this actor's thread and return its result (or raise its error)."""
        if self.thread is threading.current_thread():
            return function()
        try:
            return self.actor_ref.ask(_Control(function))
        except ActorStoppedError:
            raise
        except pykka.ActorDeadError:
            raise ActorStoppedError(f"actor {self.actor_id!r} is not running") from None

    def call_soon(self, function: Callable[[], Any]) -> bool:
        """Queue `function` to run on this actor's thread; False if the actor is not running."""
        return self.deliver(_Control(function), None)

    # -- facet registry (actor thread) -------------------------------------------------------------

    def attach(self, spec: FacetSpec, priority: int, config: Mapping[str, Any] | None) -> Facet:
        if self._terminating:
            raise ActorStoppedError(f"actor {self.actor_id!r} is not running")
        facet = _instantiate(spec)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise FacetConfigError(
                f"priority {priority!r} for facet {facet.facet_type!r} must be an int "
                "(higher runs first before a message)"
            )
        kind = facet.facet_type
        if not isinstance(kind, str) or not kind:
            raise FacetError(f"{type(facet).__name__}.facet_type {kind!r} must be a non-empty str")
        if kind in self._by_type:
            raise DuplicateFacetError(
                f"actor {self.actor_id!r} already has a facet of type {kind!r}; "
                "detach it before attaching another"
            )
        if getattr(facet, "facet_ctx", None) is not None:
            raise FacetError(f"{facet!r} is already attached; use a new instance for each actor")
        checked = validate_config(facet, config)
        facet.facet_ctx = self.ctx
        facet.facet_log = self.log.bind(facet=kind)
        facet.facet_priority = priority
        facet.facet_config = checked
        try:
            facet.on_attach(self.ctx, checked)
        except BaseException:
            _reset(facet)
            raise
        position = len(self.facets)
        for index, other in enumerate(self.facets):
            if other.facet_priority < priority:
                position = index
                break
        self.facets.insert(position, facet)
        self._by_type[kind] = facet
        self._rebuild_interceptors()
        self.log.debug("facet.attached", facet=kind, priority=priority)
        if self.active:
            try:
                facet.on_activate()
            except BaseException:
                self.detach(kind)
                raise
        return facet

    def facet_or_attach(
        self, spec: FacetSpec, priority: int, config: Mapping[str, Any] | None
    ) -> Facet:
        kind: object = None
        if isinstance(spec, Facet):
            kind = spec.facet_type
        elif isinstance(spec, str):
            kind = spec if spec in self._by_type else resolve_facet(spec).facet_type
        elif isinstance(spec, type) and issubclass(spec, Facet):
            kind = spec.facet_type
        existing = self._by_type.get(kind) if isinstance(kind, str) else None
        return existing if existing is not None else self.attach(spec, priority, config)

    def detach(self, spec: str | type[Facet]) -> bool:
        try:
            facet = self.facet(spec)
        except FacetNotAttachedError:
            return False
        self.facets.remove(facet)
        del self._by_type[facet.facet_type]
        self._rebuild_interceptors()
        self._release(facet)
        self.log.debug("facet.detached", facet=facet.facet_type)
        return True

    def facet(self, spec: str | type[Facet]) -> Facet:
        if isinstance(spec, str):
            found = self._by_type.get(spec)
            if found is not None:
                return found
        elif isinstance(spec, type):
            for facet in self.facets:
                if isinstance(facet, spec):
                    return facet
        else:
            raise TypeError(f"facet {spec!r} must be a facet type name (str) or a Facet subclass")
        attached = ", ".join(self._by_type) or "none"
        name = spec if isinstance(spec, str) else spec.__name__
        raise FacetNotAttachedError(
            f"actor {self.actor_id!r} has no facet {name!r} attached (attached: {attached})"
        )

    def _release(self, facet: Facet) -> None:
        for hook in (facet.on_deactivate, facet.on_detach):
            try:
                hook()
            except Exception:
                self.log.exception("facet.hook_failed", facet=facet.facet_type, hook=hook.__name__)
        _reset(facet)

    def _rebuild_interceptors(self) -> None:
        # Only facets that override an interceptor cost anything per message.
        self._before = [
            f.before_message
            for f in self.facets
            if type(f).before_message is not Facet.before_message
        ]
        self._after = [
            f.after_message
            for f in reversed(self.facets)
            if type(f).after_message is not Facet.after_message
        ]

    def __str__(self) -> str:
        return f"actor {self.actor_id!r}"


def _reset(facet: Facet) -> None:
    """Return a facet's runtime attributes to their unattached values."""
    facet.facet_ctx = None
    facet.facet_log = None
    facet.facet_priority = 0
    facet.facet_config = {}


def _instantiate(spec: FacetSpec) -> Facet:
    if isinstance(spec, Facet):
        return spec
    if isinstance(spec, str):
        return resolve_facet(spec)()
    if isinstance(spec, type) and issubclass(spec, Facet):
        return spec()
    raise TypeError(
        f"facet {spec!r} must be a Facet instance, a Facet subclass or an entry-point name"
    )
