"""The pykka behaviour `plexspaces._pykka` relies on, pinned with real pykka actors and threads.

Each test states one behaviour listed in the module's docstring. A pykka release that changes
one fails here first; the fix then belongs in `plexspaces/_pykka.py` alone.
"""

from __future__ import annotations

import importlib.metadata
import queue
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pykka
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from plexspaces import _pykka
from plexspaces._flag import Flag

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""

ROOT = Path(__file__).resolve().parent.parent

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class Boom(Exception):
    """The failure test actors raise on request."""


class Gate:
    """Holds an actor inside a handler (or `on_start`) until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        if not self.opened.wait(WAIT):
            raise TimeoutError("the test never opened the gate")


class Probe(_pykka.FailureHookActor):
    """A pykka actor that records what happens to it.

    Messages: "block" waits at its gate, "boom" raises `Boom`, "halt" marks it stopped,
    "handled" answers the messages handled so far; anything else is recorded and echoed.
    With `ends_on_failure`, its failure hook ends it as the runtime's does (unregister, then
    mark stopped); without, the hook only records.
    """

    def __init__(
        self,
        created: list[Probe],
        *,
        ends_on_failure: bool = True,
        start_gate: Gate | None = None,
        on_stop_raises: bool = False,
    ) -> None:
        super().__init__()
        self.ends_on_failure = ends_on_failure
        self.start_gate = start_gate
        self.on_stop_raises = on_stop_raises
        self.gate = Gate()
        self.thread: threading.Thread | None = None
        self.handled: list[Any] = []
        self.events: list[str] = []
        self.failures: queue.Queue[tuple[threading.Thread, ExcInfo]] = queue.Queue()
        self.on_failure_seen: queue.Queue[BaseException | None] = queue.Queue()
        self.on_stop_seen: queue.Queue[tuple[bool, BaseException | None]] = queue.Queue()
        created.append(self)

    def on_start(self) -> None:
        self.thread = threading.current_thread()
        if self.start_gate is not None:
            self.start_gate.hold()
            raise Boom("on_start")

    def on_receive(self, message: Any) -> Any:
        match message:
            case "block":
                self.gate.hold()
            case "boom":
                raise Boom(message)
            case "halt":
                _pykka.mark_stopped(self)
            case "handled":
                return list(self.handled)
            case _:
                self.handled.append(message)
                return message
        return None

    def on_stop(self) -> None:
        refused: BaseException | None = None
        try:
            self.actor_ref.tell("from on_stop")
        except pykka.ActorDeadError as error:
            refused = error
        self.on_stop_seen.put((self.actor_ref.is_alive(), refused))
        if self.on_stop_raises:
            raise Boom("on_stop")

    def on_unhandled_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.events.append("hook")
        if self.ends_on_failure:
            _pykka.unregister(self.actor_ref)
            _pykka.mark_stopped(self)
        self.failures.put((threading.current_thread(), (exc_type, exc_value, traceback)))

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.events.append("on_failure")
        self.on_failure_seen.put(exception_value)


class PykkaDefault(_pykka.FailureHookActor):
    """Keeps the default failure hook; tells `failed` once pykka called `on_failure`."""

    def __init__(self, failed: threading.Event, threads: queue.Queue[threading.Thread]) -> None:
        super().__init__()
        self.failed = failed
        self.threads = threads

    def on_start(self) -> None:
        self.threads.put(threading.current_thread())

    def on_receive(self, message: Any) -> Any:
        raise Boom(message)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.failed.set()


@pytest.fixture
def start() -> Iterator[Callable[..., Probe]]:
    """Starts `Probe`s; afterwards opens their gates, stops them and joins their threads."""
    probes: list[Probe] = []

    def start_probe(**options: Any) -> Probe:
        created: list[Probe] = []
        Probe.start(created, **options)
        probes.extend(created)
        return created[0]

    yield start_probe
    for probe in probes:
        probe.gate.opened.set()
        if probe.start_gate is not None:
            probe.start_gate.opened.set()
        probe.actor_ref.stop(block=True, timeout=WAIT)
        pykka.ActorRegistry.unregister(probe.actor_ref)
    for probe in probes:
        if probe.thread is not None:
            probe.thread.join(WAIT)
            assert not probe.thread.is_alive(), f"{probe} did not end"


def block(probe: Probe) -> None:
    """Hold `probe` inside a handler, so what is sent next waits in its inbox."""
    probe.actor_ref.tell("block")
    assert probe.gate.entered.wait(WAIT)


# -- version -------------------------------------------------------------------------------------


def test_the_pykka_range_the_compat_module_states_is_the_pyproject_pin() -> None:
    """`PYKKA_REQUIREMENT` is pyproject.toml's pykka pin, and the installed pykka satisfies it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [
        requirement
        for requirement in map(Requirement, pyproject["project"]["dependencies"])
        if requirement.name == "pykka"
    ]
    assert len(pins) == 1
    assert pins[0].specifier == SpecifierSet(_pykka.PYKKA_REQUIREMENT)
    assert importlib.metadata.version("pykka") in pins[0].specifier


