"""Hostile input and faults: values built to break the store, the command line or the scheduler
are refused with a `ValueError` (or one error line) naming them, a stored row nobody can read
stops nothing else, and concurrent bookkeeping stays exact under real threads.

Raw SQL stands in for a row written by another version, another tool or a damaged disk: the
store must keep it, report it, and go on with every other row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from facets.reminder import ReminderFacet
from facets.timer import TimerFacet
from plexspaces import (
    Actor,
    ActorSystem,
    ManualClock,
    ReminderFired,
    Scheduler,
    SchemaVersionError,
    SystemClock,
    TimerFired,
)
from plexspaces._store import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    ReminderKey,
    SqlReminderStore,
    decode_payload,
)
from plexspaces.cli import EXIT_ERROR
from tests.conftest import START
from tests.test_cli import _good_line, error_line, run
from tests.test_store_contract import T0, reminder

pytest_plugins = ("pytester",)

WAIT = 5.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""

BIG = 2**63
"""One more than the largest value of a 64-bit (BIGINT) column."""

LATE = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
"""An aware datetime whose UTC value is after 9999-12-31: no datetime can hold it."""

EARLY = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
"""An aware datetime whose UTC value is before 0001-01-01."""


def nested(depth: int) -> list[Any]:
    """A list nested `depth` levels deep (`nested(2) == [[]]`)."""
    outer: list[Any] = []
    inner = outer
    for _ in range(depth - 1):
        deeper: list[Any] = []
        inner.append(deeper)
        inner = deeper
    return outer


class Keeper(Actor):
    """A virtual actor with a `ReminderFacet` that registers on request and records its fires."""

    fired: list[tuple[str, str, int]]
    changed: threading.Condition

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet())

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("register", str(name), dict(options)):
                self.facet(ReminderFacet).register_reminder(name, **options)
                return "ok"
            case ReminderFired():
                with Keeper.changed:
                    Keeper.fired.append(
                        (self.ctx.actor_id, message.reminder_name, message.fire_count)
                    )
                    Keeper.changed.notify_all()
        return None


@pytest.fixture
def keeper() -> type[Keeper]:
    """`Keeper` with a fresh journal of fires."""
    Keeper.fired = []
    Keeper.changed = threading.Condition()
    return Keeper


def insert_raw(db: Path, name: str, payload: str, *, actor_key: str = "k") -> None:
    """A one-shot row of actor keeper/`actor_key`, due 30 s after START, written with sqlite3."""
    due_us = int((START + timedelta(seconds=30)).timestamp() * 1_000_000)
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO plexspaces_reminders (actor_type, actor_key, name, due_us, anchor_us, "
            "period_us, max_count, fire_count, missed, payload, pending_fire, "
            "pending_scheduled_us, finished, claimed_by, claimed_until_us, created_us, "
            "updated_us) VALUES ('keeper', ?, ?, ?, ?, NULL, NULL, 0, 'once', ?, NULL, NULL, 0, "
            "NULL, NULL, ?, ?)",
            (actor_key, name, due_us, due_us, payload, due_us, due_us),
        )
    connection.close()


def raw_names(db: Path) -> list[str]:
    """The names of every stored row, read with sqlite3 (no plexspaces code)."""
    with sqlite3.connect(db) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM plexspaces_reminders")]
    connection.close()
    return sorted(names)


# -- payload limits and undecodable rows -----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fragments"),
    [
        pytest.param(nested(MAX_PAYLOAD_DEPTH + 1), ["64", "MAX_PAYLOAD_DEPTH"], id="depth-65"),
        pytest.param(nested(1_000), ["64", "MAX_PAYLOAD_DEPTH"], id="depth-1000"),
        pytest.param(["x" * MAX_PAYLOAD_BYTES], ["1048576", "MAX_PAYLOAD_BYTES"], id="1MiB"),
    ],
)
def test_a_payload_beyond_the_limits_is_refused_at_registration(
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
    keeper: type[Keeper],
    payload: Any,
    fragments: list[str],
) -> None:
    """A payload nested deeper than MAX_PAYLOAD_DEPTH or longer than MAX_PAYLOAD_BYTES of JSON
    is a ValueError naming the reminder and the limit, and nothing is stored."""
    system = make_system(clock=clock)
    system.register_virtual("keeper", keeper)
    ref = system.virtual("keeper", "k")
    with pytest.raises(ValueError, match="keeper/k:deep") as raised:
        ref.ask(("register", "deep", {"due": "1s", "payload": payload}), timeout=WAIT)
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert system.reminders.list_actor("keeper", "k") == []
    at_limit = {"due": "1s", "payload": nested(MAX_PAYLOAD_DEPTH)}
    assert ref.ask(("register", "deepest", at_limit), timeout=WAIT) == "ok"


def test_the_store_refuses_a_payload_beyond_the_limits(tmp_path: Path) -> None:
    """The store itself refuses a too-deep payload on upsert, naming the reminder and limit."""
    with SqlReminderStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with pytest.raises(ValueError, match=r"order/ord-1:r .*MAX_PAYLOAD_DEPTH"):
            store.upsert(reminder(payload=nested(MAX_PAYLOAD_DEPTH + 1)))
        assert store.count() == 0


def test_decoding_refuses_text_beyond_the_limits_with_a_value_error() -> None:
    """decode_payload answers text nested far too deep for the parser, or too long, with a
    ValueError naming the limit, never a RecursionError."""
    with pytest.raises(ValueError, match="MAX_PAYLOAD_DEPTH"):
        decode_payload("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="MAX_PAYLOAD_DEPTH"):
        decode_payload("[" * (MAX_PAYLOAD_DEPTH + 1) + "]" * (MAX_PAYLOAD_DEPTH + 1))
    with pytest.raises(ValueError, match="MAX_PAYLOAD_BYTES"):
        decode_payload(json.dumps("x" * MAX_PAYLOAD_BYTES))
    assert decode_payload("[" * MAX_PAYLOAD_DEPTH + "]" * MAX_PAYLOAD_DEPTH) == nested(
        MAX_PAYLOAD_DEPTH
    )


def test_a_row_too_deep_to_parse_is_reported_and_the_others_still_fire(
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
    keeper: type[Keeper],
    tmp_path: Path,
) -> None:
    """A stored payload nested 100,000 deep (the parser raises RecursionError) is an undecodable
    row: logged once, listed by reminder_errors(), kept, and every other reminder of the same
    and of other actors still loads and fires."""
    db = tmp_path / "plexspaces.db"
    first = make_system(clock=clock)
    first.register_virtual("keeper", keeper)
    for actor_key in ("k", "other"):
        ref = first.virtual("keeper", actor_key)
        assert ref.ask(("register", "good", {"due": "1m"}), timeout=WAIT) == "ok"
    first.shutdown()
    insert_raw(db, "abyss", "[" * 100_000 + "]" * 100_000)

    with structlog.testing.capture_logs() as logs:
        second = make_system(clock=clock)
        second.register_virtual("keeper", keeper)
        errors = second.reminder_errors()
        assert [e.key for e in errors] == [ReminderKey("keeper", "k", "abyss")]
        assert "MAX_PAYLOAD_DEPTH" in errors[0].error
        clock.advance("2m")
        with keeper.changed:
            assert keeper.changed.wait_for(lambda: len(keeper.fired) == 2, timeout=WAIT)
        assert sorted(keeper.fired) == [("keeper/k", "good", 1), ("keeper/other", "good", 1)]
        assert [e.key.name for e in second.reminder_errors()] == ["abyss"]
    reported = [log for log in logs if log["event"] == "reminder.undecodable"]
    assert [log["name"] for log in reported] == ["abyss"]
    assert raw_names(db) == ["abyss"]


def test_a_row_whose_decoding_raises_anything_is_undecodable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Whatever exception decoding one row raises, that row is reported as undecodable and the
    rows around it are still returned."""
    from plexspaces._store import codec

    real = codec.decode_payload

    def fragile(text: Any) -> Any:
        if text == '"poison"':
            raise LookupError("a decoder fault nobody foresaw")
        return real(text)

    monkeypatch.setattr(codec, "decode_payload", fragile)
    with SqlReminderStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        store.upsert_many(
            [
                reminder("a", T0),
                reminder("b", T0, payload="poison"),
                reminder("c", T0),
            ]
        )
        assert [r.key.name for r in store.scan(10)] == ["a", "c"]
        problems = store.errors()
        fault = "a decoder fault nobody foresaw"
        assert [(p.key.name, p.error) for p in problems] == [("b", fault)]
        assert store.count() == 3


