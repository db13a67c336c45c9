"""The pytest plugin shipped with the package, as a user's project sees it: a test file run by
pytest in a subprocess, with only the installed plugin (no conftest of ours)."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from plexspaces import Actor, ActorSystem, AskTimeoutError
from plexspaces.testing import wait_until_drained

pytest_plugins = ("pytester",)

USER_TESTS = """
import threading

from facets.timer import TimerFacet
from plexspaces import Actor, ActorRef, TimerFired
from plexspaces.testing import TEST_START, wait_until_drained


class Heartbeat(Actor):
    def on_start(self):
        self.beats = 0
        self.attach_facet(TimerFacet(), config={})
        self.facet(TimerFacet).register_periodic("beat", "2s")

    def on_receive(self, message):
        if isinstance(message, TimerFired):
            self.beats += 1
        elif message == "count":
            return self.beats


class Slow(Actor):
    def __init__(self, gate, handled):
        super().__init__()
        self.gate = gate
        self.handled = handled

    def on_receive(self, message):
        self.gate.wait(5)
        self.handled.append(message)


def test_heartbeat(actor_system, manual_clock):
    assert manual_clock.now() == TEST_START
    ref = actor_system.spawn(Heartbeat)
    manual_clock.advance("6s")
    assert ref.ask("count") == 3


def test_drained(actor_system):
    gate, handled = threading.Event(), []
    ref = actor_system.spawn(Slow, gate, handled)
    for index in range(3):
        ref.tell(index)
    assert actor_system.metrics().mailbox_depth["Slow"] >= 2
    gate.set()
    wait_until_drained(ref)
    assert handled == [0, 1, 2]
    assert actor_system.metrics().mailbox_depth == {"Slow": 0}


def test_two_systems_share_a_database(make_actor_system, manual_clock):
    first = make_actor_system(clock=manual_clock)
    second = make_actor_system(clock=manual_clock, name="second")
    assert first.storage_url == second.storage_url


def test_systems_share_the_manual_clock_the_test_uses(make_actor_system, manual_clock):
    from plexspaces import SystemClock

    assert make_actor_system().clock is manual_clock
    assert isinstance(make_actor_system(clock=SystemClock(), name="real").clock, SystemClock)


def test_a_leaked_thread_fails_the_test(actor_system):
    threading.Thread(target=threading.Event().wait, args=(2,), daemon=True).start()
"""


def test_the_plugin_fixtures_work_and_a_leak_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*threads left running after shutdown*"])
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_a_leaked_thread_fails_the_test*"])


class _Blocked(Actor):
    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        self.gate.wait(10)


def test_wait_until_drained_times_out_clearly_and_ignores_inactive_actors(
    actor_system: ActorSystem,
) -> None:
    gate = threading.Event()
    ref = actor_system.spawn(_Blocked, gate, actor_id="blocked")
    ref.tell("stuck")
    with pytest.raises(
        AskTimeoutError, match=re.escape("'blocked' did not drain its mailbox within 0.05")
    ):
        wait_until_drained(ref, timeout=0.05)
    gate.set()
    wait_until_drained(ref)
    ref.stop()
    wait_until_drained(ref)  # stopped: nothing to drain
    actor_system.register_virtual("blocked", _Blocked, gate)
    wait_until_drained(actor_system.virtual("blocked", "k"))  # never activated