# -- envelopes and stop requests -----------------------------------------------------------------


def test_envelopes_carry_the_message_and_the_future_an_ask_returned(
    start: Callable[..., Probe],
) -> None:
    """An inbox holds Envelopes with `message` and `reply_to`: None for a tell, the future
    `ask(block=False)` returned for an ask, and `Envelope(message)` builds a tell's."""
    probe = start()
    block(probe)
    probe.actor_ref.tell("told")
    future = probe.actor_ref.ask("asked", block=False)
    told, asked = _pykka.drain_inbox(probe)
    assert isinstance(told, _pykka.Envelope)
    assert (told.message, told.reply_to) == ("told", None)
    assert asked.message == "asked"
    assert asked.reply_to is future
    built = _pykka.Envelope("stashed")
    assert (built.message, built.reply_to) == ("stashed", None)


def test_failing_a_kept_ask_through_its_reply_to_raises_in_the_asker(
    start: Callable[..., Probe],
) -> None:
    """`reply_to.set_exception(exc_info=...)` on a drained ask's envelope raises that exception
    from the asker's future."""
    probe = start()
    block(probe)
    future = probe.actor_ref.ask("asked", block=False)
    (envelope,) = _pykka.drain_inbox(probe)
    error = Boom("no next activation")
    assert envelope.reply_to is not None
    envelope.reply_to.set_exception(exc_info=(Boom, error, None))
    with pytest.raises(Boom) as raised:
        future.get(timeout=WAIT)
    assert raised.value is error


def test_a_stop_request_is_recognised_and_answering_it_makes_stop_return_true(
    start: Callable[..., Probe],
) -> None:
    """`ActorRef.stop()` asks and `Actor.stop()` tells a message `is_stop_request` recognises;
    `answer_stop` on the asked one makes the waiting `stop()` return True."""
    probe = start()
    block(probe)
    probe.actor_ref.tell("plain")
    stopping = probe.actor_ref.stop(block=False)
    probe.stop()
    plain, asked, told = _pykka.drain_inbox(probe)
    assert not _pykka.is_stop_request(plain)
    assert _pykka.is_stop_request(asked)
    assert asked.reply_to is not None
    assert _pykka.is_stop_request(told)
    assert told.reply_to is None
    _pykka.answer_stop(told)  # a told stop has nobody to answer: nothing happens
    _pykka.answer_stop(asked)
    assert stopping.get(timeout=WAIT) is True
    assert probe.actor_ref.is_alive()  # the drained requests never reached the actor


# -- the inbox -----------------------------------------------------------------------------------


