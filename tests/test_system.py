"""The actor system: spawn validation, ids, lookup, shutdown, storage URL, node id and lease."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facets.timer import TimerFacet
from plexspaces import (
    STORAGE_URL_ENV,
    Actor,
    ActorIdInUseError,
    ActorStoppedError,
    ActorSystem,
    ManualClock,
    SystemShutdownError,
)

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""


class Journal:
    """Shared by a test and its actors: events in the order they happened."""

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def add(self, entry: Any) -> None:
        self.entries.append(entry)


class Member(Actor):
    """Reports its thread, and records start and stop in a journal."""

    def __init__(self, journal: Journal | None = None) -> None:
        super().__init__()
        self.journal = journal if journal is not None else Journal()

    def on_start(self) -> None:
        self.journal.add(("on_start", self.ctx.actor_id, threading.current_thread()))

    def on_receive(self, message: Any) -> Any:
        if message == "thread":
            return threading.current_thread()
        return message

    def on_stop(self) -> None:
        self.journal.add(("on_stop", self.ctx.actor_id))


class SlowBorn(Actor):
    """Its constructor waits for `born` (bounded), keeping its spawn in progress meanwhile."""

    def __init__(self, born: threading.Event) -> None:
        super().__init__()
        born.wait(WAIT)


class Quitter(Actor):
    """Shuts its own system down from a handler; its on_stop waits on a gate the test opens."""

    def __init__(self, stopping: threading.Event, gate: threading.Event) -> None:
        super().__init__()
        self.stopping = stopping
        self.gate = gate

    def on_start(self) -> None:
        self.thread = threading.current_thread()

    def on_receive(self, message: Any) -> Any:
        if message == "thread":
            return self.thread
        self.ctx.system.shutdown()
        return "shut down"

    def on_stop(self) -> None:
        self.stopping.set()
        self.gate.wait(WAIT)


class Outcomes:
    """Results reported by several actors; `all_in` is set once `expected` have reported."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.by_actor: dict[str, BaseException | None] = {}
        self.all_in = threading.Event()
        self._lock = threading.Lock()

    def record(self, actor_id: str, outcome: BaseException | None) -> None:
        with self._lock:
            self.by_actor[actor_id] = outcome
            if len(self.by_actor) == self.expected:
                self.all_in.set()


class ConcurrentQuitter(Actor):
    """Meets its peers at a barrier inside its handler, then shuts the system down and records
    what that shutdown raised (None if nothing)."""

    def __init__(self, barrier: threading.Barrier, outcomes: Outcomes) -> None:
        super().__init__()
        self.barrier = barrier
        self.outcomes = outcomes

    def on_receive(self, message: Any) -> Any:
        self.barrier.wait(WAIT)
        try:
            # Bounded, so a regression shows as an error here instead of a hung test.
            self.ctx.system.shutdown(timeout="3s")
        except Exception as error:
            self.outcomes.record(self.ctx.actor_id, error)
        else:
            self.outcomes.record(self.ctx.actor_id, None)


class TimerUser(Actor):
    """Runs a periodic timer: the only facet a timers-only system uses."""

    def on_start(self) -> None:
        self.attach_facet(TimerFacet()).register_periodic("tick", "1s")  # type: ignore[attr-defined]

    def on_receive(self, message: Any) -> Any:
        if message == "thread":
            return threading.current_thread()
        return message


def spawn_then_raise(system: ActorSystem, journal: Journal) -> None:
    with system:
        system.spawn(Member, journal, actor_id="doomed")
        raise KeyError("boom")


def on_stops(journal: Journal) -> list[str]:
    return sorted(entry[1] for entry in journal.entries if entry[0] == "on_stop")


# -- spawn input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [object, int, "Member", Member(), None],
    ids=["object", "int", "name", "instance", "none"],
)
def test_spawn_rejects_what_is_not_an_actor_class(system: ActorSystem, cls: Any) -> None:
    """spawn of something that is not an Actor subclass raises TypeError and starts nothing."""
    with pytest.raises(TypeError, match=r"subclass of plexspaces\.Actor"):
        system.spawn(cls, actor_id="x")
    assert system.actor_ids() == []


