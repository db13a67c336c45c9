"""The facet registry: attaching, config validation, lookup, interceptors and lifecycle hooks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import structlog.testing

from facets.timer import TimerFacet
from plexspaces import (
    DROP,
    Actor,
    ActorNotFoundError,
    ActorRef,
    ActorStoppedError,
    ActorSystem,
    ConfigSpec,
    DuplicateFacetError,
    Facet,
    FacetConfigError,
    FacetError,
    FacetNotAttachedError,
    ManualClock,
    TimerFired,
    UnknownFacetError,
    parse_duration,
)

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""


class Boom(Exception):
    """The failure helper actors and facets raise on request."""


class Journal:
    """Shared by a test, its actors and its facets: what happened, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []

    def add(self, *entry: Any) -> None:
        self.entries.append(entry)

    def of(self, who: str) -> list[Any]:
        """The entries recorded by `who`, without the name."""
        mine = [entry[1:] for entry in self.entries if entry[0] == who]
        return [rest if len(rest) > 1 else rest[0] for rest in mine]


# -- helper facets -------------------------------------------------------------------------------


class Tracer(Facet):
    """Records every lifecycle hook, the thread and arguments of on_attach."""

    facet_type = "tracer"

    def __init__(self, journal: Journal, name: str | None = None) -> None:
        super().__init__()
        self.journal = journal
        if name is not None:
            self.facet_type = name
        self.attach_thread: threading.Thread | None = None
        self.attach_ctx: Any = None
        self.attach_config: Any = None

    def on_attach(self, ctx: Any, config: Any) -> None:
        self.attach_thread = threading.current_thread()
        self.attach_ctx = ctx
        self.attach_config = config
        self.journal.add(self.facet_type, "attach")

    def on_activate(self) -> None:
        self.journal.add(self.facet_type, "activate")

    def on_deactivate(self) -> None:
        self.journal.add(self.facet_type, "deactivate")

    def on_detach(self) -> None:
        self.journal.add(self.facet_type, "detach")


class Interceptor(Facet):
    """Records what its interceptors see; `rewrite(message)` is what before_message returns."""

    def __init__(
        self,
        journal: Journal,
        name: str,
        rewrite: Callable[[Any], Any] = lambda message: None,
    ) -> None:
        super().__init__()
        self.facet_type = name
        self.journal = journal
        self.rewrite = rewrite

    def before_message(self, message: Any) -> Any:
        self.journal.add(self.facet_type, "before", message)
        return self.rewrite(message)

    def after_message(self, message: Any, result: Any) -> Any:
        self.journal.add(self.facet_type, "after", message, result)
        return "after_message's return value must be ignored"


class TrackedTimer(TimerFacet):
    """A TimerFacet that records its lifecycle and signals once it is fully released."""

    facet_type = "timer"

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal
        self.released = threading.Event()

    def on_attach(self, ctx: Any, config: Any) -> None:
        super().on_attach(ctx, config)
        self.journal.add("timer", "attach")

    def on_activate(self) -> None:
        super().on_activate()
        self.journal.add("timer", "activate")

    def on_deactivate(self) -> None:
        super().on_deactivate()
        self.journal.add("timer", "deactivate")

    def on_detach(self) -> None:
        super().on_detach()
        self.journal.add("timer", "detach")
        self.released.set()


