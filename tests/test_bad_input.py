"""Bad input across the public API: every refusal is the documented error, names the bad value,
leaves nothing behind, and leaves the system working.

Each case checks four things:

1. the exception is the documented class (`ValueError`/`TypeError` for bad values and types, the
   `PlexSpacesError` subclasses where the README and docstrings name one);
2. the message names the bad value and, where the runtime says it, what is accepted;
3. nothing was stored or changed: timers (`list_timers`), reminders (`list_reminders` and the
   store's `list_actor`), the actor's facet set, the live actors, the virtual types, the clock;
4. the system still works: a valid registration, attach, spawn, fire or `ask` right after succeeds.

Everything runs on the `ManualClock` of the `system` fixture, except the construction cases (on
the real clock, to catch a leaked scheduler thread) and one `ask` that must time out (50 ms).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from facets.reminder import ReminderFacet
from facets.timer import TimerFacet, TimerRegistration
from facets.virtual_actor import VirtualActorFacet
from plexspaces import (
    Actor,
    ActorIdInUseError,
    ActorNotFoundError,
    ActorRef,
    ActorStoppedError,
    ActorSystem,
    AskTimeoutError,
    DuplicateFacetError,
    Facet,
    FacetConfigError,
    FacetError,
    FacetNotAttachedError,
    ManualClock,
    ReminderFired,
    StoreUnavailableError,
    TimerFired,
    UnknownFacetError,
    parse_duration,
)
from tests.conftest import START

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""

ACCEPTED_DURATIONS = "expected a timedelta, a non-negative number of seconds"
"""What the duration parser says it accepts, in every message about an unparseable duration."""

HUGE = "99999999d"
"""A duration `timedelta` can hold (273,790 years) but no `datetime` after 2026 can reach."""


def assert_message(error: BaseException, fragments: Sequence[str]) -> None:
    """Every fragment (the bad value's repr, what is accepted) appears in the message."""
    text = str(error)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} is not in the message {text!r}"


def case(name: str, *values: Any) -> Any:
    """One row of a parametrized table, with a readable id."""
    return pytest.param(*values, id=name)


# -- actors and facets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """Keeps the actor busy until `release` is set; `entered` is set once it is."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class Fail:
    """A message whose handler raises (ending the actor when it was sent with `tell`)."""


class Recorder(Actor):
    """Answers "ping", records timer and reminder fires, counts every other message."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.fires: list[tuple[str, str, int, Any]] = []

    def on_receive(self, message: Any) -> Any:
        match message:
            case "ping":
                return "pong"
            case "handled":
                return self.handled
            case "fires":
                return list(self.fires)
            case TimerFired():
                fire = ("timer", message.timer_name, message.fire_count, message.payload)
                self.fires.append(fire)
            case ReminderFired():
                fire = ("reminder", message.reminder_name, message.fire_count, message.payload)
                self.fires.append(fire)
            case Hold():
                message.entered.set()
                message.release.wait(WAIT)
            case Fail():
                raise RuntimeError(f"{self.ctx.actor_id} fails on request")
            case _:
                self.handled += 1
        return None


class AuditFacet(Facet):
    """A facet with no hooks, published under no entry point (its type is "audit")."""


class Plain(Recorder):
    """A virtual actor with only an `AuditFacet`, so every other facet type is free to attach."""

    def on_start(self) -> None:
        self.attach_facet(AuditFacet(), priority=10)


class Order(Recorder):
    """A virtual actor with a `ReminderFacet` (default config)."""

    reminder_config: ClassVar[dict[str, Any]] = {}

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), priority=20, config=self.reminder_config)


class StrictOrder(Order):
    """A virtual actor whose `ReminderFacet` has `min_period` one minute."""

    reminder_config: ClassVar[dict[str, Any]] = {"min_period": "1m"}


class NotJson:
    """A payload JSON cannot carry, with a stable repr."""

    def __repr__(self) -> str:
        return "<NotJson>"


def facet_set(system: ActorSystem, actor_id: str) -> list[tuple[Facet, str, int]]:
    """The actor's facets (by identity), their types and priorities, highest priority first."""
    return [(f, f.facet_type, f.facet_priority) for f in system.facet_service.list_facets(actor_id)]


def activate(system: ActorSystem, actor_type: str, key: str = "k") -> ActorRef:
    ref = system.virtual(actor_type, key)
    assert ref.ask("ping", timeout=WAIT) == "pong"
    return ref


def cyclic_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def cyclic_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"a": 1}
    mapping["self"] = mapping
    return mapping


# -- 1. parse_duration -----------------------------------------------------------------------------

DURATION_CASES = [
    case("no-unit", "5", ["'5'", ACCEPTED_DURATIONS]),
    case("negative-string", "-1s", ["'-1s'", ACCEPTED_DURATIONS]),
    case("unknown-unit", "1x", ["'1x'", ACCEPTED_DURATIONS]),
    case("trailing-number", "1s5", ["'1s5'", ACCEPTED_DURATIONS]),
    case("unit-only", "s", ["'s'", ACCEPTED_DURATIONS]),
    case("empty", "", ["''", ACCEPTED_DURATIONS]),
    case("blank", "   ", ["'   '", ACCEPTED_DURATIONS]),
    case("nan", math.nan, ["duration nan", ACCEPTED_DURATIONS]),
    case("inf", math.inf, ["duration inf", ACCEPTED_DURATIONS]),
    case("minus-inf", -math.inf, ["duration -inf", ACCEPTED_DURATIONS]),
    case("negative-int", -1, ["duration -1 ", ACCEPTED_DURATIONS]),
    case("negative-float", -0.5, ["duration -0.5", ACCEPTED_DURATIONS]),
    case("true", True, ["duration True", ACCEPTED_DURATIONS]),
    case("false", False, ["duration False", ACCEPTED_DURATIONS]),
    case("none", None, ["duration None", ACCEPTED_DURATIONS]),
    case("list", [1], ["duration [1]", ACCEPTED_DURATIONS]),
    case("bytes", b"1s", ["duration b'1s'", ACCEPTED_DURATIONS]),
    case("negative-timedelta", timedelta(seconds=-1), [repr(timedelta(seconds=-1)), "negative"]),
    case("huge-string", "9999999999d", ["'9999999999d'", "too large"]),
    case("iso-years", "P1Y", ["'P1Y'", "no fixed length"]),
    case("iso-months", "P2M", ["'P2M'", "no fixed length"]),
    case("unknown-unit-word", "5 minuets", ["'5 minuets'", ACCEPTED_DURATIONS]),
    case("huge-number", 1e20, ["1e+20", "too large"]),
]


