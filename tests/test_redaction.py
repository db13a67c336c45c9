"""Database passwords never reach the output: log lines, tracebacks, exception messages and the
command line's output, on the failure paths where a storage URL is at hand. Real processes and a
real PostgreSQL server; the password is a distinctive string searched for in everything shown."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from plexspaces import ActorSystem, configure_logging
from plexspaces._store import SqlReminderStore
from plexspaces.cli import cli

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0
"""Seconds a child process may take (a bound, never a delay)."""
PASSWORD = "Sw0rdfish-7c1e9b"


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """Tests here configure structlog for the process; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def closed_port_url() -> str:
    """A PostgreSQL URL with the password, on a loopback port where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+psycopg://billing:{PASSWORD}@127.0.0.1:{port}/billing"


def child_env() -> dict[str, str]:
    """The environment of a fresh process: logging left to the runtime's defaults."""
    env = dict(os.environ)
    for name in ("PLEXSPACES_LOG_FORMAT", "PLEXSPACES_LOG_LEVEL", "PLEXSPACES_STORAGE_URL"):
        env.pop(name, None)
    return env


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_no_password_reaches_stderr_on_any_failure_path(pg_url: str, tmp_path: Path) -> None:
    """Malformed URLs, an unreachable database and failing handlers, in a process with the
    default console logging: tracebacks and errors appear, the password never does."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.security_child",
            "failures",
            with_password(pg_url),
            closed_port_url(),
        ],
        cwd=tmp_path,
        env={**child_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.strip() == "done"
    # Every path was taken: the errors and the failures' log events are there.
    assert output.count("is not a SQLAlchemy URL") == 2
    assert "StoreUnavailableError" in output
    assert "actor.start_failed" in output
    assert "no_such_table" in output
    assert "actor.failed" in output
    assert PASSWORD not in output


def test_a_malformed_url_is_shown_without_its_password() -> None:
    """A URL SQLAlchemy cannot parse (leading space, no scheme, a bad port) is refused with an
    error that hides the password."""
    good = f"postgresql+psycopg://billing:{PASSWORD}@127.0.0.1:5432/billing"
    for malformed in (
        f" {good}",
        good.split("://", 1)[1],
        good.replace(":5432", ":port"),
    ):
        with pytest.raises(ValueError, match="storage_url") as raised:
            ActorSystem(storage_url=malformed)
        assert PASSWORD not in str(raised.value)


def test_the_cli_never_prints_a_password(pg_url: str) -> None:
    """The command line's output and errors hide the password: malformed and unreachable URLs,
    and a report on a real database."""
    url = with_password(pg_url)
    SqlReminderStore(url).close()  # the tables, so doctor reports on them
    results = [
        run_cli("reminders", "list", "--db", f" {url}"),
        run_cli("reminders", "list", "--db", url.split("://", 1)[1]),
        run_cli("doctor", "--db", closed_port_url()),
        run_cli("doctor", "--db", url),
        run_cli("reminders", "list", "--db", url),
    ]
    assert [result.exit_code for result in results] == [2, 2, 2, 0, 0]
    assert "database: postgresql+psycopg://plexspaces:***@" in results[3].stdout
    for result in results:
        assert PASSWORD not in result.stdout + result.stderr


def test_a_console_traceback_shows_no_local_variables_and_no_password() -> None:
    """The console format renders a failure's traceback without the frames' local variables,
    and hides the password of a URL in the exception message."""
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    secret_url = f"postgresql+psycopg://billing:{PASSWORD}@db.internal/billing"
    local_marker = "local-value-0f3a"
    try:
        marker = local_marker
        raise ConnectionError(f"cannot reach {secret_url} ({len(marker)})")
    except ConnectionError:
        structlog.get_logger("test").exception("billing.failed")
    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "ConnectionError: cannot reach postgresql+psycopg://billing:***@db.internal" in output
    assert local_marker not in output
    assert PASSWORD not in output


def test_json_logs_hide_passwords_in_fields_and_tracebacks() -> None:
    """The JSON format hides a URL's password in event fields and in the rendered exception."""
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    secret_url = f"postgresql://billing:{PASSWORD}@db.internal/billing"
    try:
        raise ConnectionError(f"cannot reach {secret_url}")
    except ConnectionError:
        structlog.get_logger("test").exception("billing.failed", target=secret_url)
    [event] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["target"] == "postgresql://billing:***@db.internal/billing"
    assert "billing:***@db.internal" in event["exception"]
    assert PASSWORD not in stream.getvalue()
