"""The durable fire pipeline: fires recorded and acknowledged in batches, activations off the
firing path, a bound on fires in flight per actor, no store I/O under the service's lock, and a
store handed to the system.

Real SQLite files and real threads throughout; the real-clock tests wait on events with wide
bounds and assert no timings beyond them.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from facets.reminder import ReminderFacet, ReminderRegistration
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired
from plexspaces._store import ReminderStore, SqlReminderStore

WAIT = 10.0
"""Seconds to wait for something that should happen soon (a bound, never a delay)."""


class Counted(Actor):
    """A virtual actor that counts its fires, optionally waiting on a gate in each handler and
    taking its time to start."""

    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet())
        delay = self.seen.start_delays.get(self.ctx.actor_key or "")
        if delay is not None:
            # A slow on_start (loading state, warming a cache): holds this activation only.
            self.seen.slow_start.wait(delay)

    def on_receive(self, message: Any) -> Any:
        if type(message) is ReminderFired:
            self.seen.handled(self.ctx.actor_key or "", message)
            gate = self.seen.gates.get(self.ctx.actor_key or "")
            if gate is not None:
                gate.wait(WAIT)
        return None


class Seen:
    """What the actors of one test handled."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.fires: list[tuple[str, str, int]] = []
        self.at: dict[str, float] = {}
        self.gates: dict[str, threading.Event] = {}
        self.start_delays: dict[str, float] = {}
        self.slow_start = threading.Event()  # never set: a slow start takes its whole delay

    def handled(self, key: str, fired: ReminderFired) -> None:
        with self.lock:
            self.fires.append((key, fired.reminder_name, fired.fire_count))
            self.at[fired.reminder_name] = time.monotonic()
            self.lock.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.fires) >= count, timeout)


@pytest.fixture
def seen() -> Seen:
    """The journal of one test's actors."""
    return Seen()


def _facet(system: ActorSystem, key: str) -> ReminderFacet:
    ref = system.virtual("counted", key)
    ref.ask("ping", timeout=WAIT)
    return system.facet_service.get_facet(ref.actor_id, ReminderFacet)


@pytest.fixture
def statements(tmp_path: Path) -> Iterator[tuple[SqlReminderStore, list[tuple[str, int]]]]:
    """A SQLite store and the write statements run on it: (statement kind, parameter sets)."""
    store = SqlReminderStore(f"sqlite:///{tmp_path / 'reminders.db'}")
    seen: list[tuple[str, int]] = []

    def record(*args: Any) -> None:
        _, _, statement, parameters, _, executemany = args
        compact = statement.replace(" ", "")
        kind = statement.split()[0]
        if kind == "UPDATE" and "fire_count=" in compact:
            kind = "RECORD"
        elif (kind == "UPDATE" and "pending_fire=NULL" in compact) or (
            kind == "DELETE" and "pending_fire" in compact
        ):
            kind = "ACK"
        seen.append((kind, len(parameters) if executemany else 1))

    event.listen(store.engine, "before_cursor_execute", record)
    yield store, seen
    store.close()


def test_fires_due_together_are_recorded_in_one_transaction(
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
    seen: Seen,
    statements: tuple[SqlReminderStore, list[tuple[str, int]]],
) -> None:
    """Under a ManualClock, 500 reminders of 50 actors due at one instant are recorded by one
    batch statement, and their acknowledgements by batches, never one transaction per fire."""
    store, executed = statements
    system = make_system(clock=clock, store=store)
    system.register_virtual("counted", Counted, seen)
    for index in range(50):
        _facet(system, f"k{index}").register_reminders(
            [ReminderRegistration(f"r{index}-{n}", due="5s") for n in range(10)]
        )
    executed.clear()
    clock.advance("5s")
    assert seen.wait_for(500)
    records = [sets for kind, sets in executed if kind == "RECORD"]
    acks = [sets for kind, sets in executed if kind == "ACK"]
    assert records == [500]
    assert sum(acks) == 500
    assert len(acks) < 500
    assert sorted(fire[2] for fire in seen.fires) == [1] * 500
    assert store.count() == 0  # every one-shot acknowledged and deleted


def test_a_slow_activation_holds_up_only_its_own_actor(
    make_system: Callable[..., ActorSystem], seen: Seen
) -> None:
    """A reminder for an inactive actor whose on_start takes 3 s does not delay the fires of
    other actors due at the same time: they are all handled while that activation still
    starts, and its own fire arrives once it has started."""
    seen.start_delays["slow"] = 3.0
    system = make_system()
    system.register_virtual("counted", Counted, seen)
    facets = [_facet(system, f"k{index}") for index in range(5)]
    slow = _facet(system, "slow-registrar")  # registers for the slow key, which stays inactive
    del slow
    started = time.monotonic()
    system.reminders.register("counted", "slow", "slow-fire", due="300ms")
    for index, facet in enumerate(facets):
        facet.register_reminders(
            [ReminderRegistration(f"fast-{index}-{n}", due="400ms") for n in range(20)]
        )
    assert seen.wait_for(100, timeout=WAIT)
    fast_done = max(at for name, at in seen.at.items() if name.startswith("fast"))
    assert "slow-fire" not in seen.at
    assert fast_done - started < 2.5
    assert seen.wait_for(101, timeout=WAIT)
    assert seen.at["slow-fire"] - started >= 3.0