def test_the_inbox_is_a_simple_queue_whose_size_and_emptiness_are_readable(
    start: Callable[..., Probe],
) -> None:
    """pykka makes each actor's inbox through `_create_actor_inbox`, so a FailureHookActor's is
    its own `queue.SimpleQueue`, shared with its pykka ref: `inbox_size` counts waiting
    envelopes, `inbox_empty` says none wait, and `drain_inbox` takes them out in the order
    sent."""
    probe, other = start(), start()
    assert type(probe.actor_inbox) is queue.SimpleQueue
    assert probe.actor_ref.actor_inbox is probe.actor_inbox
    assert other.actor_inbox is not probe.actor_inbox
    block(probe)
    assert _pykka.inbox_empty(probe)
    assert _pykka.inbox_size(probe) == 0
    for message in ("a", "b", "c"):
        probe.actor_ref.tell(message)
    assert not _pykka.inbox_empty(probe)
    assert _pykka.inbox_size(probe) == 3
    assert [envelope.message for envelope in _pykka.drain_inbox(probe)] == ["a", "b", "c"]
    assert _pykka.inbox_empty(probe)
    assert _pykka.inbox_size(probe) == 0


def test_requeued_envelopes_are_handled_in_order_before_messages_sent_after_them(
    start: Callable[..., Probe],
) -> None:
    """Envelopes drained from one actor and put into another's inbox with `requeue` are handled
    there in their order, before a message told afterwards; `Envelope(message)` is handled as
    a tell."""
    source, target = start(), start()
    block(source)
    for message in ("a", "b", "c"):
        source.actor_ref.tell(message)
    block(target)
    for envelope in _pykka.drain_inbox(source):
        _pykka.requeue(target, envelope)
    _pykka.requeue(target, _pykka.Envelope("stashed"))
    target.actor_ref.tell("later")
    target.gate.opened.set()
    assert target.actor_ref.ask("handled", timeout=WAIT) == ["a", "b", "c", "stashed", "later"]


def test_a_requeued_ask_is_answered_by_the_new_actor_to_the_original_future(
    start: Callable[..., Probe],
) -> None:
    """An ask drained from one actor and requeued into another is answered by the second
    actor, through the future the asker already holds."""
    source, target = start(), start()
    block(source)
    future = source.actor_ref.ask("question", block=False)
    (envelope,) = _pykka.drain_inbox(source)
    _pykka.requeue(target, envelope)
    assert future.get(timeout=WAIT) == "question"
    assert target.actor_ref.ask("handled", timeout=WAIT) == ["question"]
    source.gate.opened.set()
    assert source.actor_ref.ask("handled", timeout=WAIT) == []


def test_an_ask_put_with_a_callback_future_answers_through_its_callback(
    start: Callable[..., Probe],
) -> None:
    """An ask put into a live inbox with `put_if_alive` and a `CallbackFuture` as its reply_to
    is answered through the callback, on the actor's thread: the value, or the handler's
    exception (the actor goes on); the future holds the answer too."""
    probe = start()
    answers: queue.Queue[tuple[Any, BaseException | None, threading.Thread]] = queue.Queue()

    def answered(value: Any, error: BaseException | None) -> None:
        answers.put((value, error, threading.current_thread()))

    future = _pykka.CallbackFuture(answered)
    _pykka.put_if_alive(probe, _pykka.Envelope("question", reply_to=future))
    value, error, thread = answers.get(timeout=WAIT)
    assert (value, error, thread) == ("question", None, probe.thread)
    assert future.get(timeout=WAIT) == "question"
    failing = _pykka.CallbackFuture(answered)
    _pykka.put_if_alive(probe, _pykka.Envelope("boom", reply_to=failing))
    value, error, thread = answers.get(timeout=WAIT)
    assert value is None
    assert isinstance(error, Boom)
    assert thread is probe.thread
    with pytest.raises(Boom):
        failing.get(timeout=WAIT)
    assert probe.actor_ref.ask("handled", timeout=WAIT) == ["question"]


def test_put_if_alive_refuses_a_stopped_actor_as_tell_does(start: Callable[..., Probe]) -> None:
    """Once the actor is marked stopped, `put_if_alive` raises ActorDeadError and puts
    nothing into its inbox."""
    probe = start()
    probe.actor_ref.ask("halt", timeout=WAIT)
    with pytest.raises(pykka.ActorDeadError):
        _pykka.put_if_alive(probe, _pykka.Envelope("late"))
    assert _pykka.inbox_empty(probe)