def positive_int(value: Any) -> int:
    """A converter spec: accepts positive ints only."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{value!r} is not a positive int")
    return value


class Configured(Facet):
    """Declares config keys of every spec kind: type, tuple of types and converters."""

    facet_type = "configured"
    config_schema: ClassVar[dict[str, ConfigSpec]] = {
        "retries": int,
        "label": (str, type(None)),
        "timeout": parse_duration,
        "workers": positive_int,
    }

    def __init__(self) -> None:
        super().__init__()
        self.attach_calls: list[dict[str, Any]] = []

    def on_attach(self, ctx: Any, config: Any) -> None:
        self.attach_calls.append(dict(config))


class FailingAttach(Facet):
    """Raises from on_attach."""

    facet_type = "failing"

    def on_attach(self, ctx: Any, config: Any) -> None:
        raise Boom("on_attach failed")


class FailingActivate(Tracer):
    """Raises from on_activate (after recording it)."""

    facet_type = "failing_activate"

    def on_activate(self) -> None:
        super().on_activate()
        raise Boom("on_activate failed")


class FaultyTeardown(Tracer):
    """Raises from on_deactivate and on_detach (after recording them)."""

    facet_type = "faulty"

    def on_deactivate(self) -> None:
        super().on_deactivate()
        raise Boom("on_deactivate failed")

    def on_detach(self) -> None:
        super().on_detach()
        raise Boom("on_detach failed")


class AuditLogFacet(Facet):
    """facet_type derived from the class name."""


class Metrics(Facet):
    """facet_type derived from a class name without the Facet suffix."""


class Custom(Facet):
    """facet_type set on the class."""

    facet_type = "custom.kind"


# -- helper actors ---------------------------------------------------------------------------------


class Host(Actor):
    """Attaches the facets it is given in on_start; on request attaches, detaches and looks up
    facets from its handler; records its lifecycle and every user message it receives."""

    def __init__(
        self,
        journal: Journal | None = None,
        facets: Iterable[tuple[Any, int]] = (),
        *,
        fail_start: bool = False,
    ) -> None:
        super().__init__()
        self.journal = journal if journal is not None else Journal()
        self.start_facets = list(facets)
        self.fail_start = fail_start
        self.fired = 0

    def on_start(self) -> None:
        self.journal.add("actor", "on_start:begin")
        for facet, priority in self.start_facets:
            self.attach_facet(facet, priority=priority)
        self.journal.add("actor", "on_start:end")
        if self.fail_start:
            raise Boom("on_start failed")

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("attach", facet, priority):
                attached = self.attach_facet(facet, priority=priority)
                self.journal.add("actor", "attached")
                return attached
            case ("get or attach", facet, priority):
                return self.facet_or_attach(facet, priority=priority)
            case ("detach", spec):
                return self.detach_facet(spec)
            case ("facet", spec):
                return self.facet(spec)
            case ("service", actor_id, spec):
                return self.ctx.facet_service.get_facet(actor_id, spec)
            case "thread":
                return threading.current_thread()
            case "fired":
                return self.fired
            case "boom":
                raise Boom("tell handler failed")
            case TimerFired():
                self.fired += 1
        self.journal.add("actor", "received", message)
        return ("handled", message)

    def on_stop(self) -> None:
        self.journal.add("actor", "on_stop")


class TickHost(Actor):
    """Attaches the given timer facet (after any others) in on_start and runs a 1 s periodic
    timer on it."""

    def __init__(
        self, timer: TimerFacet, *, others: Iterable[Facet] = (), fail_start: bool = False
    ) -> None:
        super().__init__()
        self.timer = timer
        self.others = list(others)
        self.fail_start = fail_start
        self.fired = 0

    def on_start(self) -> None:
        for facet in self.others:
            self.attach_facet(facet)
        self.attach_facet(self.timer)
        self.timer.register_periodic("tick", "1s")
        if self.fail_start:
            raise Boom("on_start failed")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TimerFired):
            self.fired += 1
        elif message == "boom":
            raise Boom("tell handler failed")
        return self.fired


def received(journal: Journal) -> list[Any]:
    """The user messages the Host actor received, in order."""
    return [entry[2] for entry in journal.entries if entry[:2] == ("actor", "received")]


def attached_types(system: ActorSystem, actor_id: str) -> list[str]:
    return [facet.facet_type for facet in system.facet_service.list_facets(actor_id)]


# -- attaching -------------------------------------------------------------------------------------


def test_facets_attached_in_on_start_are_attached_to_the_actor(system: ActorSystem) -> None:
    """A facet attached in on_start is attached to this actor, with its ctx, once spawn returns."""
    journal = Journal()
    tracer = Tracer(journal)
    system.spawn(Host, journal, [(tracer, 0)], actor_id="host")
    assert system.facet_service.list_facets("host") == [tracer]
    assert tracer.facet_ctx is not None
    assert tracer.facet_ctx.actor_id == "host"
    assert tracer.attach_ctx.actor_id == "host"


def test_attach_facet_from_a_handler_returns_the_attached_facet(system: ActorSystem) -> None:
    """self.attach_facet in a handler attaches the facet and returns it."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    tracer = Tracer(journal)
    assert ref.ask(("attach", tracer, 3), timeout=WAIT) is tracer
    assert system.facet_service.list_facets("host") == [tracer]
    assert tracer.facet_priority == 3


