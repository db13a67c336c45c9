"""Actors: construction, context, tell/ask, failures, stop, ask timeouts and refs."""

from __future__ import annotations

import copy
import threading
from datetime import timedelta
from typing import Any

import pykka
import pytest
import structlog.testing

from facets.timer import TimerFacet
from plexspaces import (
    Actor,
    ActorStoppedError,
    ActorSystem,
    AskTimeoutError,
    ManualClock,
    PlexSpacesError,
    TimerFired,
)

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""


class Boom(Exception):
    """The failure helper actors raise on request."""


class Journal:
    """Shared by a test and its actors: events in the order they happened, and a stop signal."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.stopped = threading.Event()

    def add(self, entry: Any) -> None:
        self.entries.append(entry)


class Probe(Actor):
    """Records its lifecycle and the messages it handles; answers or fails on request."""

    def __init__(self, journal: Journal | None = None) -> None:
        super().__init__()
        self.journal = journal if journal is not None else Journal()
        self.handled: list[Any] = []

    def on_start(self) -> None:
        self.journal.add("on_start")

    def on_receive(self, message: Any) -> Any:
        match message:
            case "ping":
                return "pong"
            case "handled":
                return list(self.handled)
            case "boom":
                raise Boom(f"boom in {self.ctx.actor_id}")
            case "thread":
                return threading.current_thread()
        self.handled.append(message)
        return None

    def on_stop(self) -> None:
        self.journal.add(("on_stop", list(self.handled)))
        self.journal.stopped.set()


class NoInit(Actor):
    """An actor without a constructor of its own."""

    def on_receive(self, message: Any) -> Any:
        return message


class WithArgs(Actor):
    """Keeps its constructor arguments and returns them to an ask."""

    def __init__(self, first: int, second: str, *, third: list[int]) -> None:
        super().__init__()
        self.arguments = (first, second, third)

    def on_receive(self, message: Any) -> Any:
        return self.arguments


class FailingInit(Actor):
    """Raises from its constructor."""

    def __init__(self) -> None:
        super().__init__()
        raise Boom("constructor failed")


class CtxInInit(Actor):
    """Reads `self.ctx` in its constructor, before the runtime has given it one."""

    def __init__(self) -> None:
        super().__init__()
        self.actor_id = self.ctx.actor_id


class FailingStart(Actor):
    """Raises from `on_start`; records whether `on_stop` ran."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def on_start(self) -> None:
        self.journal.add("on_start")
        raise Boom("on_start failed")

    def on_stop(self) -> None:
        self.journal.add("on_stop")


class ContextProbe(Actor):
    """Captures what `self.ctx` offers during `on_start`, and logs through `ctx.log`."""

    def on_start(self) -> None:
        ctx = self.ctx
        self.seen = (ctx.actor_id, ctx.system, ctx.facet_service, ctx.ref)
        ctx.log.info("probe.started", marker=42)

    def on_receive(self, message: Any) -> Any:
        return self.seen


class Blocker(Actor):
    """Blocks its handler until the test sets `gate` (bounded, so nothing can hang for ever)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.gate.wait(WAIT)
            return "released"
        return message


class SelfAsker(Actor):
    """Asks itself from its own handler and reports what happened."""

    def on_receive(self, message: Any) -> Any:
        try:
            self.ctx.ref.ask("anything", timeout="2s")
        except PlexSpacesError as error:
            return error
        return None


class SelfStopper(Actor):
    """Stops itself from its handler through its own ref."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def on_receive(self, message: Any) -> Any:
        return self.ctx.ref.stop()

    def on_stop(self) -> None:
        self.journal.add("on_stop")
        self.journal.stopped.set()


class Ticking(Actor):
    """Attaches a timer facet in `on_start` and runs a periodic timer; counts the fires."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal
        self.fired = 0

    def on_start(self) -> None:
        self.attach_facet(TimerFacet())
        self.facet(TimerFacet).register_periodic("tick", "1s")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TimerFired):
            self.fired += 1
        return self.fired

    def on_stop(self) -> None:
        self.journal.add(("on_stop", len(self.facet(TimerFacet).list_timers())))


# -- construction ----------------------------------------------------------------------------------


def test_spawn_passes_positional_and_keyword_arguments_to_the_constructor(
    system: ActorSystem,
) -> None:
    """spawn(cls, *args, actor_id=..., **kwargs) hands args and kwargs to the actor's __init__."""
    ref = system.spawn(WithArgs, 7, "seven", actor_id="args", third=[7])
    assert ref.actor_id == "args"
    assert ref.ask("arguments", timeout=WAIT) == (7, "seven", [7])


