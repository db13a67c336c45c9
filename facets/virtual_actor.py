"""`VirtualActorFacet`: deactivate a virtual actor after it has been idle for a while.

A virtual actor (registered with `ActorSystem.register_virtual`) exists logically for ever: a
message to its ref activates it, and this facet deactivates it again once no message arrived for
`idle_timeout` on the system's clock. Deactivation runs `on_stop` and every facet's
`on_deactivate` (so its timers are cancelled); the next message or reminder activates it again.
Timer fires do not count as activity unless `timers_keep_alive` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from plexspaces import (
    ActorContext,
    ConfigSpec,
    Facet,
    FacetError,
    ScheduledCall,
    TimerFired,
    positive_duration,
)

__all__ = ["DEFAULT_IDLE_TIMEOUT", "VirtualActorFacet"]

DEFAULT_IDLE_TIMEOUT = timedelta(minutes=5)


class VirtualActorFacet(Facet):
    """Idle deactivation for a virtual actor.

    Config:
        idle_timeout: how long without a message before the actor is deactivated (duration,
            default "5m").
        timers_keep_alive: whether `TimerFired` counts as activity (default False).

    Attaching it to an actor that was not activated through `ActorSystem.virtual` is an error.
    """

    facet_type = "virtual_actor"
    config_schema: ClassVar[dict[str, ConfigSpec]] = {
        "idle_timeout": positive_duration,
        "timers_keep_alive": bool,
    }

    def __init__(self) -> None:
        super().__init__()
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT
        self._seconds = DEFAULT_IDLE_TIMEOUT.total_seconds()
        self._timers_keep_alive = False
        self._last_activity = 0.0
        self._check: ScheduledCall | None = None
        self._ctx: ActorContext | None = None

    def on_attach(self, ctx: ActorContext, config: Mapping[str, Any]) -> None:
        if ctx.actor_type is None:
            raise FacetError(
                f"VirtualActorFacet needs a virtual actor, and {ctx.actor_id!r} was spawned; "
                "register its class with system.register_virtual(type_name, cls) and address "
                "it through system.virtual(type_name, key)"
            )
        self._ctx = ctx
        self.idle_timeout = config.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)
        self._seconds = self.idle_timeout.total_seconds()
        self._timers_keep_alive = config.get("timers_keep_alive", False)
        self._last_activity = ctx.clock.time()

    def on_activate(self) -> None:
        self._arm(self._last_activity + self._seconds)

    def on_deactivate(self) -> None:
        if self._check is not None:
            self._check.cancel()
            self._check = None

    def on_detach(self) -> None:
        # An idle check already queued in the mailbox must find nothing to do.
        self._ctx = None

    def before_message(self, message: Any) -> Any:
        if self._timers_keep_alive or type(message) is not TimerFired:
            ctx = self._ctx
            if ctx is not None:
                self._last_activity = ctx.clock.time()
        return None

    def _arm(self, when: float) -> None:
        ctx = self._ctx
        if ctx is not None:
            self._check = ctx.scheduler.call_at(when, self._due)

    def _due(self) -> None:
        # On the scheduler thread: look at the actor from its own thread.
        ctx = self._ctx
        if ctx is not None:
            ctx.call_soon(self._check_idle)

    def _check_idle(self) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        deadline = self._last_activity + self._seconds
        now = ctx.clock.time()
        if now >= deadline and ctx.deactivate(if_idle=True):
            ctx.log.debug("actor.deactivating", reason="idle", idle_timeout=str(self.idle_timeout))
            return
        # Busy after all (a message arrived, or one waits in the mailbox): look again later. A
        # waiting message updates the activity time before this next check runs.
        self._arm(max(deadline, now))
