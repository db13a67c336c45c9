"""Reminders survive SIGKILL: a child process registers reminders and handles their fires on the
real clock, is killed at a random moment, and a new system in this process finishes the job.

The suite runs on both backends: a SQLite file, and a PostgreSQL database (a cluster node: the
restarted system has the same default node id, so it takes the dead child's claims back at once).
Each run starts `tests/reminder_child.py` on a store of its own, kills it with SIGKILL after
a random delay (0.1-2.5 s, seeded per run), reads what the child durably logged and what the table
holds, then starts an actor system here on the same file with the same virtual type and waits until
every reminder still in the table has made its last fire. Per reminder it checks: nothing lost
(each reached its last fire_count across both processes), `max_count` never exceeded, fire_counts
contiguous from 1, and duplicates only at the crash boundary (at most the child's last fire, and
only when the table still held it as unacknowledged). At the end the table is empty.

Runs go four at a time: each child spends most of its life waiting for due times.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorSystem, ReminderFired
from tests import pgserver
from tests.reminder_child import JOB_TYPE, PLAN, REMINDER_CONFIG, final_count

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("PLEXSPACES_CRASH_RUNS", "30"))
"""SIGKILL runs per backend."""
PARALLEL = 4
SEED = 20260101
WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""
FINISH = 20.0
"""Seconds the parent may take to finish what the child left (the plan spans under 2 s)."""

Reminder = tuple[str, str]  # (virtual actor key, reminder name)


class Fires:
    """Fires handled in this process, per reminder, and a wait for a condition on them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.counts: defaultdict[Reminder, list[int]] = defaultdict(list)

    def add(self, reminder: Reminder, fire_count: int) -> None:
        with self._changed:
            self.counts[reminder].append(fire_count)
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)


class ParentJob(Actor):
    """The parent's actor for the child's virtual type: records each fire it handles."""

    fires: ClassVar[Fires]

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config=REMINDER_CONFIG)

    def on_receive(self, message: Any) -> Any:
        match message:
            case ReminderFired(reminder_name=name, fire_count=count):
                assert self.ctx.actor_key is not None
                self.fires.add((self.ctx.actor_key, name), count)
                return None
            case "ping":
                return "pong"
        raise AssertionError(f"unexpected message {message!r}")


@dataclass(frozen=True)
class Row:
    """What the reminder table held for one reminder when the parent took over."""

    fire_count: int
    pending_fire: int | None
    finished: bool


@dataclass
class RunResult:
    run: int
    delay: float
    phase: str
    child_fires: int
    parent_fires: int
    duplicates: int
    problems: list[str] = field(default_factory=list)


def read_log(path: Path) -> tuple[set[Reminder], bool, dict[Reminder, list[int]]]:
    """The reminders the child registered, whether it registered all, and its fires in order."""
    registered: set[Reminder] = set()
    fires: defaultdict[Reminder, list[int]] = defaultdict(list)
    everything = False
    text = path.read_text() if path.exists() else ""
    for line in text.split("\n")[:-1]:  # the last piece has no newline: empty, or cut by the kill
        match line.split(" "):
            case ["registered", key, name]:
                registered.add((key, name))
            case ["registered-all"]:
                everything = True
            case ["fire", key, name, count]:
                fires[(key, name)].append(int(count))
            case _:
                raise AssertionError(f"unexpected line {line!r} in {path}")
    return registered, everything, dict(fires)


