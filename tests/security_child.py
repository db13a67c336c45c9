"""A process for `tests/test_redaction.py` and `tests/test_node_identity.py`, with the logging a
fresh process gets by default.

python -m tests.security_child failures URL UNREACHABLE_URL
    Walks the ways a storage URL's password could reach the output: malformed URLs given to
    `ActorSystem`, an unreachable database (raised to the caller, and an actor whose on_start
    fails on it), and handlers that fail on a real database while holding its URL. Caught
    errors are printed with their tracebacks to stderr; the runtime logs what it logs there.

python -m tests.security_child node URL [NODE_ID]
    Opens the reminder store of an actor system on URL (default node id unless NODE_ID), prints
    `ready <node id>`, and holds it until stdin closes; prints `refused <message>` and exits
    3 when another process holds the node id.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from sqlalchemy import create_engine, text

from plexspaces import Actor, ActorSystem, NodeIdInUseError

REFUSED_EXIT = 3


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


def node(url: str, node_id: str | None) -> int:
    try:
        system = ActorSystem(storage_url=url, node_id=node_id)
        system.reminders  # noqa: B018 - opens the store, which takes the node's lock
    except NodeIdInUseError as error:
        print(f"refused {error}", flush=True)
        return REFUSED_EXIT
    with system:
        print(f"ready {system.node_id}", flush=True)
        sys.stdin.read()
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "failures":
        failures(argv[1], argv[2])
        return 0
    return node(argv[1], argv[2] if len(argv) > 2 else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
