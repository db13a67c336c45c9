"""One node of the cross-node tests: an actor system on a shared PostgreSQL store and a NATS
transport, driven by JSON commands on stdin (one per line, each answered by one JSON line on
stdout).

Run as `python -m tests.mesh_node CONFIG_JSON` from the repository root. The config holds `url`,
`nats`, `node_id`, `journal` (this node's journal file), `lease`, `poll_interval` and
`hosts_actors`.

Every activation, tell, ask and reminder fire an actor handles is one line appended to the
journal with a single write (a SIGKILL may cut the last line short, never mix two):

    start <key> <node> <epoch s>            an activation of <key> began here
    stop <key> <node> <epoch s>             it ended
    msg <key> <node> <sender> <seq>         a tell or ask with sequence number <seq> from <sender>
    fire <key> <name> <count> <epoch s>     a reminder fire

Commands:
    {"op": "register", "keys": [...], "reminders": R, "period": "5s"}
        register R periodic reminders on each key, first due one period after (through its
        ref: wherever it is active)
    {"op": "traffic", "keys": [...], "seconds": S, "threads": T, "tells": bool}
        T sender threads, each sending to keys picked in turn for S seconds: a tell (when
        "tells") then an ask, each with the next sequence number of that sender and key. Answers
        the counts, latencies and errors, and per key the first and last answered ask times.
    {"op": "ask", "keys": [...], "timeout": s}
        one ask per key from this thread: the node that answered, or the error type
    {"op": "quit"}
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, ClassVar

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ReminderFired, ReminderRegistration

DEVICE = "device"


class Device(Actor):
    """Journals what it handles; answers asks with its node id."""

    journal: ClassVar[int] = -1
    node_id: ClassVar[str] = ""

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "1h"})
        self.attach_facet(ReminderFacet(), config={"min_period": "100ms"})
        _write(f"start {self.ctx.actor_key} {self.node_id} {time.time():.6f}")

    def on_stop(self) -> None:
        _write(f"stop {self.ctx.actor_key} {self.node_id} {time.time():.6f}")

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("seq", sender, seq):
                _write(f"msg {self.ctx.actor_key} {self.node_id} {sender} {seq}")
                return self.node_id
            case ReminderFired(reminder_name=name, fire_count=count):
                _write(f"fire {self.ctx.actor_key} {name} {count} {time.time():.6f}")
                return None
            case ("register", count, period):
                self.facet(ReminderFacet).register_reminders(
                    ReminderRegistration(f"r{index}", due=period, period=period)
                    for index in range(count)
                )
                return None
            case "where":
                return self.node_id
        raise ValueError(f"unexpected message {message!r}")


_runs = itertools.count()


def _write(line: str) -> None:
    os.write(Device.journal, f"{line}\n".encode())


def _traffic(system: ActorSystem, command: dict[str, Any]) -> dict[str, Any]:
    keys: list[str] = command["keys"]
    threads = int(command["threads"])
    until = time.monotonic() + float(command["seconds"])
    tells = bool(command.get("tells", True))
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    run = next(_runs)

    def send(index: int) -> None:
        sender = f"{system.node_id}.{run}.{index}"
        seqs: Counter[str] = Counter()
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        acked_tells = 0
        failed: list[tuple[str, int]] = []  # (key, seq) of the sends that raised
        position = index
        while time.monotonic() < until:
            key = keys[position % len(keys)]
            position += threads
            ref = system.virtual(DEVICE, key)
            if tells:
                seqs[key] += 1
                try:
                    ref.tell(("seq", sender, seqs[key]))
                    acked_tells += 1
                except Exception as error:
                    errors[type(error).__name__] += 1
                    failed.append((key, seqs[key]))
                    continue
            seqs[key] += 1
            started = time.perf_counter()
            try:
                ref.ask(("seq", sender, seqs[key]), timeout=30)
                latencies.append(time.perf_counter() - started)
            except Exception as error:
                errors[type(error).__name__] += 1
                failed.append((key, seqs[key]))
        with lock:
            results.append(
                {
                    "sender": sender,
                    "latencies": latencies,
                    "errors": dict(errors),
                    "acked_tells": acked_tells,
                    "sent": dict(seqs),
                    "failed": failed,
                }
            )

    workers = [threading.Thread(target=send, args=(index,)) for index in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "senders": results}


def _register(system: ActorSystem, command: dict[str, Any]) -> dict[str, Any]:
    """Register the reminders of `command["keys"]`, from a few threads."""
    keys: list[str] = command["keys"]
    message = ("register", command["reminders"], command["period"])
    threads = [
        threading.Thread(
            target=lambda part=part: [
                system.virtual(DEVICE, key).ask(message, timeout=60) for key in part
            ]
        )
        for part in (keys[index::4] for index in range(4))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"registered": len(keys)}


def main(config_text: str) -> None:
    config = json.loads(config_text)
    Device.journal = os.open(config["journal"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    Device.node_id = config["node_id"]
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    system = ActorSystem(
        storage_url=config["url"],
        node_id=config["node_id"],
        lease=config["lease"],
        poll_interval=config["poll_interval"],
        name=config["node_id"],
        cluster=True,
        transport=config["nats"],
        hosts_actors=config.get("hosts_actors", True),
    )
    try:
        if system.hosts_actors:
            system.register_virtual(DEVICE, Device)
        system.reminders  # noqa: B018 - join the cluster now: serve, heartbeat, take buckets
        print(json.dumps({"ready": system.node_id}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            if op == "quit":
                break
            if op == "register":
                answer = _register(system, command)
            elif op == "traffic":
                answer = _traffic(system, command)
            elif op == "ask":
                answer = {}
                for key in command["keys"]:
                    try:
                        answer[key] = system.virtual(DEVICE, key).ask(
                            "where", timeout=command.get("timeout", 30)
                        )
                    except Exception as error:
                        answer[key] = f"!{type(error).__name__}: {error}"
            else:
                answer = {"error": f"unknown op {op!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        system.shutdown()
        os.close(Device.journal)


if __name__ == "__main__":
    main(sys.argv[1])