def test_actor_init_takes_no_arguments() -> None:
    """Actor.__init__ accepts no arguments, positional or keyword."""
    Actor()
    with pytest.raises(TypeError):
        Actor(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Actor(actor_id="x")  # type: ignore[call-arg]


def test_spawn_with_arguments_the_constructor_does_not_take_raises_and_frees_the_id(
    system: ActorSystem,
) -> None:
    """Arguments an actor without its own __init__ cannot take fail spawn; the id stays free."""
    with pytest.raises(TypeError):
        system.spawn(NoInit, 1, actor_id="no-init")
    assert system.actor_ids() == []
    ref = system.spawn(NoInit, actor_id="no-init")
    assert ref.ask("hi", timeout=WAIT) == "hi"


def test_constructor_exception_propagates_from_spawn_and_frees_the_id(
    system: ActorSystem,
) -> None:
    """An exception from the actor's constructor is raised by spawn, and the id is free again."""
    with pytest.raises(Boom, match="constructor failed"):
        system.spawn(FailingInit, actor_id="ctor")
    assert system.lookup("ctor") is None
    assert system.actor_ids() == []
    ref = system.spawn(Probe, actor_id="ctor")
    assert ref.ask("ping", timeout=WAIT) == "pong"


# -- context ---------------------------------------------------------------------------------------


def test_ctx_is_available_in_on_start(system: ActorSystem) -> None:
    """In on_start, self.ctx gives the actor id, the system, the facet service and its own ref."""
    ref = system.spawn(ContextProbe, actor_id="ctx-actor")
    actor_id, seen_system, facet_service, own_ref = ref.ask("seen", timeout=WAIT)
    assert actor_id == "ctx-actor"
    assert seen_system is system
    assert facet_service is system.facet_service
    assert own_ref == ref


def test_ctx_log_is_bound_with_the_actor_id(system: ActorSystem) -> None:
    """ctx.log is a structlog logger whose events carry the actor id."""
    with structlog.testing.capture_logs() as logs:
        system.spawn(ContextProbe, actor_id="logging-actor")
    started = [entry for entry in logs if entry["event"] == "probe.started"]
    assert started == [
        {
            "event": "probe.started",
            "log_level": "info",
            "actor_id": "logging-actor",
            "marker": 42,
        }
    ]


def test_ctx_before_spawn_raises_a_clear_error() -> None:
    """Reading self.ctx (or attaching a facet) on an actor that was never spawned is a clear
    PlexSpacesError naming the class and when ctx becomes available."""
    actor = Probe()
    with pytest.raises(PlexSpacesError, match=r"Probe\.ctx is available from on_start on"):
        _ = actor.ctx
    with pytest.raises(PlexSpacesError, match="Probe is not running"):
        actor.attach_facet(TimerFacet())


def test_ctx_read_in_the_constructor_fails_spawn_and_frees_the_id(system: ActorSystem) -> None:
    """An actor reading self.ctx in __init__ gets a PlexSpacesError through spawn; id stays free."""
    with pytest.raises(PlexSpacesError, match="available from on_start on"):
        system.spawn(CtxInInit, actor_id="early")
    assert system.actor_ids() == []
    system.spawn(Probe, actor_id="early")
    assert system.actor_ids() == ["early"]


# -- tell and ask ----------------------------------------------------------------------------------


def test_tells_are_handled_in_order_and_ask_returns_on_receive_value(system: ActorSystem) -> None:
    """tell enqueues and returns; messages are handled in order; ask returns on_receive's value."""
    ref = system.spawn(Probe, actor_id="ordered")
    assert ref.tell("a") is None
    ref.tell("b")
    ref.tell("c")
    assert ref.ask("handled", timeout=WAIT) == ["a", "b", "c"]
    assert ref.ask("ping", timeout=WAIT) == "pong"


def test_ask_runs_on_the_actor_thread(system: ActorSystem) -> None:
    """Handlers run on the actor's own thread, not on the caller's."""
    ref = system.spawn(Probe, actor_id="threaded")
    thread = ref.ask("thread", timeout=WAIT)
    assert isinstance(thread, threading.Thread)
    assert thread is not threading.current_thread()
    assert ref.ask("thread", timeout=WAIT) is thread


def test_exception_in_ask_handler_is_raised_to_caller_and_actor_goes_on(
    system: ActorSystem,
) -> None:
    """An exception raised while handling an ask reaches the caller; the actor keeps running."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="asked")
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(Boom, match="boom in asked"):
            ref.ask("boom", timeout=WAIT)
        assert ref.ask("ping", timeout=WAIT) == "pong"
    assert ref.is_alive()
    assert system.lookup("asked") == ref
    assert journal.entries == ["on_start"]
    assert [entry for entry in logs if entry["event"] == "actor.failed"] == []


def test_exception_in_tell_handler_ends_the_actor_and_is_logged_with_its_id(
    system: ActorSystem,
) -> None:
    """An exception while handling a tell ends the actor, runs on_stop, and logs "actor.failed"
    at error level with the actor id and the exception."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="told")
    with structlog.testing.capture_logs() as logs:
        ref.tell("boom")
        assert journal.stopped.wait(WAIT)
    failed = [entry for entry in logs if entry["event"] == "actor.failed"]
    assert len(failed) == 1
    entry = failed[0]
    assert entry["log_level"] == "error"
    assert entry["actor_id"] == "told"
    error = entry["exc_info"][1]
    assert isinstance(error, Boom)
    assert str(error) == "boom in told"
    assert journal.entries == ["on_start", ("on_stop", [])]
    assert not ref.is_alive()


def test_tell_and_ask_after_a_tell_failure_raise_actor_stopped_error_naming_the_id(
    system: ActorSystem,
) -> None:
    """After a tell handler failed, tell and ask raise ActorStoppedError (a pykka.ActorDeadError)
    whose message names the actor id."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="dead-actor")
    ref.tell("boom")
    assert journal.stopped.wait(WAIT)
    with pytest.raises(ActorStoppedError, match="'dead-actor'") as told:
        ref.tell("hello")
    assert isinstance(told.value, pykka.ActorDeadError)
    with pytest.raises(ActorStoppedError, match="'dead-actor'") as asked:
        ref.ask("ping", timeout=WAIT)
    assert isinstance(asked.value, pykka.ActorDeadError)


def test_the_id_of_an_actor_that_failed_in_a_tell_handler_is_free_again(
    system: ActorSystem,
) -> None:
    """Once a tell-handler failure has ended the actor (ref.wait_stopped()), its id is free."""
    ref = system.spawn(Probe, actor_id="phoenix")
    ref.tell("boom")
    assert ref.wait_stopped(WAIT) is True
    assert system.lookup("phoenix") is None
    assert system.actor_ids() == []
    reborn = system.spawn(Probe, actor_id="phoenix")
    assert reborn.ask("ping", timeout=WAIT) == "pong"


# -- on_start failure ------------------------------------------------------------------------------


def test_on_start_exception_is_raised_by_spawn_and_the_id_is_free_again(
    system: ActorSystem,
) -> None:
    """spawn raises the very exception on_start raised, and the id can be spawned again at once."""
    journal = Journal()
    with pytest.raises(Boom, match="on_start failed"):
        system.spawn(FailingStart, journal, actor_id="starter")
    assert system.lookup("starter") is None
    assert "starter" not in system.actor_ids()
    ref = system.spawn(Probe, actor_id="starter")
    assert ref.ask("ping", timeout=WAIT) == "pong"


class _StartRaises(Actor):
    """Its on_start raises the exception it was made with."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def on_start(self) -> None:
        raise self.error


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()], ids=type)
def test_spawn_raises_a_base_exception_from_on_start_and_frees_the_id(
    system: ActorSystem, error: BaseException
) -> None:
    """A BaseException that is not an Exception (SystemExit, KeyboardInterrupt) from on_start is
    raised by spawn, not left hanging it, and the id is free again."""
    outcome: list[BaseException | None] = []

    def spawn() -> None:
        try:
            system.spawn(_StartRaises, error, actor_id="exiter")
            outcome.append(None)
        except BaseException as raised:  # the very exception is the outcome
            outcome.append(raised)

    spawner = threading.Thread(target=spawn, daemon=True)
    spawner.start()
    spawner.join(WAIT)
    assert not spawner.is_alive(), "spawn hung"
    assert outcome == [error]
    assert system.lookup("exiter") is None
    assert system.spawn(Probe, actor_id="exiter").ask("ping", timeout=WAIT) == "pong"


