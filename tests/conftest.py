"""Shared fixtures, built on the project's own pytest plugin (`plexspaces.pytest_plugin`): every
system made here is shut down after its test, and checked for leaks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from plexspaces import ActorSystem, ManualClock
from plexspaces.testing import TEST_START

from . import natsserver, pgserver

START = TEST_START


@pytest.fixture
def clock(manual_clock: ManualClock) -> ManualClock:
    """The plugin's `manual_clock`: a ManualClock at 2026-01-01T00:00:00Z."""
    return manual_clock


@pytest.fixture
def make_system(
    make_actor_system: Callable[..., ActorSystem],
) -> Callable[..., ActorSystem]:
    """The plugin's `make_actor_system`: actor systems on a temporary SQLite file, all shut down
    after the test, which fails if actors or threads are left running."""
    return make_actor_system


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


@pytest.fixture(scope="session")
def nats_server() -> Iterator[natsserver.NatsServer]:
    """A real nats-server for the session, on a free loopback port; stopped at the end. Tests
    that stop or restart a server, or need credentials, start their own (`make_nats_server`)."""
    server = natsserver.NatsServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_url(nats_server: natsserver.NatsServer) -> str:
    """The URL of the session's nats-server (`nats://127.0.0.1:<port>`)."""
    return nats_server.url


@pytest.fixture
def make_nats_server() -> Iterator[Callable[..., natsserver.NatsServer]]:
    """Start nats-servers of the test's own (`user=`/`password=` or `token=` to require
    credentials); all stopped after the test."""
    servers: list[natsserver.NatsServer] = []

    def make(**credentials: str) -> natsserver.NatsServer:
        server = natsserver.NatsServer(**credentials)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