@pytest.mark.parametrize("actor_id", ["", 42, b"bytes", ["x"]], ids=repr)
def test_spawn_rejects_an_actor_id_that_is_not_a_non_empty_string(
    system: ActorSystem, actor_id: Any
) -> None:
    """An empty or non-str actor_id is a ValueError naming it; nothing starts."""
    with pytest.raises(ValueError, match="actor_id") as raised:
        system.spawn(Member, actor_id=actor_id)
    assert repr(actor_id) in str(raised.value)
    assert system.actor_ids() == []


def test_spawn_without_actor_id_generates_distinct_ids(system: ActorSystem) -> None:
    """spawn without an actor_id gives each actor its own generated, non-empty id."""
    first = system.spawn(Member)
    second = system.spawn(Member)
    assert first.actor_id
    assert second.actor_id
    assert first.actor_id != second.actor_id
    assert sorted(system.actor_ids()) == sorted([first.actor_id, second.actor_id])


def test_spawning_a_live_id_raises_actor_id_in_use_naming_it(system: ActorSystem) -> None:
    """spawn with the id of a running actor raises ActorIdInUseError naming the id; the running
    actor is untouched."""
    journal = Journal()
    ref = system.spawn(Member, journal, actor_id="unique")
    with pytest.raises(ActorIdInUseError, match="'unique'"):
        system.spawn(Member, journal, actor_id="unique")
    assert ref.is_alive()
    assert ref.ask("still here", timeout=WAIT) == "still here"
    assert system.actor_ids() == ["unique"]
    assert [entry[0] for entry in journal.entries] == ["on_start"]


def test_concurrent_spawns_of_one_id_let_exactly_one_win(system: ActorSystem) -> None:
    """Many threads spawning the same id at once: one gets the ref, the rest ActorIdInUseError,
    even while the winner is still in its constructor."""
    contenders = 12
    barrier = threading.Barrier(contenders)
    born = threading.Event()
    losers_done = threading.Event()
    refs: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contend() -> None:
        barrier.wait(WAIT)
        try:
            ref = system.spawn(SlowBorn, born, actor_id="contested")
        except BaseException as error:
            with lock:
                errors.append(error)
                if len(errors) == contenders - 1:
                    losers_done.set()
        else:
            with lock:
                refs.append(ref)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    # The winner's constructor waits for every loser to have been turned away.
    losers_done.wait(WAIT)
    born.set()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert len(refs) == 1
    assert len(errors) == contenders - 1
    assert all(isinstance(error, ActorIdInUseError) for error in errors), errors
    assert system.actor_ids() == ["contested"]
    assert system.lookup("contested") == refs[0]


# -- lookup ----------------------------------------------------------------------------------------


def test_lookup_and_actor_ids_follow_the_live_actors(system: ActorSystem) -> None:
    """lookup(id) gives the live actor's ref (None otherwise); actor_ids() lists the live ids."""
    assert system.actor_ids() == []
    assert system.lookup("a") is None
    a = system.spawn(Member, actor_id="a")
    b = system.spawn(Member, actor_id="b")
    assert sorted(system.actor_ids()) == ["a", "b"]
    assert system.lookup("a") == a
    assert system.lookup("b") == b
    assert system.lookup("c") is None
    assert a.stop() is True
    assert system.actor_ids() == ["b"]
    assert system.lookup("a") is None


# -- shutdown --------------------------------------------------------------------------------------


def test_context_manager_stops_every_actor_and_joins_their_threads(tmp_path: Path) -> None:
    """Leaving `with ActorSystem() as system:` runs every on_stop, frees every id and joins every
    actor thread."""
    journal = Journal()
    with ActorSystem(storage_url=f"sqlite:///{tmp_path / 'cm.db'}", clock=ManualClock()) as system:
        refs = [system.spawn(Member, journal, actor_id=f"m{n}") for n in range(3)]
        threads = [ref.ask("thread", timeout=WAIT) for ref in refs]
        assert all(thread.is_alive() for thread in threads)
    assert on_stops(journal) == ["m0", "m1", "m2"]
    assert system.actor_ids() == []
    assert not any(ref.is_alive() for ref in refs)
    assert not any(thread.is_alive() for thread in threads)
    with pytest.raises(SystemShutdownError):
        system.spawn(Member)


def test_context_manager_shuts_down_when_the_block_raises(tmp_path: Path) -> None:
    """An exception leaving the `with` block still shuts the system down, and is not swallowed."""
    journal = Journal()
    system = ActorSystem(storage_url=f"sqlite:///{tmp_path / 'cm.db'}", clock=ManualClock())
    with pytest.raises(KeyError, match="boom"):
        spawn_then_raise(system, journal)
    assert on_stops(journal) == ["doomed"]
    assert system.is_shut_down
    assert system.actor_ids() == []