def test_on_stop_does_not_run_when_on_start_failed(system: ActorSystem) -> None:
    """An actor whose on_start failed never gets on_stop."""
    journal = Journal()
    with pytest.raises(Boom):
        system.spawn(FailingStart, journal, actor_id="no-stop")
    system.shutdown()
    assert journal.entries == ["on_start"]


# -- stop ------------------------------------------------------------------------------------------


def test_stop_returns_after_on_stop_ran_and_frees_the_id(system: ActorSystem) -> None:
    """ref.stop() returns True once on_stop has run; the id is free for a new actor right away."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="stopper")
    assert ref.stop() is True
    assert journal.entries == ["on_start", ("on_stop", [])]
    assert not ref.is_alive()
    assert system.lookup("stopper") is None
    assert system.actor_ids() == []
    again = system.spawn(Probe, actor_id="stopper")
    assert again.ask("ping", timeout=WAIT) == "pong"


def test_stop_then_spawn_of_the_same_id_never_collides(system: ActorSystem) -> None:
    """Spawning an id right after stop() returned succeeds every time (no race on the id)."""
    for round_number in range(25):
        ref = system.spawn(Probe, actor_id="recycled")
        ref.tell(round_number)
        assert ref.stop() is True
    assert system.actor_ids() == []


def test_stop_handles_messages_already_in_the_mailbox_first(system: ActorSystem) -> None:
    """Messages told before stop() are handled before on_stop runs."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="drained")
    for number in range(5):
        ref.tell(number)
    assert ref.stop() is True
    assert journal.entries[-1] == ("on_stop", [0, 1, 2, 3, 4])