def test_fires_in_flight_per_actor_are_bounded(
    make_system: Callable[..., ActorSystem], seen: Seen
) -> None:
    """With max_reminders_in_flight=5, an actor stuck in its handler has at most 5 fires
    recorded and delivered; the other due ones wait unrecorded, and every fire arrives exactly
    once when it catches up."""
    gate = threading.Event()
    seen.gates["busy"] = gate
    system = make_system(max_reminders_in_flight=5)
    system.register_virtual("counted", Counted, seen)
    facet = _facet(system, "busy")
    facet.register_reminders([ReminderRegistration(f"r{n}", due="100ms") for n in range(40)])
    assert seen.wait_for(1)

    def waiting() -> float:
        return system.metrics().gauges.get("reminders.waiting", 0.0)

    deadline = time.monotonic() + WAIT
    while waiting() < 35 and time.monotonic() < deadline:
        gate.wait(0.01)  # polling a gauge: the bound is what is asserted, not a duration
    gauges = system.metrics().gauges
    assert gauges["reminders.in_flight"] == 5
    assert gauges["reminders.waiting"] == 35
    pending = [info for info in facet.list_reminders() if info.pending_fire is not None]
    assert len(pending) == 5  # recorded, not yet handled: no more than the bound
    gate.set()
    assert seen.wait_for(40)
    assert sorted(name for _, name, _ in seen.fires) == sorted(f"r{n}" for n in range(40))
    assert all(count == 1 for _, _, count in seen.fires)