def test_ref_attach_facet_runs_on_the_actor_thread(system: ActorSystem) -> None:
    """ref.attach_facet from outside runs on_attach on the actor's own thread and returns the
    facet."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    actor_thread = ref.ask("thread", timeout=WAIT)
    tracer = Tracer(journal)
    assert ref.attach_facet(tracer, priority=1, config={}) is tracer
    assert tracer.attach_thread is actor_thread
    assert tracer.attach_thread is not threading.current_thread()
    assert attached_types(system, "host") == ["tracer"]


def test_ref_attach_facet_raises_errors_to_the_caller_and_the_actor_goes_on(
    system: ActorSystem,
) -> None:
    """Errors of an attach through the ref reach the caller; the actor keeps running."""
    journal = Journal()
    ref = system.spawn(Host, journal, [(Tracer(journal), 0)], actor_id="host")
    with pytest.raises(Boom, match="on_attach failed"):
        ref.attach_facet(FailingAttach())
    with pytest.raises(DuplicateFacetError):
        ref.attach_facet(Tracer(journal))
    assert ref.ask("ping", timeout=WAIT) == ("handled", "ping")
    assert attached_types(system, "host") == ["tracer"]


def test_attach_facet_by_entry_point_name(system: ActorSystem) -> None:
    """attach_facet("timer") makes a TimerFacet from the plexspaces.facets entry point."""
    ref = system.spawn(Host, actor_id="host")
    timer = ref.attach_facet("timer", priority=5)
    assert type(timer) is TimerFacet
    assert system.facet_service.get_facet("host", "timer") is timer
    assert timer.facet_priority == 5


def test_attach_facet_by_unknown_name_lists_the_known_names(system: ActorSystem) -> None:
    """An unknown facet name raises UnknownFacetError naming it and listing the known names."""
    ref = system.spawn(Host, actor_id="host")
    with pytest.raises(UnknownFacetError, match="'no-such-facet'") as raised:
        ref.attach_facet("no-such-facet")
    assert "timer" in str(raised.value)
    assert attached_types(system, "host") == []


def test_attach_facet_given_a_class_makes_an_instance(system: ActorSystem) -> None:
    """attach_facet(TimerFacet) attaches a new TimerFacet instance and returns it."""
    ref = system.spawn(Host, actor_id="host")
    timer = ref.attach_facet(TimerFacet)
    assert isinstance(timer, TimerFacet)
    assert system.facet_service.get_facet("host", "timer") is timer


@pytest.mark.parametrize("spec", [42, object(), Host, None], ids=["int", "object", "actor", "none"])
def test_attach_facet_rejects_what_is_not_a_facet(system: ActorSystem, spec: Any) -> None:
    """Something that is neither a Facet, a Facet class nor a name is a TypeError."""
    ref = system.spawn(Host, actor_id="host")
    with pytest.raises(TypeError):
        ref.attach_facet(spec)
    assert attached_types(system, "host") == []


def test_attaching_a_second_facet_of_the_same_type_is_an_error(system: ActorSystem) -> None:
    """A second facet of an attached type raises DuplicateFacetError naming the type; the first
    stays attached and the second is left unattached."""
    journal = Journal()
    first = Tracer(journal)
    ref = system.spawn(Host, journal, [(first, 0)], actor_id="host")
    second = Tracer(journal)
    with pytest.raises(DuplicateFacetError, match="'tracer'"):
        ref.attach_facet(second)
    with pytest.raises(DuplicateFacetError, match="'tracer'"):
        ref.ask(("attach", Tracer(journal), 0), timeout=WAIT)
    assert system.facet_service.list_facets("host") == [first]
    assert second.facet_ctx is None
    assert journal.of("tracer") == ["attach", "activate"]


@pytest.mark.parametrize("spec", ["timer", TimerFacet, "instance"])
def test_facet_or_attach_attaches_once_then_returns_the_attached_facet(
    system: ActorSystem, spec: Any
) -> None:
    """facet_or_attach from a handler that runs twice attaches on the first call (with its
    priority) and returns that same facet on the second, by name, class or instance."""
    ref = system.spawn(Host, actor_id="host")
    first = ref.ask(("get or attach", TimerFacet() if spec == "instance" else spec, 7))
    again = ref.ask(("get or attach", TimerFacet() if spec == "instance" else spec, 1))
    assert isinstance(first, TimerFacet)
    assert again is first
    assert first.facet_priority == 7
    assert system.facet_service.list_facets("host") == [first]


def test_a_facet_instance_cannot_be_attached_to_two_actors(system: ActorSystem) -> None:
    """Attaching an instance already attached to one actor to another raises FacetError."""
    shared = Tracer(Journal())
    a = system.spawn(Host, actor_id="a")
    b = system.spawn(Host, actor_id="b")
    a.attach_facet(shared)
    with pytest.raises(FacetError, match="already attached"):
        b.attach_facet(shared)
    assert attached_types(system, "b") == []
    assert system.facet_service.list_facets("a") == [shared]
    assert shared.facet_ctx is not None
    assert shared.facet_ctx.actor_id == "a"


def test_attaching_to_a_stopped_actor_raises_actor_stopped_error(system: ActorSystem) -> None:
    """ref.attach_facet on an actor that is no longer running raises ActorStoppedError naming it."""
    ref = system.spawn(Host, actor_id="gone")
    assert ref.stop() is True
    tracer = Tracer(Journal())
    with pytest.raises(ActorStoppedError, match="'gone'"):
        ref.attach_facet(tracer)
    assert tracer.facet_ctx is None


# -- config validation -----------------------------------------------------------------------------


def test_valid_config_is_validated_and_converted_for_on_attach(system: ActorSystem) -> None:
    """on_attach(ctx, config) gets the actor's ctx and the validated config, converters applied."""
    ref = system.spawn(Host, actor_id="host")
    facet = Configured()
    config = {"retries": 3, "label": None, "timeout": "2s", "workers": 4}
    ref.attach_facet(facet, config=config)
    expected = {"retries": 3, "label": None, "timeout": timedelta(seconds=2), "workers": 4}
    assert facet.attach_calls == [expected]
    assert facet.facet_config == expected
    assert facet.facet_ctx is not None
    assert facet.facet_ctx.actor_id == "host"