# -- stopping ------------------------------------------------------------------------------------


def test_mark_stopped_closes_the_actor_to_senders(start: Callable[..., Probe]) -> None:
    """Once `mark_stopped` set `actor_stopped` (here from a handler), `is_alive()` is False and
    `tell` and `ask` raise ActorDeadError."""
    probe = start()
    assert probe.actor_ref.is_alive()
    probe.actor_ref.ask("halt", timeout=WAIT)
    assert not probe.actor_ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        probe.actor_ref.tell("late")
    with pytest.raises(pykka.ActorDeadError):
        probe.actor_ref.ask("late", timeout=WAIT)


def test_actor_stopped_is_one_flag_shared_with_the_ref_that_stopping_sets(
    start: Callable[..., Probe],
) -> None:
    """A FailureHookActor's `actor_stopped` is a `Flag`, the same object its pykka ref reads
    `is_alive()` from, and pykka's own stop sets it (pykka uses nothing but `set` and
    `is_set` of it)."""
    probe = start()
    stopped = probe.actor_stopped
    assert isinstance(stopped, Flag)
    assert probe.actor_ref.actor_stopped is stopped
    assert not stopped.is_set()
    assert probe.actor_ref.stop(block=True, timeout=WAIT) is True
    assert stopped.is_set()
    assert stopped.wait(0)
    assert not probe.actor_ref.is_alive()


def test_unregister_removes_a_started_actor_from_the_registry_and_may_repeat(
    start: Callable[..., Probe],
) -> None:
    """`Actor.start()` registers the actor in pykka's registry; `unregister` removes it, and
    unregistering it again does nothing."""
    probe = start()
    ref = probe.actor_ref
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) == ref
    _pykka.unregister(ref)
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None
    _pykka.unregister(ref)
    assert ref.is_alive()  # the registry is bookkeeping: the actor still runs


def test_during_on_stop_the_actor_is_already_closed_to_senders(
    start: Callable[..., Probe],
) -> None:
    """A stop request marks the actor stopped before `on_stop` runs: there, `is_alive()` is
    False and a `tell` to itself raises ActorDeadError."""
    probe = start()
    probe.actor_ref.stop(block=False)
    alive, refused = probe.on_stop_seen.get(timeout=WAIT)
    assert not alive
    assert isinstance(refused, pykka.ActorDeadError)


def test_a_blocking_stop_returns_after_on_stop_has_returned(start: Callable[..., Probe]) -> None:
    """`ActorRef.stop(block=True)` returns True only once `on_stop` has run to its end, and the
    actor is then unregistered."""
    probe = start()
    assert probe.actor_ref.stop(block=True, timeout=WAIT) is True
    assert probe.on_stop_seen.qsize() == 1
    assert pykka.ActorRegistry.get_by_urn(probe.actor_urn) is None


# -- the failure hook ----------------------------------------------------------------------------


def test_the_failure_hook_runs_on_the_actor_thread_when_a_tell_handler_raises(
    start: Callable[..., Probe],
) -> None:
    """When `on_receive` raises during a tell, pykka calls the hook (`_handle_failure`) on the
    actor's thread with (exc_type, exc_value, traceback) of that exception."""
    probe = start()
    probe.actor_ref.tell("boom")
    thread, (exc_type, exc_value, traceback) = probe.failures.get(timeout=WAIT)
    assert thread is probe.thread
    assert exc_type is Boom
    assert isinstance(exc_value, Boom)
    assert traceback is exc_value.__traceback__


