"""Virtual actors and `VirtualActorFacet`: registration, addressing, activation on demand, one
activation per key, idle deactivation on the ManualClock, and what happens to messages while an
activation closes.

Virtual actors are made with no constructor arguments, so each test binds its shared `Journal` to
a fresh subclass of a helper actor (`bound`). An `ask` is the sync point; `idle_sync` waits for
an actor without counting as activity for the idle timeout.
"""

from __future__ import annotations

import functools
import random
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import pytest
import structlog.testing

from facets.timer import TimerFacet
from facets.virtual_actor import DEFAULT_IDLE_TIMEOUT, VirtualActorFacet
from plexspaces import (
    Actor,
    ActorContext,
    ActorNotFoundError,
    ActorSystem,
    AskTimeoutError,
    Facet,
    FacetConfigError,
    FacetError,
    ManualClock,
    PlexSpacesError,
    SystemShutdownError,
    TimerFired,
    VirtualActorRef,
)
from tests.conftest import START

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""

OVERLAP = 0.1
"""Seconds a test lets another thread run into a window it holds open (a blocked on_stop or
handler). Only widens the window; every assertion holds whichever way the threads interleave."""

A = TypeVar("A", bound=Actor)


class Boom(Exception):
    """The failure helper actors raise on request."""


class Journal:
    """Shared by a test and its actors: what happened, in order, and the events that gate them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.entries: list[tuple[Any, ...]] = []
        self._activations: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self.holding = threading.Event()  # set once a "hold" handler has begun
        self.gate = threading.Event()  # opens a "hold" handler
        self.stopping = threading.Event()  # set once a SlowStop's on_stop has begun
        self.release = threading.Event()  # lets a SlowStop's on_stop finish

    def add(self, *entry: Any) -> None:
        with self._changed:
            self.entries.append(entry)
            self._changed.notify_all()

    def next_activation(self, key: str) -> int:
        with self._changed:
            self._activations[key] += 1
            return self._activations[key]

    def next_attempt(self, key: str) -> int:
        with self._changed:
            self._attempts[key] += 1
            return self._attempts[key]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self._changed:
            return [entry for entry in self.entries if entry[0] == kind]

    def index(self, *entry: Any) -> int:
        with self._changed:
            return self.entries.index(entry)

    def wait_until(self, predicate: Callable[[Journal], bool], timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)


def bound(cls: type[A], journal: Journal | None = None, **attributes: Any) -> type[A]:
    """A subclass of `cls` with `journal` (and `attributes`) as class attributes: a virtual actor
    is made with no constructor arguments, so this is how it reaches its test's journal."""
    return type(cls.__name__, (cls,), {"journal": journal, **attributes})


def idle_sync(ref: VirtualActorRef) -> None:
    """Wait until an active virtual actor handled everything in its mailbox, without counting as
    activity: a facet call from outside runs on the actor's thread as a control message, which
    facets never see. Twice, so a deactivation decided by an idle check the first call waited for
    is visible by the time this returns (the second call then fails, or finds on_stop done)."""
    for _ in range(2):
        assert ref.detach_facet("no-such-facet") is False


def bounded(call: Callable[[], Any], seconds: float = WAIT) -> Any:
    """Run `call` on a daemon thread and return its result (or raise its exception); fail the test
    if it has not returned within `seconds`, so a hang fails instead of stalling the suite."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # handed to the test thread
            outcome.append((False, error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"{call!r} did not return within {seconds}s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def tell_and_sync(ref: VirtualActorRef, message: Any) -> None:
    """Tell `message` and wait until it was handled, so the activity it counts as is stamped at
    the current virtual time (an actor reads the clock when it handles a message)."""
    ref.tell(message)
    assert ref.ask("ping", timeout=WAIT) == "pong"


# -- helper actors and facets ----------------------------------------------------------------------


class Order(Actor):
    """Records its lifecycle (per key and activation number) and the messages it handles."""

    journal: ClassVar[Journal]

    def on_start(self) -> None:
        self.key = self.ctx.actor_key or self.ctx.actor_id
        self.activation = self.journal.next_activation(self.key)
        self.handled: list[Any] = []
        self.stop_message: Any = None
        self.journal.add("on_start", self.key, self.activation)

    def on_receive(self, message: Any) -> Any:
        match message:
            case "ping":
                return "pong"
            case "report":
                return (self.activation, list(self.handled))
            case "whoami":
                ctx = self.ctx
                return (ctx.actor_id, ctx.actor_type, ctx.actor_key, ctx.ref)
            case "boom":
                raise Boom(f"boom in {self.ctx.actor_id}")
            case "hold":
                self.journal.holding.set()
                self.journal.gate.wait(WAIT)
                return None
            case "deactivate":
                return self.ctx.deactivate()
            case ("deactivate-then-tell-self", note):
                deactivated = self.ctx.deactivate()
                self.ctx.ref.tell(note)
                return deactivated
            case "deactivate-if-idle":
                result = self.ctx.deactivate(if_idle=True)
                self.journal.add("if_idle", self.key, self.activation, result)
                return result
            case "hold-then-detach-idle":
                self.journal.holding.set()
                self.journal.gate.wait(WAIT)
                self.detach_facet(VirtualActorFacet)
                return None
            case ("tell-self-on-stop", note):
                self.stop_message = note
                return None
            case "ask-self":
                return self._ask_self()
            case TimerFired():
                self.journal.add("fired", self.key, self.activation, self.ctx.clock.now())
                return None
        self.handled.append(message)
        return None

    def _ask_self(self) -> list[Any]:
        ctx = self.ctx
        outcomes: list[Any] = []
        assert ctx.actor_type is not None
        assert ctx.actor_key is not None
        for own in (ctx.ref, ctx.system.virtual(ctx.actor_type, ctx.actor_key)):
            try:
                outcomes.append(own.ask("ping", timeout="2s"))
            except PlexSpacesError as error:
                outcomes.append(error)
        return outcomes

    def on_stop(self) -> None:
        self.journal.add("on_stop", self.key, self.activation, list(self.handled))
        if self.stop_message is not None:
            try:
                self.ctx.ref.tell(self.stop_message)
            except Exception as error:
                self.journal.add("tell-failed", self.key, self.activation, error)


class IdleOrder(Order):
    """An `Order` that attaches `VirtualActorFacet` (config `idle_config`) in on_start, and a
    periodic "tick" timer every `timer_period` if set."""

    idle_config: ClassVar[Mapping[str, Any] | None] = {"idle_timeout": "5m"}
    timer_period: ClassVar[str | None] = None

    def on_start(self) -> None:
        super().on_start()
        self.attach_facet(VirtualActorFacet(), priority=100, config=self.idle_config)
        if self.timer_period is not None:
            self.attach_facet(TimerFacet())
            self.facet(TimerFacet).register_periodic("tick", self.timer_period)


class SlowStop(IdleOrder):
    """Its on_stop blocks until the test sets `journal.release`, marking begin and end."""

    def on_stop(self) -> None:
        self.journal.add("stop-begin", self.key, self.activation)
        self.journal.stopping.set()
        self.journal.release.wait(WAIT)
        super().on_stop()
        self.journal.add("stop-end", self.key, self.activation)


class FlakyStart(Order):
    """Its on_start fails on the first attempt for each key, and succeeds afterwards."""

    def on_start(self) -> None:
        key = self.ctx.actor_key or self.ctx.actor_id
        if self.journal.next_attempt(key) == 1:
            self.journal.add("start-failed", key)
            raise Boom(f"on_start failed for {key}")
        super().on_start()


class SelfTellingStart(Order):
    """Its on_start tells its own virtual ref a message."""

    def on_start(self) -> None:
        super().on_start()
        self.ctx.ref.tell("from on_start")


class SlowStart(Order):
    """Its on_start blocks until the test opens `journal.gate`, after setting `journal.holding`."""

    def on_start(self) -> None:
        self.journal.holding.set()
        self.journal.gate.wait(WAIT)
        super().on_start()


class RecordingFacet(Facet):
    """Records every lifecycle hook it gets, with its own facet type."""

    def __init__(self, journal: Journal, facet_type: str = "recording") -> None:
        super().__init__()
        self.journal = journal
        self.facet_type = facet_type

    def on_attach(self, ctx: ActorContext, config: Mapping[str, Any]) -> None:
        self.journal.add("facet", self.facet_type, "on_attach", ctx.actor_id)

    def on_activate(self) -> None:
        self.journal.add("facet", self.facet_type, "on_activate")

    def on_deactivate(self) -> None:
        self.journal.add("facet", self.facet_type, "on_deactivate")

    def on_detach(self) -> None:
        self.journal.add("facet", self.facet_type, "on_detach")


class Faceted(IdleOrder):
    """An `IdleOrder` that also attaches two recording facets in on_start."""

    def on_start(self) -> None:
        super().on_start()
        self.attach_facet(RecordingFacet(self.journal, "first"), priority=10)
        self.attach_facet(RecordingFacet(self.journal, "second"), priority=5)


class Ledger:
    """Thread-safe tallies for the stress test: live activations and handled messages per key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()
        self.most_active: Counter[str] = Counter()
        self.activations: Counter[str] = Counter()
        self.handled: defaultdict[str, list[int]] = defaultdict(list)