# -- integers and times beyond what a store holds --------------------------------------------------


def test_a_max_count_beyond_the_bigint_range_is_refused_at_registration(
    make_system: Callable[..., ActorSystem], clock: ManualClock, keeper: type[Keeper]
) -> None:
    """register_reminder with max_count 2**63 is a ValueError naming max_count and the value
    (not the driver's OverflowError); 2**63 - 1 is accepted."""
    system = make_system(clock=clock)
    system.register_virtual("keeper", keeper)
    ref = system.virtual("keeper", "k")
    with pytest.raises(ValueError, match=f"max_count {BIG}"):
        ref.ask(("register", "huge", {"due": "1s", "max_count": BIG}), timeout=WAIT)
    assert system.reminders.list_actor("keeper", "k") == []
    options = {"due": "1s", "max_count": BIG - 1}
    assert ref.ask(("register", "largest", options), timeout=WAIT) == "ok"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        pytest.param({"max_count": BIG}, f"max_count {BIG}", id="max_count"),
        pytest.param({"fire_count": BIG}, f"fire_count {BIG}", id="fire_count"),
        pytest.param(
            {"period": timedelta(microseconds=BIG)}, "period datetime.timedelta", id="period"
        ),
        pytest.param({"due_at": LATE, "anchor_at": LATE}, "due_at: datetime", id="late-due"),
        pytest.param({"created_at": EARLY}, "created_at: datetime", id="early-created"),
    ],
)
def test_the_store_refuses_integers_and_times_it_cannot_hold(
    tmp_path: Path, fields: dict[str, Any], fragment: str
) -> None:
    """A count or period beyond the BIGINT range, or a time outside the datetime range in UTC,
    is a ValueError from validate_reminder naming the field and the value; nothing is stored."""
    with SqlReminderStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with pytest.raises(ValueError, match="order/ord-1:r") as raised:
            store.upsert_many([reminder("ok", T0), replace(reminder("r", T0), **fields)])
        assert fragment in str(raised.value)
        assert store.count() == 0