@pytest.mark.parametrize("config", [{}, None], ids=["empty", "none"])
@pytest.mark.parametrize("facet_class", [Configured, AuditLogFacet], ids=["schema", "no-schema"])
def test_an_empty_config_is_always_valid(
    system: ActorSystem, config: Any, facet_class: type[Facet]
) -> None:
    """{} (or no config) is accepted by every facet, with or without declared keys."""
    ref = system.spawn(Host, actor_id="host")
    facet = ref.attach_facet(facet_class(), config=config)
    assert facet.facet_config == {}
    assert attached_types(system, "host") == [facet.facet_type]


def test_an_unknown_config_key_is_an_error_naming_it(system: ActorSystem) -> None:
    """A config key the facet does not declare raises FacetConfigError naming the key; nothing
    is attached and on_attach does not run."""
    ref = system.spawn(Host, actor_id="host")
    facet = Configured()
    with pytest.raises(FacetConfigError, match="'colour'"):
        ref.attach_facet(facet, config={"retries": 1, "colour": "blue"})
    with pytest.raises(FacetConfigError, match="'anything'"):
        ref.attach_facet(AuditLogFacet(), config={"anything": 1})
    assert facet.attach_calls == []
    assert facet.facet_ctx is None
    assert attached_types(system, "host") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retries", "3"),
        ("retries", 2.5),
        ("retries", True),
        ("label", 5),
        ("label", b"bytes"),
        ("timeout", "soon"),
        ("timeout", "5"),
        ("timeout", -1),
        ("workers", 0),
        ("workers", "many"),
    ],
    ids=repr,
)
def test_an_ill_typed_config_value_is_an_error_naming_the_key(
    system: ActorSystem, key: str, value: Any
) -> None:
    """A value failing its type, tuple-of-types or converter spec raises FacetConfigError naming
    the key (bool is not accepted for int); nothing is attached."""
    ref = system.spawn(Host, actor_id="host")
    facet = Configured()
    with pytest.raises(FacetConfigError, match=f"'{key}'"):
        ref.attach_facet(facet, config={key: value})
    assert facet.attach_calls == []
    assert facet.facet_ctx is None
    assert attached_types(system, "host") == []
    # The same instance attaches once the config is right: the failure left nothing behind.
    ref.attach_facet(facet, config={})
    assert attached_types(system, "host") == ["configured"]


@pytest.mark.parametrize("config", [[("retries", 1)], "retries=1", 5], ids=repr)
def test_a_config_that_is_not_a_mapping_is_rejected(system: ActorSystem, config: Any) -> None:
    """A config that is not a mapping raises FacetConfigError; nothing is attached."""
    ref = system.spawn(Host, actor_id="host")
    with pytest.raises(FacetConfigError, match="mapping"):
        ref.attach_facet(Configured(), config=config)
    assert attached_types(system, "host") == []


@pytest.mark.parametrize("priority", [True, "1", 1.0, None], ids=repr)
def test_priority_must_be_an_int(system: ActorSystem, priority: Any) -> None:
    """A priority that is not an int (bool, str, float, None) raises FacetConfigError; nothing is
    attached."""
    ref = system.spawn(Host, actor_id="host")
    tracer = Tracer(Journal())
    with pytest.raises(FacetConfigError, match="priority"):
        ref.attach_facet(tracer, priority=priority)
    assert tracer.facet_ctx is None
    assert attached_types(system, "host") == []