def test_shutdown_joins_every_thread_the_system_started(tmp_path: Path) -> None:
    """After shutdown() no thread started by the system (actors, scheduler) is alive."""
    before = set(threading.enumerate())
    system = ActorSystem(storage_url=f"sqlite:///{tmp_path / 'threads.db'}")
    try:
        refs = [system.spawn(TimerUser, actor_id=f"t{n}") for n in range(3)]
        actor_threads = {ref.ask("thread", timeout=WAIT) for ref in refs}
        started = [thread for thread in threading.enumerate() if thread not in before]
        assert len(actor_threads) == 3
        assert actor_threads <= set(started)
        # Besides the actor threads, the real clock's scheduler thread.
        assert len(started) >= 4
    finally:
        system.shutdown()
    assert [thread for thread in started if thread.is_alive()] == []
    assert system.actor_ids() == []


def test_spawn_after_shutdown_raises_system_shutdown_error(system: ActorSystem) -> None:
    """Once the system is shut down, spawn raises SystemShutdownError and starts nothing."""
    system.spawn(Member, actor_id="before")
    system.shutdown()
    assert system.is_shut_down
    with pytest.raises(SystemShutdownError):
        system.spawn(Member, actor_id="after")
    assert system.actor_ids() == []


def test_shutdown_is_idempotent(system: ActorSystem) -> None:
    """A second shutdown() returns quietly and stops nothing twice."""
    journal = Journal()
    ref = system.spawn(Member, journal, actor_id="once")
    system.shutdown()
    system.shutdown()
    assert on_stops(journal) == ["once"]
    with pytest.raises(ActorStoppedError):
        ref.tell("hello")


def test_shutdown_from_inside_a_handler_does_not_deadlock(system: ActorSystem) -> None:
    """An actor calling system.shutdown() in its handler gets its answer out; every other actor
    is stopped by the time that shutdown returns, and the calling actor stops afterwards."""
    journal = Journal()
    stopping = threading.Event()
    gate = threading.Event()
    gate.set()
    others = [system.spawn(Member, journal, actor_id=f"other-{n}") for n in range(2)]
    quitter = system.spawn(Quitter, stopping, gate, actor_id="quitter")
    assert quitter.ask("shut down please", timeout=WAIT) == "shut down"
    assert on_stops(journal) == ["other-0", "other-1"]
    assert not any(ref.is_alive() for ref in others)
    assert system.is_shut_down
    assert stopping.wait(WAIT)


def test_shutdown_after_an_in_actor_shutdown_waits_for_that_actor(system: ActorSystem) -> None:
    """After an actor shut the system down from its handler, shutdown() from outside returns
    only once that actor too has stopped (on_stop done, id free, thread joined)."""
    stopping = threading.Event()
    gate = threading.Event()
    quitter = system.spawn(Quitter, stopping, gate, actor_id="quitter")
    quitter_thread = quitter.ask("thread", timeout=WAIT)
    assert quitter.ask("shut down please", timeout=WAIT) == "shut down"
    assert stopping.wait(WAIT)  # the quitter is inside on_stop, held by the gate
    returned = threading.Event()
    outside = threading.Thread(target=lambda: (system.shutdown(), returned.set()))
    outside.start()
    try:
        # A correct shutdown() waits for the quitter's on_stop, which waits for the gate.
        returned_early = returned.wait(0.3)
    finally:
        gate.set()
        outside.join(WAIT)
        quitter_thread.join(WAIT)
    assert returned.is_set()
    assert not returned_early, "shutdown() returned while an actor of the system was still stopping"
    assert system.actor_ids() == []


def test_two_actors_shutting_down_from_their_handlers_at_once_do_not_wait_for_each_other(
    system: ActorSystem,
) -> None:
    """Two actors calling system.shutdown() from their handlers at the same time both return
    without error (neither waits for the other, which is itself inside a handler)."""
    barrier = threading.Barrier(2)
    outcomes = Outcomes(expected=2)
    refs = [
        system.spawn(ConcurrentQuitter, barrier, outcomes, actor_id=name) for name in ("a", "b")
    ]
    for ref in refs:
        ref.tell("shut down")
    assert outcomes.all_in.wait(WAIT)
    assert outcomes.by_actor == {"a": None, "b": None}
    for ref in refs:
        assert ref.wait_stopped(WAIT)
    system.shutdown()
    assert system.actor_ids() == []