IMPORT_OVERFLOWS = [
    pytest.param({"max_count": BIG}, f"max_count {BIG}", id="max_count"),
    pytest.param({"fire_count": BIG}, f"fire_count {BIG}", id="fire_count"),
    pytest.param({"period_us": BIG}, "period", id="period_us"),
    pytest.param({"period_us": 10**30}, f"period_us {10**30}", id="period_us-beyond-timedelta"),
    pytest.param(
        {"due_at": "9999-12-31T23:00:00-05:00", "anchor_at": "9999-12-31T23:00:00-05:00"},
        "due_at '9999-12-31T23:00:00-05:00' is outside the datetime range",
        id="late-due",
    ),
    pytest.param(
        {"created_at": "0001-01-01T01:00:00+05:00"},
        "created_at '0001-01-01T01:00:00+05:00' is outside the datetime range",
        id="early-created",
    ),
]


@pytest.mark.parametrize(("fields", "fragment"), IMPORT_OVERFLOWS)
def test_import_refuses_an_out_of_range_line_after_many_good_ones_and_writes_nothing(
    tmp_path: Path, fields: dict[str, Any], fragment: str
) -> None:
    """A line 601 out of range (after more good lines than one write batch) is one error line
    naming the line, the field and the value, exit 2, and nothing is written."""
    source = tmp_path / "in.jsonl"
    lines = [json.dumps(_good_line(f"g{index}")) for index in range(600)]
    lines.append(json.dumps({**_good_line("bad"), **fields}))
    source.write_text("\n".join(lines) + "\n")
    target = tmp_path / "target.db"
    result = run("reminders", "import", "--db", f"sqlite:///{target}", str(source))
    error = error_line(result, EXIT_ERROR)
    assert error.startswith(f"Error: {source}, line 601: ")
    assert fragment in error
    assert error.endswith("nothing was imported")
    assert not target.exists()


def test_an_import_that_fails_while_writing_says_how_much_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database failure after the first write batch is one error line saying how many
    reminders were imported before it stopped, never that nothing was."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(_good_line(f"g{i}")) + "\n" for i in range(600)))
    real = SqlReminderStore.upsert_many
    calls = []

    def failing_second(store: SqlReminderStore, records: Any) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk unplugged")
        return real(store, records)

    monkeypatch.setattr(SqlReminderStore, "upsert_many", failing_second)
    target = tmp_path / "target.db"
    result = run("reminders", "import", "--db", f"sqlite:///{target}", str(source))
    error = error_line(result, EXIT_ERROR)
    assert "disk unplugged" in error
    assert error.endswith("500 of 600 reminders were imported before the import stopped")


