"""Node identity: the default node id is derived from nothing secret, and one live process on a
host holds a node id on a store (with the cluster off: the store). Real processes
(`tests/security_child.py node`) on a SQLite file and on a real PostgreSQL database."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from plexspaces import ActorSystem
from plexspaces._cluster import resolve_node_id
from tests.security_child import REFUSED_EXIT
from tests.test_redaction import ROOT, WAIT, child_env, with_password


def test_the_default_node_id_depends_on_no_password_or_user(pg_url: str, tmp_path: Path) -> None:
    """The default node id is the same whatever password or user the URL carries, so it holds
    nothing to attack; it still differs between databases."""
    ids = {
        resolve_node_id(None, pg_url),
        resolve_node_id(None, with_password(pg_url)),
        resolve_node_id(None, with_password(pg_url, "another-password")),
        resolve_node_id(None, make_url(pg_url).set(username="other").render_as_string(False)),
    }
    assert len(ids) == 1
    other_database = make_url(pg_url).set(database="elsewhere").render_as_string(False)
    assert resolve_node_id(None, other_database) not in ids
    with ActorSystem(storage_url=with_password(pg_url)) as system:
        assert system.node_id in ids
    relative = resolve_node_id(None, "sqlite:///plexspaces.db")
    assert relative == resolve_node_id(None, f"sqlite:///{Path.cwd() / 'plexspaces.db'}")


class Node:
    """A `security_child node` process: its first line says whether it got the node id."""

    def __init__(self, url: str, node_id: str | None = None) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.security_child",
                "node",
                url,
                *([node_id] if node_id else []),
            ],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().strip()

    def finish(self) -> int:
        """Close its stdin (a running node then shuts down) and wait for its exit status."""
        _, stderr = self.process.communicate(timeout=WAIT)
        assert self.process.returncode in (0, REFUSED_EXIT), stderr
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=WAIT)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file (the cluster off) or a PostgreSQL database (a cluster)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'plexspaces.db'}"


def test_a_second_process_with_the_default_node_id_is_refused(store_url: str) -> None:
    """Two processes on one host and store with the default node id: the second is refused
    with an error naming node_id; once the first is killed, a new one takes the same id at
    once."""
    first = Node(store_url)
    try:
        assert first.first_line.startswith("ready "), first.first_line
        node_id = first.first_line.removeprefix("ready ")
        second = Node(store_url)
        assert second.finish() == REFUSED_EXIT
        assert second.first_line.startswith("refused ")
        assert "node_id" in second.first_line
        assert str(first.process.pid) in second.first_line
    finally:
        first.kill()
    restarted = Node(store_url)
    assert restarted.first_line == f"ready {node_id}"
    assert restarted.finish() == 0


def test_cluster_nodes_with_their_own_ids_share_a_database(pg_url: str) -> None:
    """On PostgreSQL, processes with node ids of their own run side by side on one host."""
    first = Node(pg_url, "billing-1")
    second = Node(pg_url, "billing-2")
    assert (first.first_line, second.first_line) == ("ready billing-1", "ready billing-2")
    assert first.finish() == second.finish() == 0


def test_systems_of_one_process_share_the_node_lock(tmp_path: Path) -> None:
    """Two systems of one process on one store are not refused (the lock guards against other
    processes); the lock is held until the last of them shuts down."""
    url = f"sqlite:///{tmp_path / 'plexspaces.db'}"
    first = ActorSystem(storage_url=url)
    second = ActorSystem(storage_url=url)
    try:
        assert first.reminders is not second.reminders
    finally:
        first.shutdown()
    try:
        refused = Node(url)
        assert refused.finish() == REFUSED_EXIT
    finally:
        second.shutdown()
    child = Node(url)
    assert child.first_line.startswith("ready ")
    assert child.finish() == 0
