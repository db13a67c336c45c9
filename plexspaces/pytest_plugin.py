"""pytest fixtures for testing actors, loaded automatically once plexspaces is installed (the
`pytest11` entry point).

```python
def test_heartbeat(actor_system, manual_clock):
    ref = actor_system.spawn(Heartbeat)
    manual_clock.advance("2s")
    assert ref.ask("count") == 1
```

- `manual_clock`: a `ManualClock` at 2026-01-01T00:00:00Z (`plexspaces.testing.TEST_START`).
- `actor_system`: an `ActorSystem` on `manual_clock` and a SQLite file in the test's temporary
  directory, shut down after the test.
- `make_actor_system`: a factory for more systems (same defaults, but the real clock unless
  `clock=` is given; `storage_url=` to share or change the database).

After the test every system made here is shut down (all of them, even when one fails to shut
down: those failures are then reported together, as an `ExceptionGroup`), and the test fails if
an actor is still running or a thread the test started is still alive.
`plexspaces.testing.wait_until_drained(ref)` waits until an actor has handled everything sent
to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._clock import ManualClock
from ._system import ActorSystem
from .testing import TEST_START, leaked_threads

__all__ = ["actor_system", "make_actor_system", "manual_clock"]


@pytest.fixture
def manual_clock() -> ManualClock:
    """A ManualClock at 2026-01-01T00:00:00Z."""
    return ManualClock(start=TEST_START)


@pytest.fixture
def make_actor_system(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ActorSystem]]:
    """A factory of actor systems on a temporary SQLite file (`plexspaces.db` in `tmp_path`);
    every one is shut down after the test, which fails if actors or threads are left running.

    When the test also uses `manual_clock`, the systems run on that clock unless a `clock=` is
    passed (`clock=SystemClock()` for the real one)."""
    systems: list[ActorSystem] = []
    threads_before = set(threading.enumerate())
    shared_clock = (
        request.getfixturevalue("manual_clock") if "manual_clock" in request.fixturenames else None
    )

    def make(**kwargs: Any) -> ActorSystem:
        if shared_clock is not None:
            kwargs.setdefault("clock", shared_clock)
        if kwargs.get("store") is None:
            kwargs.setdefault("storage_url", f"sqlite:///{tmp_path / 'plexspaces.db'}")
        system = ActorSystem(**kwargs)
        systems.append(system)
        return system

    yield make
    # Every system is shut down even when one fails to, so one failure cannot leave the others
    # (and their threads) running into the next test; then every failure is reported together.
    failures: list[Exception] = []
    for system in systems:
        try:
            system.shutdown(timeout=10)
        except Exception as error:
            error.add_note(f"while shutting down {system!r}")
            failures.append(error)
    if failures:
        raise ExceptionGroup(
            f"{len(failures)} of {len(systems)} actor system(s) failed to shut down", failures
        )
    running = {repr(system): system.actor_ids() for system in systems if system.actor_ids()}
    assert not running, f"actors left running after shutdown: {running}"
    leaked = leaked_threads(threads_before)
    assert not leaked, f"threads left running after shutdown: {leaked}"


@pytest.fixture
def actor_system(
    make_actor_system: Callable[..., ActorSystem], manual_clock: ManualClock
) -> ActorSystem:
    """An actor system on `manual_clock` and a temporary SQLite file."""
    return make_actor_system(clock=manual_clock)