def test_after_the_hook_pykka_calls_on_failure_and_goes_on_unless_marked_stopped(
    start: Callable[..., Probe],
) -> None:
    """After the hook returns from a failed tell, pykka calls `on_failure` with the same
    exception, and then handles the next message: ending the actor is the hook's job."""
    probe = start(ends_on_failure=False)
    probe.actor_ref.tell("boom")
    _, (_, hooked, _) = probe.failures.get(timeout=WAIT)
    assert probe.on_failure_seen.get(timeout=WAIT) is hooked
    assert probe.events == ["hook", "on_failure"]
    assert probe.actor_ref.ask("still here", timeout=WAIT) == "still here"


def test_a_hook_that_marks_the_actor_stopped_ends_it_and_pykka_answers_what_is_queued(
    start: Callable[..., Probe],
) -> None:
    """When the hook unregisters and marks the actor stopped, pykka handles nothing more: asks
    queued behind the failure get ActorDeadError, a queued stop request returns True."""
    probe = start()
    block(probe)
    probe.actor_ref.tell("boom")
    probe.actor_ref.tell("after")
    asked = probe.actor_ref.ask("after", block=False)
    stopping = probe.actor_ref.stop(block=False)
    probe.gate.opened.set()
    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=WAIT)
    assert stopping.get(timeout=WAIT) is True
    assert probe.thread is not None
    probe.thread.join(WAIT)
    assert probe.handled == []
    assert not probe.actor_ref.is_alive()
    assert pykka.ActorRegistry.get_by_urn(probe.actor_urn) is None


def test_an_ask_handler_error_goes_to_the_asker_and_not_to_the_hook(
    start: Callable[..., Probe],
) -> None:
    """When `on_receive` raises during an ask, the asker gets the exception, the hook is not
    called and the actor handles the next message."""
    probe = start()
    with pytest.raises(Boom):
        probe.actor_ref.ask("boom", timeout=WAIT)
    assert probe.actor_ref.ask("next", timeout=WAIT) == "next"
    assert probe.failures.empty()
    assert probe.events == []


def test_the_failure_hook_runs_when_on_start_raises_and_no_message_is_handled(
    start: Callable[..., Probe],
) -> None:
    """When `on_start` raises, pykka calls the hook on the actor's thread, then handles no
    message: an ask sent while `on_start` ran gets ActorDeadError."""
    gate = Gate()
    probe = start(start_gate=gate)
    assert gate.entered.wait(WAIT)
    asked = probe.actor_ref.ask("early", block=False)
    gate.opened.set()
    thread, (exc_type, exc_value, _) = probe.failures.get(timeout=WAIT)
    assert thread is probe.thread
    assert exc_type is Boom
    assert str(exc_value) == "on_start"
    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=WAIT)
    assert probe.handled == []


def test_the_failure_hook_also_runs_when_on_stop_raises(start: Callable[..., Probe]) -> None:
    """When `on_stop` raises during a stop, pykka calls the hook with that exception on the
    actor's thread, and the stop still returns True."""
    probe = start(on_stop_raises=True)
    assert probe.actor_ref.stop(block=True, timeout=WAIT) is True
    thread, (exc_type, exc_value, _) = probe.failures.get(timeout=WAIT)
    assert thread is probe.thread
    assert exc_type is Boom
    assert str(exc_value) == "on_stop"


def test_the_default_failure_hook_is_pykkas_own_handling(caplog: pytest.LogCaptureFixture) -> None:
    """`FailureHookActor` without an override handles a failed tell as pykka does: it logs the
    exception through stdlib logging, unregisters the actor and marks it stopped."""
    failed = threading.Event()
    threads: queue.Queue[threading.Thread] = queue.Queue()
    ref = PykkaDefault.start(failed, threads)
    thread = threads.get(timeout=WAIT)
    try:
        with caplog.at_level("ERROR", logger="pykka"):
            ref.tell("boom")
            assert failed.wait(WAIT)
        assert not ref.is_alive()
        assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None
        (record,) = [r for r in caplog.records if r.name == "pykka"]
        assert record.exc_info is not None
        assert record.exc_info[0] is Boom
    finally:
        ref.stop(block=True, timeout=WAIT)
        pykka.ActorRegistry.unregister(ref)
        thread.join(WAIT)
    assert not thread.is_alive()