def read_table(url: str) -> dict[Reminder, Row]:
    """The reminder rows; none if the child died before creating the database or the table."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT actor_type, actor_key, name, fire_count, pending_fire, finished "
                    "FROM plexspaces_reminders"
                )
            ).all()
    except (OperationalError, ProgrammingError) as error:
        if "plexspaces_reminders" not in str(error):
            raise
        rows = []
    finally:
        engine.dispose()
    table: dict[Reminder, Row] = {}
    for actor_type, key, name, fire_count, pending_fire, finished in rows:
        assert actor_type == JOB_TYPE
        table[(key, name)] = Row(fire_count, pending_fire, bool(finished))
    return table


def crash_run(
    run: int, url: str, tmp_path: Path, make_system: Callable[..., ActorSystem]
) -> RunResult:
    """One run: start the child, SIGKILL it at a random moment, finish in this process, check."""
    rng = random.Random(f"{SEED}-{run}")
    delay = rng.uniform(0.1, 2.5)
    log = tmp_path / f"run{run:02d}.log"
    with (
        (tmp_path / f"run{run:02d}.out").open("wb") as out,
        (tmp_path / f"run{run:02d}.err").open("wb") as err,
    ):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.reminder_child", url, str(log), f"{SEED}-{run}"],
            cwd=ROOT,
            stdout=out,
            stderr=err,
        )
        try:
            # The crash point: a real-time wait on purpose. The child never exits by itself
            # this soon, so returning here means it failed.
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=WAIT)
    stderr = (tmp_path / f"run{run:02d}.err").read_text()
    assert child.returncode == -signal.SIGKILL, f"run {run}: child exited on its own:\n{stderr}"

    registered, everything, child_fires = read_log(log)
    table = read_table(url)
    if not everything:
        phase = "registering"
    elif table:
        phase = "firing"
    else:
        phase = "done"

    fires = Fires()
    system = make_system(storage_url=url)
    system.register_virtual(JOB_TYPE, type("ParentJob", (ParentJob,), {"fires": fires}))
    finals = {(key, name): final_count(kwargs) for key, name, kwargs in PLAN}

    def finished() -> bool:
        return all(finals[reminder] in fires.counts.get(reminder, []) for reminder in table)

    assert fires.wait_until(finished, FINISH), (
        f"run {run}: reminders left by the child did not finish: table {table}, "
        f"fires here {dict(fires.counts)}"
    )
    for key in {key for key, _ in table}:
        # An ask is answered after every fire before it, each acknowledged after its handler.
        assert system.virtual(JOB_TYPE, key).ask("ping", timeout=WAIT) == "pong"
    system.shutdown()
    left = read_table(url)

    result = RunResult(
        run=run,
        delay=delay,
        phase=phase,
        child_fires=sum(map(len, child_fires.values())),
        parent_fires=sum(map(len, fires.counts.values())),
        duplicates=0,
    )
    problems = result.problems
    if left:
        problems.append(f"rows left in the table: {left}")
    for key, name, kwargs in PLAN:
        reminder = (key, name)
        last = final_count(kwargs)
        before = child_fires.get(reminder, [])
        after = fires.counts.get(reminder, [])
        known = reminder in registered or reminder in table or bool(before)
        where = f"{key}:{name} (child {before}, parent {after}, row {table.get(reminder)})"
        if not known:
            if after:
                problems.append(f"{where}: fired, but the child never stored it")
            continue
        if any(count < 1 or count > last for count in before + after):
            problems.append(f"{where}: fire_count outside 1..{last}")
        if set(before) | set(after) != set(range(1, last + 1)):
            problems.append(f"{where}: fire_counts are not exactly 1..{last} (lost fires)")
        if before != list(range(1, len(before) + 1)):
            problems.append(f"{where}: the child's fire_counts are not contiguous from 1")
        if after and after != list(range(after[0], after[0] + len(after))):
            problems.append(f"{where}: the parent's fire_counts are not contiguous")
        both = set(before) & set(after)
        if both:
            result.duplicates += len(both)
            row = table.get(reminder)
            if (
                len(both) > 1
                or both != {before[-1]}
                or after[0] != before[-1]
                or row is None
                or row.pending_fire != before[-1]
            ):
                problems.append(f"{where}: duplicates {sorted(both)} beyond the crash boundary")
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reminders_survive_sigkill_at_random_moments(
    backend: str,
    tmp_path: Path,
    make_system: Callable[..., ActorSystem],
    request: pytest.FixtureRequest,
) -> None:
    """Over RUNS runs killed with SIGKILL at random moments, no reminder is lost, max_count is
    never exceeded, fire_counts run contiguously from 1, a fire is handled twice only at the
    crash boundary, and the table ends empty."""
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            server = request.getfixturevalue("pg_server")
            urls = [stack.enter_context(pgserver.scratch_database(server)) for _ in range(RUNS)]
        else:
            urls = [f"sqlite:///{tmp_path / f'run{run:02d}.db'}" for run in range(RUNS)]
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            results = list(
                pool.map(lambda run: crash_run(run, urls[run], tmp_path, make_system), range(RUNS))
            )
    problems = [f"run {r.run} (killed at {r.delay:.2f}s): {p}" for r in results for p in r.problems]
    phases = Counter(r.phase for r in results)
    child = sum(r.child_fires for r in results)
    parent = sum(r.parent_fires for r in results)
    duplicates = sum(r.duplicates for r in results)
    print(
        f"\n{backend} crash runs: {len(results)}, seed {SEED} (killed while {dict(phases)}); "
        f"fires: {child + parent} "
        f"({child} in children, {parent} after restart); duplicates: {duplicates}"
    )
    assert problems == []
    # The kill delay counts from the spawn, so a slow machine moves kills towards start-up; the
    # test still has to have hit the child while it was firing.
    assert phases["firing"] >= RUNS // 6, f"too few kills landed while reminders fired: {phases}"
