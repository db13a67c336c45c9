"""The process `tests/test_reminder_crash.py` kills: it registers reminders and handles their fires.

Run as `python -m tests.reminder_child STORAGE_URL LOG_FILE SEED` from the repository root. It
opens an actor system on the store `STORAGE_URL` (a SQLite file or a PostgreSQL database; real
clock), registers every reminder of `PLAN` for
the virtual type `JOB_TYPE`, and then serves their fires until it is killed.

A handler stands for real work: it spends a few milliseconds (drawn from `SEED` and the fire)
before and after its side effect, the log line. Those are the windows a kill must be able to hit
for the test to mean something: between a fire's record and its side effect (the fire must be
delivered again after the restart) and between the side effect and the acknowledgement (the one
duplicate at-least-once allows). Without them a fire is in flight for well under a millisecond.

Everything the parent needs to know is appended to `LOG_FILE`, one line per fact, each written and
fsynced before the process goes on:

    registered <key> <name>            once register_reminder returned (the reminder is durable)
    registered-all                     every reminder of PLAN is registered
    fire <key> <name> <fire_count>     a handler finished handling this fire (before its ack)

A line without its final newline was cut by the kill and means nothing.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from typing import Any, ClassVar, Final

from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorSystem, ReminderFired

JOB_TYPE: Final = "job"
KEYS: Final = ("j0", "j1", "j2")
REMINDER_CONFIG: Final = {"min_period": "100ms"}
SERVE_FOR: Final = 60.0
"""Seconds the child serves fires before it shuts down by itself (the parent kills it sooner)."""

_PER_KEY: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    ("p200", {"due": "200ms", "period": "200ms", "max_count": 5}),
    ("p300", {"due": "300ms", "period": "300ms", "max_count": 5}),
    ("pall", {"due": "250ms", "period": "200ms", "max_count": 5, "missed": "all"}),
    ("o0", {"due": "0s"}),
    ("o700", {"due": "700ms"}),
    ("o1500", {"due": "1500ms"}),
)

PLAN: Final[tuple[tuple[str, str, dict[str, Any]], ...]] = tuple(
    (key, name, {**kwargs, "payload": {"key": key, "name": name}})
    for key in KEYS
    for name, kwargs in _PER_KEY
)
"""Every reminder the child registers: (virtual actor key, reminder name, register kwargs)."""


def final_count(kwargs: dict[str, Any]) -> int:
    """The fire_count of a planned reminder's last fire."""
    if kwargs.get("period") is None:
        return 1
    count: int = kwargs["max_count"]
    return count


def append_line(path: str, line: str) -> None:
    """Append one line to `path` durably: written in one call, then fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


WORK_MS: Final = (0.0, 12.0)
"""Range of the milliseconds a handler works before, and again after, logging its fire."""


class Job(Actor):
    """Logs each fire it handles to `log_path`; registers the reminders it is asked to."""

    log_path: ClassVar[str] = ""
    seed: ClassVar[str] = ""

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config=REMINDER_CONFIG)

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(reminder_name=name, fire_count=count):
                key = self.ctx.actor_key
                work = random.Random(f"{self.seed}-{key}-{name}-{count}")
                # Real time on purpose: the handler's work, where the parent's kill may land.
                threading.Event().wait(work.uniform(*WORK_MS) / 1000)
                append_line(self.log_path, f"fire {key} {name} {count}")
                threading.Event().wait(work.uniform(*WORK_MS) / 1000)
                return None
            case ("register", name, kwargs):
                return self.facet(ReminderFacet).register_reminder(name, **kwargs)
        raise ValueError(f"unexpected message {message!r}")


def main(storage_url: str, log_file: str, seed: str) -> None:
    Job.log_path = log_file
    Job.seed = seed
    system = ActorSystem(storage_url=storage_url)
    try:
        system.register_virtual(JOB_TYPE, Job)
        for key, name, kwargs in PLAN:
            system.virtual(JOB_TYPE, key).ask(("register", name, kwargs), timeout=10)
            append_line(log_file, f"registered {key} {name}")
        append_line(log_file, "registered-all")
        threading.Event().wait(SERVE_FOR)  # serve fires until the parent kills us
    finally:
        system.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
