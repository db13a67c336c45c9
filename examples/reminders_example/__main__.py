"""Reminders: durable reminders that survive deactivation and a SIGKILL, on the real clock.

Usage: python -m examples.reminders_example [--crash-in-handler]

One virtual actor, "account/acct-42", registers two reminders: "billing" every 2 s (no end) and
"sla-check" every 2 s, at most 3 fires. Its idle timeout is 1 s, so it deactivates between fires
and every fire has to activate it again.

The program runs in two processes on one SQLite file:

- a child process (this module with `child DATABASE`) registers the reminders and handles fires;
- the parent echoes what the child prints, kills it with SIGKILL 5 s after the registration
  (after the fires at 2 s and 4 s, before the one at 6 s), then opens a new `ActorSystem` on the
  same file, registers only the actor type, and handles the fires itself until 11.5 s.

With `--crash-in-handler` the child dies inside the handler of billing fire 2 instead, after its
side effect and before it returned: the fire was never acknowledged, so the new process gets it
again with the same `fire_count` (delivery is at-least-once).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ReminderFired, ReminderInfo

KILL_AT = timedelta(seconds=5)
UNTIL = timedelta(seconds=11.5)


def hms(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%H:%M:%S.%f")


class AccountActor(Actor):
    """An account billed every 2 s, with an SLA check that runs three times. Each activation is a
    new instance, built with the arguments given to `register_virtual`."""

    def __init__(self, process: str, crash_at_billing_fire: int | None = None) -> None:
        super().__init__()
        self.process = process
        self.crash_at_billing_fire = crash_at_billing_fire
        self.handled = 0

    def say(self, text: str) -> None:
        print(f"{self.process:<6}  {text}", flush=True)  # whole lines: the parent may kill us

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1s"})
        self.attach_facet(ReminderFacet())
        self.say("activated")

    def on_stop(self) -> None:
        self.say("deactivated")

    def on_receive(self, message: Any) -> Any:
        self.handled += 1  # the first message of an activation is what activated it
        match message:
            case "register":
                reminders = self.facet(ReminderFacet)
                billing = reminders.register_reminder("billing", due="2s", period="2s")
                sla = reminders.register_reminder("sla-check", due="2s", period="2s", max_count=3)
                self.say(f"registered billing    first due {hms(billing.next_fire_at)}, every 2s")
                self.say(
                    f"registered sla-check  first due {hms(sla.next_fire_at)}, every 2s, "
                    "at most 3 fires"
                )
            case ReminderFired(reminder_name=name, fire_count=count):
                # The side effect of a fire (a charge, an SLA probe) is this line; downstream it
                # would be keyed by (name, fire_count), so a repeated delivery is recognised.
                woke = " (it activated the account)" if self.handled == 1 else ""
                self.say(f"{name} #{count} due {hms(message.scheduled_at)}{woke}")
                if name == "billing" and count == self.crash_at_billing_fire:
                    # Die before the handler returns: the fire is never acknowledged.
                    self.say(f"crashing inside the handler of billing #{count}")
                    threading.Event().wait(60)  # the parent kills this process meanwhile
            case _:
                return super().on_receive(message)
        return None


def show(process: str, when: str, infos: list[ReminderInfo]) -> None:
    for info in infos:
        print(
            f"{process:<6}  {when}: {info.name} fire_count {info.fire_count}, "
            f"next due {hms(info.next_fire_at)}"
        )
    missing = {"billing", "sla-check"} - {info.name for info in infos}
    print(f"{process:<6}  {when}: not listed: {', '.join(sorted(missing)) or '-'}")


def run_child(database: str, crash_in_handler: bool) -> None:
    with ActorSystem(storage_url=f"sqlite:///{database}") as system:
        crash_at = 2 if crash_in_handler else None
        system.register_virtual("account", AccountActor, "child", crash_at_billing_fire=crash_at)
        system.virtual("account", "acct-42").ask("register", timeout=10)
        threading.Event().wait(60)  # fires are handled on the actor's thread; wait to be killed


def run_parent(crash_in_handler: bool) -> None:
    database = Path(tempfile.mkdtemp(prefix="plexspaces-reminders-")) / "reminders.db"
    command = [sys.executable, "-m", "examples.reminders_example", "child", str(database)]
    child = subprocess.Popen(
        command + (["--crash-in-handler"] if crash_in_handler else []),
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    registered, crashing = threading.Event(), threading.Event()

    def echo(lines: Any) -> None:  # the child's output, line by line, into ours
        for line in lines:
            print(line, end="", flush=True)
            if line.startswith("child   registered"):
                registered.set()
            if "crashing inside the handler" in line:
                crashing.set()

    reader = threading.Thread(target=echo, args=(child.stdout,))
    reader.start()
    registered.wait(30)
    registered_at = time.monotonic()
    if crash_in_handler:
        crashing.wait(30)
    else:
        time.sleep(KILL_AT.total_seconds())
    # No clean shutdown: nothing in the child runs after this.
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reader.join()
    print(f"parent  killed the child with SIGKILL; its exit status: {child.returncode}")

    with ActorSystem(storage_url=f"sqlite:///{database}") as system:
        # Read straight from the store: what the killed process left, before anything fires here.
        show("parent", "found in the store", system.reminders.list_actor("account", "acct-42"))
        # Only the type is registered here, never the reminders: they come from the file.
        system.register_virtual("account", AccountActor, "parent")
        time.sleep(max(0.0, registered_at + UNTIL.total_seconds() - time.monotonic()))
        show("parent", "at the end", system.reminders.list_actor("account", "acct-42"))
    shutil.rmtree(database.parent)


def main() -> None:
    crash_in_handler = "--crash-in-handler" in sys.argv
    if sys.argv[1:2] == ["child"]:
        run_child(sys.argv[2], crash_in_handler)
    else:
        run_parent(crash_in_handler)


if __name__ == "__main__":
    main()
