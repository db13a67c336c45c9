"""File modes: the SQLite files the runtime creates are private to their owner."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorSystem, ManualClock
from plexspaces._store import SqlReminderStore
from plexspaces.cli import cli
from tests.test_store_contract import reminder


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common umask 022, under which files are created world-readable unless asked not to."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


class Remembers(Actor):
    def on_start(self) -> None:
        self.attach_facet(ReminderFacet())

    def on_receive(self, message: Any) -> Any:
        self.facet(ReminderFacet).register_reminder("later", due="1h")
        return None


def test_a_new_sqlite_database_and_its_wal_files_are_private(
    tmp_path: Path, open_umask: None
) -> None:
    """A SQLite database the runtime creates, and its -wal and -shm files, are 0600."""
    database = tmp_path / "plexspaces.db"
    with ActorSystem(storage_url=f"sqlite:///{database}", clock=ManualClock()) as system:
        system.register_virtual("job", Remembers)
        system.virtual("job", "j1").ask("register")
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in tmp_path.iterdir()
            if path.name.startswith("plexspaces.db")
        }
    assert modes == {"plexspaces.db": 0o600, "plexspaces.db-wal": 0o600, "plexspaces.db-shm": 0o600}


def test_the_cli_creates_a_private_database_on_import(tmp_path: Path, open_umask: None) -> None:
    """`plexspaces reminders import` into a new SQLite file creates it 0600."""
    database = tmp_path / "imported.db"
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with SqlReminderStore(source) as store:
        store.upsert_many([reminder()])
    line = CliRunner().invoke(cli, ["reminders", "list", "--json", "--db", source]).stdout
    result = CliRunner().invoke(
        cli, ["reminders", "import", "--db", f"sqlite:///{database}"], input=line
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """A database file that already exists keeps the mode its owner gave it."""
    database = tmp_path / "shared.db"
    database.touch(mode=0o640)
    database.chmod(0o640)
    SqlReminderStore(f"sqlite:///{database}").close()
    assert stat.S_IMODE(database.stat().st_mode) == 0o640
