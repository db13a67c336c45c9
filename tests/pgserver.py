"""A throwaway PostgreSQL server on loopback for the tests: initdb into a temporary directory,
start on a free port, stop and remove at the end.

`PLEXSPACES_TEST_PG_URL` points the tests at a server of the user's own instead (its user needs
CREATEDB); tests that stop and restart the server always start one of their own.
The server programs are found the way `scripts/ensure_postgres.sh` finds them (which `./test.sh`
runs first, installing them if missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import psycopg
from sqlalchemy.engine import make_url

PG_URL_ENV: Final = "PLEXSPACES_TEST_PG_URL"
_ROOT: Final = Path(__file__).resolve().parent.parent
_SUPERUSER: Final = "plexspaces"


def server_bindir() -> Path:
    """The directory of initdb/pg_ctl/postgres, or a RuntimeError saying how to get them."""
    result = subprocess.run(
        [str(_ROOT / "scripts" / "ensure_postgres.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "the PostgreSQL server programs are needed for these tests and could not be found or "
            f"installed: {result.stderr.strip()}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, owned by this process.

    Args:
        durable: keep PostgreSQL's crash safety (fsync, synchronous commit). Off by default: the
            tests kill client processes, never the server, and run several times faster without.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = server_bindir()
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="plexspaces-pg-"))
        self.data = self.directory / "data"
        self.log_file = self.directory / "server.log"
        self._durable = durable
        # initdb and postgres refuse to run as root: run them as the package's `postgres` user.
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no 'postgres' user to run the test server as"
                ) from None
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        self.start()

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as, str(self.bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}"
            )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the maintenance database `postgres`."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.directory}",
            "-c max_connections=300",
        ]
        if not self._durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: end sessions and shut down cleanly; `immediate`: like a
        crash of the server)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


class ExternalServer:
    """A server the user runs, from `PLEXSPACES_TEST_PG_URL`; never stopped by the tests."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        if not self._url.drivername.startswith("postgresql"):
            raise RuntimeError(f"{PG_URL_ENV}={url!r} is not a PostgreSQL URL")
        self.url = url

    def url_for(self, database: str) -> str:
        return self._url.set(database=database).render_as_string(hide_password=False)

    def close(self) -> None:
        pass


Server = PostgresServer | ExternalServer


def from_environment() -> Server:
    """The server named by `PLEXSPACES_TEST_PG_URL`, or a new one of our own."""
    url = os.environ.get(PG_URL_ENV)
    return ExternalServer(url) if url else PostgresServer()


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(server: Server) -> Iterator[str]:
    """A new empty database on `server` for one test; its URL. Dropped afterwards."""
    name = f"plexspaces_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(server.url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url_for(name)
    finally:
        with psycopg.connect(_libpq(server.url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