def test_stop_cancels_the_actors_timers(system: ActorSystem, clock: ManualClock) -> None:
    """When stop() returns, the actor's timers are cancelled: none listed, none armed, none fire."""
    journal = Journal()
    ref = system.spawn(Ticking, journal, actor_id="ticker")
    timer = system.facet_service.get_facet("ticker", TimerFacet)
    clock.advance("1s")
    assert ref.ask("count", timeout=WAIT) == 1
    assert len(system.scheduler) == 1
    assert ref.stop() is True
    # on_stop still saw the timer: facets are released after it.
    assert journal.entries == [("on_stop", 1)]
    assert timer.list_timers() == []
    assert len(system.scheduler) == 0
    clock.advance("5s")
    assert len(system.scheduler) == 0


def test_stop_returns_false_for_an_actor_that_is_not_running(system: ActorSystem) -> None:
    """stop() on an already stopped actor, or on one that failed, returns False."""
    stopped = system.spawn(Probe, actor_id="twice")
    assert stopped.stop() is True
    assert stopped.stop() is False

    journal = Journal()
    failed = system.spawn(Probe, journal, actor_id="failed")
    failed.tell("boom")
    assert journal.stopped.wait(WAIT)
    assert failed.stop() is False


def test_stop_from_the_actors_own_handler_stops_it_after_the_message(
    system: ActorSystem,
) -> None:
    """ref.stop() called in the actor's own handler returns True without deadlocking, and the
    actor stops once the handler is done."""
    journal = Journal()
    ref = system.spawn(SelfStopper, journal, actor_id="self-stopper")
    assert ref.ask("stop yourself", timeout=WAIT) is True
    assert journal.stopped.wait(WAIT)
    with pytest.raises(ActorStoppedError):
        ref.ask("again", timeout=WAIT)