@pytest.mark.parametrize(("value", "fragments"), DURATION_CASES)
def test_parse_duration_refuses_a_bad_value_naming_it(value: Any, fragments: list[str]) -> None:
    """A bad duration is a ValueError naming the value (and what is accepted); the parser's cache
    keeps nothing of it: good values parse as before and the same bad value fails again."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    assert_message(raised.value, fragments)
    # Nothing cached: the same value is refused again, and good values still parse.
    with pytest.raises(ValueError):
        parse_duration(value)
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration(2) == timedelta(seconds=2)


# -- 2. timers -------------------------------------------------------------------------------------

TIMER_CASES = [
    # interval
    case(
        "interval-no-unit",
        lambda t: t.register_periodic("keep", "5"),
        ValueError,
        ["'5'", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-negative",
        lambda t: t.register_periodic("keep", "-1s"),
        ValueError,
        ["'-1s'", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-unknown-unit",
        lambda t: t.register_periodic("keep", "1x"),
        ValueError,
        ["'1x'", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-nan",
        lambda t: t.register_periodic("keep", math.nan),
        ValueError,
        ["nan", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-inf",
        lambda t: t.register_periodic("keep", math.inf),
        ValueError,
        ["inf", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-bool",
        lambda t: t.register_periodic("keep", True),
        ValueError,
        ["True", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-none",
        lambda t: t.register_periodic("keep", None),
        ValueError,
        ["None", ACCEPTED_DURATIONS],
    ),
    case(
        "interval-zero",
        lambda t: t.register_periodic("keep", 0),
        ValueError,
        ["interval 0", "positive"],
    ),
    case(
        "interval-below-min-interval",
        lambda t: t.register_periodic("keep", "5ms"),
        ValueError,
        ["'5ms'", "min_interval", "10ms"],
    ),
    case(
        "interval-too-large-number",
        lambda t: t.register_periodic("keep", 1e20),
        ValueError,
        ["1e+20", "too large"],
    ),
    case(
        "interval-beyond-datetime",
        lambda t: t.register_periodic("keep", HUGE),
        ValueError,
        [repr(HUGE)],
    ),
    # due_time of a periodic timer
    case(
        "due-time-no-unit",
        lambda t: t.register_periodic("keep", "1s", due_time="5"),
        ValueError,
        ["due_time", "'5'", ACCEPTED_DURATIONS],
    ),
    case(
        "due-time-negative",
        lambda t: t.register_periodic("keep", "1s", due_time=-1),
        ValueError,
        ["due_time", "-1", ACCEPTED_DURATIONS],
    ),
    case(
        "due-time-beyond-datetime",
        lambda t: t.register_periodic("keep", "1s", due_time=HUGE),
        ValueError,
        [repr(HUGE)],
    ),
    # one-shot delay
    case(
        "delay-negative",
        lambda t: t.register_one_shot("keep", "-1s"),
        ValueError,
        ["delay", "'-1s'", ACCEPTED_DURATIONS],
    ),
    case(
        "delay-none",
        lambda t: t.register_one_shot("keep", None),
        ValueError,
        ["delay", "None", ACCEPTED_DURATIONS],
    ),
    case(
        "delay-nan",
        lambda t: t.register_one_shot("keep", math.nan),
        ValueError,
        ["delay", "nan", ACCEPTED_DURATIONS],
    ),
    case(
        "delay-beyond-datetime",
        lambda t: t.register_one_shot("keep", HUGE),
        ValueError,
        [repr(HUGE)],
    ),
    # names
    case(
        "name-empty",
        lambda t: t.register_one_shot("", "1s"),
        ValueError,
        ["timer name ''", "non-empty string"],
    ),
    case(
        "name-int",
        lambda t: t.register_periodic(42, "1s"),
        ValueError,
        ["timer name 42", "non-empty string"],
    ),
    case(
        "name-none",
        lambda t: t.register_one_shot(None, "1s"),
        ValueError,
        ["timer name None", "non-empty string"],
    ),
    # TimerRegistration
    case(
        "registration-not-a-registration",
        lambda t: t.register_timer(("keep", "1s")),
        TypeError,
        ["('keep', '1s')", "TimerRegistration"],
    ),
    case(
        "registration-periodic-without-interval",
        lambda t: t.register_timer(TimerRegistration("keep", periodic=True)),
        ValueError,
        ["'keep'", "needs an interval"],
    ),
    case(
        "registration-one-shot-with-interval",
        lambda t: t.register_timer(TimerRegistration("keep", interval="1s")),
        ValueError,
        ["'keep'", "'1s'", "periodic=True"],
    ),
    case(
        "registration-one-shot-without-delay",
        lambda t: t.register_timer(TimerRegistration("keep")),
        ValueError,
        ["'keep'", "needs due_time"],
    ),
    case(
        "registration-bad-interval",
        lambda t: t.register_timer(TimerRegistration("keep", interval="1x", periodic=True)),
        ValueError,
        ["'1x'", ACCEPTED_DURATIONS],
    ),
]


@pytest.mark.parametrize(("action", "error", "fragments"), TIMER_CASES)
def test_a_bad_timer_registration_is_refused_and_changes_nothing(
    system: ActorSystem,
    clock: ManualClock,
    action: Callable[[TimerFacet], Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    """A refused registration leaves the timers as they were (the timer "keep", whose name most
    cases reuse, is not replaced), and the facet goes on: a new timer registers and both fire."""
    ref = system.spawn(Recorder, actor_id="timers")
    timers = ref.attach_facet(TimerFacet(), priority=50, config={"min_interval": "10ms"})
    assert isinstance(timers, TimerFacet)
    timers.register_periodic("keep", "1s", payload={"n": 1})
    before = timers.list_timers()
    facets_before = facet_set(system, "timers")

    with pytest.raises(error) as raised:
        action(timers)

    assert_message(raised.value, fragments)
    assert timers.list_timers() == before
    assert timers.get_timer("keep") == before[0]
    assert len(timers) == 1
    assert facet_set(system, "timers") == facets_before
    timers.register_one_shot("after", "500ms", payload="a")
    clock.advance("1s")
    assert ref.ask("fires", timeout=WAIT) == [
        ("timer", "after", 1, "a"),
        ("timer", "keep", 1, {"n": 1}),
    ]
    assert ref.ask("handled", timeout=WAIT) == 0


# -- 3. reminders ----------------------------------------------------------------------------------

REMINDER_CASES = [
    # names
    case("name-empty", "order", {"name": ""}, ["reminder name ''", "non-empty string"]),
    case("name-int", "order", {"name": 7}, ["reminder name 7", "non-empty string"]),
    case("name-none", "order", {"name": None}, ["reminder name None", "non-empty string"]),
    # due
    case("due-no-unit", "order", {"due": "5"}, ["due", "'5'", ACCEPTED_DURATIONS]),
    case("due-negative", "order", {"due": "-1s"}, ["due", "'-1s'", ACCEPTED_DURATIONS]),
    case("due-unknown-unit", "order", {"due": "1x"}, ["due", "'1x'", ACCEPTED_DURATIONS]),
    case("due-nan", "order", {"due": math.nan}, ["due", "nan", ACCEPTED_DURATIONS]),
    case("due-inf", "order", {"due": math.inf}, ["due", "inf", ACCEPTED_DURATIONS]),
    case("due-bool", "order", {"due": True}, ["due", "True", ACCEPTED_DURATIONS]),
    case("due-none", "order", {"due": None}, ["due", "None", ACCEPTED_DURATIONS]),
    case(
        "due-naive-datetime",
        "order",
        {"due": datetime(2026, 1, 2)},
        [repr(datetime(2026, 1, 2)), "naive", "aware"],
    ),
    case("due-beyond-datetime", "order", {"due": HUGE}, ["due", repr(HUGE)]),
    case("due-beyond-datetime-seconds", "order", {"due": 1e12}, ["due", "1000000000000"]),
    # period
    case("period-zero", "order", {"period": "0s"}, ["period", "'0s'"]),
    case("period-below-min-period", "order", {"period": "500ms"}, ["'500ms'", "min_period"]),
    case(
        "period-below-configured-min-period",
        "strict",
        {"period": "30s"},
        ["'30s'", "min_period", "60s"],
    ),
    case("period-no-unit", "order", {"period": "5"}, ["period", "'5'", ACCEPTED_DURATIONS]),
    case("period-nan", "order", {"period": math.nan}, ["period", "nan", ACCEPTED_DURATIONS]),
    case("period-bool", "order", {"period": True}, ["period", "True", ACCEPTED_DURATIONS]),
    case("period-beyond-datetime", "order", {"period": HUGE}, ["period", repr(HUGE)]),
    # max_count
    case("max-count-zero", "order", {"max_count": 0}, ["max_count 0", "at least 1"]),
    case("max-count-negative", "order", {"max_count": -1}, ["max_count -1", "at least 1"]),
    case("max-count-bool", "order", {"max_count": True}, ["max_count True", "an int"]),
    case("max-count-float", "order", {"max_count": 2.0}, ["max_count 2.0", "an int"]),
    case("max-count-str", "order", {"max_count": "3"}, ["max_count '3'", "an int"]),
    # missed policy
    case("missed-unknown", "order", {"missed": "sometimes"}, ["'sometimes'", "once, skip, all"]),
    case("missed-upper-case", "order", {"missed": "ONCE"}, ["'ONCE'", "once, skip, all"]),
    case("missed-none", "order", {"missed": None}, ["missed None", "once, skip, all"]),
    # payloads
    case("payload-set", "order", {"payload": {1, 2}}, ["{1, 2}", "set", "not JSON"]),
    case("payload-object", "order", {"payload": NotJson()}, ["<NotJson>", "not JSON"]),
    case("payload-bytes", "order", {"payload": b"x"}, ["b'x'", "bytes", "not JSON"]),
    case(
        "payload-datetime",
        "order",
        {"payload": {"at": START}},
        [repr(START), "not JSON"],
    ),
    case("payload-nan", "order", {"payload": {"x": math.nan}}, ["['x']", "nan"]),
    case("payload-inf", "order", {"payload": [1, math.inf]}, ["[1]", "inf"]),
    case("payload-int-key", "order", {"payload": {1: "a"}}, ["dict key 1", "strings"]),
    case("payload-tuple-key", "order", {"payload": {(1, 2): "a"}}, ["dict key (1, 2)"]),
    case("payload-cyclic-list", "order", {"payload": cyclic_list()}, ["Circular reference"]),
    case("payload-cyclic-dict", "order", {"payload": cyclic_dict()}, ["Circular reference"]),
]


@pytest.mark.parametrize(("actor_type", "bad", "fragments"), REMINDER_CASES)
def test_a_bad_reminder_registration_is_refused_and_stores_nothing(
    system: ActorSystem,
    clock: ManualClock,
    actor_type: str,
    bad: dict[str, Any],
    fragments: list[str],
) -> None:
    """A refused registration is a ValueError naming the value; the store and the facet hold what
    they held (the reminder "keep", whose name most cases reuse, is neither replaced nor
    disarmed); a valid registration right after works, and both reminders fire on time."""
    system.register_virtual("order", Order)
    system.register_virtual("strict", StrictOrder)
    ref = activate(system, actor_type)
    reminders = system.facet_service.get_facet(ref.actor_id, ReminderFacet)
    reminders.register_reminder("keep", due="1m", payload={"v": 1})
    before = reminders.list_reminders()
    stored_before = system.reminders.list_actor(actor_type, "k")
    assert [info.name for info in stored_before] == ["keep"]

    call: dict[str, Any] = {"name": "keep", "due": "2m", **bad}
    name = call.pop("name")
    with pytest.raises(ValueError) as raised:
        reminders.register_reminder(name, **call)

    assert_message(raised.value, fragments)
    assert reminders.list_reminders() == before
    assert system.reminders.list_actor(actor_type, "k") == stored_before
    assert reminders.get_reminder("keep") == before[0]
    assert system.reminder_errors() == []
    reminders.register_reminder("after", due="30s", payload=["a"])
    assert [info.name for info in reminders.list_reminders()] == ["after", "keep"]
    clock.advance("1m")
    assert ref.ask("fires", timeout=WAIT) == [
        ("reminder", "after", 1, ["a"]),
        ("reminder", "keep", 1, {"v": 1}),
    ]
    assert reminders.list_reminders() == []


# -- 4. attaching facets ---------------------------------------------------------------------------


def attach_case(name: str, *row: Any) -> Any:
    """A row of ATTACH_CASES: (make, priority, config, error, fragments) as the factory of the
    facet spec, attach's keyword arguments, the error and the message fragments."""
    make, priority, config, error, fragments = row
    return pytest.param(make, {"priority": priority, "config": config}, error, fragments, id=name)