def test_negative_priorities_are_ints_too(system: ActorSystem) -> None:
    """Any int is a valid priority, negative included."""
    ref = system.spawn(Host, actor_id="host")
    assert ref.attach_facet(Tracer(Journal()), priority=-7).facet_priority == -7


def test_a_facet_whose_on_attach_raises_stays_unattached(system: ActorSystem) -> None:
    """If on_attach raises, the facet is not attached and its type stays free."""
    ref = system.spawn(Host, actor_id="host")
    failing = FailingAttach()
    with pytest.raises(Boom):
        ref.attach_facet(failing)
    assert failing.facet_ctx is None
    assert failing.facet_log is None
    assert failing.facet_priority == 0
    assert failing.facet_config == {}
    assert attached_types(system, "host") == []
    with pytest.raises(FacetNotAttachedError):
        system.facet_service.get_facet("host", "failing")

    class Replacement(Facet):
        facet_type = "failing"

    ref.attach_facet(Replacement())
    assert attached_types(system, "host") == ["failing"]


def test_a_facet_whose_on_activate_raises_is_released_and_unattached(
    system: ActorSystem,
) -> None:
    """If on_activate of a facet attached to a running actor raises, the error reaches the caller
    and the facet is deactivated, detached and no longer attached."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    facet = FailingActivate(journal)
    with pytest.raises(Boom, match="on_activate failed"):
        ref.attach_facet(facet)
    assert journal.of("failing_activate") == ["attach", "activate", "deactivate", "detach"]
    assert facet.facet_ctx is None
    assert attached_types(system, "host") == []
    assert ref.ask("ping", timeout=WAIT) == ("handled", "ping")


# -- facet_type ------------------------------------------------------------------------------------


def test_facet_type_defaults_to_the_class_name_in_snake_case(system: ActorSystem) -> None:
    """Without an explicit facet_type, "AuditLogFacet" is "audit_log" and "Metrics" "metrics"."""
    assert AuditLogFacet.facet_type == "audit_log"
    assert AuditLogFacet().facet_type == "audit_log"
    assert Metrics.facet_type == "metrics"
    ref = system.spawn(Host, actor_id="host")
    audit = ref.attach_facet(AuditLogFacet)
    assert system.facet_service.get_facet("host", "audit_log") is audit


def test_derived_facet_type_keeps_acronyms_whole() -> None:
    """Acronyms stay one word in a derived facet_type: "HTTPServerFacet" is "http_server"."""

    class HTTPFacet(Facet):
        pass

    class HTTPServerFacet(Facet):
        pass

    assert HTTPFacet.facet_type == "http"
    assert HTTPServerFacet.facet_type == "http_server"


def test_a_subclass_of_a_named_facet_keeps_its_type() -> None:
    """A subclass of TimerFacet is still a "timer" facet unless it names a type of its own."""

    class LoggingTimerFacet(TimerFacet):
        pass

    class RenamedTimerFacet(TimerFacet):
        facet_type = "renamed"

    assert LoggingTimerFacet.facet_type == "timer"
    assert RenamedTimerFacet.facet_type == "renamed"


def test_facet_type_can_be_set_on_the_class_or_the_instance(system: ActorSystem) -> None:
    """facet_type set on a class, or on one instance, is the name the facet is attached under."""
    ref = system.spawn(Host, actor_id="host")
    custom = ref.attach_facet(Custom())
    primary = ref.attach_facet(AuditLogFacet())
    secondary = AuditLogFacet()
    secondary.facet_type = "audit_secondary"
    ref.attach_facet(secondary)
    assert system.facet_service.get_facet("host", "custom.kind") is custom
    assert system.facet_service.get_facet("host", "audit_log") is primary
    assert system.facet_service.get_facet("host", "audit_secondary") is secondary
    assert AuditLogFacet.facet_type == "audit_log"


# -- lookup ----------------------------------------------------------------------------------------


def test_facets_are_found_by_type_name_or_class_inside_and_outside(system: ActorSystem) -> None:
    """self.facet(name), self.facet(Class) and facet_service.get_facet(id, name or Class) all
    return the attached instance."""
    journal = Journal()
    tracer = Tracer(journal)
    timer = TimerFacet()
    ref = system.spawn(Host, journal, [(tracer, 0), (timer, 0)], actor_id="host")
    assert ref.ask(("facet", "tracer"), timeout=WAIT) is tracer
    assert ref.ask(("facet", Tracer), timeout=WAIT) is tracer
    assert ref.ask(("facet", TimerFacet), timeout=WAIT) is timer
    assert ref.ask(("service", "host", "timer"), timeout=WAIT) is timer
    assert ref.ask(("service", "host", TimerFacet), timeout=WAIT) is timer
    assert system.facet_service.get_facet("host", "tracer") is tracer
    assert system.facet_service.get_facet("host", Tracer) is tracer
    other = system.spawn(Host, actor_id="other")
    assert other.ask(("service", "host", Tracer), timeout=WAIT) is tracer


def test_looking_up_a_facet_that_is_not_attached_raises(system: ActorSystem) -> None:
    """A facet that is not attached raises FacetNotAttachedError naming it, by name or class,
    through self.facet and through the facet service."""
    ref = system.spawn(Host, actor_id="host")
    with pytest.raises(FacetNotAttachedError, match="'timer'"):
        ref.ask(("facet", "timer"), timeout=WAIT)
    with pytest.raises(FacetNotAttachedError, match="'TimerFacet'"):
        ref.ask(("facet", TimerFacet), timeout=WAIT)
    with pytest.raises(FacetNotAttachedError, match="'timer'"):
        system.facet_service.get_facet("host", "timer")
    with pytest.raises(FacetNotAttachedError, match="'host'"):
        system.facet_service.get_facet("host", TimerFacet)
    assert ref.is_alive()


def test_looking_up_a_facet_of_an_unknown_actor_raises_actor_not_found(
    system: ActorSystem,
) -> None:
    """get_facet for an id with no live actor (never spawned, or stopped) raises
    ActorNotFoundError naming the id."""
    with pytest.raises(ActorNotFoundError, match="'ghost'"):
        system.facet_service.get_facet("ghost", "timer")
    ref = system.spawn(Host, None, [(TimerFacet(), 0)], actor_id="gone")
    assert ref.stop() is True
    with pytest.raises(ActorNotFoundError, match="'gone'"):
        system.facet_service.get_facet("gone", TimerFacet)


# -- interceptors ----------------------------------------------------------------------------------


def interceptions(journal: Journal, stage: str) -> list[str]:
    """Names of the facets whose `stage` interceptor ran, in order."""
    return [entry[0] for entry in journal.entries if len(entry) > 1 and entry[1] == stage]


def test_interceptors_run_by_priority_first_before_and_last_after(system: ActorSystem) -> None:
    """before_message runs highest priority first; after_message runs highest priority last."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    for name, priority in [("p10", 10), ("p50", 50), ("p30", 30), ("pneg", -5)]:
        ref.attach_facet(Interceptor(journal, name), priority=priority)
    journal.entries.clear()
    assert ref.ask("m", timeout=WAIT) == ("handled", "m")
    assert interceptions(journal, "before") == ["p50", "p30", "p10", "pneg"]
    assert interceptions(journal, "after") == ["pneg", "p10", "p30", "p50"]
    # The actor ran between the two.
    stages = [entry[1] for entry in journal.entries]
    assert stages == ["before"] * 4 + ["received"] + ["after"] * 4