def test_on_stop_runs_when_the_tell_handler_fails(system: ActorSystem) -> None:
    """A failure in a tell handler runs on_stop (after the messages handled before it)."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="fails-later")
    ref.tell("first")
    ref.tell("boom")
    assert journal.stopped.wait(WAIT)
    assert journal.entries == ["on_start", ("on_stop", ["first"])]


def test_on_stop_runs_on_system_shutdown(system: ActorSystem) -> None:
    """system.shutdown() runs every actor's on_stop before it returns."""
    journals = [Journal() for _ in range(3)]
    for number, journal in enumerate(journals):
        system.spawn(Probe, journal, actor_id=f"shut-{number}")
    system.shutdown()
    for journal in journals:
        assert journal.entries == ["on_start", ("on_stop", [])]


# -- ask edge cases --------------------------------------------------------------------------------


def test_an_actor_asking_itself_raises_instead_of_deadlocking(system: ActorSystem) -> None:
    """ask() on the actor's own ref from its own handler raises PlexSpacesError at once (not an
    AskTimeoutError after waiting for itself)."""
    ref = system.spawn(SelfAsker, actor_id="narcissus")
    error = ref.ask("go", timeout=WAIT)
    assert isinstance(error, PlexSpacesError)
    assert not isinstance(error, AskTimeoutError)
    assert "narcissus" in str(error)
    assert "asked itself" in str(error)


@pytest.mark.parametrize(
    "timeout",
    [0.05, "50ms", timedelta(milliseconds=50)],
    ids=["seconds", "string", "timedelta"],
)
def test_ask_timeout_raises_ask_timeout_error(system: ActorSystem, timeout: Any) -> None:
    """An ask not answered within its timeout (a number, "50ms" or a timedelta) raises
    AskTimeoutError naming the actor; the actor goes on afterwards."""
    gate = threading.Event()
    ref = system.spawn(Blocker, gate, actor_id="slowpoke")
    try:
        with pytest.raises(AskTimeoutError, match="'slowpoke'") as raised:
            ref.ask("block", timeout=timeout)
        assert isinstance(raised.value, TimeoutError)
        # The actor was still blocked when the ask gave up: the gate was never opened.
        assert not gate.is_set()
    finally:
        gate.set()
    assert ref.ask("after", timeout=WAIT) == "after"


def test_ask_rejects_a_timeout_that_is_not_a_duration(system: ActorSystem) -> None:
    """A bad ask timeout is a ValueError naming it, and nothing is sent."""
    journal = Journal()
    ref = system.spawn(Probe, journal, actor_id="strict")
    with pytest.raises(ValueError, match="'soon'"):
        ref.ask("x", timeout="soon")
    assert ref.ask("handled", timeout=WAIT) == []


# -- refs ------------------------------------------------------------------------------------------


def test_actor_refs_compare_and_hash_by_actor_incarnation(system: ActorSystem) -> None:
    """Refs to the same running actor are equal and hash alike; a new actor under the same id
    gets a ref that differs from the old one."""
    ref = system.spawn(Probe, actor_id="same")
    twin = copy.copy(ref)
    assert twin is not ref
    assert twin == ref
    assert hash(twin) == hash(ref)
    assert system.lookup("same") == ref
    assert ref != "same"
    other = system.spawn(Probe, actor_id="other")
    assert other != ref
    assert len({ref, twin, other}) == 2

    assert ref.stop() is True
    reborn = system.spawn(Probe, actor_id="same")
    assert reborn.actor_id == ref.actor_id
    assert reborn != ref
    assert len({ref, reborn}) == 2


class ContextStopper(Actor):
    """Stops itself with ctx.stop() when told "quit"; records what it handled and on_stop."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def on_receive(self, message: Any) -> Any:
        if message == "hold":
            self.journal.stopped.wait(WAIT)  # the test's gate: holds until it has queued more
            return None
        self.journal.add(message)
        if message == "quit":
            return self.ctx.stop()
        return None

    def on_stop(self) -> None:
        self.journal.add("on_stop")


def test_ctx_stop_stops_the_actor_after_the_current_and_queued_messages(
    system: ActorSystem,
) -> None:
    """ctx.stop() from a handler returns True, lets queued messages run, then on_stop; the id
    is free again."""
    journal = Journal()
    ref = system.spawn(ContextStopper, journal, actor_id="quitter")
    ref.tell("hold")
    ref.tell("quit")
    ref.tell("queued")
    journal.stopped.set()
    assert ref.wait_stopped(WAIT) is True
    assert journal.entries == ["quit", "queued", "on_stop"]
    assert system.lookup("quitter") is None
