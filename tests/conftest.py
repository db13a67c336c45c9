"""Shared fixtures: every system made here is shut down after its test, and checked for leaks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from plexspaces import ActorSystem, ManualClock

from . import pgserver

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """A ManualClock at a fixed start, 2026-01-01T00:00:00Z."""
    return ManualClock(start=START)


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Callable[..., ActorSystem]]:
    """Factory for actor systems on a temporary SQLite file; all are shut down after the test."""
    systems: list[ActorSystem] = []
    threads_before = set(threading.enumerate())

    def make(**kwargs: object) -> ActorSystem:
        kwargs.setdefault("storage_url", f"sqlite:///{tmp_path / 'plexspaces.db'}")
        system = ActorSystem(**kwargs)  # type: ignore[arg-type]
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.shutdown(timeout=10)
    for system in systems:
        assert system.actor_ids() == [], f"actors left running in {system!r}"
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert leaked == [], f"threads left running after shutdown: {leaked}"


@pytest.fixture
def system(make_system: Callable[..., ActorSystem], clock: ManualClock) -> ActorSystem:
    """An actor system on the ManualClock `clock`."""
    return make_system(clock=clock)


@pytest.fixture
def real_system(make_system: Callable[..., ActorSystem]) -> ActorSystem:
    """An actor system on the real clock."""
    return make_system()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """A PostgreSQL server for the session: `PLEXSPACES_TEST_PG_URL`, or one started on loopback
    (and stopped at the end). Tests that need PostgreSQL fail, never skip, when there is none."""
    server = pgserver.from_environment()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database for one test; dropped afterwards."""
    with pgserver.scratch_database(pg_server) as url:
        yield url
