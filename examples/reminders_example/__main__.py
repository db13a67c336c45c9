"""Reminders example: durable reminders that survive deactivation and a SIGKILL, on the real clock.

Usage: python -m examples.reminders_example [--kill-at SECONDS] [--until SECONDS]
                                            [--crash-in-handler] [--keep] [--verbose]

One virtual actor, "account/acct-42", attaches `ReminderFacet` and `VirtualActorFacet` (idle
timeout 1 s, so it deactivates between fires and every fire has to activate it again) and
registers two reminders:

1. "billing": every 2 s, first after 2 s, no end;
2. "sla-check": every 2 s, first after 2 s, at most 3 fires in all.

The program runs in two processes on one SQLite file in a fresh temporary directory:

- a child process (this module with `--phase child`) registers the reminders and handles fires,
  writing one JSON line per event to its stdout (activated, fired, deactivated);
- the parent reads those lines, kills the child with SIGKILL `--kill-at` seconds after the
  registration (default 5: after the fires at 2 s and 4 s, before the one at 6 s), then opens a
  new `ActorSystem` on the same file, registers only the actor type (not the reminders) and
  handles the fires itself until `--until` seconds after the registration (default 11.5).

With `--crash-in-handler` the child instead dies inside the handler of billing fire 2, after its
side effect but before the handler returned: that fire was never acknowledged, so the new process
gets it again with the same `fire_count` (delivery is at-least-once).

The parent then checks the journal of both processes: each reminder's fire counts run 1, 2, 3, ...
without gaps (a repeat of the same count at the crash is allowed), billing goes on counting after
the crash instead of starting again at 1, sla-check fired exactly 3 times in all and is then no
longer listed, and every fire was due on the 2-second phase of its registration. It prints a
summary and one `SUMMARY {json}` line for scripts; the exit status is 0 when every check holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, ClassVar, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from facets.reminder import ReminderFacet
from facets.virtual_actor import VirtualActorFacet
from plexspaces import (
    Actor,
    ActorSystem,
    Clock,
    Duration,
    ReminderFired,
    ReminderInfo,
    SystemClock,
    parse_duration,
)

ACCOUNT_TYPE = "account"
ACCOUNT_KEY = "acct-42"
BILLING = "billing"
SLA_CHECK = "sla-check"
PERIOD = "2s"
FIRST_DUE = "2s"
SLA_MAX_COUNT = 3
# Shorter than the period: the account deactivates between two ticks, so each tick activates it.
IDLE_TIMEOUT = "1s"
REMINDER_NAMES = (BILLING, SLA_CHECK)

DEFAULT_KILL_AT_S = 5.0
DEFAULT_UNTIL_S = 11.5
# With --crash-in-handler, the child dies while handling this billing fire.
CRASH_AT_BILLING_FIRE = 2
# The child exits by itself after this long, in case its parent is gone.
CHILD_LIFETIME_S = 60.0
START_TIMEOUT_S = 30.0
ASK_TIMEOUT_S = 10.0


# -- the account actor -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterReminders:
    """Asks the account to register its two reminders; the answer is a `Registered`."""


@dataclass(frozen=True, slots=True)
class Registered:
    """The reminders as stored by the registration, and when it happened."""

    at: datetime
    reminders: list[ReminderInfo]


@dataclass(frozen=True, slots=True)
class ListReminders:
    """Asks the account for its stored reminders."""


Sink = Callable[[dict[str, Any]], None]


class Journal:
    """Where the account reports what it did: JSON lines on stdout in the child process, the
    parent's collector in the parent process. Every entry carries the process id."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def record(self, event: str, **fields: Any) -> None:
        self._sink({"event": event, "pid": os.getpid(), **fields})


