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
    "MessageDecodeError",
    "MessageEncodeError",
    "NoHostingNodeError",
    "NoResponderError",
    "NodeIdInUseError",
    "NodeLostError",
    "PlexSpacesError",
    "ReminderExistsError",
    "RemoteActorError",
    "SystemShutdownError",
    "TimerExistsError",
    "TransportError",
    "TransportTimeoutError",
    "TransportUnavailableError",
    "UnknownFacetError",
]


class PlexSpacesError(Exception):
    """Base class of every error raised by the runtime."""


class ActorIdInUseError(PlexSpacesError, ValueError):
    """`spawn` was given the id of an actor that is still alive."""


class ReminderExistsError(PlexSpacesError, ValueError):
    """A reminder registered with `overwrite=False` exists already (like `ActorIdInUseError`, a
    `ValueError`: the name given is not one that can be used). Nothing was stored.

    Attributes:
        actor_id: the actor, `"<type>/<key>"`.
        reminder: the reminder's name.
    """

    def __init__(self, actor_id: str, reminder: str) -> None:
        super().__init__(
            f"actor {actor_id!r} already has a reminder {reminder!r}; register with "
            "overwrite=True (the default) to replace it, or unregister it first"
        )
        self.actor_id = actor_id
        self.reminder = reminder

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor_id, self.reminder))


class ActorNotFoundError(PlexSpacesError, LookupError):
    """No live actor has the given id."""


class ActorStoppedError(PlexSpacesError, pykka.ActorDeadError):
    """A message was sent to an actor that is not running (never started, stopped or failed)."""


class ActorActiveElsewhereError(PlexSpacesError, RuntimeError):
    """A virtual actor is active on another node of the cluster, so this node may not activate
    it. Raised only by a system without a transport: with one (`ActorSystem(transport=...)`),
    messages go to the node that holds the actor. Without one, send them on the node that holds
    the actor, or wait until it deactivates (or its node's lease runs out).

    Attributes:
        actor_id: the actor, `"<type>/<key>"`.
        node_id: the node holding its activation.
    """

    def __init__(self, actor_id: str, node_id: str) -> None:
        super().__init__(
            f"virtual actor {actor_id!r} is active on node {node_id!r}; this node cannot "
            "activate it until it deactivates there or that node's lease runs out (give the "
            "systems a transport, ActorSystem(transport='nats://...'), to send to it there)"
        )
        self.actor_id = actor_id
        self.node_id = node_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor_id, self.node_id))


class RemoteActorError(PlexSpacesError, RuntimeError):
    """The handler of a virtual actor on another node raised an exception that could not be
    sent back as itself (the codec cannot carry it, or this process cannot rebuild it).

    Attributes:
        actor_id: the actor, `"<type>/<key>"`.
        node_id: the node where the handler ran.
        type_name: the name of the exception's type there.
        text: its text (`str(exception)`).
    """

    def __init__(self, actor_id: str, node_id: str, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text} (raised by actor {actor_id!r} on node {node_id!r})")
        self.actor_id = actor_id
        self.node_id = node_id
        self.type_name = type_name
        self.text = text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor_id, self.node_id, self.type_name, self.text))


class NodeLostError(PlexSpacesError, RuntimeError):
    """The node holding a virtual actor died (its membership lease ran out) while a message
    to the actor was in flight. The message may or may not have been handled there; a new one
    reaches the actor on the node that activates it next."""


class NoHostingNodeError(PlexSpacesError, RuntimeError):
    """A client-only node (`hosts_actors=False`) found no live node that hosts actors to
    activate a virtual actor on."""


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


class TransportError(PlexSpacesError):
    """Base class of the errors of the transport that carries messages between nodes; raised
    as itself when the transport is closed or the server refuses this node's credentials."""


class TransportUnavailableError(TransportError, ConnectionError):
    """The transport is not connected to its server (the server is down or unreachable).
    Requests fail at once, without waiting for their timeout, until the connection is back; the
    transport reconnects by itself. A request in flight when the connection dropped fails with
    this error too, and may or may not have been delivered."""


class NoResponderError(TransportError):
    """No node serves the node id a request was sent to: that node is gone (or has not yet
    reconnected after an outage of the server). Look the actor up again."""


class TransportTimeoutError(TransportError, AskTimeoutError):
    """A request got no reply within its timeout. Also an `AskTimeoutError`, so code that
    handles a local ask timing out handles a remote one alike. The request may still have been
    delivered and handled."""


class MessageEncodeError(PlexSpacesError, TypeError):
    """A message cannot be encoded by the codec in use; the message names its type and the
    codec."""


class MessageDecodeError(PlexSpacesError, ValueError):
    """Bytes received from another node cannot be decoded by the codec in use (a different
    codec, a class this process cannot import, corrupted data)."""


class TimerExistsError(PlexSpacesError, ValueError):
    """A timer was registered with `overwrite=False` under a name the actor's `TimerFacet`
    already has; the message names the actor and the timer."""