class Tally(Actor):
    """Records into a shared `Ledger`: activations alive per key, and each sequence number."""

    ledger: ClassVar[Ledger]

    def on_start(self) -> None:
        self.key = self.ctx.actor_key or self.ctx.actor_id
        with self.ledger.lock:
            self.ledger.active[self.key] += 1
            self.ledger.activations[self.key] += 1
            self.ledger.most_active[self.key] = max(
                self.ledger.most_active[self.key], self.ledger.active[self.key]
            )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, int):
            with self.ledger.lock:
                self.ledger.handled[self.key].append(message)
        return None

    def on_stop(self) -> None:
        with self.ledger.lock:
            self.ledger.active[self.key] -= 1


@pytest.fixture
def journal(make_system: Callable[..., ActorSystem]) -> Iterator[Journal]:
    """A journal whose gates are opened after the test, before its systems shut down (so an actor
    a failed test left blocked cannot stall the shutdown)."""
    journal = Journal()
    yield journal
    journal.gate.set()
    journal.release.set()


@pytest.fixture
def orders(system: ActorSystem, journal: Journal) -> ActorSystem:
    """The ManualClock system with "order" registered to `Order`, bound to `journal`."""
    system.register_virtual("order", bound(Order, journal))
    return system


# -- registration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["", 5, None, "a/b", "/"])
def test_register_virtual_rejects_a_bad_type_name_naming_it(
    system: ActorSystem, journal: Journal, type_name: Any
) -> None:
    """A type name that is not a non-empty string without "/" is a ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(repr(type_name))):
        system.register_virtual(type_name, bound(Order, journal))
    assert system.virtual_types() == {}


@pytest.mark.parametrize(
    "cls", [int, object, "Order", None, Order()], ids=["int", "object", "str", "None", "instance"]
)
def test_register_virtual_rejects_what_is_not_an_actor_class(system: ActorSystem, cls: Any) -> None:
    """register_virtual needs an Actor subclass: anything else is a TypeError."""
    with pytest.raises(TypeError, match=r"register_virtual needs a subclass of plexspaces\.Actor"):
        system.register_virtual("order", cls)
    assert system.virtual_types() == {}


def test_registering_the_same_class_again_is_allowed(system: ActorSystem, journal: Journal) -> None:
    """Registering a type again with the same class is a no-op, not an error."""
    cls = bound(Order, journal)
    system.register_virtual("order", cls)
    system.register_virtual("order", cls)
    assert system.virtual_types() == {"order": cls}
    assert system.virtual("order", "k").ask("ping", timeout=WAIT) == "pong"


def test_registering_another_class_under_a_registered_name_names_both(
    system: ActorSystem, journal: Journal
) -> None:
    """A second class under a registered type name is a ValueError naming the type and both
    classes; the first registration stays."""
    first = bound(Order, journal)
    system.register_virtual("order", first)
    with pytest.raises(ValueError, match=r"'order'.*\bOrder\b.*\bFlakyStart\b"):
        system.register_virtual("order", bound(FlakyStart, journal))
    assert system.virtual_types() == {"order": first}


def test_virtual_of_an_unregistered_type_is_a_lookup_error_naming_the_registered_types(
    system: ActorSystem, journal: Journal
) -> None:
    """virtual() of a type never registered raises ActorNotFoundError (a LookupError) naming the
    unknown type and the registered ones."""
    system.register_virtual("order", bound(Order, journal))
    system.register_virtual("invoice", bound(Order, journal))
    with pytest.raises(ActorNotFoundError) as raised:
        system.virtual("shipment", "s-1")
    assert isinstance(raised.value, LookupError)
    message = str(raised.value)
    assert "'shipment'" in message
    assert "invoice" in message
    assert "order" in message


@pytest.mark.parametrize("key", ["", 5, None])
def test_virtual_rejects_a_key_that_is_not_a_non_empty_string(
    orders: ActorSystem, key: Any
) -> None:
    """A virtual actor key must be a non-empty string, else ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        orders.virtual("order", key)