def test_interceptors_of_equal_priority_run_in_attach_order(system: ActorSystem) -> None:
    """Facets of equal priority intercept in the order they were attached."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.attach_facet(Interceptor(journal, "first"), priority=5)
    ref.attach_facet(Interceptor(journal, "high"), priority=9)
    ref.attach_facet(Interceptor(journal, "second"), priority=5)
    ref.attach_facet(Interceptor(journal, "third"), priority=5)
    ref.ask("m", timeout=WAIT)
    assert interceptions(journal, "before") == ["high", "first", "second", "third"]


def test_before_message_returning_none_passes_the_message_unchanged(system: ActorSystem) -> None:
    """before_message returning None delivers the original message to the actor."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.attach_facet(Interceptor(journal, "watcher"))
    message = ("order", 1)
    assert ref.ask(message, timeout=WAIT) == ("handled", message)
    assert received(journal) == [message]
    assert journal.of("watcher") == [
        ("before", message),
        ("after", message, ("handled", message)),
    ]


def test_before_message_returning_an_object_replaces_the_message(system: ActorSystem) -> None:
    """A replacement from before_message is what lower-priority interceptors, the actor and
    after_message see; after_message's return value is ignored."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.attach_facet(Interceptor(journal, "upper", lambda m: m.upper()), priority=10)
    ref.attach_facet(Interceptor(journal, "low"), priority=0)
    assert ref.ask("hello", timeout=WAIT) == ("handled", "HELLO")
    assert received(journal) == ["HELLO"]
    assert journal.of("low") == [("before", "HELLO"), ("after", "HELLO", ("handled", "HELLO"))]
    assert journal.of("upper") == [
        ("before", "hello"),
        ("after", "HELLO", ("handled", "HELLO")),
    ]


def test_before_message_returning_drop_discards_the_message(system: ActorSystem) -> None:
    """plexspaces.DROP from before_message discards the message: the actor never sees it and an
    ask of it answers None."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    censor = Interceptor(journal, "censor", lambda m: DROP if m == "secret" else None)
    ref.attach_facet(censor, priority=10)
    assert ref.ask("secret", timeout=WAIT) is None
    ref.tell("secret")
    assert ref.ask("public", timeout=WAIT) == ("handled", "public")
    assert received(journal) == ["public"]