class AccountActor(Actor):
    """An account billed every 2 s, with an SLA check that runs three times.

    `journal`, `activations` and `crash_at_billing_fire` are set on a subclass made per process
    (see `account_actor_class`), because the system builds a virtual actor with no arguments.
    """

    journal: ClassVar[Journal]
    activations: ClassVar[Iterator[int]]
    crash_at_billing_fire: ClassVar[int | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.activation = 0
        self.handled = 0

    def on_start(self) -> None:
        self.attach_facet(VirtualActorFacet(), priority=100, config={"idle_timeout": IDLE_TIMEOUT})
        self.attach_facet(ReminderFacet(), priority=50, config={})
        # A new instance per activation: the count lives on the class, per process.
        self.activation = next(self.activations)
        self.journal.record("activated", activation=self.activation, at=_iso(self.ctx.clock.now()))

    def on_stop(self) -> None:
        self.journal.record(
            "deactivated",
            activation=self.activation,
            at=_iso(self.ctx.clock.now()),
            handled=self.handled,
        )

    def on_receive(self, message: Any) -> Any:
        # The first message of an activation is what activated it.
        first = self.handled == 0
        self.handled += 1
        match message:
            case ReminderFired():
                self._on_fire(message, woke=first)
            case RegisterReminders():
                return self._register()
            case ListReminders():
                return self.facet(ReminderFacet).list_reminders()
            case _:
                return super().on_receive(message)
        return None

    def _register(self) -> Registered:
        reminders = self.facet(ReminderFacet)
        at = self.ctx.clock.now()
        billing = reminders.register_reminder(BILLING, due=FIRST_DUE, period=PERIOD)
        sla = reminders.register_reminder(
            SLA_CHECK, due=FIRST_DUE, period=PERIOD, max_count=SLA_MAX_COUNT
        )
        return Registered(at=at, reminders=[billing, sla])

    def _on_fire(self, fired: ReminderFired, *, woke: bool) -> None:
        # The side effect of a fire (a charge, an SLA probe) is this journal entry. Downstream it
        # is keyed by (reminder_name, fire_count), so a repeated delivery is recognised there.
        self.journal.record(
            "fired",
            name=fired.reminder_name,
            fire_count=fired.fire_count,
            max_count=fired.max_count,
            scheduled_at=_iso(fired.scheduled_at),
            handled_at=_iso(self.ctx.clock.now()),
            activation=self.activation,
            woke=woke,
        )
        if fired.reminder_name == BILLING and fired.fire_count == self.crash_at_billing_fire:
            # The process dies here, after the side effect and before the handler returns, so
            # the fire is never acknowledged. The parent kills it on this line.
            self.journal.record("crashing", name=fired.reminder_name, fire_count=fired.fire_count)
            threading.Event().wait(CHILD_LIFETIME_S)


def account_actor_class(journal: Journal, crash_at_billing_fire: int | None) -> type[AccountActor]:
    """`AccountActor` bound to this process's journal."""

    class BoundAccountActor(AccountActor):
        pass

    BoundAccountActor.journal = journal
    BoundAccountActor.activations = itertools.count(1)
    BoundAccountActor.crash_at_billing_fire = crash_at_billing_fire
    return BoundAccountActor


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def reminder_json(info: ReminderInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "fire_count": info.fire_count,
        "max_count": info.max_count,
        "next_fire_at": None if info.next_fire_at is None else _iso(info.next_fire_at),
    }


# -- the child process -----------------------------------------------------------------------------


class StdoutSink:
    """Writes each journal entry as one JSON line on stdout, whole, and flushes it at once: the
    parent may kill this process at any moment and must not lose a line already handled."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def run_child(database: Path, *, crash_in_handler: bool) -> int:
    """Register the reminders and handle fires until killed (or `CHILD_LIFETIME_S` passed)."""
    log: FilteringBoundLogger = structlog.get_logger("reminders_example")
    journal = Journal(StdoutSink(sys.stdout))
    crash_at = CRASH_AT_BILLING_FIRE if crash_in_handler else None
    with ActorSystem(storage_url=_url(database), name="child") as system:
        system.register_virtual(ACCOUNT_TYPE, account_actor_class(journal, crash_at))
        registered = system.virtual(ACCOUNT_TYPE, ACCOUNT_KEY).ask(
            RegisterReminders(), timeout=ASK_TIMEOUT_S
        )
        assert isinstance(registered, Registered)
        journal.record(
            "registered",
            at=_iso(registered.at),
            reminders=[reminder_json(info) for info in registered.reminders],
        )
        log.info("child.registered", reminders=[info.name for info in registered.reminders])
        # Fires are handled on the actor's thread; this thread only waits to be killed.
        threading.Event().wait(CHILD_LIFETIME_S)
    return 0


# -- the parent process ----------------------------------------------------------------------------


class Collector:
    """The journal of both processes, in arrival order, each entry tagged with its phase."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        self._log = log
        self._changed = threading.Condition()
        self.entries: list[dict[str, Any]] = []

    def sink(self, phase: str) -> Sink:
        def add(entry: dict[str, Any]) -> None:
            entry = {**entry, "phase": phase}
            with self._changed:
                self.entries.append(entry)
                self._changed.notify_all()
            self._show(entry)

        return add

    def wait_for(self, event: str, timeout: float) -> dict[str, Any] | None:
        """The first entry of `event`, waiting up to `timeout` seconds for it to arrive."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.entries if e["event"] == event), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None, timeout)
            return found()

    def _show(self, entry: dict[str, Any]) -> None:
        fields = {k: v for k, v in entry.items() if k not in ("event", "reminders", "phase")}
        # The process the entry came from, not the one printing it.
        fields["process"] = entry["phase"]
        if entry["event"] == "fired":
            fields["scheduled_at"] = _short_time(entry["scheduled_at"])
            fields["handled_at"] = _short_time(entry["handled_at"])
            fields.pop("max_count")
        if "at" in fields:
            fields["at"] = _short_time(fields["at"])
        self._log.info(f"journal.{entry['event']}", **fields)


def _short_time(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%H:%M:%S.%f")[:-3]


def _url(database: Path) -> str:
    return f"sqlite:///{database}"


def start_child(database: Path, *, crash_in_handler: bool) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "examples.reminders_example",
        "--phase",
        "child",
        "--database",
        str(database),
    ]
    if crash_in_handler:
        command.append("--crash-in-handler")
    # stdout carries the journal; the child's log goes to stderr, straight to ours.
    return subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def read_journal(stream: IO[str], add: Sink, log: FilteringBoundLogger) -> None:
    for line in stream:
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("child.unexpected_output", line=line.rstrip())
            continue
        add(entry)


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything the summary reports."""

    crash_in_handler: bool
    entries: list[dict[str, Any]]
    child_pid: int
    child_returncode: int | None
    registered: dict[str, Any] | None
    killed_after_s: float | None
    persisted: list[ReminderInfo]
    final: list[ReminderInfo]
    until_s: float

    # -- views of the journal ----------------------------------------------------------------------

    def fires(self, phase: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries
            if e["event"] == "fired"
            and (phase is None or e["phase"] == phase)
            and (name is None or e["name"] == name)
        ]

    def counts(self, name: str, phase: str | None = None) -> list[int]:
        """Fire counts handled, in order of handling (a repeat shows twice)."""
        return [e["fire_count"] for e in self.fires(phase, name)]

    def max_count(self, name: str, phase: str | None = None) -> int:
        return max(self.counts(name, phase), default=0)

    def contiguous(self, name: str) -> bool:
        """The distinct fire counts are exactly 1..max: none skipped."""
        distinct = set(self.counts(name))
        return bool(distinct) and distinct == set(range(1, max(distinct) + 1))

    def duplicates(self) -> list[dict[str, Any]]:
        """Fires handled more than once: the same (name, fire_count), with the phases."""
        seen: dict[tuple[str, int], list[str]] = {}
        for fire in self.fires():
            seen.setdefault((fire["name"], fire["fire_count"]), []).append(fire["phase"])
        return [
            {"name": name, "fire_count": count, "phases": phases}
            for (name, count), phases in seen.items()
            if len(phases) > 1
        ]

    def anchors(self) -> dict[str, datetime]:
        """Each reminder's registration instant: its first due time minus the first delay."""
        first = parse_duration(FIRST_DUE)
        reminders = [] if self.registered is None else self.registered["reminders"]
        return {
            r["name"]: datetime.fromisoformat(r["next_fire_at"]) - first
            for r in reminders
            if r["next_fire_at"] is not None
        }

    def offsets(self, name: str) -> list[float]:
        """When each fire was due, in seconds after its reminder was registered."""
        anchor = self.anchors().get(name)
        if anchor is None:
            return []
        return [
            (datetime.fromisoformat(f["scheduled_at"]) - anchor) / timedelta(seconds=1)
            for f in self.fires(name=name)
        ]

    def on_phase(self) -> bool:
        """Every fire was due exactly on its reminder's 2-second grid, at tick fire_count."""
        period = parse_duration(PERIOD)
        first = parse_duration(FIRST_DUE)
        anchors = self.anchors()
        for fire in self.fires():
            anchor = anchors.get(fire["name"])
            expected = (
                None if anchor is None else anchor + first + (fire["fire_count"] - 1) * period
            )
            if datetime.fromisoformat(fire["scheduled_at"]) != expected:
                return False
        return bool(self.fires())

    def killed_after(self, delay: Duration) -> bool:
        """Whether the child was killed later than `delay` after its registration."""
        if self.killed_after_s is None:
            return False
        return self.killed_after_s > parse_duration(delay).total_seconds()

    def activations(self, phase: str) -> int:
        return sum(1 for e in self.entries if e["event"] == "activated" and e["phase"] == phase)

    def deactivations(self, phase: str) -> int:
        return sum(1 for e in self.entries if e["event"] == "deactivated" and e["phase"] == phase)

    def woken_by_fire(self, phase: str) -> int:
        return sum(1 for fire in self.fires(phase) if fire["woke"])

    def late_ms(self, phase: str) -> float:
        """The latest a fire was handled after its due time, in milliseconds."""
        late = [
            (datetime.fromisoformat(f["handled_at"]) - datetime.fromisoformat(f["scheduled_at"]))
            / timedelta(milliseconds=1)
            for f in self.fires(phase)
        ]
        return round(max(late, default=0.0), 1)

    def expected_billing_fires(self) -> int:
        """Billing ticks due by the end of the run: 2, 4, 6, ... up to `until_s`."""
        return math.floor(self.until_s / parse_duration(PERIOD).total_seconds())

    # -- checks ------------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """The checks that failed, each as a sentence; empty when the run behaved."""
        found: list[str] = []
        if self.registered is None:
            return ["the child never reported its registration"]
        if self.child_returncode != -signal.SIGKILL:
            found.append(f"the child ended with {self.child_returncode}, not by SIGKILL")
        for name in REMINDER_NAMES:
            if not self.contiguous(name):
                found.append(f"{name} fire counts {sorted(set(self.counts(name)))} have a gap")
            if self.killed_after(FIRST_DUE) and not self.fires("child", name):
                found.append(f"{name} never fired in the child")
        found.extend(self._duplicate_problems())
        found.extend(self._billing_problems())
        found.extend(self._sla_problems())
        found.extend(self._persistence_problems())
        if not self.on_phase():
            found.append("a fire was not due on its reminder's 2-second phase")
        for phase in ("child", "parent"):
            if self.woken_by_fire(phase) < 1:
                found.append(f"no fire activated the deactivated account in the {phase}")
        if self.deactivations("child") < 1:
            found.append("the account never deactivated between fires in the child")
        return found

    def _duplicate_problems(self) -> list[str]:
        found: list[str] = []
        duplicates = self.duplicates()
        for dup in duplicates:
            # At-least-once allows exactly one repeat: the child's last fire, again in the parent.
            name, count = dup["name"], dup["fire_count"]
            if dup["phases"] != ["child", "parent"] or count != self.max_count(name, "child"):
                found.append(f"{name} fire {count} repeated away from the crash: {dup['phases']}")
        if self.crash_in_handler:
            wanted = {
                "name": BILLING,
                "fire_count": CRASH_AT_BILLING_FIRE,
                "phases": ["child", "parent"],
            }
            if wanted not in duplicates:
                found.append(f"billing fire {CRASH_AT_BILLING_FIRE} was not delivered again")
        return found

    def _billing_problems(self) -> list[str]:
        found: list[str] = []
        child, parent = self.counts(BILLING, "child"), self.counts(BILLING, "parent")
        if not parent or max(parent) <= max(child, default=0):
            found.append(f"billing did not go on counting after the crash: {child} then {parent}")
        if parent and min(parent) < max(child, default=0):
            found.append(f"billing counted again from {min(parent)} after the crash")
        if self.max_count(BILLING) > self.expected_billing_fires():
            found.append(f"billing fired {self.max_count(BILLING)} times, more than its ticks")
        return found

    def _sla_problems(self) -> list[str]:
        found: list[str] = []
        counts = self.counts(SLA_CHECK)
        if sorted(set(counts)) != list(range(1, SLA_MAX_COUNT + 1)):
            found.append(
                f"sla-check fire counts {sorted(set(counts))}, expected 1..{SLA_MAX_COUNT}"
            )
        if any(f["max_count"] != SLA_MAX_COUNT for f in self.fires(name=SLA_CHECK)):
            found.append("a sla-check fire did not carry max_count 3")
        last_due = parse_duration(FIRST_DUE) + (SLA_MAX_COUNT - 1) * parse_duration(PERIOD)
        if not self.killed_after(last_due) and not self.fires("parent", SLA_CHECK):
            found.append("sla-check did not fire in the parent (its count should span the crash)")
        if any(info.name == SLA_CHECK for info in self.final):
            found.append("sla-check is still listed after its last fire")
        return found

    def _persistence_problems(self) -> list[str]:
        found: list[str] = []
        persisted = {info.name: info for info in self.persisted}
        for name in REMINDER_NAMES:
            info = persisted.get(name)
            if info is None:
                found.append(f"{name} was not in the store after the crash")
            elif info.fire_count < self.max_count(name, "child"):
                found.append(f"{name} was stored with fire_count {info.fire_count} after the crash")
        final = {info.name: info for info in self.final}
        billing = final.get(BILLING)
        if billing is None or billing.fire_count != self.max_count(BILLING):
            found.append(f"billing listed at the end as {billing}, not at its last fire")
        return found


class ParentRun:
    """The parent's part: start the child, kill it, go on from the same file, collect."""

    def __init__(self, args: argparse.Namespace, workdir: Path, log: FilteringBoundLogger) -> None:
        self.args = args
        self.log = log
        self.clock: Clock = SystemClock()
        self.database = workdir / "reminders.db"
        self.collector = Collector(log)

    def run(self) -> RunResult:
        child = start_child(self.database, crash_in_handler=self.args.crash_in_handler)
        self.log.info("child.started", pid=child.pid, database=str(self.database))
        assert child.stdout is not None
        reader = threading.Thread(
            target=read_journal,
            args=(child.stdout, self.collector.sink("child"), self.log),
            daemon=True,
        )
        reader.start()
        killed_after_s = None
        try:
            registered = self.collector.wait_for("registered", START_TIMEOUT_S)
            if registered is not None:
                killed_after_s = self.kill_child(child, registered)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            reader.join()
        self.log.info("child.ended", pid=child.pid, returncode=child.returncode)

        persisted, final = self.restart(registered)
        return RunResult(
            crash_in_handler=self.args.crash_in_handler,
            entries=self.collector.entries,
            child_pid=child.pid,
            child_returncode=child.returncode,
            registered=registered,
            killed_after_s=killed_after_s,
            persisted=persisted,
            final=final,
            until_s=self.args.until,
        )

    def kill_child(self, child: subprocess.Popen[str], registered: dict[str, Any]) -> float:
        """SIGKILL the child at the chosen moment; returns how long after its registration."""
        registered_at = datetime.fromisoformat(registered["at"])
        if self.args.crash_in_handler:
            if self.collector.wait_for("crashing", START_TIMEOUT_S) is None:
                self.log.warning("child.no_crash_point")
        else:
            self.wait_until(registered_at + timedelta(seconds=self.args.kill_at))
        # No clean shutdown: nothing in the child gets to run after this.
        os.kill(child.pid, signal.SIGKILL)
        killed_after = (self.clock.now() - registered_at).total_seconds()
        self.log.warning(
            "child.killed", pid=child.pid, signal="SIGKILL", after_s=round(killed_after, 3)
        )
        return killed_after

    def restart(
        self, registered: dict[str, Any] | None
    ) -> tuple[list[ReminderInfo], list[ReminderInfo]]:
        """Open a new system on the same file and handle fires until `--until`; returns the
        stored reminders as found after the crash and as listed at the end."""
        journal = Journal(self.collector.sink("parent"))
        with ActorSystem(storage_url=_url(self.database), name="parent") as system:
            # Read straight from the store, before the account type is registered: what the
            # crashed process left, before this one fires anything. Reading it through the actor
            # would activate the account and blur the activation counts.
            persisted = system.reminders.list_actor(ACCOUNT_TYPE, ACCOUNT_KEY)
            self.log.info("parent.found", reminders=[reminder_json(i) for i in persisted])
            # Only the type is registered, never the reminders: they come from the file.
            system.register_virtual(ACCOUNT_TYPE, account_actor_class(journal, None))
            if registered is not None:
                registered_at = datetime.fromisoformat(registered["at"])
                self.wait_until(registered_at + timedelta(seconds=self.args.until))
            account = system.virtual(ACCOUNT_TYPE, ACCOUNT_KEY)
            final = account.ask(ListReminders(), timeout=ASK_TIMEOUT_S)
            self.log.info("parent.listed", reminders=[reminder_json(i) for i in final])
        return persisted, final

    def wait_until(self, moment: datetime) -> None:
        threading.Event().wait(max(0.0, (moment - self.clock.now()).total_seconds()))


# -- reporting -------------------------------------------------------------------------------------


def summary_record(result: RunResult) -> dict[str, Any]:
    """The machine-readable summary (printed after `SUMMARY `)."""

    def seconds_after(name: str, moment: datetime | None) -> float | None:
        anchor = result.anchors().get(name)
        if moment is None or anchor is None:
            return None
        return round((moment - anchor) / timedelta(seconds=1), 3)

    def phase(name: str) -> dict[str, Any]:
        return {
            "pid": next((e["pid"] for e in result.entries if e["phase"] == name), None),
            "fires": {n: result.counts(n, name) for n in REMINDER_NAMES},
            "activations": result.activations(name),
            "woken_by_fire": result.woken_by_fire(name),
            "deactivations": result.deactivations(name),
            "late_ms_max": result.late_ms(name),
        }

    return {
        "mode": "crash-in-handler" if result.crash_in_handler else "timed",
        "child": {
            **phase("child"),
            "returncode": result.child_returncode,
            "killed_after_s": None
            if result.killed_after_s is None
            else round(result.killed_after_s, 3),
        },
        "parent": phase("parent"),
        "fire_counts": {n: sorted(set(result.counts(n))) for n in REMINDER_NAMES},
        "deliveries": {n: len(result.counts(n)) for n in REMINDER_NAMES},
        "max_fire_count": {n: result.max_count(n) for n in REMINDER_NAMES},
        "max_fire_count_child": {n: result.max_count(n, "child") for n in REMINDER_NAMES},
        "max_fire_count_parent": {n: result.max_count(n, "parent") for n in REMINDER_NAMES},
        "contiguous": {n: result.contiguous(n) for n in REMINDER_NAMES},
        "duplicates": result.duplicates(),
        "due_s": {n: result.offsets(n) for n in REMINDER_NAMES},
        "on_phase": result.on_phase(),
        "expected_billing_fires": result.expected_billing_fires(),
        "sla_max_count": SLA_MAX_COUNT,
        "persisted_at_restart": {
            info.name: {
                "fire_count": info.fire_count,
                "max_count": info.max_count,
                "next_fire_s": seconds_after(info.name, info.next_fire_at),
            }
            for info in result.persisted
        },
        "final_reminders": {
            info.name: {
                "fire_count": info.fire_count,
                "next_fire_s": seconds_after(info.name, info.next_fire_at),
            }
            for info in result.final
        },
        "until_s": result.until_s,
        "problems": result.problems(),
    }


def print_summary(result: RunResult) -> None:
    """The human summary, then the `SUMMARY {json}` line."""
    record = summary_record(result)
    child, parent = record["child"], record["parent"]

    def joined(values: Sequence[int]) -> str:
        return ", ".join(map(str, values)) or "-"

    print()
    how = "in the handler of billing fire 2" if result.crash_in_handler else "between fires"
    killed = "?" if result.killed_after_s is None else f"{result.killed_after_s:.2f}"
    print(
        f"Reminders example: child pid {child['pid']} killed with SIGKILL {how}, {killed} s "
        f"after registering; parent pid {parent['pid']} went on from the same file"
    )
    print(
        f"  {'reminder':<10} {'child fires':<14} {'parent fires':<16} {'distinct':>8}  due at (s)"
    )
    for name in REMINDER_NAMES:
        print(
            f"  {name:<10} {joined(child['fires'][name]):<14} {joined(parent['fires'][name]):<16} "
            f"{len(record['fire_counts'][name]):>8}  {joined(record['due_s'][name])}"
        )
    persisted = ", ".join(
        f"{name} fire_count={info['fire_count']} next at {info['next_fire_s']} s"
        for name, info in record["persisted_at_restart"].items()
    )
    print(f"  found in the store after the crash: {persisted or 'nothing'}")
    duplicates = ", ".join(
        f"{d['name']} #{d['fire_count']} ({' then '.join(d['phases'])})"
        for d in record["duplicates"]
    )
    print(f"  delivered twice (at-least-once, ignored downstream): {duplicates or 'none'}")
    for label, data in (("child", child), ("parent", parent)):
        print(
            f"  {label}: {data['activations']} activations, {data['woken_by_fire']} by a "
            f"reminder fire, {data['deactivations']} deactivations, "
            f"latest fire {data['late_ms_max']} ms after its due time"
        )
    final = ", ".join(
        f"{name} (fire_count {info['fire_count']})"
        for name, info in record["final_reminders"].items()
    )
    print(f"  listed at the end: {final or 'nothing'}; sla-check gone after fire {SLA_MAX_COUNT}")
    for problem in record["problems"]:
        print(f"  PROBLEM: {problem}")
    print(f"  result: {'FAILED' if record['problems'] else 'ok'}")
    print("SUMMARY " + json.dumps(record), flush=True)


# -- program ---------------------------------------------------------------------------------------


def configure_logging(*, phase: str, stream: TextIO, verbose: bool) -> None:
    """Console logging: time, level, event, the bound keys, and which process logged it."""
    colors = stream.isatty() and "NO_COLOR" not in os.environ

    def add_phase(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("process", phase)
        return event_dict

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            add_phase,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        # The runtime logs its lifecycle (activation, deactivation, ...) at debug level.
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
    )


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.reminders_example",
        description="Durable reminders across deactivation and a SIGKILL, on the real clock.",
    )
    parser.add_argument(
        "--kill-at",
        type=positive_seconds,
        default=DEFAULT_KILL_AT_S,
        metavar="SECONDS",
        help=f"kill the child this long after it registered (default: {DEFAULT_KILL_AT_S:g})",
    )
    parser.add_argument(
        "--until",
        type=positive_seconds,
        default=DEFAULT_UNTIL_S,
        metavar="SECONDS",
        help=f"end this long after the registration (default: {DEFAULT_UNTIL_S:g})",
    )
    parser.add_argument(
        "--crash-in-handler",
        action="store_true",
        help=f"kill the child inside the handler of billing fire {CRASH_AT_BILLING_FIRE} instead",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument(
        "--verbose", action="store_true", help="also show the runtime's debug events"
    )
    parser.add_argument(
        "--phase", choices=("parent", "child"), default="parent", help=argparse.SUPPRESS
    )
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "child" and args.database is None:
        parser.error("--phase child needs --database")
    if args.phase == "parent" and args.until <= args.kill_at:
        parser.error("--until must be later than --kill-at")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase == "child":
        # stdout is the journal the parent reads; the log goes to stderr.
        configure_logging(phase="child", stream=sys.stderr, verbose=args.verbose)
        return run_child(args.database, crash_in_handler=args.crash_in_handler)
    configure_logging(phase="parent", stream=sys.stdout, verbose=args.verbose)
    log: FilteringBoundLogger = structlog.get_logger("reminders_example")
    # A fresh database per run, never in the working directory.
    workdir = Path(tempfile.mkdtemp(prefix="plexspaces-reminders-"))
    try:
        result = ParentRun(args, workdir, log).run()
    finally:
        if args.keep:
            log.info("run.kept", directory=str(workdir))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(result)
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