ATTACH_CASES = [
    # what is attached
    attach_case(
        "unknown-facet-name",
        lambda: "no_such_facet",
        0,
        None,
        UnknownFacetError,
        ["'no_such_facet'", "plexspaces.facets", "known:", "timer"],
    ),
    attach_case(
        "not-a-facet",
        lambda: 42,
        0,
        None,
        TypeError,
        ["facet 42", "Facet instance, a Facet subclass or an entry-point name"],
    ),
    attach_case(
        "actor-class-as-facet",
        lambda: Recorder,
        0,
        None,
        TypeError,
        ["Recorder", "Facet subclass"],
    ),
    # priority
    attach_case(
        "priority-str", TimerFacet, "50", None, FacetConfigError, ["priority '50'", "an int"]
    ),
    attach_case(
        "priority-bool", TimerFacet, True, None, FacetConfigError, ["priority True", "an int"]
    ),
    attach_case(
        "priority-float", TimerFacet, 1.5, None, FacetConfigError, ["priority 1.5", "an int"]
    ),
    attach_case(
        "priority-none", TimerFacet, None, None, FacetConfigError, ["priority None", "an int"]
    ),
    # config: not a mapping
    attach_case(
        "config-list",
        TimerFacet,
        0,
        ["min_interval"],
        FacetConfigError,
        ["['min_interval']", "mapping"],
    ),
    attach_case(
        "config-str",
        ReminderFacet,
        0,
        "min_period=1s",
        FacetConfigError,
        ["'min_period=1s'", "mapping"],
    ),
    # config: unknown keys
    attach_case(
        "config-unknown-key-timer",
        TimerFacet,
        0,
        {"min_intervall": "1ms"},
        FacetConfigError,
        ["'min_intervall'", "accepted keys: min_interval"],
    ),
    attach_case(
        "config-unknown-key-reminder",
        ReminderFacet,
        0,
        {"period": "1s"},
        FacetConfigError,
        ["'period'", "accepted keys: min_period"],
    ),
    attach_case(
        "config-unknown-key-virtual",
        VirtualActorFacet,
        0,
        {"idle": "5m"},
        FacetConfigError,
        ["'idle'", "accepted keys: idle_timeout, timers_keep_alive"],
    ),
    attach_case(
        "config-non-str-key",
        TimerFacet,
        0,
        {1: "1ms"},
        FacetConfigError,
        ["config key 1", "accepted keys: min_interval"],
    ),
    # config: ill-typed values
    attach_case(
        "min-interval-no-unit",
        TimerFacet,
        0,
        {"min_interval": "5"},
        FacetConfigError,
        ["'min_interval'", "'5'", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "min-interval-zero",
        TimerFacet,
        0,
        {"min_interval": 0},
        FacetConfigError,
        ["'min_interval'", "duration 0", "positive"],
    ),
    attach_case(
        "min-period-zero",
        ReminderFacet,
        0,
        {"min_period": "0s"},
        FacetConfigError,
        ["'min_period'", "'0s'", "positive"],
    ),
    attach_case(
        "min-period-none",
        ReminderFacet,
        0,
        {"min_period": None},
        FacetConfigError,
        ["'min_period'", "None", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-no-unit",
        VirtualActorFacet,
        0,
        {"idle_timeout": "5"},
        FacetConfigError,
        ["'idle_timeout'", "'5'", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-negative",
        VirtualActorFacet,
        0,
        {"idle_timeout": "-1s"},
        FacetConfigError,
        ["'idle_timeout'", "'-1s'", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-zero",
        VirtualActorFacet,
        0,
        {"idle_timeout": 0},
        FacetConfigError,
        ["'idle_timeout'", "duration 0", "positive"],
    ),
    attach_case(
        "idle-timeout-nan",
        VirtualActorFacet,
        0,
        {"idle_timeout": math.nan},
        FacetConfigError,
        ["'idle_timeout'", "nan", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-inf",
        VirtualActorFacet,
        0,
        {"idle_timeout": math.inf},
        FacetConfigError,
        ["'idle_timeout'", "inf", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-bool",
        VirtualActorFacet,
        0,
        {"idle_timeout": True},
        FacetConfigError,
        ["'idle_timeout'", "True", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "idle-timeout-none",
        VirtualActorFacet,
        0,
        {"idle_timeout": None},
        FacetConfigError,
        ["'idle_timeout'", "None", ACCEPTED_DURATIONS],
    ),
    attach_case(
        "timers-keep-alive-str",
        VirtualActorFacet,
        0,
        {"timers_keep_alive": "yes"},
        FacetConfigError,
        ["'timers_keep_alive'", "'yes'", "must be bool"],
    ),
    attach_case(
        "timers-keep-alive-int",
        VirtualActorFacet,
        0,
        {"timers_keep_alive": 1},
        FacetConfigError,
        ["'timers_keep_alive'", "got 1", "must be bool"],
    ),
]


@pytest.mark.parametrize(("make", "how", "error", "fragments"), ATTACH_CASES)
def test_a_bad_attach_is_refused_and_leaves_the_facet_set_unchanged(
    system: ActorSystem,
    make: Callable[[], Any],
    how: dict[str, Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    """A refused attach raises the documented facet error naming the value; the actor keeps
    exactly its facets; the refused instance is left unattached, and attaching it again with a
    valid priority and config works (so does the actor)."""
    system.register_virtual("plain", Plain)
    ref = activate(system, "plain")
    before = facet_set(system, "plain/k")
    spec = make()

    with pytest.raises(error) as raised:
        ref.attach_facet(spec, **how)

    assert_message(raised.value, fragments)
    assert facet_set(system, "plain/k") == before
    if isinstance(spec, Facet):
        assert spec.facet_ctx is None
        retry: Any = spec
    else:
        retry = "timer"  # what the bad spec stood for: attach a real facet instead
    attached = ref.attach_facet(retry, priority=5, config={})
    assert facet_set(system, "plain/k") == [*before, (attached, attached.facet_type, 5)]
    assert ref.ask("ping", timeout=WAIT) == "pong"


def test_attaching_a_second_facet_of_a_type_is_a_duplicate_facet_error(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A second facet of an attached type (by instance, class or entry-point name) raises
    DuplicateFacetError naming the actor and the type; the first facet stays, with its timers."""
    ref = system.spawn(Recorder, actor_id="dup")
    first = ref.attach_facet(TimerFacet(), priority=50)
    assert isinstance(first, TimerFacet)
    first.register_one_shot("keep", "1s")
    before = facet_set(system, "dup")

    for spec in (TimerFacet(), TimerFacet, "timer"):
        with pytest.raises(DuplicateFacetError) as raised:
            ref.attach_facet(spec, priority=1)
        assert_message(raised.value, ["'dup'", "'timer'", "detach it"])
        assert facet_set(system, "dup") == before
        assert [info.name for info in first.list_timers()] == ["keep"]

    clock.advance("1s")
    assert ref.ask("fires", timeout=WAIT) == [("timer", "keep", 1, None)]
    assert ref.detach_facet("timer") is True
    assert isinstance(ref.attach_facet("timer"), TimerFacet)


def test_attaching_an_instance_already_attached_elsewhere_is_refused(system: ActorSystem) -> None:
    """One facet instance serves one actor: attaching it to a second actor raises FacetError
    naming the facet; both actors keep their facet sets, and a new instance attaches."""
    owner = system.spawn(Recorder, actor_id="owner")
    other = system.spawn(Recorder, actor_id="other")
    timers = owner.attach_facet(TimerFacet())
    owner_before, other_before = facet_set(system, "owner"), facet_set(system, "other")

    with pytest.raises(FacetError) as raised:
        other.attach_facet(timers)

    assert_message(raised.value, ["TimerFacet", "'owner'", "already attached", "new instance"])
    assert facet_set(system, "owner") == owner_before
    assert facet_set(system, "other") == other_before
    assert timers.facet_ctx is not None
    assert timers.facet_ctx.actor_id == "owner"
    assert isinstance(other.attach_facet(TimerFacet()), TimerFacet)


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        case(
            "reminder-instance", ReminderFacet, ["ReminderFacet", "'spawned'", "register_virtual"]
        ),
        case("reminder-by-name", lambda: "reminder", ["ReminderFacet", "'spawned'"]),
        case("reminder-class", lambda: ReminderFacet, ["ReminderFacet", "'spawned'"]),
        case(
            "virtual-actor-instance",
            VirtualActorFacet,
            ["VirtualActorFacet", "'spawned'", "register_virtual"],
        ),
    ],
)
def test_a_virtual_only_facet_on_a_spawned_actor_is_a_facet_error(
    system: ActorSystem, clock: ManualClock, make: Callable[[], Any], fragments: list[str]
) -> None:
    """ReminderFacet (and VirtualActorFacet) on a plainly spawned actor raise FacetError naming the
    actor and the way out (register_virtual); nothing is attached or stored, the actor goes on,
    and the refused facet attaches to a virtual actor."""
    ref = system.spawn(Recorder, actor_id="spawned")
    ref.attach_facet(AuditFacet())
    before = facet_set(system, "spawned")
    spec = make()

    with pytest.raises(FacetError) as raised:
        ref.attach_facet(spec)

    assert_message(raised.value, fragments)
    assert facet_set(system, "spawned") == before
    assert ref.ask("ping", timeout=WAIT) == "pong"
    system.register_virtual("plain", Plain)
    virtual = activate(system, "plain")
    if isinstance(spec, Facet):
        assert spec.facet_ctx is None
    attached = virtual.attach_facet(spec)
    if isinstance(attached, ReminderFacet):
        assert system.reminders.list_actor("plain", "k") == []  # nothing stored by the refusal
        attached.register_reminder("r", due="1s")
        clock.advance("1s")
        assert virtual.ask("fires", timeout=WAIT) == [("reminder", "r", 1, None)]


# -- 5. facet lookup and detach --------------------------------------------------------------------

LOOKUP_CASES = [
    case(
        "detach-not-a-type",
        lambda system, ref: ref.detach_facet(42),
        TypeError,
        ["facet 42", "type name (str) or a Facet subclass"],
    ),
    case(
        "get-facet-not-attached-by-name",
        lambda system, ref: system.facet_service.get_facet("looked-up", "timer"),
        FacetNotAttachedError,
        ["'looked-up'", "'timer'", "attached: audit"],
    ),
    case(
        "get-facet-not-attached-by-class",
        lambda system, ref: system.facet_service.get_facet("looked-up", TimerFacet),
        FacetNotAttachedError,
        ["'looked-up'", "'TimerFacet'", "attached: audit"],
    ),
    case(
        "get-facet-not-a-type",
        lambda system, ref: system.facet_service.get_facet("looked-up", 42),
        TypeError,
        ["facet 42", "Facet subclass"],
    ),
    case(
        "get-facet-unknown-actor",
        lambda system, ref: system.facet_service.get_facet("nobody", "audit"),
        ActorNotFoundError,
        ["'nobody'"],
    ),
    case(
        "list-facets-unknown-actor",
        lambda system, ref: system.facet_service.list_facets("nobody"),
        ActorNotFoundError,
        ["'nobody'"],
    ),
    case(
        "timer-facet-never-attached",
        lambda system, ref: TimerFacet().register_one_shot("t", "1s"),
        FacetNotAttachedError,
        ["TimerFacet", "not attached", "attach_facet"],
    ),
    case(
        "reminder-facet-never-attached",
        lambda system, ref: ReminderFacet().register_reminder("r", due="1s"),
        FacetNotAttachedError,
        ["ReminderFacet", "not attached", "attach_facet"],
    ),
]


@pytest.mark.parametrize(("action", "error", "fragments"), LOOKUP_CASES)
def test_a_bad_facet_lookup_or_detach_raises_and_changes_nothing(
    system: ActorSystem,
    action: Callable[[ActorSystem, ActorRef], Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    """Looking up or detaching what is not there raises the documented error naming it; the
    actor's facets are unchanged and attaching and detaching still work."""
    ref = system.spawn(Recorder, actor_id="looked-up")
    ref.attach_facet(AuditFacet(), priority=3)
    before = facet_set(system, "looked-up")

    with pytest.raises(error) as raised:
        action(system, ref)

    assert_message(raised.value, fragments)
    assert facet_set(system, "looked-up") == before
    timers = ref.attach_facet("timer")
    assert system.facet_service.get_facet("looked-up", TimerFacet) is timers
    assert ref.detach_facet(TimerFacet) is True
    assert facet_set(system, "looked-up") == before


@pytest.mark.parametrize("spec", ["timer", TimerFacet, "no_such_facet"], ids=repr)
def test_detaching_a_facet_that_is_not_attached_returns_false(
    system: ActorSystem, spec: Any
) -> None:
    """detach_facet of a type that is not attached is documented to return False, not raise; the
    facet set is unchanged and a real detach still works."""
    ref = system.spawn(Recorder, actor_id="detach")
    ref.attach_facet(AuditFacet())
    before = facet_set(system, "detach")

    assert ref.detach_facet(spec) is False

    assert facet_set(system, "detach") == before
    assert ref.detach_facet("audit") is True
    assert facet_set(system, "detach") == []
    assert ref.ask("ping", timeout=WAIT) == "pong"


# -- 6. actor ids, classes and virtual types -------------------------------------------------------


class OtherActor(Actor):
    """Not the class "plain" is registered to."""


NAMING_CASES = [
    case(
        "spawn-virtual-style-id",
        lambda s: s.spawn(Recorder, actor_id="plain/k"),
        ValueError,
        ["actor_id 'plain/k'", "'/'", "virtual actors"],
    ),
    case(
        "spawn-empty-id",
        lambda s: s.spawn(Recorder, actor_id=""),
        ValueError,
        ["actor_id ''", "non-empty string"],
    ),
    case(
        "spawn-int-id",
        lambda s: s.spawn(Recorder, actor_id=5),
        ValueError,
        ["actor_id 5", "non-empty string"],
    ),
    case(
        "spawn-live-id",
        lambda s: s.spawn(Recorder, actor_id="live"),
        ActorIdInUseError,
        ["'live'", "already running"],
    ),
    case(
        "spawn-not-a-class",
        lambda s: s.spawn(Recorder()),
        TypeError,
        ["Recorder object", "subclass of plexspaces.Actor"],
    ),
    case(
        "spawn-object",
        lambda s: s.spawn(object),
        TypeError,
        ["<class 'object'>", "subclass of plexspaces.Actor"],
    ),
    case(
        "spawn-facet-class",
        lambda s: s.spawn(TimerFacet),
        TypeError,
        ["TimerFacet", "subclass of plexspaces.Actor"],
    ),
    case(
        "register-type-with-slash",
        lambda s: s.register_virtual("a/b", Recorder),
        ValueError,
        ["'a/b'", "without '/'"],
    ),
    case(
        "register-empty-type",
        lambda s: s.register_virtual("", Recorder),
        ValueError,
        ["virtual actor type ''", "non-empty string"],
    ),
    case(
        "register-none-type",
        lambda s: s.register_virtual(None, Recorder),
        ValueError,
        ["virtual actor type None", "non-empty string"],
    ),
    case(
        "register-non-actor-class",
        lambda s: s.register_virtual("things", dict),
        TypeError,
        ["<class 'dict'>", "subclass of plexspaces.Actor"],
    ),
    case(
        "register-type-to-another-class",
        lambda s: s.register_virtual("plain", OtherActor),
        ValueError,
        ["'plain'", "already registered", "Plain", "OtherActor"],
    ),
    case(
        "virtual-empty-key",
        lambda s: s.virtual("plain", ""),
        ValueError,
        ["virtual actor key ''", "non-empty string"],
    ),
    case(
        "virtual-int-key",
        lambda s: s.virtual("plain", 5),
        ValueError,
        ["virtual actor key 5", "non-empty string"],
    ),
    case(
        "virtual-none-key",
        lambda s: s.virtual("plain", None),
        ValueError,
        ["virtual actor key None", "non-empty string"],
    ),
    case(
        "virtual-unregistered-type",
        lambda s: s.virtual("nope", "k"),
        ActorNotFoundError,
        ["'nope'", "not registered", "registered: plain", "register_virtual"],
    ),
]


@pytest.mark.parametrize(("action", "error", "fragments"), NAMING_CASES)
def test_a_bad_actor_id_class_or_virtual_name_is_refused(
    system: ActorSystem,
    action: Callable[[ActorSystem], Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    """Bad ids, classes, type names and keys raise the documented error naming the value; no
    actor is started, no type registered or replaced, and spawning, registering and activating
    still work (including the id that was refused as in use, once it is free)."""
    system.register_virtual("plain", Plain)
    live = system.spawn(Recorder, actor_id="live")
    actors_before = sorted(system.actor_ids())
    types_before = system.virtual_types()

    with pytest.raises(error) as raised:
        action(system)

    assert_message(raised.value, fragments)
    assert sorted(system.actor_ids()) == actors_before
    assert system.virtual_types() == types_before
    assert live.ask("ping", timeout=WAIT) == "pong"
    assert system.spawn(Recorder, actor_id="fresh").ask("ping", timeout=WAIT) == "pong"
    assert activate(system, "plain").actor_id == "plain/k"
    system.register_virtual("later", Recorder)
    assert system.virtual("later", "x").ask("ping", timeout=WAIT) == "pong"
    live.stop()
    assert system.spawn(Recorder, actor_id="live").ask("ping", timeout=WAIT) == "pong"


# -- 7. messages to stopped actors -----------------------------------------------------------------

STOPPED_CASES = [
    case("tell", lambda ref, timers: ref.tell("hello"), ["'worker'", "not running"]),
    case("ask", lambda ref, timers: ref.ask("ping", timeout=WAIT), ["'worker'", "not running"]),
    case(
        "attach-facet",
        lambda ref, timers: ref.attach_facet(AuditFacet()),
        ["'worker'", "not running"],
    ),
    case(
        "detach-facet",
        lambda ref, timers: ref.detach_facet("timer"),
        ["'worker'", "not running"],
    ),
    case(
        "register-timer",
        lambda ref, timers: timers.register_one_shot("late", "1s"),
        ["'worker'", "no longer running"],
    ),
]


@pytest.mark.parametrize("ending", ["stop", "failure"])
@pytest.mark.parametrize(("action", "fragments"), STOPPED_CASES)
def test_using_a_stopped_actor_raises_actor_stopped_error(
    system: ActorSystem,
    clock: ManualClock,
    ending: str,
    action: Callable[[ActorRef, TimerFacet], Any],
    fragments: list[str],
) -> None:
    """After stop() or a failing tell, tell/ask/attach/detach and its timer facet raise
    ActorStoppedError naming the actor; nothing of it remains (id free, timers gone, nothing
    fires), and a new actor under the same id works."""
    ref = system.spawn(Recorder, actor_id="worker")
    timers = ref.attach_facet(TimerFacet())
    assert isinstance(timers, TimerFacet)
    timers.register_periodic("beat", "1s")
    if ending == "stop":
        assert ref.stop() is True
    else:
        ref.tell(Fail())
        assert ref.wait_stopped(WAIT)

    with pytest.raises(ActorStoppedError) as raised:
        action(ref, timers)

    assert_message(raised.value, fragments)
    assert "worker" not in system.actor_ids()
    assert system.lookup("worker") is None
    assert timers.list_timers() == []
    assert ref.stop() is False
    clock.advance("2s")  # nothing fires into the dead actor
    again = system.spawn(Recorder, actor_id="worker")
    fresh = again.attach_facet(TimerFacet())
    fresh.register_one_shot("t", "1s")
    clock.advance("1s")
    assert again.ask("fires", timeout=WAIT) == [("timer", "t", 1, None)]


# -- 8. ask, stop and wait timeouts ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["spawned", "virtual"])
def test_an_ask_without_an_answer_in_time_raises_ask_timeout_error(
    system: ActorSystem, kind: str
) -> None:
    """An ask to a busy actor raises AskTimeoutError (a TimeoutError) naming the actor, the
    message and the timeout; the actor goes on and answers the next ask."""
    system.register_virtual("plain", Plain)
    ref = (
        system.spawn(Recorder, actor_id="slow") if kind == "spawned" else activate(system, "plain")
    )
    hold = Hold()
    ref.tell(hold)
    assert hold.entered.wait(WAIT)
    started = time.monotonic()

    with pytest.raises(AskTimeoutError) as raised:
        ref.ask("ping", timeout="50ms")

    assert time.monotonic() - started < WAIT
    assert isinstance(raised.value, TimeoutError)
    assert_message(raised.value, [repr(ref.actor_id), "'ping'", "'50ms'"])
    hold.release.set()
    assert ref.ask("ping", timeout=WAIT) == "pong"
    assert ref.is_alive()


BAD_TIMEOUTS = [
    case("no-unit", "5", ["'5'", ACCEPTED_DURATIONS]),
    case("negative", -1, ["-1", ACCEPTED_DURATIONS]),
    case("negative-string", "-1s", ["'-1s'", ACCEPTED_DURATIONS]),
    case("unknown-unit", "1x", ["'1x'", ACCEPTED_DURATIONS]),
    case("nan", math.nan, ["nan", ACCEPTED_DURATIONS]),
    case("bool", True, ["True", ACCEPTED_DURATIONS]),
    case("inf", math.inf, ["inf"]),
    case("too-large-number", 1e20, ["1e+20"]),
    case("beyond-datetime", HUGE, [repr(HUGE)]),
]


@pytest.mark.parametrize("kind", ["spawned", "virtual"])
@pytest.mark.parametrize(("timeout", "fragments"), BAD_TIMEOUTS)
def test_an_ask_with_a_bad_timeout_is_a_value_error_and_sends_nothing(
    system: ActorSystem, kind: str, timeout: Any, fragments: list[str]
) -> None:
    """A bad ask timeout is a ValueError naming it, raised before anything is sent: the actor
    handled no message (a virtual one is not even activated), and a valid ask works."""
    system.register_virtual("plain", Plain)
    if kind == "spawned":
        ref: ActorRef = system.spawn(Recorder, actor_id="asked")
        actors_before = sorted(system.actor_ids())
    else:
        ref = system.virtual("plain", "k")
        actors_before = sorted(system.actor_ids())
        assert "plain/k" not in actors_before

    with pytest.raises(ValueError) as raised:
        ref.ask("hello", timeout=timeout)

    assert_message(raised.value, fragments)
    assert sorted(system.actor_ids()) == actors_before
    assert ref.ask("handled", timeout=WAIT) == 0
    assert ref.ask("ping", timeout=1.5) == "pong"


@pytest.mark.parametrize(
    ("method", "timeout", "fragments"),
    [
        case("stop-no-unit", "stop", "5", ["'5'", ACCEPTED_DURATIONS]),
        case("stop-negative", "stop", -1, ["-1", ACCEPTED_DURATIONS]),
        case("stop-inf", "stop", math.inf, ["inf"]),
        case("wait-stopped-no-unit", "wait_stopped", "5", ["'5'", ACCEPTED_DURATIONS]),
        case("wait-stopped-nan", "wait_stopped", math.nan, ["nan", ACCEPTED_DURATIONS]),
        case("wait-stopped-inf", "wait_stopped", math.inf, ["inf"]),
    ],
)
def test_a_bad_stop_or_wait_timeout_is_a_value_error_and_the_actor_runs_on(
    system: ActorSystem, method: str, timeout: Any, fragments: list[str]
) -> None:
    """stop/wait_stopped with a bad timeout raise ValueError naming it and do nothing: the actor
    is still alive and answers; a valid stop then works."""
    ref = system.spawn(Recorder, actor_id="stoppable")

    with pytest.raises(ValueError) as raised:
        getattr(ref, method)(timeout=timeout)

    assert_message(raised.value, fragments)
    assert ref.is_alive()
    assert ref.ask("ping", timeout=WAIT) == "pong"
    assert ref.stop(timeout=WAIT) is True
    assert ref.wait_stopped(timeout="1s") is True


# -- 9. shutdown timeout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "fragments"),
    [
        case("no-unit", "5", ["'5'", ACCEPTED_DURATIONS]),
        case("negative", -1, ["-1", ACCEPTED_DURATIONS]),
        case("nan", math.nan, ["nan", ACCEPTED_DURATIONS]),
        case("inf", math.inf, ["inf", ACCEPTED_DURATIONS]),
        case("bool", True, ["True", ACCEPTED_DURATIONS]),
        case("unknown-unit", "1x", ["'1x'", ACCEPTED_DURATIONS]),
    ],
)
def test_a_bad_shutdown_timeout_is_a_value_error_and_shuts_nothing_down(
    system: ActorSystem, clock: ManualClock, timeout: Any, fragments: list[str]
) -> None:
    """shutdown() with a bad timeout raises ValueError naming it before stopping anything: the
    system is not shut down, its actors and timers run, and new actors spawn."""
    ref = system.spawn(Recorder, actor_id="survivor")
    timers = ref.attach_facet(TimerFacet())
    timers.register_one_shot("t", "1s")

    with pytest.raises(ValueError) as raised:
        system.shutdown(timeout=timeout)

    assert_message(raised.value, fragments)
    assert not system.is_shut_down
    assert system.actor_ids() == ["survivor"]
    clock.advance("1s")
    assert ref.ask("fires", timeout=WAIT) == [("timer", "t", 1, None)]
    assert system.spawn(Recorder).ask("ping", timeout=WAIT) == "pong"


# -- 10. constructing a system ---------------------------------------------------------------------

SYSTEM_CASES = [
    case("clock-str", {"clock": "manual"}, TypeError, ["clock 'manual'", "Clock"]),
    case("clock-class", {"clock": ManualClock}, TypeError, ["ManualClock'>", "Clock"]),
    case("clock-function", {"clock": time.time}, TypeError, ["built-in function time", "Clock"]),
    case("url-empty", {"storage_url": ""}, ValueError, ["storage_url ''", "SQLAlchemy URL"]),
    case("url-blank", {"storage_url": "   "}, ValueError, ["storage_url '   '", "SQLAlchemy URL"]),
    case(
        "url-not-a-url",
        {"storage_url": "not a url"},
        ValueError,
        ["'not a url'", "SQLAlchemy URL", "sqlite:///"],
    ),
    case(
        "url-file-path",
        {"storage_url": "/var/lib/plexspaces.db"},
        ValueError,
        ["'/var/lib/plexspaces.db'", "SQLAlchemy URL", "sqlite:///"],
    ),
    case("url-int", {"storage_url": 5}, ValueError, ["storage_url 5", "SQLAlchemy URL"]),
    case(
        "url-unsupported-database",
        {"storage_url": "mysql://app:secret@db/app"},
        ValueError,
        ["'mysql://app:***@db/app'", "'mysql'", "supported", "postgresql+psycopg://"],
    ),
    case(
        "url-unknown-driver",
        {"storage_url": "postgresql+nosuchdriver://app@db/app"},
        ValueError,
        ["'postgresql+nosuchdriver://app@db/app'", "driver", "postgresql+psycopg://"],
    ),
    case(
        "url-driver-not-installed",
        {"storage_url": "postgresql+psycopg2://app:secret@db/app"},
        ModuleNotFoundError,
        [
            "'postgresql+psycopg2://app:***@db/app'",
            "not installed",
            "plexspaces-facets[postgresql]",
        ],
    ),
    case("lease-no-unit", {"lease": "5"}, ValueError, ["lease", "'5'", ACCEPTED_DURATIONS]),
    case("lease-negative", {"lease": "-1s"}, ValueError, ["lease", "'-1s'", ACCEPTED_DURATIONS]),
    case("lease-zero", {"lease": 0}, ValueError, ["lease", "duration 0", "positive"]),
    case("lease-nan", {"lease": math.nan}, ValueError, ["lease", "nan", ACCEPTED_DURATIONS]),
    case("lease-inf", {"lease": math.inf}, ValueError, ["lease", "inf", ACCEPTED_DURATIONS]),
    case("lease-bool", {"lease": True}, ValueError, ["lease", "True", ACCEPTED_DURATIONS]),
    case("lease-none", {"lease": None}, ValueError, ["lease", "None", ACCEPTED_DURATIONS]),
    case("node-id-empty", {"node_id": ""}, ValueError, ["node_id ''", "non-empty string"]),
    case("node-id-blank", {"node_id": " "}, ValueError, ["node_id ' '", "non-empty string"]),
    case("node-id-int", {"node_id": 7}, ValueError, ["node_id 7", "non-empty string"]),
]


@pytest.mark.parametrize(("kwargs", "error", "fragments"), SYSTEM_CASES)
def test_a_system_with_a_bad_argument_is_not_created(
    tmp_path: Path,
    make_system: Callable[..., ActorSystem],
    kwargs: dict[str, Any],
    error: type[Exception],
    fragments: list[str],
) -> None:
    """ActorSystem(...) with a bad clock, storage URL, lease or node id raises the documented error
    naming the value; it starts no thread and creates no database file; a system with valid
    arguments on the same path then works. (On the real clock, to catch a leaked scheduler.)"""
    database = tmp_path / "bad.db"
    arguments: dict[str, Any] = {"storage_url": f"sqlite:///{database}", **kwargs}
    threads_before = set(threading.enumerate())

    with pytest.raises(error) as raised:
        ActorSystem(**arguments)

    assert_message(raised.value, fragments)
    assert set(threading.enumerate()) - threads_before == set()
    assert not database.exists()
    system = make_system(storage_url=f"sqlite:///{database}", clock=ManualClock(start=START))
    assert system.spawn(Recorder).ask("ping", timeout=WAIT) == "pong"


# -- 11. the ManualClock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        case("start-naive", {"start": datetime(2026, 1, 1)}, ["2026, 1, 1", "aware datetime"]),
        case("start-str", {"start": "2026-01-01"}, ["'2026-01-01'", "aware datetime"]),
        case("start-number", {"start": 0}, ["start 0", "aware datetime"]),
        case("handoff-no-unit", {"handoff_timeout": "5"}, ["'5'", ACCEPTED_DURATIONS]),
        case("handoff-negative", {"handoff_timeout": -1}, ["-1", ACCEPTED_DURATIONS]),
    ],
)
def test_a_manual_clock_with_a_bad_argument_is_a_value_error(
    make_system: Callable[..., ActorSystem], kwargs: dict[str, Any], fragments: list[str]
) -> None:
    """ManualClock(...) with a naive or non-datetime start, or a bad handoff_timeout, raises
    ValueError naming it; a valid clock then drives a system."""
    with pytest.raises(ValueError) as raised:
        ManualClock(**kwargs)

    assert_message(raised.value, fragments)
    clock = ManualClock(start=START, handoff_timeout="2s")
    system = make_system(clock=clock)
    ref = system.spawn(Recorder)
    ref.attach_facet(TimerFacet()).register_one_shot("t", "1s")
    clock.advance("1s")
    assert ref.ask("fires", timeout=WAIT) == [("timer", "t", 1, None)]


@pytest.mark.parametrize(
    ("step", "fragments"),
    [
        case("no-unit", "5", ["'5'", ACCEPTED_DURATIONS]),
        case("negative", -1, ["-1", ACCEPTED_DURATIONS]),
        case(
            "negative-timedelta",
            timedelta(seconds=-1),
            [repr(timedelta(seconds=-1)), "negative"],
        ),
        case("nan", math.nan, ["nan", ACCEPTED_DURATIONS]),
        case("inf", math.inf, ["inf", ACCEPTED_DURATIONS]),
        case("none", None, ["None", ACCEPTED_DURATIONS]),
        case("beyond-datetime", HUGE, [repr(HUGE)]),
    ],
)
def test_advancing_the_clock_by_a_bad_step_is_a_value_error_and_time_stands_still(
    system: ActorSystem, clock: ManualClock, step: Any, fragments: list[str]
) -> None:
    """advance() with a bad step raises ValueError naming it; time did not move and nothing
    fired; a valid advance then fires what falls due."""
    ref = system.spawn(Recorder, actor_id="clocked")
    timers = ref.attach_facet(TimerFacet())
    timers.register_one_shot("t", "1s")

    with pytest.raises(ValueError) as raised:
        clock.advance(step)

    assert_message(raised.value, fragments)
    assert clock.now() == START
    assert ref.ask("fires", timeout=WAIT) == []
    assert [info.name for info in timers.list_timers()] == ["t"]
    clock.advance("1s")
    assert clock.now() == START + timedelta(seconds=1)
    assert ref.ask("fires", timeout=WAIT) == [("timer", "t", 1, None)]


# -- 12. a database that cannot be reached ------------------------------------------------------


class Registrar(Actor):
    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return "pong"
        return self.facet(ReminderFacet).register_reminder(message, due="1m")


def test_a_store_that_cannot_be_reached_is_a_clear_error_and_the_system_runs_on(
    make_system: Callable[..., ActorSystem],
) -> None:
    """A PostgreSQL URL with no server behind it: the system is created (the store opens on
    first use), its first use raises StoreUnavailableError naming the URL without the password,
    and the actors that need no store keep working."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://app:secret@127.0.0.1:{port}/app"
    system = make_system(storage_url=url, clock=ManualClock(start=START))
    with pytest.raises(StoreUnavailableError) as raised:
        system.register_virtual("registrar", Registrar)
    assert_message(raised.value, [f"127.0.0.1:{port}/app", "unavailable"])
    assert "secret" not in str(raised.value)
    assert isinstance(raised.value, ConnectionError)
    assert system.spawn(Recorder).ask("ping", timeout=WAIT) == "pong"
    with pytest.raises(StoreUnavailableError):
        system.reminder_errors()


def test_postgres_and_postgresql_urls_use_the_psycopg_driver(pg_url: str) -> None:
    """A DATABASE_URL-style 'postgres://' or 'postgresql://' URL is accepted and stored under
    the psycopg 3 driver the store uses; reminders work through it."""
    from sqlalchemy.engine import make_url

    from plexspaces._store import SqlReminderStore

    base = make_url(pg_url)
    for scheme in ("postgres", "postgresql"):
        url = base.set(drivername=scheme).render_as_string(hide_password=False)
        with ActorSystem(storage_url=url, node_id=f"n-{scheme}") as system:
            assert system.storage_url.startswith("postgresql+psycopg://")
            assert system.reminders.list_actor("t", "k") == []
        store = SqlReminderStore(url)
        try:
            assert store.engine.dialect.driver == "psycopg"
            assert store.count() == 0
        finally:
            store.close()