# -- storage URL, node id, lease -------------------------------------------------------------------


def test_explicit_storage_url_is_kept(
    make_system: Callable[..., ActorSystem], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An explicit storage_url is used as given, even when the environment names another."""
    monkeypatch.setenv(STORAGE_URL_ENV, "sqlite:///from-env.db")
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    assert make_system(storage_url=url).storage_url == url


def test_storage_url_none_uses_the_environment_variable(
    make_system: Callable[..., ActorSystem], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """storage_url=None takes PLEXSPACES_STORAGE_URL when it is set."""
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv(STORAGE_URL_ENV, url)
    assert make_system(storage_url=None).storage_url == url


def test_storage_url_none_defaults_to_plexspaces_db_in_the_current_directory(
    make_system: Callable[..., ActorSystem], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the variable, storage_url=None means sqlite:///<cwd>/plexspaces.db."""
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    system = make_system(storage_url=None)
    assert system.storage_url == f"sqlite:///{tmp_path / 'plexspaces.db'}"


def test_a_timers_only_system_creates_nothing_on_disk(
    make_system: Callable[..., ActorSystem],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: ManualClock,
) -> None:
    """A system whose actors only use timers never opens the store: no file appears."""
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    system = make_system(storage_url=None, clock=clock)
    ref = system.spawn(TimerUser, actor_id="timers-only")
    clock.advance("3s")
    assert ref.ask("sync", timeout=WAIT) == "sync"
    system.shutdown()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["", "   ", "not a url", "://nowhere"], ids=repr)
def test_a_bad_storage_url_is_a_value_error_naming_it(url: str) -> None:
    """A storage_url that is not a SQLAlchemy URL raises ValueError naming the value."""
    with pytest.raises(ValueError, match="storage_url") as raised:
        ActorSystem(storage_url=url, clock=ManualClock())
    assert repr(url) in str(raised.value)


def test_default_node_id_is_stable_per_host_and_storage_url(
    make_system: Callable[..., ActorSystem], tmp_path: Path
) -> None:
    """The default node_id is the same for the same storage URL and differs for another one."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    first = make_system(storage_url=url).node_id
    again = make_system(storage_url=url).node_id
    other = make_system(storage_url=f"sqlite:///{tmp_path / 'two.db'}").node_id
    assert isinstance(first, str)
    assert first
    assert first == again
    assert other != first


def test_explicit_node_id_is_kept(make_system: Callable[..., ActorSystem]) -> None:
    """An explicit node_id is used as given."""
    assert make_system(node_id="node-a").node_id == "node-a"


def test_lease_is_parsed_as_a_duration(make_system: Callable[..., ActorSystem]) -> None:
    """lease accepts any duration; the default is ten seconds."""
    assert make_system().lease == timedelta(seconds=10)
    assert make_system(lease="1m30s").lease == timedelta(seconds=90)
    assert make_system(lease=timedelta(seconds=3)).lease == timedelta(seconds=3)


@pytest.mark.parametrize("lease", ["0s", 0, timedelta(0), "-1s", "soon"], ids=repr)
def test_a_lease_that_is_not_a_positive_duration_is_a_value_error(lease: Any) -> None:
    """lease "0s" (or zero, negative, or not a duration) raises ValueError naming the value."""
    with pytest.raises(ValueError, match=r"lease|duration") as raised:
        ActorSystem(storage_url="sqlite://", clock=ManualClock(), lease=lease)
    assert repr(lease) in str(raised.value)


FORGOTTEN = textwrap.dedent(
    """
    from plexspaces import Actor, ActorSystem

    class Idle(Actor):
        def on_stop(self) -> None:
            print("idle stopped", flush=True)

    system = ActorSystem(name="forgotten")
    system.spawn(Idle, actor_id="idle")
    """
)


def test_a_program_that_forgets_shutdown_exits_with_a_warning(tmp_path: Path) -> None:
    """A program that spawns an actor and ends without shutdown() exits: the system is shut
    down at interpreter exit (on_stop runs) with a system.not_shut_down warning naming it."""
    done = subprocess.run(
        [sys.executable, "-c", FORGOTTEN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "system.not_shut_down" in done.stderr
    assert "forgotten" in done.stderr
    assert "idle stopped" in done.stdout