def test_virtual_types_lists_the_registrations_as_a_copy(
    system: ActorSystem, journal: Journal
) -> None:
    """virtual_types() maps each registered type name to its class; changing it changes nothing."""
    assert system.virtual_types() == {}
    order, flaky = bound(Order, journal), bound(FlakyStart, journal)
    system.register_virtual("order", order)
    system.register_virtual("flaky", flaky)
    types = system.virtual_types()
    assert types == {"order": order, "flaky": flaky}
    types.clear()
    assert system.virtual_types() == {"order": order, "flaky": flaky}


# -- addressing and activation ---------------------------------------------------------------------


def test_virtual_ref_and_context_carry_type_key_and_the_stable_ref(orders: ActorSystem) -> None:
    """A virtual ref's actor_id is "<type>/<key>"; inside, ctx.actor_id, ctx.actor_type and
    ctx.actor_key match, and ctx.ref equals the virtual ref."""
    ref = orders.virtual("order", "ord-100")
    assert isinstance(ref, VirtualActorRef)
    assert ref.actor_id == "order/ord-100"
    actor_id, actor_type, actor_key, own_ref = ref.ask("whoami", timeout=WAIT)
    assert (actor_id, actor_type, actor_key) == ("order/ord-100", "order", "ord-100")
    assert own_ref == ref
    assert hash(own_ref) == hash(ref)
    assert orders.actor_ids() == ["order/ord-100"]


def test_a_spawned_actor_has_no_actor_type_or_key(system: ActorSystem, journal: Journal) -> None:
    """ctx.actor_type and ctx.actor_key are None for a plainly spawned actor."""
    ref = system.spawn(bound(Order, journal), actor_id="plain")
    assert ref.ask("whoami", timeout=WAIT) == ("plain", None, None, ref)


def test_virtual_refs_to_one_key_are_equal_and_hash_alike(
    orders: ActorSystem, make_system: Callable[..., ActorSystem], journal: Journal
) -> None:
    """Refs from two virtual() calls for one key are equal and hash alike, active or not; other
    keys, other types and other systems give different refs."""
    first, second = orders.virtual("order", "k"), orders.virtual("order", "k")
    assert first is not second
    assert first == second
    assert hash(first) == hash(second)
    first.tell("activate")
    assert second.ask("ping", timeout=WAIT) == "pong"
    assert first == orders.virtual("order", "k")
    assert len({first, second, orders.virtual("order", "k")}) == 1

    orders.register_virtual("invoice", bound(Order, journal))
    other_system = make_system(clock=ManualClock(start=START))
    other_system.register_virtual("order", bound(Order, journal))
    others = [
        orders.virtual("order", "other"),
        orders.virtual("invoice", "k"),
        other_system.virtual("order", "k"),
    ]
    for other in others:
        assert other != first
    assert len({first, *others}) == 4


def test_virtual_does_not_activate_and_the_first_message_does(
    orders: ActorSystem, journal: Journal
) -> None:
    """virtual() only makes a ref; on_start runs on the first message (tell or ask)."""
    told, asked = orders.virtual("order", "told"), orders.virtual("order", "asked")
    assert journal.entries == []
    assert not told.is_alive()
    assert orders.actor_ids() == []

    told.tell("first")
    assert told.ask("report", timeout=WAIT) == (1, ["first"])
    assert asked.ask("ping", timeout=WAIT) == "pong"
    assert journal.of("on_start") == [("on_start", "told", 1), ("on_start", "asked", 1)]
    assert told.is_alive()
    assert asked.is_alive()
    assert sorted(orders.actor_ids()) == ["order/asked", "order/told"]


def test_state_lives_for_the_activation(orders: ActorSystem, journal: Journal) -> None:
    """Messages to one key reach the same activation: its state accumulates, on_start ran once."""
    ref = orders.virtual("order", "k")
    for message in ("a", "b", "c"):
        orders.virtual("order", "k").tell(message)
    assert ref.ask("report", timeout=WAIT) == (1, ["a", "b", "c"])
    assert journal.of("on_start") == [("on_start", "k", 1)]


def test_different_keys_are_different_actors_with_their_own_state(
    orders: ActorSystem, journal: Journal
) -> None:
    """Each key is its own actor: own activation, own state, own thread."""
    for key in ("x", "y", "z"):
        for number in range(3):
            orders.virtual("order", key).tell(f"{key}{number}")
    for key in ("x", "y", "z"):
        assert orders.virtual("order", key).ask("report", timeout=WAIT) == (
            1,
            [f"{key}0", f"{key}1", f"{key}2"],
        )
    assert sorted(entry[1] for entry in journal.of("on_start")) == ["x", "y", "z"]
    assert sorted(orders.actor_ids()) == ["order/x", "order/y", "order/z"]


def test_concurrent_first_messages_make_exactly_one_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """32 threads sending the first messages to a new key at once start one activation, which
    handles every message."""
    threads = 32
    barrier = threading.Barrier(threads)

    def send(number: int) -> Any:
        ref = orders.virtual("order", "contended")
        barrier.wait(WAIT)
        if number % 2:
            return ref.ask(("hit", number), timeout=WAIT)
        return ref.tell(("hit", number))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(send, range(threads)))
    assert results == [None] * threads
    activation, handled = orders.virtual("order", "contended").ask("report", timeout=WAIT)
    assert activation == 1
    assert sorted(handled) == [("hit", number) for number in range(threads)]
    assert journal.of("on_start") == [("on_start", "contended", 1)]
    assert orders.actor_ids() == ["order/contended"]


def test_on_start_telling_its_own_ref_does_not_hang_the_activating_caller(
    system: ActorSystem, journal: Journal
) -> None:
    """A tell to its own ref from on_start is queued for the activation being started: the ask
    that activated the key is answered, and the activation then handles that message."""
    system.register_virtual("selfish", bound(SelfTellingStart, journal))
    ref = system.virtual("selfish", "k")
    assert bounded(lambda: ref.ask("ping", timeout=WAIT)) == "pong"
    assert bounded(lambda: ref.ask("report", timeout=WAIT)) == (1, ["from on_start"])


