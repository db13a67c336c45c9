"""scripts/bootstrap.sh installs what its caller needs, once: the project alone for scripts/run,
the test tools too for ./test.sh, and nothing when the venv already has what is needed. A venv
whose python records the commands it is given stands in for pip, so no package is downloaded."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv directory whose bin/python appends its arguments to a log and succeeds."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return venv, log


def _bootstrap(venv: Path, mode: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLEXSPACES_VENV": str(venv)}
    env.pop("PLEXSPACES_BOOTSTRAP", None)
    if mode is not None:
        env["PLEXSPACES_BOOTSTRAP"] = mode
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "bootstrap.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _installs(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [
        line for line in log.read_text().splitlines() if "pip install" in line and " -e " in line
    ]


def _stamp(venv: Path, extras: str) -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".plexspaces-installed").write_text(f"{digest} {extras}\n")


def test_scripts_run_installs_the_project_without_the_test_tools(tmp_path: Path) -> None:
    """In run mode a new venv gets the project with its PostgreSQL driver and NATS client (what
    the examples need), not the dev extra, and the one line printed says what is installed."""
    venv, log = _fake_venv(tmp_path)
    done = _bootstrap(venv, "run")
    assert done.returncode == 0, done.stderr
    [install] = _installs(log)
    assert install.endswith(f"{ROOT}[postgresql,nats]")
    assert "installing plexspaces-facets into" in done.stderr


def test_test_sh_installs_the_dev_tools(tmp_path: Path) -> None:
    """By default (./test.sh) the dev extra is installed, and the line names the test tools."""
    venv, log = _fake_venv(tmp_path)
    done = _bootstrap(venv, None)
    assert done.returncode == 0, done.stderr
    [install] = _installs(log)
    assert install.endswith(f"{ROOT}[dev]")
    assert "pytest, ruff, mypy" in done.stderr


def test_nothing_is_installed_when_the_venv_has_what_is_needed(tmp_path: Path) -> None:
    """A venv set up for ./test.sh serves scripts/run as it is, and one set up for scripts/run
    serves it again; only ./test.sh on a run-only venv installs more."""
    venv, log = _fake_venv(tmp_path)
    _stamp(venv, "dev")
    assert _bootstrap(venv, "run").returncode == 0
    assert _bootstrap(venv, None).returncode == 0
    assert _installs(log) == []
    _stamp(venv, "postgresql,nats")
    assert _bootstrap(venv, "run").returncode == 0
    assert _installs(log) == []
    assert _bootstrap(venv, None).returncode == 0
    [install] = _installs(log)
    assert install.endswith(f"{ROOT}[dev]")