def test_interceptors_see_timer_fired(system: ActorSystem, clock: ManualClock) -> None:
    """Interceptors see TimerFired messages like user messages."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.attach_facet(Interceptor(journal, "watcher"))
    ref.attach_facet(TimerFacet()).register_one_shot("wake", "1s", payload="p")
    clock.advance("1s")
    assert ref.ask("fired", timeout=WAIT) == 1
    seen = [entry[2] for entry in journal.entries if entry[:2] == ("watcher", "before")]
    assert len(seen) == 2
    fired, question = seen
    assert isinstance(fired, TimerFired)
    assert fired.timer_name == "wake"
    assert fired.payload == "p"
    assert question == "fired"
    after = [entry[2] for entry in journal.entries if entry[:2] == ("watcher", "after")]
    assert after == [fired, "fired"]


def test_interceptors_do_not_see_control_messages(system: ActorSystem) -> None:
    """ref.attach_facet / ref.detach_facet run on the actor thread without passing through any
    interceptor."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.attach_facet(Interceptor(journal, "watcher"), priority=100)
    ref.attach_facet(Tracer(Journal()))
    ref.attach_facet("timer")
    assert ref.detach_facet("tracer") is True
    assert ref.detach_facet("timer") is True
    assert ref.detach_facet("absent") is False
    assert ref.ask("probe", timeout=WAIT) == ("handled", "probe")
    assert journal.of("watcher") == [("before", "probe"), ("after", "probe", ("handled", "probe"))]


# -- lifecycle hooks -------------------------------------------------------------------------------


def test_on_activate_runs_after_on_start_for_facets_attached_in_it(system: ActorSystem) -> None:
    """Facets attached in on_start get on_attach at once and on_activate after on_start ends."""
    journal = Journal()
    system.spawn(Host, journal, [(Tracer(journal), 0)], actor_id="host")
    assert journal.entries == [
        ("actor", "on_start:begin"),
        ("tracer", "attach"),
        ("actor", "on_start:end"),
        ("tracer", "activate"),
    ]


def test_on_activate_runs_at_once_for_facets_attached_later(system: ActorSystem) -> None:
    """A facet attached to a running actor (from a handler or through the ref) gets on_attach and
    on_activate before attach_facet returns."""
    journal = Journal()
    ref = system.spawn(Host, journal, actor_id="host")
    ref.ask(("attach", Tracer(journal, "inside"), 0), timeout=WAIT)
    assert journal.entries[2:] == [
        ("inside", "attach"),
        ("inside", "activate"),
        ("actor", "attached"),
    ]
    ref.attach_facet(Tracer(journal, "outside"))
    assert journal.entries[5:] == [("outside", "attach"), ("outside", "activate")]


def test_detach_facet_releases_the_facet_and_reports_whether_it_was_attached(
    system: ActorSystem,
) -> None:
    """detach_facet runs on_deactivate then on_detach and returns True; for a facet that is not
    attached it returns False. Works by name or class, from inside or outside."""
    journal = Journal()
    outside = Tracer(journal, "outside")
    inside = Tracer(journal, "inside")
    ref = system.spawn(Host, journal, [(outside, 0), (inside, 0)], actor_id="host")
    assert ref.detach_facet("outside") is True
    assert journal.of("outside") == ["attach", "activate", "deactivate", "detach"]
    assert outside.facet_ctx is None
    assert ref.detach_facet("outside") is False
    assert ref.ask(("detach", Tracer), timeout=WAIT) is True
    assert journal.of("inside") == ["attach", "activate", "deactivate", "detach"]
    assert ref.ask(("detach", "inside"), timeout=WAIT) is False
    assert attached_types(system, "host") == []
    # A detached instance is free to be attached again.
    ref.attach_facet(outside)
    assert attached_types(system, "host") == ["outside"]


def exit_by_stop(system: ActorSystem, ref: ActorRef, timer: TrackedTimer) -> None:
    assert ref.stop() is True


def exit_by_tell_failure(system: ActorSystem, ref: ActorRef, timer: TrackedTimer) -> None:
    ref.tell("boom")
    assert timer.released.wait(WAIT)


