"""Facets: opt-in capabilities attached to an actor at run time, with a priority and a config."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from ._errors import FacetConfigError, FacetNotAttachedError, UnknownFacetError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from ._context import ActorContext

__all__ = ["ENTRY_POINT_GROUP", "ConfigSpec", "Facet", "available_facets", "resolve_facet"]

ENTRY_POINT_GROUP = "plexspaces.facets"
"""Entry-point group where packages publish facets by name (`timer = "facets.timer:TimerFacet"`)."""

ConfigSpec: TypeAlias = type | tuple[type, ...] | Callable[[Any], Any]
"""How a config key is checked: a type (or tuple of types) the value must be an instance of, or a
converter that returns the value to use and raises `ValueError`/`TypeError` for a bad one."""


class Facet:
    """Base class of facets.

    Subclasses set `facet_type` (default: the class name, lower-cased, without a trailing "Facet")
    and `config_schema` (the config keys they accept; an empty config is always valid), and override
    the hooks they need. The runtime calls every hook on the actor's own thread.

    While attached, `facet_ctx` is the actor's `ActorContext`, `facet_log` a logger bound with the
    actor id and the facet type, `facet_priority` the priority and `facet_config` the validated
    config.
    """

    facet_type: str = "facet"
    config_schema: ClassVar[Mapping[str, ConfigSpec]] = {}

    facet_ctx: ActorContext | None
    facet_log: FilteringBoundLogger | None
    facet_priority: int
    facet_config: Mapping[str, Any]

    def __init__(self) -> None:
        self.facet_ctx = None
        self.facet_log = None
        self.facet_priority = 0
        self.facet_config = {}

    _facet_type_explicit: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "facet_type" in cls.__dict__:
            cls._facet_type_explicit = True
        elif not cls._facet_type_explicit:
            # Derived only when no ancestor named the type: a subclass of TimerFacet is still
            # a "timer" facet.
            cls.facet_type = _derive_type(cls.__name__)

    # -- lifecycle hooks ---------------------------------------------------------------------------

    def on_attach(self, ctx: ActorContext, config: Mapping[str, Any]) -> None:
        """The facet was attached; `config` is validated against `config_schema`."""

    def on_activate(self) -> None:
        """The actor became active: after its `on_start`, or at once when attached later."""

    def on_deactivate(self) -> None:
        """The actor stops being active (stop, failure, deactivation, shutdown) or this facet is
        detached from an active actor. Release what the facet holds here."""

    def on_detach(self) -> None:
        """The facet is leaving the actor; the last hook it gets."""

    # -- message interceptors ----------------------------------------------------------------------

    def before_message(self, message: Any) -> Any:
        """Called before the actor handles `message` (higher priority first).

        Return None to pass it on unchanged, another object to replace it, or `plexspaces.DROP`
        to discard it. Interceptors see user messages, `TimerFired` and `ReminderFired`, never the
        runtime's control messages.
        """
        return None

    def after_message(self, message: Any, result: Any) -> None:
        """Called after the actor handled `message` with `result` (higher priority last)."""

    # -- metrics -----------------------------------------------------------------------------------

    def facet_metrics(self) -> Mapping[str, float]:
        """Gauges of this facet, read by `ActorSystem.metrics()` and summed over the actors as
        `"<facet_type>.<name>"` (the timer facet reports `armed`). Called from another thread:
        read, do not block. Counters and latencies are recorded through `ActorContext.metrics`
        as they happen instead."""
        return {}

    # -- helpers for subclasses --------------------------------------------------------------------

    def require_context(self) -> ActorContext:
        """The actor context, or `FacetNotAttachedError` when the facet is not attached."""
        ctx = self.facet_ctx
        if ctx is None:
            raise FacetNotAttachedError(
                f"{type(self).__name__} is not attached to an actor; attach it with "
                "actor.attach_facet(...) first"
            )
        return ctx

    def __repr__(self) -> str:
        owner = self.facet_ctx.actor_id if self.facet_ctx is not None else None
        return f"<{type(self).__name__} type={self.facet_type!r} actor={owner!r}>"


def _derive_type(class_name: str) -> str:
    base = class_name.removesuffix("Facet") or class_name
    # AuditLog -> audit_log, HTTPServer -> http_server, HTTP -> http.
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base).lower()


def validate_config(facet: Facet, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check `config` against the facet's `config_schema` and return the values to use."""
    if config is None:
        return {}
    kind = facet.facet_type
    if not isinstance(config, Mapping):
        raise FacetConfigError(
            f"config for facet {kind!r} must be a mapping of keys to values, got {config!r}"
        )
    schema = type(facet).config_schema
    accepted = ", ".join(sorted(schema)) or "none"
    result: dict[str, Any] = {}
    for key, value in config.items():
        if key not in schema:
            raise FacetConfigError(
                f"facet {kind!r} has no config key {key!r}; accepted keys: {accepted}"
            )
        result[key] = _check_value(kind, key, value, schema[key])
    return result


def _check_value(kind: str, key: str, value: Any, spec: ConfigSpec) -> Any:
    if isinstance(spec, type | tuple):
        types = spec if isinstance(spec, tuple) else (spec,)
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise FacetConfigError(
                f"config key {key!r} of facet {kind!r} must be {names}, "
                f"got {value!r} ({type(value).__name__})"
            )
        return value
    try:
        return spec(value)
    except (TypeError, ValueError) as error:
        raise FacetConfigError(f"config key {key!r} of facet {kind!r}: {error}") from error


_registry_lock = threading.Lock()
_registry: dict[str, Any] | None = None


def available_facets() -> dict[str, type[Facet]]:
    """Facet classes published under the `plexspaces.facets` entry-point group, by name."""
    return {name: _load(name) for name in _entry_points()}


def resolve_facet(name: str) -> type[Facet]:
    """The facet class published under `name`, or `UnknownFacetError` naming what exists."""
    if name not in _entry_points():
        _refresh()
    if name not in _entry_points():
        known = ", ".join(sorted(_entry_points())) or "none"
        raise UnknownFacetError(
            f"no facet named {name!r} in the {ENTRY_POINT_GROUP!r} entry points; known: {known}"
        )
    return _load(name)


def _entry_points() -> dict[str, Any]:
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return _registry


def _refresh() -> None:
    global _registry
    with _registry_lock:
        _registry = None


def _load(name: str) -> type[Facet]:
    loaded = _entry_points()[name].load()
    if not (isinstance(loaded, type) and issubclass(loaded, Facet)):
        raise UnknownFacetError(
            f"entry point {name!r} in {ENTRY_POINT_GROUP!r} is {loaded!r}, not a Facet subclass"
        )
    return loaded