def test_an_ask_timeout_bounds_a_slow_activation_and_other_senders_do_not_wait(
    system: ActorSystem, journal: Journal
) -> None:
    """While on_start runs, an ask raises AskTimeoutError once its own timeout passes and a tell
    from another sender returns at once; the activation goes on and handles what was sent."""
    system.register_virtual("slow", bound(SlowStart, journal))
    ref = system.virtual("slow", "k")
    with pytest.raises(AskTimeoutError, match="'slow/k'"):
        bounded(lambda: ref.ask("ping", timeout=0.05), WAIT / 2)
    assert journal.holding.is_set()
    bounded(lambda: system.virtual("slow", "k").tell("told while activating"), WAIT / 2)
    with pytest.raises(AskTimeoutError):
        bounded(lambda: system.virtual("slow", "k").ask("report", timeout=0.05), WAIT / 2)
    assert journal.of("on_start") == []  # all of that while on_start was still blocked

    journal.gate.set()
    assert ref.ask("report", timeout=WAIT) == (1, ["told while activating"])
    assert journal.of("on_start") == [("on_start", "k", 1)]


# -- VirtualActorFacet: idle deactivation ----------------------------------------------------------


def test_the_default_idle_timeout_is_five_minutes(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Without config, VirtualActorFacet deactivates after 5 minutes idle, not earlier."""
    assert timedelta(minutes=5) == DEFAULT_IDLE_TIMEOUT
    system.register_virtual("order", bound(IdleOrder, journal, idle_config=None))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "hello")
    facet = system.facet_service.get_facet(ref.actor_id, VirtualActorFacet)
    assert facet.idle_timeout == timedelta(minutes=5)

    clock.advance(timedelta(minutes=5) - timedelta(seconds=1))
    idle_sync(ref)
    assert journal.of("on_stop") == []
    clock.advance("1s")
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["hello"])]


@pytest.mark.parametrize(
    "idle_timeout", ["5m", 300, timedelta(minutes=5)], ids=["string", "seconds", "timedelta"]
)
def test_an_idle_actor_is_deactivated_at_idle_timeout_and_not_before(
    system: ActorSystem, clock: ManualClock, journal: Journal, idle_timeout: Any
) -> None:
    """With idle_timeout 5m, an actor idle for 4m59s is still active; at 5m it is deactivated:
    on_stop ran, its id is free and nothing of it is left."""
    system.register_virtual(
        "order", bound(IdleOrder, journal, idle_config={"idle_timeout": idle_timeout})
    )
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "hello")
    clock.advance("4m59s")
    idle_sync(ref)
    assert journal.of("on_stop") == []
    assert ref.is_alive()

    clock.advance("1s")
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["hello"])]
    assert not ref.is_alive()
    assert system.actor_ids() == []
    assert len(system.scheduler) == 0
    assert system.lookup("order/k") is None


def test_a_message_pushes_the_idle_deadline(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Each message restarts the idle timeout: a message at 3m moves deactivation to 8m."""
    system.register_virtual("order", bound(IdleOrder, journal))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "start")
    clock.advance("3m")
    assert ref.ask("ping", timeout=WAIT) == "pong"
    clock.advance("2m")  # 5m after the start: the first check finds the actor busy since 3m
    idle_sync(ref)
    clock.advance("2m59s")
    idle_sync(ref)
    assert journal.of("on_stop") == []
    clock.advance("1s")
    assert ref.wait_stopped(WAIT)
    assert clock.now() == START + timedelta(minutes=8)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["start"])]


