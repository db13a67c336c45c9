"""A process for `tests/test_redaction.py`, with the logging a fresh process gets by default.

python -m tests.security_child failures URL UNREACHABLE_URL
    Walks the ways a storage URL's password could reach the output: malformed URLs given to
    `ActorSystem`, an unreachable database (raised to the caller, and an actor whose on_start
    fails on it), and handlers that fail on a real database while holding its URL. Caught
    errors are printed with their tracebacks to stderr; the runtime logs what it logs there.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from sqlalchemy import create_engine, text

from plexspaces import Actor, ActorSystem


class Connects(Actor):
    """Connects to a database in on_start: fails when it cannot be reached."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def on_start(self) -> None:
        dsn = self.url
        engine = create_engine(dsn)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()


class Billing(Actor):
    """Queries a table that does not exist, holding the database URL in a local variable."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def on_receive(self, message: Any) -> Any:
        dsn = self.url
        engine = create_engine(dsn)
        try:
            with engine.connect() as connection:
                return connection.execute(text("SELECT * FROM no_such_table")).all()
        finally:
            engine.dispose()


def failures(url: str, unreachable: str) -> None:
    for malformed in (f" {url}", url.split("://", 1)[1], f"{url} trailing words"):
        try:
            ActorSystem(storage_url=malformed).shutdown()
        except Exception:
            traceback.print_exc()
    with ActorSystem(storage_url=unreachable) as system:
        try:
            system.register_virtual("job", Billing, unreachable)
        except Exception:
            traceback.print_exc()
    with ActorSystem(storage_url=url) as system:
        try:
            system.spawn(Connects, unreachable, actor_id="connects")
        except Exception:
            traceback.print_exc()
        failing_ask = system.spawn(Billing, url, actor_id="asked")
        try:
            failing_ask.ask("bill", timeout=30)
        except Exception:
            traceback.print_exc()
        failing_tell = system.spawn(Billing, url, actor_id="told")
        # Handled before the stop that leaving the block queues behind it; shutdown waits.
        failing_tell.tell("bill")
    print("done")


def main(argv: list[str]) -> int:
    if argv[0] == "failures":
        failures(argv[1], argv[2])
        return 0
    raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
