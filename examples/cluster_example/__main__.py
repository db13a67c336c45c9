"""Two nodes and a client-only process: virtual actors reached from anywhere over NATS, with
PostgreSQL as the one source of truth.

Usage:
    python -m examples.cluster_example --storage-url postgresql+psycopg://... --nats nats://...
    python -m examples.cluster_example node --node-id node-a --storage-url ... --nats ...

Without a role, this process is the client (a web front end, say): it starts two node processes
(`node-a`, `node-b`, each this module with the `node` role) and talks to `account` actors
without hosting any. It:

1. deposits into six accounts: each is activated on one of the two nodes (the client picks by
   hashing over the live nodes) and answers with its balance and the node it runs on;
2. asks one account to remind itself in a second: the node that owns the reminder's bucket fires
   it, into the account wherever it is active;
3. kills node-a with SIGKILL: the accounts it held answer from node-b once node-a's lease runs
   out (their in-memory balances died with node-a; a real account keeps its balance in a
   database);
4. stops node-b cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import Actor, ActorSystem, ReminderFired

LEASE = "2s"
ACCOUNTS = [f"acc-{index}" for index in range(1, 7)]


class Account(Actor):
    """A balance in memory; deposits answer with the balance and the node that holds it."""

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), config={"idle_timeout": "10m"})
        self.attach_facet(ReminderFacet(), config={"min_period": "1s"})
        self.balance = 0
        self.statements = 0

    def on_receive(self, message: Any) -> Any:
        node = self.ctx.system.node_id
        match message:
            case ("deposit", amount):
                self.balance += amount
                return self.balance, node
            case "statement-in-1s":
                self.facet(ReminderFacet).register_reminder("statement", due="1s")
                return node
            case ReminderFired(reminder_name="statement"):
                self.statements += 1
                say(node, f"{self.ctx.actor_id}: statement reminder fired, balance {self.balance}")
                return None
            case "statements":
                return self.statements
        raise ValueError(f"unknown message {message!r}")


def say(who: str, text: str) -> None:
    print(f"{who:<7} {text}", flush=True)


def run_node(args: argparse.Namespace) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ActorSystem(
        storage_url=args.storage_url,
        cluster=True,
        transport=args.nats,
        node_id=args.node_id,
        lease=LEASE,
        poll_interval="500ms",
    ) as system:
        system.register_virtual("account", Account)
        system.reminders  # noqa: B018 - join the cluster now (serve, heartbeat, take buckets)
        say(args.node_id, "ready")
        stop.wait()
    say(args.node_id, "stopped cleanly")


def start_node(args: argparse.Namespace, node_id: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "examples.cluster_example", "node", "--node-id", node_id]
    command += ["--storage-url", args.storage_url, "--nats", args.nats]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert node.stdout is not None
    ready = node.stdout.readline()  # the node prints "ready" once it serves
    if "ready" not in ready:
        raise SystemExit(f"{node_id} did not start: {ready!r}")
    sys.stdout.write(ready)
    # Echo what the node prints from now on (its reminder fires) into this output.
    threading.Thread(target=lambda: sys.stdout.writelines(node.stdout), daemon=True).start()
    return node


def run_client(args: argparse.Namespace) -> None:
    nodes = {node_id: start_node(args, node_id) for node_id in ("node-a", "node-b")}
    try:
        with ActorSystem(
            storage_url=args.storage_url,
            cluster=True,
            transport=args.nats,
            node_id="web",
            hosts_actors=False,  # routes to the nodes; activates nothing, fires nothing
        ) as client:
            holders = {}
            for key in ACCOUNTS:
                balance, node = client.virtual("account", key).ask(("deposit", 10), timeout=10)
                holders[key] = node
                say("web", f"deposit 10 into account/{key}: balance {balance} on {node}")
            for node_id in ("node-a", "node-b"):
                held = sorted(key for key, node in holders.items() if node == node_id)
                say("web", f"accounts on {node_id}: {', '.join(held)}")

            first = client.virtual("account", ACCOUNTS[0])
            node = first.ask("statement-in-1s", timeout=10)
            say("web", f"account/{ACCOUNTS[0]} registered a reminder on {node}")
            deadline = time.monotonic() + 30
            while first.ask("statements", timeout=10) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)  # the demo waits for the fire (printed by the account's node)
            say("web", f"account/{ACCOUNTS[0]} got {first.ask('statements', timeout=10)} statement")

            nodes["node-a"].send_signal(signal.SIGKILL)
            nodes["node-a"].wait()
            killed = time.monotonic()
            say("web", "killed node-a with SIGKILL")
            for key in ACCOUNTS:
                balance, node = client.virtual("account", key).ask(("deposit", 1), timeout=30)
                say(
                    "web",
                    f"deposit 1 into account/{key}: balance {balance} on {node} "
                    f"({time.monotonic() - killed:.1f}s after the kill)",
                )
            say("web", f"actors active on this client-only node: {len(client.actor_ids())}")
    finally:
        for node in nodes.values():
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in nodes.values():
            node.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.cluster_example", description=__doc__)
    parser.add_argument("role", nargs="?", choices=["client", "node"], default="client")
    parser.add_argument("--node-id", default="node-a")
    parser.add_argument(
        "--storage-url", default=os.environ.get("PLEXSPACES_STORAGE_URL"), help="PostgreSQL URL"
    )
    parser.add_argument("--nats", default=os.environ.get("PLEXSPACES_NATS_URL"), help="NATS URL")
    args = parser.parse_args()
    if not args.storage_url or not args.nats:
        parser.error(
            "give --storage-url (a PostgreSQL URL the nodes share) and --nats (nats://host:port), "
            "or set PLEXSPACES_STORAGE_URL and PLEXSPACES_NATS_URL"
        )
    if args.role == "node":
        run_node(args)
    else:
        run_client(args)


if __name__ == "__main__":
    main()
