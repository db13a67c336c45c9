"""Exceptions a user of the runtime can meet. Each names the value at fault."""

from __future__ import annotations

from typing import Any

import pykka

__all__ = [
    "ActorActiveElsewhereError",
    "ActorIdInUseError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "AskTimeoutError",
    "DuplicateFacetError",
    "FacetConfigError",
    "FacetError",
    "FacetNotAttachedError",
    "NodeIdInUseError",
    "PlexSpacesError",
    "SystemShutdownError",
    "TimerExistsError",
    "UnknownFacetError",
]


class PlexSpacesError(Exception):
    """Base class of every error raised by the runtime."""


class ActorIdInUseError(PlexSpacesError, ValueError):
    """`spawn` was given the id of an actor that is still alive."""


class ActorNotFoundError(PlexSpacesError, LookupError):
    """No live actor has the given id."""


class ActorStoppedError(PlexSpacesError, pykka.ActorDeadError):
    """A message was sent to an actor that is not running (never started, stopped or failed)."""


class ActorActiveElsewhereError(PlexSpacesError, RuntimeError):
    """A virtual actor is active on another node of the cluster, so this node may not activate
    it. Sending messages to actors on other nodes is not supported: send them on the node that
    holds the actor, or wait until it deactivates (or its node's lease runs out).

    Attributes:
        actor_id: the actor, `"<type>/<key>"`.
        node_id: the node holding its activation.
    """

    def __init__(self, actor_id: str, node_id: str) -> None:
        super().__init__(
            f"virtual actor {actor_id!r} is active on node {node_id!r}; this node cannot "
            "activate it until it deactivates there or that node's lease runs out (messages to "
            "actors on other nodes are not supported)"
        )
        self.actor_id = actor_id
        self.node_id = node_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor_id, self.node_id))


class NodeIdInUseError(PlexSpacesError, RuntimeError):
    """Another live process on this host already uses this node id on the same store (or, with
    the cluster off, the same store at all): two would both fire every reminder."""


class AskTimeoutError(PlexSpacesError, TimeoutError):
    """`ask` got no answer within its timeout."""


class SystemShutdownError(PlexSpacesError, RuntimeError):
    """The actor system is shut down (or shutting down) and takes no new work."""


class FacetError(PlexSpacesError):
    """Base class of facet registry errors."""


class DuplicateFacetError(FacetError, ValueError):
    """A facet of the same type is already attached to the actor."""


class FacetConfigError(FacetError, ValueError):
    """A facet's config has an unknown key or an ill-typed value, or a priority is not an int."""


class UnknownFacetError(FacetError, LookupError):
    """No facet is registered under the given name in the `plexspaces.facets` entry points."""


class FacetNotAttachedError(FacetError, LookupError):
    """The actor has no facet of the requested type, or a facet is used while not attached."""


class TimerExistsError(PlexSpacesError):
    """A timer was registered with `overwrite=False` under a name the actor's `TimerFacet`
    already has; the message names the actor and the timer."""