def test_timer_fires_are_no_activity_and_deactivation_cancels_the_timers(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """By default TimerFired does not count as activity: an actor with a 1m periodic timer is
    still deactivated at 5m, its timers are cancelled, and no fire ever activates it again."""
    system.register_virtual("ticker", bound(IdleOrder, journal, timer_period="1m"))
    ref = system.virtual("ticker", "t")
    tell_and_sync(ref, "hello")
    clock.advance("4m59s")
    idle_sync(ref)
    assert [entry[3] for entry in journal.of("fired")] == [
        START + timedelta(minutes=minute) for minute in (1, 2, 3, 4)
    ]
    assert journal.of("on_stop") == []

    clock.advance("1s")
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop") == [("on_stop", "t", 1, ["hello"])]
    fired = journal.of("fired")
    assert len(fired) in (4, 5)  # the fire at 5m may be handled just before the stop
    assert len(system.scheduler) == 0

    clock.advance("10m")
    assert journal.of("fired") == fired
    assert not ref.is_alive()
    assert journal.of("on_start") == [("on_start", "t", 1)]


def test_timer_fires_keep_the_actor_alive_with_timers_keep_alive(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """With timers_keep_alive=True a 1m periodic timer keeps a 5m idle actor active."""
    config = {"idle_timeout": "5m", "timers_keep_alive": True}
    system.register_virtual(
        "ticker", bound(IdleOrder, journal, idle_config=config, timer_period="1m")
    )
    ref = system.virtual("ticker", "t")
    tell_and_sync(ref, "hello")
    clock.advance("12m")
    idle_sync(ref)
    assert journal.of("on_stop") == []
    assert len(journal.of("fired")) == 12
    assert ref.ask("report", timeout=WAIT) == (1, ["hello"])


def test_the_next_message_after_deactivation_reactivates_a_fresh_instance_on_the_same_ref(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """After idle deactivation, a message to the same ref runs on_start again with fresh state,
    and ctx.ref is still that ref."""
    system.register_virtual("order", bound(IdleOrder, journal))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "old")
    clock.advance("5m")
    assert ref.wait_stopped(WAIT)

    ref.tell("new")
    assert ref.ask("report", timeout=WAIT) == (2, ["new"])
    assert ref.ask("whoami", timeout=WAIT) == ("order/k", "order", "k", ref)
    assert journal.entries == [
        ("on_start", "k", 1),
        ("on_stop", "k", 1, ["old"]),
        ("on_start", "k", 2),
    ]
    # The new activation has its own idle timeout, counted from its own activity.
    clock.advance("5m")
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop")[-1] == ("on_stop", "k", 2, ["new"])


@pytest.mark.parametrize("idle_timeout", ["0s", 0, "abc", -1, "5", "-5m", True])
def test_a_bad_idle_timeout_is_a_facet_config_error_naming_the_key(
    orders: ActorSystem, idle_timeout: Any
) -> None:
    """idle_timeout must be a positive duration: else FacetConfigError naming the key and value,
    and nothing is attached."""
    ref = orders.virtual("order", "k")
    with pytest.raises(FacetConfigError, match="'idle_timeout'") as raised:
        ref.attach_facet(VirtualActorFacet(), config={"idle_timeout": idle_timeout})
    assert str(idle_timeout) in str(raised.value)
    assert orders.facet_service.list_facets("order/k") == []
    assert ref.ask("ping", timeout=WAIT) == "pong"


@pytest.mark.parametrize(
    ("config", "key"),
    [({"idle": "5m"}, "idle"), ({"timers_keep_alive": "yes"}, "timers_keep_alive")],
)
def test_an_unknown_or_ill_typed_config_key_is_a_facet_config_error_naming_it(
    orders: ActorSystem, config: dict[str, Any], key: str
) -> None:
    """VirtualActorFacet accepts only idle_timeout and a bool timers_keep_alive: anything else
    is a FacetConfigError naming the key."""
    ref = orders.virtual("order", "k")
    with pytest.raises(FacetConfigError, match=f"'{key}'"):
        ref.attach_facet(VirtualActorFacet(), config=config)
    assert orders.facet_service.list_facets("order/k") == []


def test_virtual_actor_facet_on_a_spawned_actor_is_a_clear_facet_error(
    system: ActorSystem, journal: Journal
) -> None:
    """Attaching VirtualActorFacet to a plainly spawned actor raises FacetError naming the actor
    and saying how to make it virtual; the actor goes on without it."""
    ref = system.spawn(bound(Order, journal), actor_id="plain")
    with pytest.raises(FacetError, match="VirtualActorFacet needs a virtual actor") as raised:
        ref.attach_facet(VirtualActorFacet())
    assert "'plain'" in str(raised.value)
    assert "register_virtual" in str(raised.value)
    assert system.facet_service.list_facets("plain") == []
    assert ref.ask("ping", timeout=WAIT) == "pong"


def test_detaching_virtual_actor_facet_stops_idle_deactivation(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Once VirtualActorFacet is detached, the actor stays active however long it is idle."""
    system.register_virtual("order", bound(IdleOrder, journal))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "hello")
    assert ref.detach_facet(VirtualActorFacet) is True
    clock.advance("1h")
    idle_sync(ref)
    assert journal.of("on_stop") == []
    assert len(system.scheduler) == 0


def test_an_idle_check_already_queued_does_nothing_once_the_facet_is_detached(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """An idle check that fell due while the actor was busy, and waits in its mailbox behind the
    handler that detaches VirtualActorFacet, no longer deactivates the actor."""
    system.register_virtual("order", bound(IdleOrder, journal))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "hello")
    ref.tell("hold-then-detach-idle")
    assert journal.holding.wait(WAIT)  # its activity is stamped at 0m, before time moves
    # advance() waits for the busy actor to take the idle check out of its mailbox.
    advancer = threading.Thread(target=clock.advance, args=("5m",))
    advancer.start()
    advancer.join(OVERLAP)
    journal.gate.set()
    advancer.join(WAIT)
    assert not advancer.is_alive()
    idle_sync(ref)
    assert journal.of("on_stop") == []
    assert ref.ask("report", timeout=WAIT) == (1, ["hello"])


def test_deactivation_runs_on_stop_then_each_facets_on_deactivate_then_on_detach(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """Idle deactivation runs on_stop (facets still attached), then on_deactivate and on_detach
    of every facet, and the next activation attaches and activates them afresh."""
    system.register_virtual("order", bound(Faceted, journal))
    ref = system.virtual("order", "k")
    tell_and_sync(ref, "hello")
    assert [facet.facet_type for facet in system.facet_service.list_facets("order/k")] == [
        "virtual_actor",
        "first",
        "second",
    ]
    clock.advance("5m")
    assert ref.wait_stopped(WAIT)

    stop = journal.index("on_stop", "k", 1, ["hello"])
    for name in ("first", "second"):
        deactivated = journal.index("facet", name, "on_deactivate")
        detached = journal.index("facet", name, "on_detach")
        assert stop < deactivated < detached
    assert len(journal.of("facet")) == 8
    assert ref.ask("report", timeout=WAIT) == (2, [])
    hooks = [entry[1:] for entry in journal.of("facet")][8:]
    assert hooks == [
        ("first", "on_attach", "order/k"),
        ("second", "on_attach", "order/k"),
        ("first", "on_activate"),
        ("second", "on_activate"),
    ]


# -- messages while an activation closes -----------------------------------------------------------


@pytest.mark.parametrize("trigger", ["stop", "idle"])
def test_messages_sent_while_an_activation_closes_reach_the_next_one(
    system: ActorSystem, clock: ManualClock, journal: Journal, trigger: str
) -> None:
    """Tells and an ask sent while an activation is in on_stop (after ref.stop() or an idle
    timeout) are not lost: the next activation handles them, and it starts only once the old
    one finished on_stop."""
    system.register_virtual("slow", bound(SlowStop, journal))
    ref = system.virtual("slow", "k")
    ref.tell("before")
    assert ref.ask("ping", timeout=WAIT) == "pong"

    stop_results: list[bool] = []
    stopper = threading.Thread(target=lambda: stop_results.append(ref.stop(timeout=WAIT)))
    if trigger == "stop":
        stopper.start()
    else:
        clock.advance("5m")
    assert journal.stopping.wait(WAIT)

    answers: list[Any] = []

    def send() -> None:
        for message in ("m1", "m2", "m3"):
            system.virtual("slow", "k").tell(message)
        answers.append(system.virtual("slow", "k").ask("report", timeout=WAIT))

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(OVERLAP)
    # Whatever the sender managed meanwhile, no second activation runs beside the closing one.
    assert journal.of("on_start") == [("on_start", "k", 1)]
    journal.release.set()
    sender.join(WAIT)
    assert not sender.is_alive()
    if trigger == "stop":
        stopper.join(WAIT)
        assert stop_results == [True]

    assert answers == [(2, ["m1", "m2", "m3"])]
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["before"])]
    assert journal.index("stop-end", "k", 1) < journal.index("on_start", "k", 2)


def test_ask_timeout_bounds_the_wait_for_a_closing_activation(
    system: ActorSystem, journal: Journal
) -> None:
    """An ask sent while the previous activation is still in on_stop raises AskTimeoutError once
    its timeout has passed, rather than waiting for that on_stop to finish."""
    system.register_virtual("slow", bound(SlowStop, journal))
    ref = system.virtual("slow", "k")
    assert ref.ask("ping", timeout=WAIT) == "pong"
    stopper = threading.Thread(target=ref.stop, kwargs={"timeout": WAIT * 2})
    stopper.start()
    assert journal.stopping.wait(WAIT)

    outcomes: list[Any] = []

    def ask() -> None:
        try:
            outcomes.append(ref.ask("ping", timeout=0.05))
        except AskTimeoutError as error:
            outcomes.append(error)
        outcomes.append(bool(journal.of("stop-end")))

    asker = threading.Thread(target=ask)
    asker.start()
    asker.join(WAIT * 2)  # on_stop gives up waiting for the release after WAIT
    journal.release.set()
    stopper.join(WAIT)
    assert len(outcomes) == 2
    assert isinstance(outcomes[0], AskTimeoutError)
    assert outcomes[1] is False  # it gave up while on_stop was still running


@pytest.mark.parametrize("way_in", ["idle-check", "on-stop-tells-itself", "failing-tell"])
def test_a_send_while_an_activation_retires_never_deadlocks_with_it(
    make_system: Callable[..., ActorSystem], journal: Journal, way_in: str
) -> None:
    """A tell sent while an activation is being retired returns at once, even when the retiring
    activation still has to reach the key (an idle check deactivating it, an on_stop telling its
    own ref, a tell handler failing): the next activation handles the message, and shutdown,
    the next ask and the clock all go on."""
    clock = ManualClock(START, handoff_timeout=0)
    system = make_system(clock=clock)
    system.register_virtual("order", bound(IdleOrder, journal))
    ref = system.virtual("order", "k")
    if way_in == "on-stop-tells-itself":
        ref.tell(("tell-self-on-stop", "from on_stop"))
    ref.tell("hold")
    assert journal.holding.wait(WAIT)
    if way_in == "idle-check":
        clock.advance("5m")  # the idle check waits in the mailbox behind "hold"
    elif way_in == "failing-tell":
        ref.tell("boom")
    with pytest.raises(AskTimeoutError):
        ref.stop(timeout=0.05)  # the activation retires once "hold" (and what follows) is done

    sender = threading.Thread(target=lambda: system.virtual("order", "k").tell("late"))
    sender.start()
    sender.join(OVERLAP)
    journal.gate.set()
    sender.join(WAIT)
    assert not sender.is_alive()
    # The next activation starts once the old one has finished on_stop (and what it sent there).
    assert journal.wait_until(lambda j: ("on_start", "k", 2) in j.entries)
    expected = ["from on_stop", "late"] if way_in == "on-stop-tells-itself" else ["late"]
    activation, handled = bounded(lambda: ref.ask("report", timeout=WAIT))
    assert (activation, sorted(handled)) == (2, expected)
    bounded(lambda: clock.advance("1s"))
    bounded(system.shutdown)


def test_a_handler_that_deactivates_and_then_tells_its_own_ref_does_not_wait_for_itself(
    orders: ActorSystem, journal: Journal
) -> None:
    """ctx.deactivate() then a tell to its own ref from the same handler: the handler returns,
    the activation ends, and the next activation handles that message."""
    ref = orders.virtual("order", "k")
    assert bounded(lambda: ref.ask(("deactivate-then-tell-self", "next"), timeout=WAIT)) is True
    assert bounded(lambda: ref.ask("report", timeout=WAIT)) == (2, ["next"])
    assert journal.of("on_stop") == [("on_stop", "k", 1, [])]


def test_tells_queued_before_stop_are_handled_by_the_old_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """Messages already in the mailbox when ref.stop() is called are handled by the activation
    being stopped, before its on_stop; the next message starts a fresh one."""
    ref = orders.virtual("order", "k")
    ref.tell("hold")  # keeps the activation busy so the tells below wait in its mailbox
    for message in ("a", "b", "c"):
        ref.tell(message)
    with pytest.raises(AskTimeoutError, match="'order/k'"):
        ref.stop(timeout=0.05)  # the stop is requested; it cannot finish while "hold" runs
    journal.gate.set()
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["a", "b", "c"])]
    assert ref.ask("report", timeout=WAIT) == (2, [])


def test_messages_sent_after_stop_was_requested_reach_the_next_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """Once ref.stop() was requested, new messages no longer join the closing activation's
    mailbox (where they would be lost behind the stop): the next activation handles them."""
    ref = orders.virtual("order", "k")
    ref.tell("hold")  # keeps the activation busy: the stop below cannot complete yet
    ref.tell("early")
    with pytest.raises(AskTimeoutError):
        ref.stop(timeout=0.05)

    answers: list[Any] = []

    def send() -> None:
        orders.virtual("order", "k").tell("late")
        answers.append(orders.virtual("order", "k").ask("report", timeout=WAIT))

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(OVERLAP)
    journal.gate.set()
    sender.join(WAIT)
    assert not sender.is_alive()
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["early"])]
    assert answers == [(2, ["late"])]


def test_a_tell_to_its_own_ref_from_on_stop_reaches_the_next_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """A message a deactivating actor sends to its own virtual ref from on_stop is not lost: the
    next activation handles it."""
    ref = orders.virtual("order", "k")
    ref.tell(("tell-self-on-stop", "from on_stop"))
    assert ref.stop(timeout=WAIT) is True
    assert journal.of("tell-failed") == []
    assert ref.ask("report", timeout=WAIT) == (2, ["from on_stop"])


def test_ctx_deactivate_ends_the_activation_after_the_current_message(
    orders: ActorSystem, journal: Journal
) -> None:
    """ctx.deactivate() from a handler returns True; the activation ends after that message and
    the next message re-activates the key."""
    ref = orders.virtual("order", "k")
    ref.tell("a")
    assert ref.ask("deactivate", timeout=WAIT) is True
    ref.tell("b")
    assert ref.ask("report", timeout=WAIT) == (2, ["b"])
    assert journal.entries == [
        ("on_start", "k", 1),
        ("on_stop", "k", 1, ["a"]),
        ("on_start", "k", 2),
    ]


def test_ctx_deactivate_if_idle_is_refused_while_messages_wait(
    orders: ActorSystem, journal: Journal
) -> None:
    """ctx.deactivate(if_idle=True) returns False (and changes nothing) when the mailbox is not
    empty, and True when it is."""
    ref = orders.virtual("order", "k")
    ref.tell("hold")
    ref.tell("deactivate-if-idle")
    ref.tell("waiting")
    journal.gate.set()
    assert ref.ask("report", timeout=WAIT) == (1, ["waiting"])
    assert journal.of("if_idle") == [("if_idle", "k", 1, False)]

    assert ref.ask("deactivate-if-idle", timeout=WAIT) is True
    assert ref.wait_stopped(WAIT)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["waiting"])]
    assert ref.ask("report", timeout=WAIT) == (2, [])


# -- stop, is_alive, wait_stopped ------------------------------------------------------------------


def test_stop_returns_false_for_an_inactive_key_and_true_after_on_stop_for_an_active_one(
    orders: ActorSystem, journal: Journal
) -> None:
    """VirtualActorRef.stop() returns False when nothing is active; for an active key it returns
    True once on_stop has run and the id is free."""
    ref = orders.virtual("order", "k")
    assert ref.stop() is False
    assert journal.entries == []
    ref.tell("a")
    assert ref.stop() is True
    assert journal.entries == [("on_start", "k", 1), ("on_stop", "k", 1, ["a"])]
    assert orders.actor_ids() == []
    assert ref.stop() is False


def test_stop_waits_for_a_slow_on_stop(system: ActorSystem, journal: Journal) -> None:
    """stop() returns only after on_stop has finished, however long it takes."""
    system.register_virtual("slow", bound(SlowStop, journal))
    ref = system.virtual("slow", "k")
    assert ref.ask("ping", timeout=WAIT) == "pong"
    results: list[bool] = []
    stopper = threading.Thread(target=lambda: results.append(ref.stop(timeout=WAIT)))
    stopper.start()
    assert journal.stopping.wait(WAIT)
    stopper.join(OVERLAP)
    assert stopper.is_alive()
    journal.release.set()
    stopper.join(WAIT)
    assert results == [True]
    assert journal.of("stop-end") == [("stop-end", "k", 1)]


def test_stop_during_an_idle_deactivation_waits_for_it_to_finish(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """stop() called while an idle deactivation is in on_stop returns only once that on_stop has
    finished (stop() returns once the actor has stopped)."""
    system.register_virtual("slow", bound(SlowStop, journal))
    ref = system.virtual("slow", "k")
    assert ref.ask("ping", timeout=WAIT) == "pong"
    clock.advance("5m")
    assert journal.stopping.wait(WAIT)

    finished_when_stop_returned: list[bool] = []

    def stop() -> None:
        ref.stop(timeout=WAIT)
        finished_when_stop_returned.append(bool(journal.of("stop-end")))

    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(OVERLAP)
    journal.release.set()
    stopper.join(WAIT)
    assert finished_when_stop_returned == [True]


def test_is_alive_and_wait_stopped_follow_the_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """is_alive() is True only while an activation runs; wait_stopped() returns True at once
    when nothing is active, and after on_stop when something was."""
    ref = orders.virtual("order", "k")
    assert not ref.is_alive()
    assert ref.wait_stopped(0) is True
    ref.tell("a")
    assert ref.is_alive()
    assert ref.ask("deactivate", timeout=WAIT) is True
    assert ref.wait_stopped(WAIT) is True
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["a"])]
    assert not ref.is_alive()
    assert ref.wait_stopped(0) is True
    assert ref.ask("ping", timeout=WAIT) == "pong"
    assert ref.is_alive()


# -- failures --------------------------------------------------------------------------------------


def test_a_failing_tell_ends_the_activation_is_logged_and_the_next_message_reactivates(
    orders: ActorSystem, journal: Journal
) -> None:
    """An exception in a tell handler ends the activation (on_stop runs, "actor.failed" is
    logged with the actor id); the next message starts a fresh instance."""
    ref = orders.virtual("order", "k")
    ref.tell("a")
    with structlog.testing.capture_logs() as logs:
        ref.tell("boom")
        assert ref.wait_stopped(WAIT)
    failed = [entry for entry in logs if entry["event"] == "actor.failed"]
    assert len(failed) == 1
    assert failed[0]["actor_id"] == "order/k"
    assert failed[0]["log_level"] == "error"
    assert isinstance(failed[0]["exc_info"][1], Boom)
    assert journal.of("on_stop") == [("on_stop", "k", 1, ["a"])]
    assert not ref.is_alive()

    ref.tell("b")
    assert ref.ask("report", timeout=WAIT) == (2, ["b"])


def test_messages_queued_behind_a_failing_tell_reach_the_next_activation(
    orders: ActorSystem, journal: Journal
) -> None:
    """Messages already waiting when a tell handler fails are not lost: a virtual ref accepted
    them, so the next activation handles them."""
    ref = orders.virtual("order", "k")
    ref.tell("hold")  # keeps the activation busy so the next messages queue behind "boom"
    ref.tell("boom")
    ref.tell("after")
    journal.gate.set()
    assert ref.ask("report", timeout=WAIT) == (2, ["after"])


def test_a_failing_ask_is_raised_to_the_caller_and_the_activation_goes_on(
    orders: ActorSystem, journal: Journal
) -> None:
    """An exception in an ask handler is raised to the caller; the same activation goes on."""
    ref = orders.virtual("order", "k")
    ref.tell("a")
    with structlog.testing.capture_logs() as logs, pytest.raises(Boom, match="boom in order/k"):
        ref.ask("boom", timeout=WAIT)
    assert [entry for entry in logs if entry["event"] == "actor.failed"] == []
    assert ref.ask("report", timeout=WAIT) == (1, ["a"])
    assert journal.of("on_stop") == []


@pytest.mark.parametrize("first", ["tell", "ask"])
def test_a_failing_on_start_is_raised_by_the_triggering_message_and_the_next_one_retries(
    system: ActorSystem, journal: Journal, first: str
) -> None:
    """When on_start fails, the tell or ask that triggered the activation raises that exception
    (on_stop does not run, nothing stays registered); the next message activates again."""
    system.register_virtual("flaky", bound(FlakyStart, journal))
    ref = system.virtual("flaky", "k")
    send = ref.tell if first == "tell" else functools.partial(ref.ask, timeout=WAIT)
    with pytest.raises(Boom, match="on_start failed for k"):
        send("lost")
    assert not ref.is_alive()
    assert system.actor_ids() == []

    ref.tell("second")
    assert ref.ask("report", timeout=WAIT) == (1, ["second"])
    assert journal.entries == [("start-failed", "k"), ("on_start", "k", 1)]


# -- facets through a virtual ref ------------------------------------------------------------------


def test_attach_facet_through_a_virtual_ref_activates_and_attaches(
    orders: ActorSystem, journal: Journal
) -> None:
    """ref.attach_facet() on an inactive virtual ref activates the key and attaches the facet
    (which is activated at once) to that activation."""
    ref = orders.virtual("order", "k")
    facet = ref.attach_facet(RecordingFacet(journal), priority=7)
    assert isinstance(facet, RecordingFacet)
    assert ref.is_alive()
    assert orders.facet_service.get_facet("order/k", "recording") is facet
    assert facet.facet_priority == 7
    assert journal.entries == [
        ("on_start", "k", 1),
        ("facet", "recording", "on_attach", "order/k"),
        ("facet", "recording", "on_activate"),
    ]
    assert ref.detach_facet("recording") is True
    assert journal.entries[-2:] == [
        ("facet", "recording", "on_deactivate"),
        ("facet", "recording", "on_detach"),
    ]


def test_detach_facet_on_an_inactive_ref_returns_false_without_activating(
    orders: ActorSystem, journal: Journal
) -> None:
    """ref.detach_facet() on an inactive virtual ref returns False and does not activate it."""
    ref = orders.virtual("order", "k")
    assert ref.detach_facet("recording") is False
    assert ref.detach_facet(VirtualActorFacet) is False
    assert not ref.is_alive()
    assert journal.entries == []


def test_an_actor_asking_its_own_virtual_ref_raises_instead_of_deadlocking(
    orders: ActorSystem,
) -> None:
    """Asking its own virtual ref (ctx.ref or a fresh virtual() ref) from a handler raises
    PlexSpacesError naming the actor at once, not an AskTimeoutError."""
    ref = orders.virtual("order", "narcissus")
    outcomes = ref.ask("ask-self", timeout=WAIT)
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, PlexSpacesError)
        assert not isinstance(outcome, AskTimeoutError)
        assert "order/narcissus" in str(outcome)
        assert "asked itself" in str(outcome)
    assert ref.ask("ping", timeout=WAIT) == "pong"


# -- shutdown and scale ----------------------------------------------------------------------------


def test_shutdown_stops_active_virtual_actors_and_then_refuses_messages(
    orders: ActorSystem, journal: Journal
) -> None:
    """system.shutdown() runs on_stop of every active virtual actor; afterwards tell and ask
    through a virtual ref raise SystemShutdownError instead of activating."""
    first, second = orders.virtual("order", "one"), orders.virtual("order", "two")
    first.tell("a")
    second.tell("b")
    assert second.ask("ping", timeout=WAIT) == "pong"
    orders.shutdown()
    assert sorted(journal.of("on_stop")) == [
        ("on_stop", "one", 1, ["a"]),
        ("on_stop", "two", 1, ["b"]),
    ]
    assert orders.actor_ids() == []
    with pytest.raises(SystemShutdownError):
        first.tell("late")
    with pytest.raises(SystemShutdownError):
        orders.virtual("order", "three").ask("ping", timeout=WAIT)
    assert len(journal.of("on_start")) == 2


def test_a_thousand_keys_activate_and_idle_out_without_leaking(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """1,000 keys activated by a tell each all deactivate once idle_timeout passes: every on_stop
    ran, no actor is left, and no per-key bookkeeping remains."""
    keys = 1000
    system.register_virtual("order", bound(IdleOrder, journal))
    refs = [system.virtual("order", f"k{number}") for number in range(keys)]
    for ref in refs:
        tell_and_sync(ref, "hello")
    assert len(system.actor_ids()) == keys

    clock.advance("5m")
    assert journal.wait_until(lambda j: len(j.of("on_stop")) == keys)
    for ref in refs:
        assert ref.wait_stopped(WAIT)
    assert {entry[1] for entry in journal.of("on_stop")} == {f"k{n}" for n in range(keys)}
    assert all(entry[3] == ["hello"] for entry in journal.of("on_stop"))
    assert system.actor_ids() == []
    assert system._slots == {}
    assert len(system.scheduler) == 0


def test_stress_stops_racing_sends_lose_nothing_and_never_overlap(real_system: ActorSystem) -> None:
    """On the real clock, 8 threads x 300 messages to 20 keys while a 9th thread keeps stopping
    random keys: every message is handled exactly once, in send order per sender, and no key
    ever has two activations alive at once."""
    senders, per_sender, keys = 8, 300, [f"key-{n}" for n in range(20)]
    ledger = Ledger()
    real_system.register_virtual("tally", bound(Tally, ledger=ledger))
    barrier = threading.Barrier(senders + 1)
    sending = threading.Event()

    def send(worker: int) -> dict[str, list[int]]:
        rng = random.Random(worker)
        sent: defaultdict[str, list[int]] = defaultdict(list)
        barrier.wait(WAIT)
        for number in range(per_sender):
            key = rng.choice(keys)
            sequence = worker * per_sender + number
            real_system.virtual("tally", key).tell(sequence)
            sent[key].append(sequence)
        return sent

    def stop_randomly() -> int:
        rng = random.Random(-1)
        stopped = 0
        barrier.wait(WAIT)
        while sending.is_set():
            stopped += real_system.virtual("tally", rng.choice(keys)).stop(timeout=WAIT)
        return stopped

    sending.set()
    with ThreadPoolExecutor(max_workers=senders + 1) as pool:
        stopper = pool.submit(stop_randomly)
        sent_by = [pool.submit(send, worker) for worker in range(senders)]
        sent_parts = [future.result(timeout=30) for future in sent_by]
        sending.clear()
        stops = stopper.result(timeout=30)

    for key in keys:
        real_system.virtual("tally", key).ask("sync", timeout=WAIT)
    sent: defaultdict[str, list[int]] = defaultdict(list)
    for part in sent_parts:
        for key, sequences in part.items():
            sent[key].extend(sequences)
    with ledger.lock:
        handled = {key: list(sequences) for key, sequences in ledger.handled.items()}
        most_active = dict(ledger.most_active)
        activations = sum(ledger.activations.values())
    assert sum(len(sequences) for sequences in sent.values()) == senders * per_sender
    for key in keys:
        assert Counter(handled.get(key, [])) == Counter(sent[key]), key
        for worker in range(senders):
            own = [s for s in handled.get(key, []) if s // per_sender == worker]
            assert own == sorted(own), (key, worker)
    assert set(most_active.values()) == {1}
    assert stops > 0
    assert activations > len(keys)


class _WithDependencies(Actor):
    """Built with the arguments given to register_virtual."""

    def __init__(self, repository: dict[str, int], *, scale: int) -> None:
        super().__init__()
        self.repository = repository
        self.scale = scale

    def on_receive(self, message: Any) -> Any:
        key = self.ctx.actor_key
        assert key is not None
        self.repository[key] = self.repository.get(key, 0) + self.scale
        return self.repository[key]


def test_register_virtual_passes_its_arguments_to_every_activation(system: ActorSystem) -> None:
    """register_virtual(type, cls, *args, **kwargs) builds each activation with those arguments."""
    repository: dict[str, int] = {}
    system.register_virtual("counter", _WithDependencies, repository, scale=10)
    ref = system.virtual("counter", "a")
    assert ref.ask("add", timeout=WAIT) == 10
    assert ref.stop(timeout=WAIT)
    assert ref.ask("add", timeout=WAIT) == 20  # a new activation, the same shared repository
    assert system.virtual("counter", "b").ask("add", timeout=WAIT) == 10
    assert repository == {"a": 20, "b": 10}
