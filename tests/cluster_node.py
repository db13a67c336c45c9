"""One node of the cluster tests: an actor system on a shared PostgreSQL database.

Run as `python -m tests.cluster_node CONFIG_JSON` from the repository root. The config holds:
`url`, `node_id`, `log` (this node's log file), `lease`, `poll_interval`, `actors` (the keys of
the `device` virtual actors this node registers reminders for), `reminders_per_actor`, `period`
(a duration), `anchor` (epoch seconds of every reminder's first tick) and `register` (whether to
register them or only serve).

The node registers its reminders (each through its actor, which activates it here), writes
`ready`, and serves fires until SIGTERM, which shuts it down cleanly. Each handled fire is one line
appended to the log with a single write (a SIGKILL never leaves half a line in the file, but may
cut the last one short):

    fire <actor key> <reminder name> <fire_count> <scheduled_at epoch s> <handled epoch s>
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ReminderFired

DEVICE_TYPE = "device"


class Device(Actor):
    """Logs every fire it handles; registers reminders when asked."""

    log_fd: ClassVar[int] = -1
    node_id: ClassVar[str] = ""

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1h"})
        self.attach_facet(ReminderFacet(), config={"min_period": "100ms"})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(reminder_name=name, fire_count=count, scheduled_at=scheduled):
                line = (
                    f"fire {self.ctx.actor_key} {name} {count} "
                    f"{scheduled.timestamp():.6f} {time.time():.6f}\n"
                )
                os.write(self.log_fd, line.encode())
                return None
            case ("register", name, kwargs):
                self.facet(ReminderFacet).register_reminder(name, **kwargs)
                return None
        raise ValueError(f"unexpected message {message!r}")


def main(config_text: str) -> None:
    config = json.loads(config_text)
    Device.log_fd = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    system = ActorSystem(
        storage_url=config["url"],
        node_id=config["node_id"],
        lease=config["lease"],
        poll_interval=config["poll_interval"],
        name=config["node_id"],
    )
    try:
        system.register_virtual(DEVICE_TYPE, Device)
        anchor = datetime.fromtimestamp(config["anchor"], UTC)
        if config["register"]:
            for key in config["actors"]:
                ref = system.virtual(DEVICE_TYPE, key)
                for index in range(config["reminders_per_actor"]):
                    kwargs = {"due": anchor, "period": config["period"], "missed": "all"}
                    ref.ask(("register", f"r{index}", kwargs), timeout=30)
        os.write(Device.log_fd, b"ready\n")
        stop.wait()
    finally:
        system.shutdown()
        os.write(Device.log_fd, b"stopped\n")
        os.close(Device.log_fd)


if __name__ == "__main__":
    main(sys.argv[1])
