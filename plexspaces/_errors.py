"""Exceptions a user of the runtime can meet. Each names the value at fault."""

from __future__ import annotations

import pykka

__all__ = [
    "ActorIdInUseError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "AskTimeoutError",
    "DuplicateFacetError",
    "FacetConfigError",
    "FacetError",
    "FacetNotAttachedError",
    "PlexSpacesError",
    "SystemShutdownError",
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