def exit_by_shutdown(system: ActorSystem, ref: ActorRef, timer: TrackedTimer) -> None:
    system.shutdown()


def exit_by_detach(system: ActorSystem, ref: ActorRef, timer: TrackedTimer) -> None:
    assert ref.detach_facet("timer") is True


@pytest.mark.parametrize(
    "leave",
    [exit_by_stop, exit_by_tell_failure, exit_by_shutdown, exit_by_detach],
    ids=["stop", "tell-failure", "shutdown", "detach"],
)
def test_facets_are_released_and_timers_cancelled_on_every_exit_path(
    system: ActorSystem, clock: ManualClock, leave: Callable[..., None]
) -> None:
    """Stop, a tell-handler failure, shutdown and detach each run on_deactivate then on_detach
    once; the facet's timers are cancelled and never fire again."""
    journal = Journal()
    timer = TrackedTimer(journal)
    ref = system.spawn(TickHost, timer, actor_id="ticker")
    clock.advance("1s")
    assert ref.ask("count", timeout=WAIT) == 1
    leave(system, ref, timer)
    assert timer.released.is_set()
    assert journal.of("timer") == ["attach", "activate", "deactivate", "detach"]
    assert timer.list_timers() == []
    assert len(system.scheduler) == 0
    clock.advance("5s")
    if leave is exit_by_detach:
        assert ref.ask("count", timeout=WAIT) == 1
        assert ref.is_alive()
    else:
        assert not ref.is_alive()
    assert journal.of("timer") == ["attach", "activate", "deactivate", "detach"]


def test_facets_attached_in_a_failing_on_start_are_released(
    system: ActorSystem, clock: ManualClock
) -> None:
    """When on_start fails, facets it attached get on_deactivate then on_detach (never
    on_activate), their timers are cancelled, and the id is free again."""
    journal = Journal()
    tracer_journal = Journal()
    timer = TrackedTimer(journal)
    tracer = Tracer(tracer_journal)
    with pytest.raises(Boom, match="on_start failed"):
        system.spawn(TickHost, timer, others=[tracer], fail_start=True, actor_id="ticker")
    assert journal.of("timer") == ["attach", "deactivate", "detach"]
    assert tracer_journal.of("tracer") == ["attach", "deactivate", "detach"]
    assert timer.list_timers() == []
    assert tracer.facet_ctx is None
    assert len(system.scheduler) == 0
    clock.advance("5s")
    ref = system.spawn(TickHost, TimerFacet(), actor_id="ticker")
    assert ref.ask("count", timeout=WAIT) == 0


def test_a_facet_hook_failing_during_teardown_is_logged_and_others_are_released(
    system: ActorSystem,
) -> None:
    """A facet whose on_deactivate/on_detach raise during stop is logged ("facet.hook_failed",
    error level, actor id, facet, hook); it and every other facet still get both hooks, and
    stop completes."""
    journal = Journal()
    timer = TrackedTimer(journal)
    ref = system.spawn(
        Host,
        journal,
        [(Tracer(journal, "low"), -10), (FaultyTeardown(journal), 0), (timer, 10)],
        actor_id="host",
    )
    with structlog.testing.capture_logs() as logs:
        assert ref.stop() is True
    for name in ("low", "faulty", "timer"):
        assert journal.of(name)[-2:] == ["deactivate", "detach"], name
    assert timer.released.is_set()
    assert timer.list_timers() == []
    failures = [
        (entry["log_level"], entry["actor_id"], entry["facet"], entry["hook"])
        for entry in logs
        if entry["event"] == "facet.hook_failed"
    ]
    assert sorted(failures) == [
        ("error", "host", "faulty", "on_deactivate"),
        ("error", "host", "faulty", "on_detach"),
    ]
    assert system.actor_ids() == []


def test_detaching_a_facet_whose_hooks_raise_still_detaches_it(system: ActorSystem) -> None:
    """detach_facet of a facet whose teardown hooks raise logs the failures and detaches it."""
    journal = Journal()
    ref = system.spawn(Host, journal, [(FaultyTeardown(journal), 0)], actor_id="host")
    with structlog.testing.capture_logs() as logs:
        assert ref.detach_facet("faulty") is True
    assert journal.of("faulty") == ["attach", "activate", "deactivate", "detach"]
    assert attached_types(system, "host") == []
    assert [entry["hook"] for entry in logs if entry["event"] == "facet.hook_failed"] == [
        "on_deactivate",
        "on_detach",
    ]
    assert ref.ask("ping", timeout=WAIT) == ("handled", "ping")