def test_metrics_and_timers_go_on_while_a_registration_waits_for_the_database(
    make_system: Callable[..., ActorSystem], seen: Seen, tmp_path: Path
) -> None:
    """A registration blocked on a database locked by another process's writer holds no lock
    that metrics or other actors' fires need: metrics() answers meanwhile, and the
    registration completes once the database is free."""
    path = tmp_path / "plexspaces.db"
    system = make_system(storage_url=f"sqlite:///{path}")
    system.register_virtual("counted", Counted, seen)
    facet = _facet(system, "k")
    facet.register_reminder("warm-up", due="1h")
    other = sqlite3.connect(path, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    registered = threading.Event()
    worker = threading.Thread(
        target=lambda: (facet.register_reminder("blocked", due="1h"), registered.set())
    )
    worker.start()
    try:
        assert not registered.wait(0.3)  # it waits for the writer...
        answered = threading.Event()
        threading.Thread(target=lambda: (system.metrics(), answered.set())).start()
        assert answered.wait(WAIT)  # ...and metrics still answer
    finally:
        other.rollback()
        other.close()
    assert registered.wait(WAIT)
    worker.join(WAIT)
    assert facet.get_reminder("blocked") is not None


def test_a_store_handed_in_is_used_and_left_open(
    make_system: Callable[..., ActorSystem], clock: ManualClock, seen: Seen, tmp_path: Path
) -> None:
    """ActorSystem(store=...) keeps its reminders in that store and does not close it on
    shutdown; a second system on the same store fires what the first registered."""
    store = SqlReminderStore(f"sqlite:///{tmp_path / 'given.db'}")
    try:
        first = make_system(clock=clock, store=store)
        first.register_virtual("counted", Counted, seen)
        _facet(first, "k").register_reminder("later", due="10s", payload={"n": 1})
        first.shutdown()
        assert store.count() == 1  # still open, still holding the reminder
        second = make_system(clock=clock, store=store)
        second.register_virtual("counted", Counted, seen)
        clock.advance("10s")
        assert seen.wait_for(1)
        assert seen.fires == [("k", "later", 1)]
    finally:
        store.close()


def test_store_and_storage_url_together_are_refused(tmp_path: Path) -> None:
    """Passing both a store and a storage_url is a ValueError naming the URL; a store that is
    not a ReminderStore is a TypeError naming it."""
    store = SqlReminderStore(f"sqlite:///{tmp_path / 'given.db'}")
    try:
        with pytest.raises(ValueError, match=re.escape("'sqlite:///elsewhere.db'")):
            ActorSystem(storage_url="sqlite:///elsewhere.db", store=store)
        with pytest.raises(TypeError, match="'not a store'"):
            ActorSystem(store="not a store")  # type: ignore[arg-type]
    finally:
        store.close()


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
def test_max_reminders_in_flight_must_be_a_positive_int(bad: object) -> None:
    """max_reminders_in_flight accepts ints of at least 1; anything else is a ValueError naming
    the value."""
    with pytest.raises(ValueError, match=f"max_reminders_in_flight {bad!r}"):
        ActorSystem(max_reminders_in_flight=bad)  # type: ignore[arg-type]


def test_the_store_interface_has_the_batch_methods() -> None:
    """The batch methods are part of the store interface every backend implements."""
    assert {"record_fires", "acknowledge_fires"} <= ReminderStore.__abstractmethods__


def test_periodic_reminders_keep_their_phase_through_batches(
    make_system: Callable[..., ActorSystem], clock: ManualClock, seen: Seen
) -> None:
    """Periodic reminders of many actors fired in batches keep exact counts and phase over
    many ticks (each tick's batch records every actor's fire)."""
    system = make_system(clock=clock)
    system.register_virtual("counted", Counted, seen)
    for index in range(20):
        _facet(system, f"k{index}").register_reminder("tick", due="1s", period="1s", max_count=5)
    for _ in range(6):
        clock.advance(timedelta(seconds=1))
    assert seen.wait_for(100)
    by_actor: dict[str, list[int]] = {}
    for key, _, count in seen.fires:
        by_actor.setdefault(key, []).append(count)
    assert by_actor == {f"k{index}": [1, 2, 3, 4, 5] for index in range(20)}


class GatedStore(SqlReminderStore):
    """A real SQLite store whose loads stop after their first page until a gate opens."""

    def __init__(self, url: str, gate: threading.Event) -> None:
        super().__init__(url)
        self.gate = gate

    def due(self, until: Any, limit: int, *, after: Any = None) -> Any:
        if after is not None:
            self.gate.wait(WAIT)  # every page after the first waits for the test
        return super().due(until, limit, after=after)


def test_a_restart_fires_the_first_page_while_later_pages_load(
    make_system: Callable[..., ActorSystem], seen: Seen, tmp_path: Path
) -> None:
    """After a restart with 2,500 overdue reminders (three pages of 1,000), the first page is
    fired while the second page's query is still held up, and all 2,500 arrive once it goes
    on."""
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    now = datetime.now(UTC)
    # Registered on a clock that never moves, so nothing fires before the restart.
    before = make_system(storage_url=url, clock=ManualClock(start=now))
    before.register_virtual("counted", Counted, seen)
    for index in range(10):
        _facet(before, f"k{index}").register_reminders(
            [
                ReminderRegistration(f"r{index}-{n}", due=now - timedelta(minutes=1))
                for n in range(250)
            ]
        )
    before.shutdown()
    gate = threading.Event()
    store = GatedStore(url, gate)
    try:
        after = make_system(store=store)
        after.register_virtual("counted", Counted, seen)
        assert seen.wait_for(1)  # fired while the next page waits
        assert not gate.is_set()
        gate.set()
        assert seen.wait_for(2500)
        assert len({name for _, name, _ in seen.fires}) == 2500
        after.shutdown()
    finally:
        gate.set()
        store.close()


class Lister(Counted):
    """Counts its fires and, asked "names", lists its reminders from inside the actor."""

    def on_receive(self, message: Any) -> Any:
        if message == "names":
            return sorted(info.name for info in self.facet(ReminderFacet).list_reminders())
        return super().on_receive(message)


def test_an_actors_next_message_sees_its_fires_acknowledged(
    make_system: Callable[..., ActorSystem], seen: Seen
) -> None:
    """Acknowledgements are written in batches off the actor's thread, yet a message the actor
    handles after its fires sees them acknowledged: its fired one-shots are no longer listed."""
    system = make_system()
    system.register_virtual("counted", Lister, seen)
    ref = system.virtual("counted", "k")
    ref.ask("ping", timeout=WAIT)
    facet = system.facet_service.get_facet(ref.actor_id, ReminderFacet)
    for round_ in range(5):
        facet.register_reminders(
            [ReminderRegistration(f"r{round_}-{n}", due="10ms") for n in range(50)]
        )
        assert seen.wait_for(50 * (round_ + 1))
        assert ref.ask("names", timeout=WAIT) == []


def test_a_clean_shutdown_writes_every_acknowledgement_queued(
    make_system: Callable[..., ActorSystem], seen: Seen, tmp_path: Path
) -> None:
    """Fires handled just before shutdown() are acknowledged before the system closes: after a
    clean shutdown no fire is left pending, so nothing is delivered again at the next start."""
    url = f"sqlite:///{tmp_path / 'clean.db'}"
    system = make_system(storage_url=url)
    system.register_virtual("counted", Counted, seen)
    for index in range(20):
        _facet(system, f"k{index}").register_reminders(
            [ReminderRegistration(f"r{index}-{n}", due="50ms", period="1h") for n in range(25)]
        )
    assert seen.wait_for(500)
    system.shutdown()
    store = SqlReminderStore(url)
    try:
        records = store.due(datetime.now(UTC) + timedelta(days=1), 1000)
        assert len(records) == 500
        assert [record for record in records if record.pending_fire is not None] == []
        assert {record.fire_count for record in records} == {1}
    finally:
        store.close()