# -- import: repeated fields and reminders ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        pytest.param(
            json.dumps(_good_line("x"))[:-1] + ', "fire_count": 0}',
            "field 'fire_count' appears twice",
            id="top-level",
        ),
        pytest.param(
            json.dumps({**_good_line("x"), "payload": {"a": 1}}).replace(
                '{"a": 1}', '{"a": 1, "a": 2}'
            ),
            "field 'a' appears twice",
            id="in-the-payload",
        ),
    ],
)
def test_import_refuses_a_field_given_twice(tmp_path: Path, line: str, fragment: str) -> None:
    """A JSON line with a field given twice (which JSON parsers resolve silently, last wins) is
    one error line naming the line and the field, exit 2, and nothing is imported."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(_good_line("first")) + "\n" + line + "\n")
    target = tmp_path / "target.db"
    result = run("reminders", "import", "--db", f"sqlite:///{target}", str(source))
    error = error_line(result, EXIT_ERROR)
    assert error.startswith(f"Error: {source}, line 2: ")
    assert fragment in error
    assert error.endswith("nothing was imported")
    assert not target.exists()


def test_import_refuses_a_reminder_given_on_two_lines(tmp_path: Path) -> None:
    """The same reminder on two lines is one error line naming both lines and the reminder,
    exit 2, and nothing is imported (it used to be counted as two imports)."""
    source = tmp_path / "in.jsonl"
    lines = [_good_line("a"), _good_line("b"), {**_good_line("a"), "fire_count": 1}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    target = tmp_path / "target.db"
    result = run("reminders", "import", "--db", f"sqlite:///{target}", str(source))
    error = error_line(result, EXIT_ERROR)
    assert error.startswith(f"Error: {source}, line 3: reminder order/ord-1:a is also on line 1")
    assert error.endswith("nothing was imported")
    assert not target.exists()


# -- NUL characters ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new SQLite file, or a new PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'r.db'}"


@pytest.mark.parametrize(
    ("key", "field"),
    [
        pytest.param(ReminderKey("order", "ord-1", "a\x00b"), "name", id="name"),
        pytest.param(ReminderKey("order", "ord\x001", "r"), "actor_key", id="actor_key"),
        pytest.param(ReminderKey("or\x00der", "ord-1", "r"), "actor_type", id="actor_type"),
    ],
)
def test_a_nul_in_a_reminder_key_is_a_value_error_on_every_backend(
    any_url: str, key: ReminderKey, field: str
) -> None:
    """A NUL character in a reminder's name, actor key or actor type is refused with the same
    ValueError naming the field on SQLite and on PostgreSQL (never a driver error), and
    nothing is stored."""
    with SqlReminderStore(any_url) as store:
        with pytest.raises(ValueError, match=f"{field} '.*\\\\x00.*' must be a non-empty str"):
            store.upsert_many([reminder("ok", T0), replace(reminder("r", T0), key=key)])
        with pytest.raises(ValueError, match="without NUL characters"):
            store.get(key)
        assert store.count() == 0


def test_a_nul_in_a_reminder_name_is_refused_at_registration(
    make_system: Callable[..., ActorSystem], clock: ManualClock, keeper: type[Keeper]
) -> None:
    """register_reminder with a NUL in the name is a ValueError naming it; nothing is stored."""
    system = make_system(clock=clock)
    system.register_virtual("keeper", keeper)
    ref = system.virtual("keeper", "k")
    with pytest.raises(ValueError, match="without NUL characters"):
        ref.ask(("register", "a\x00b", {"due": "1s"}), timeout=WAIT)
    assert system.reminders.list_actor("keeper", "k") == []


def test_a_nul_in_a_virtual_actor_key_or_type_is_refused(
    make_system: Callable[..., ActorSystem], clock: ManualClock, keeper: type[Keeper]
) -> None:
    """A NUL in a virtual actor's key or type is a ValueError naming it, on every backend alike,
    and nothing is activated."""
    system = make_system(clock=clock)
    system.register_virtual("keeper", keeper)
    with pytest.raises(ValueError, match="without NUL characters"):
        system.virtual("keeper", "a\x00b")
    with pytest.raises(ValueError, match="NUL characters"):
        system.register_virtual("kee\x00per", keeper)
    assert system.actor_ids() == []


def test_a_due_datetime_outside_the_utc_range_is_a_value_error(
    make_system: Callable[..., ActorSystem], clock: ManualClock, keeper: type[Keeper]
) -> None:
    """An aware due datetime that leaves the datetime range in UTC is a ValueError naming it,
    not an OverflowError, and nothing is stored."""
    system = make_system(clock=clock)
    system.register_virtual("keeper", keeper)
    ref = system.virtual("keeper", "k")
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValueError, match="outside the datetime range"):
        ref.ask(("register", "early", {"due": early}), timeout=WAIT)
    assert system.reminders.list_actor("keeper", "k") == []


# -- a schema version that is not a number ------------------------------------------------------


def spoil_schema_version(db: Path, version: Any) -> None:
    """Overwrite the recorded schema version with sqlite3 (SQLite keeps text in the column)."""
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE plexspaces_schema SET version = ?", (version,))
    connection.close()


@pytest.mark.parametrize("version", ["abc", 1.5], ids=["text", "real"])
def test_a_schema_version_that_is_not_an_integer_is_a_schema_version_error(
    make_system: Callable[..., ActorSystem], clock: ManualClock, tmp_path: Path, version: Any
) -> None:
    """A store, and an ActorSystem, on tables whose recorded version is not an integer raise
    SchemaVersionError naming the value, not TypeError or ValueError."""
    db = tmp_path / "r.db"
    with SqlReminderStore(f"sqlite:///{db}"):
        pass
    spoil_schema_version(db, version)
    with pytest.raises(SchemaVersionError, match=f"schema version {version!r} .* not an integer"):
        SqlReminderStore(f"sqlite:///{db}")
    with pytest.raises(SchemaVersionError, match=f"schema version {version!r}"):
        SqlReminderStore.read_schema_version(f"sqlite:///{db}")
    system = make_system(storage_url=f"sqlite:///{db}", clock=clock)
    with pytest.raises(SchemaVersionError, match=f"schema version {version!r}"):
        system.reminder_errors()


@pytest.mark.parametrize("command", [["reminders", "list"], ["doctor"]], ids=["list", "doctor"])
def test_the_command_line_reports_a_non_integer_schema_version_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    """`plexspaces reminders list` and `doctor` on a schema version 'abc' exit 2 with one error
    line naming the value (no traceback)."""
    db = tmp_path / "r.db"
    with SqlReminderStore(f"sqlite:///{db}"):
        pass
    spoil_schema_version(db, "abc")
    result = run(*command, "--db", f"sqlite:///{db}")
    error = error_line(result, EXIT_ERROR)
    assert "schema version 'abc'" in error
    assert "not an integer" in error


# -- the scheduler's count under racing threads ---------------------------------------------------


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Threads switch every microsecond instead of every 5 ms, so races show up quickly."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_scheduler_len_never_drifts_when_cancel_races_the_scheduler_thread(
    fine_switching: None,
) -> None:
    """Calls cancelled from two threads while the scheduler thread pops them (due within a few
    milliseconds) and while they wait (due in an hour): len() never goes negative, and ends at
    the true count of armed calls."""
    clock = SystemClock()
    scheduler = Scheduler(clock, name="race")
    scheduler.start()
    try:
        # Deadlines a little ahead, so the scheduler thread pops while the cancellers run.
        for ahead in [0.0005, 0.001, 0.002, 0.003] * 10:
            now = clock.time()
            due = [scheduler.call_at(now + ahead, lambda: None) for _ in range(3_000)]
            later = [scheduler.call_at(now + 3_600, lambda: None) for _ in range(400)]
            doomed = due + later[::2]

            def cancel_all(calls: list[Any] = doomed) -> None:
                for call in calls:
                    call.cancel()

            cancellers = [threading.Thread(target=cancel_all) for _ in range(2)]
            for thread in cancellers:
                thread.start()
            lowest = scheduler.__len__()
            while any(thread.is_alive() for thread in cancellers):
                lowest = min(lowest, scheduler.__len__())  # len() itself refuses a negative
            for thread in cancellers:
                thread.join(WAIT)
            assert lowest >= 0
            # Every call due by now has been popped once this one runs (the heap is in order).
            drained = threading.Event()
            scheduler.call_at(clock.time(), drained.set)
            assert drained.wait(WAIT)
            assert scheduler.__len__() == len(later) // 2
            for call in later:
                call.cancel()
            assert scheduler.__len__() == 0
    finally:
        scheduler.close()


def test_a_cancel_whose_entry_is_popped_before_it_takes_the_lock_is_not_counted(
    manual_clock: ManualClock,
) -> None:
    """The interleaving behind the drift, made certain: cancel() has set the flag on one thread
    and waits for the scheduler's lock while the entry is popped under it; the cancellation is
    then not counted, so len() is exactly the entries still armed."""
    scheduler = Scheduler(manual_clock, name="interleaving")
    now = manual_clock.time()
    popped = scheduler.call_at(now, lambda: None)
    waiting = scheduler.call_at(now + 60, lambda: None)
    lock = scheduler._lock
    with lock:
        canceller = threading.Thread(target=popped.cancel)
        canceller.start()
        # The flag is set before the lock is asked for; the canceller now waits for the lock.
        while not popped.cancelled:
            assert canceller.is_alive()
        # What the scheduler thread (or ManualClock.advance) does under the lock meanwhile.
        assert scheduler._pop_due_locked(now, 10) == []
    canceller.join(WAIT)
    assert not canceller.is_alive()
    assert scheduler.__len__() == 1
    waiting.cancel()
    assert scheduler.__len__() == 0
    scheduler.close()


# -- the timer facet across threads ----------------------------------------------------------------


class Sleeper(Actor):
    """Registers a 1 s periodic timer and records its fires; moves the clock when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.fired: list[tuple[int, int]] = []

    def on_start(self) -> None:
        self.attach_facet(TimerFacet()).register_periodic("beat", "1s")

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("advance", ManualClock() as clock, step):
                # From the actor's own thread: it is busy while its ticks fall due.
                clock.advance(step)
            case "fired":
                return list(self.fired)
            case TimerFired():
                self.fired.append((message.fire_count, message.missed))
        return None


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """structlog lets debug events through (fire events are debug); defaults back afterwards."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.reset_defaults()


def test_a_timer_fire_is_logged_with_its_own_count_when_ticks_came_while_it_waited(
    debug_logs: None, make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """A fire that waited in the mailbox while later ticks came stands for them, and is logged as
    it is handled: with the count and lateness of the tick it carries, not of another one."""
    system = make_system(clock=clock)
    ref = system.spawn(Sleeper)
    with structlog.testing.capture_logs() as logs:
        # Tick 1 waits in the mailbox while the actor is busy; ticks 2 and 3 come meanwhile.
        ref.ask(("advance", clock, "3s"), timeout=WAIT)
        assert ref.ask("fired", timeout=WAIT) == [(3, 2)]  # it stands for ticks 1 to 3
        clock.advance("1s")
        assert ref.ask("fired", timeout=WAIT) == [(3, 2), (4, 0)]
    fired = [log for log in logs if log["event"] == "timer.fired"]
    assert [(log["fire_count"], log["lateness_ms"]) for log in fired] == [(3, 0.0), (4, 0.0)]


# -- the pytest plugin's teardown ------------------------------------------------------------------

FAILING_SHUTDOWNS = """
import pytest

from plexspaces import ActorSystem

SHUT_DOWN = []


def test_three_systems_two_fail_to_shut_down(make_actor_system, manual_clock):
    systems = [make_actor_system(clock=manual_clock, name=f"s{i}") for i in range(3)]
    for index, system in enumerate(systems):
        real = system.shutdown

        def shutdown(*args, real=real, index=index, **kwargs):
            real(*args, **kwargs)
            SHUT_DOWN.append(index)
            if index < 2:
                raise RuntimeError(f"shutdown of s{index} failed")

        system.shutdown = shutdown


def test_every_system_was_shut_down():
    assert SHUT_DOWN == [0, 1, 2]
"""


def test_the_plugin_shuts_every_system_down_and_reports_every_failure(
    pytester: pytest.Pytester,
) -> None:
    """When shutting one system down fails, the plugin still shuts the others down, then
    reports every failure (here the first two of three) in the test's teardown."""
    pytester.makepyfile(test_user=FAILING_SHUTDOWNS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*2 of 3 actor system(s) failed to shut down*"])
    result.stdout.fnmatch_lines(["*shutdown of s0 failed*"])
    result.stdout.fnmatch_lines(["*shutdown of s1 failed*"])
