"""The `plexspaces` command line, on real SQLite files and a real PostgreSQL server.

Commands run in-process through click's `CliRunner` (stdout and stderr apart), and a few as a real
subprocess (`python -m plexspaces.cli`, what the console script runs). Stores are seeded through
`SqlReminderStore`; a live `ActorSystem` on a ManualClock has its reminders listed and cancelled
from the command line while it runs.
"""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from facets.reminder import ReminderFacet
from plexspaces import Actor, ActorSystem, ManualClock, ReminderFired
from plexspaces._store import SCHEMA_VERSION, SqlReminderStore, StoredReminder
from plexspaces.cli import EXIT_ERROR, EXIT_NO, PAGE, cli
from tests.test_store_contract import SECOND, T0, reminder

WAIT = 10.0
"""Seconds to wait for something that should happen at once (a bound, never a delay)."""
ROOT = Path(__file__).resolve().parent.parent


def seed(url: str, *records: StoredReminder) -> None:
    """Store `records` in the database at `url` (creating its tables)."""
    with SqlReminderStore(url) as store:
        store.upsert_many(records)


def everything(url: str) -> list[StoredReminder]:
    """Every decodable reminder at `url`, in (due_at, key) order."""
    found: list[StoredReminder] = []
    with SqlReminderStore(url) as store:
        after = None
        while page := store.scan(1_000, after=after):
            found.extend(page)
            after = (page[-1].due_at, page[-1].key)
    return found


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `plexspaces ARGS` in-process; exceptions other than exits propagate."""
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def error_line(result: Result, code: int) -> str:
    """The one line an error prints on stderr (nothing on stdout, no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def table_rows(output: str) -> list[list[str]]:
    """The data rows of the tables in `output`: lines split on runs of 2+ spaces."""
    rows = []
    for line in output.splitlines():
        stripped = line.strip()
        if not stripped or set(stripped) <= {"─", " "}:
            continue
        rows.append([cell.strip() for cell in stripped.split("   ") if cell.strip()])
    return rows


def insert_undecodable(url: str, name: str) -> None:
    """A row whose missed policy is unknown: kept by the store, never decoded."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO plexspaces_reminders (actor_type, actor_key, name, due_us,"
                    " anchor_us, period_us, max_count, fire_count, missed, payload, pending_fire,"
                    " pending_scheduled_us, finished, claimed_by, claimed_until_us, created_us,"
                    " updated_us) VALUES ('order', 'ord-1', :name, 0, 0, NULL, NULL, 0,"
                    " 'sometimes', 'null', NULL, NULL, false, NULL, NULL, 0, 0)"
                ),
                {"name": name},
            )
    finally:
        engine.dispose()


def set_schema_version(url: str, version: int) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE plexspaces_schema SET version = :v WHERE component = 'reminders'"),
                {"v": version},
            )
    finally:
        engine.dispose()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "reminders.db"


@pytest.fixture
def sqlite_url(db_file: Path) -> str:
    """The URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{db_file}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A new SQLite file, or a new PostgreSQL database."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return sqlite_url


# -- list ----------------------------------------------------------------------------------------


def test_list_shows_every_column_in_next_fire_order(any_url: str) -> None:
    """list prints actor, name, next fire (UTC), period, fires/max, pending fire and claim, by
    next fire time then key; finished reminders say so."""
    seed(
        any_url,
        reminder("payment-timeout", T0 + timedelta(minutes=15)),
        reminder(
            "billing",
            T0 + timedelta(days=30),
            actor_key="ord-2",
            period=timedelta(days=30),
            max_count=12,
            fire_count=4,
            pending_fire=4,
            pending_scheduled_at=T0,
            claimed_by="node-a",
            claimed_until=T0 + 10 * SECOND,
        ),
        reminder("renewal", T0 + timedelta(hours=1, microseconds=5), period=timedelta(hours=1)),
        reminder(
            "last",
            T0 + SECOND,
            actor_type="invoice",
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0 + SECOND,
            finished=True,
        ),
    )
    result = run("reminders", "list", "--db", any_url)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    rows = table_rows(result.stdout)
    assert rows[0] == [
        "actor",
        "name",
        "next fire (UTC)",
        "period",
        "fires",
        "pending fire",
        "claimed by",
        "last error",
        "expires (UTC)",
    ]
    assert rows[1:] == [
        [
            "invoice/ord-1",
            "last",
            "finished",
            "one-shot",
            "1",
            "#1 due 2026-01-01T12:00:01.123456Z",
        ],
        ["order/ord-1", "payment-timeout", "2026-01-01T12:15:00.123456Z", "one-shot", "0"],
        ["order/ord-1", "renewal", "2026-01-01T13:00:00.123461Z", "1h", "0"],
        [
            "order/ord-2",
            "billing",
            "2026-01-31T12:00:00.123456Z",
            "30d",
            "4/12",
            "#4 due 2026-01-01T12:00:00.123456Z",
            "node-a until 2026-01-01T12:00:10.123456Z",
        ],
    ]


def test_list_filters_by_type_key_and_due_window(sqlite_url: str) -> None:
    """--type and --key match exactly; --due-after/--due-before take ISO datetimes (UTC when
    no offset is given) or durations from --now, both bounds strict."""
    seed(
        sqlite_url,
        reminder("a", T0),
        reminder("b", T0 + timedelta(minutes=30)),
        reminder("c", T0 + timedelta(hours=2), actor_key="ord-2"),
        reminder("d", T0 + timedelta(hours=3), actor_type="invoice"),
    )

    def names(*args: str) -> list[str]:
        result = run("reminders", "list", "--db", sqlite_url, "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [json.loads(line)["name"] for line in result.stdout.splitlines()]

    now = ["--now", "2026-01-01T12:00:00.123456Z"]
    assert names() == ["a", "b", "c", "d"]
    assert names("--type", "order") == ["a", "b", "c"]
    assert names("--key", "ord-2") == ["c"]
    assert names("--type", "order", "--key", "ord-1") == ["a", "b"]
    assert names(*now, "--due-before", "1h") == ["a", "b"]
    assert names(*now, "--due-before", "+30m") == ["a"]  # strict: b is due at exactly +30m
    assert names(*now, "--due-after", "now") == ["b", "c", "d"]
    assert names(*now, "--due-after", "-1s", "--due-before", "2h1s") == ["a", "b", "c"]
    assert names("--due-after", "2026-01-01T14:00:01") == ["d"]  # naive: UTC
    assert names("--due-after", "2026-01-01T14:00:00") == ["c", "d"]  # strict, to the us
    assert names("--due-before", "2026-01-01T13:31:00+01:00") == ["a", "b"]
    assert names("--due-before", "2026-01-01T13:30:00.123456+01:00") == ["a"]
    assert names("--type", "user") == []


def test_list_pages_with_keysets_and_honours_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list reads the table in keyset pages of at most PAGE rows, each after the last one read,
    never the whole table at once; --limit cuts the listing and says more follow; --limit 0
    lists everything."""
    total = 2 * PAGE + 234
    records = [
        reminder(f"r{index:05d}", T0 + (index % 97) * SECOND, actor_key=f"ord-{index % 3}")
        for index in range(total)
    ]
    seed(sqlite_url, *records)
    expected = [record.key.name for record in sorted(records, key=lambda r: (r.due_at, r.key))]
    calls: list[tuple[int, Any]] = []
    scan = SqlReminderStore.scan

    def spy(self: SqlReminderStore, limit: int, **kwargs: Any) -> list[StoredReminder]:
        calls.append((limit, kwargs.get("after")))
        page: list[StoredReminder] = scan(self, limit, **kwargs)
        return page

    monkeypatch.setattr(SqlReminderStore, "scan", spy)
    result = run("reminders", "list", "--db", sqlite_url, "--json", "--limit", "0")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == expected
    assert [limit for limit, _ in calls] == [PAGE, PAGE, PAGE]
    assert calls[0][1] is None
    assert calls[1][1][1].name == expected[PAGE - 1]
    assert calls[2][1][1].name == expected[2 * PAGE - 1]

    calls.clear()
    result = run("reminders", "list", "--db", sqlite_url, "--limit", "7")
    assert result.exit_code == 0
    assert [row[1] for row in table_rows(result.stdout)[1:]] == expected[:7]
    assert calls == [(8, None)]
    assert "showing the first 7 reminders; more follow" in result.stderr

    result = run("reminders", "list", "--db", sqlite_url, "--limit", "0")
    names = [row[1] for row in table_rows(result.stdout) if row[0] != "actor"]
    assert names == expected
    assert result.stderr == ""


def test_list_of_an_empty_database_says_so(sqlite_url: str) -> None:
    """A database with plexspaces tables but no reminders lists nothing, and says so on stderr."""
    seed(sqlite_url)
    result = run("reminders", "list", "--db", sqlite_url)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "no reminders\n"


def test_list_prints_names_and_payloads_verbatim(sqlite_url: str) -> None:
    """Markup-like and emoji-like text in names is printed as stored, not interpreted."""
    seed(sqlite_url, reminder("[bold]x:smile:", T0, actor_key="[red]k"))
    result = run("reminders", "list", "--db", sqlite_url)
    assert table_rows(result.stdout)[1][:2] == ["order/[red]k", "[bold]x:smile:"]


def test_list_warns_about_rows_that_cannot_be_decoded(sqlite_url: str) -> None:
    """Undecodable rows are skipped, and a warning on stderr names them."""
    seed(sqlite_url, reminder("good", T0))
    insert_undecodable(sqlite_url, "broken")
    result = run("reminders", "list", "--db", sqlite_url, "--json")
    assert result.exit_code == 0
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["good"]
    assert "1 stored row cannot be decoded" in result.stderr
    assert "order/ord-1:broken" in result.stderr


# -- show and cancel -----------------------------------------------------------------------------


def test_show_prints_every_field(any_url: str) -> None:
    """show lists every field of one reminder, times exact; --json gives the export object."""
    stored = reminder(
        "billing",
        T0 + timedelta(days=30),
        anchor_at=T0,
        period=timedelta(days=30, microseconds=7),
        max_count=12,
        fire_count=4,
        missed="all",
        payload={"order": "ord-1", "note": "žluť ☃"},
        pending_fire=4,
        pending_scheduled_at=T0 + timedelta(microseconds=1),
        claimed_by="node-a",
        claimed_until=T0 + 10 * SECOND,
        created_at=T0 - timedelta(days=1),
        updated_at=T0 + timedelta(microseconds=42),
    )
    seed(any_url, stored, reminder("other", T0))
    result = run("reminders", "show", "--db", any_url, "order", "ord-1", "billing")
    assert result.exit_code == 0, result.stderr
    fields = {row[0]: row[1] if len(row) > 1 else "" for row in table_rows(result.stdout)}
    assert fields["actor type"] == "order"
    assert fields["actor key"] == "ord-1"
    assert fields["name"] == "billing"
    assert fields["next fire"] == "2026-01-31T12:00:00.123456Z"
    assert fields["anchor"] == "2026-01-01T12:00:00.123456Z"
    assert fields["period"] == "30d7us"
    assert fields["fire count"] == "4"
    assert fields["max count"] == "12"
    assert fields["missed ticks"] == "all"
    assert fields["pending fire"] == "#4"
    assert fields["pending due"] == "2026-01-01T12:00:00.123457Z"
    assert fields["finished"] == "no"
    assert fields["claimed by"] == "node-a"
    assert fields["claimed until"] == "2026-01-01T12:00:10.123456Z"
    assert fields["created"] == "2025-12-31T12:00:00.123456Z"
    assert fields["updated"] == "2026-01-01T12:00:00.123498Z"
    assert '"note": "žluť ☃"' in result.stdout

    result = run("reminders", "show", "--db", any_url, "--json", "order", "ord-1", "billing")
    shown = json.loads(result.stdout)
    assert shown["period_us"] == (30 * 86_400 * 1_000_000) + 7
    assert shown["payload"] == {"order": "ord-1", "note": "žluť ☃"}
    assert shown["claimed_until"] == "2026-01-01T12:00:10.123456Z"


def test_show_of_an_unknown_or_undecodable_reminder_is_a_negative_answer(sqlite_url: str) -> None:
    """show exits 1 with one line naming the reminder: none stored, or one that cannot be
    decoded (with what is wrong with it)."""
    seed(sqlite_url, reminder("r", T0))
    insert_undecodable(sqlite_url, "broken")
    line = error_line(run("reminders", "show", "--db", sqlite_url, "order", "ord-1", "x"), EXIT_NO)
    assert line == "Error: no reminder order/ord-1:x"
    line = error_line(
        run("reminders", "show", "--db", sqlite_url, "order", "ord-1", "broken"), EXIT_NO
    )
    assert "order/ord-1:broken is stored but cannot be decoded" in line
    assert "'sometimes'" in line


def test_cancel_deletes_the_reminder_and_says_what_it_was(any_url: str) -> None:
    """cancel deletes exactly one reminder and prints it; a second cancel exits 1, changing
    nothing; an undecodable row can be cancelled too."""
    seed(
        any_url,
        reminder("billing", T0, period=timedelta(days=30), max_count=12, fire_count=3),
        reminder("billing", T0, actor_key="ord-2"),
    )
    insert_undecodable(any_url, "broken")
    result = run("reminders", "cancel", "--db", any_url, "order", "ord-1", "billing")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "cancelled reminder order/ord-1:billing: next fire 2026-01-01T12:00:00.123456Z, "
        "period 30d, fires 3/12\n"
    )
    assert [str(record.key) for record in everything(any_url)] == ["order/ord-2:billing"]
    again = run("reminders", "cancel", "--db", any_url, "order", "ord-1", "billing")
    assert error_line(again, EXIT_NO) == (
        "Error: no reminder order/ord-1:billing; nothing was cancelled"
    )
    broken = run("reminders", "cancel", "--db", any_url, "order", "ord-1", "broken")
    assert broken.exit_code == 0
    assert "(its stored row could not be decoded)" in broken.stdout
    with SqlReminderStore(any_url) as store:
        assert store.errors() == []


def test_show_and_cancel_take_the_actor_as_list_prints_it(sqlite_url: str) -> None:
    """`TYPE/KEY NAME` (the actor as `list` prints it) names the same reminder as `TYPE KEY NAME`;
    the first '/' ends the type, so a key may hold more."""
    seed(sqlite_url, reminder("billing", T0), reminder("r", T0 + SECOND, actor_key="eu/ord-9"))
    listed = table_rows(run("reminders", "list", "--db", sqlite_url).stdout)[1:]
    actor, name = listed[0][0], listed[0][1]
    by_list = run("reminders", "show", "--db", sqlite_url, "--json", actor, name)
    by_parts = run("reminders", "show", "--db", sqlite_url, "--json", "order", "ord-1", "billing")
    assert by_list.exit_code == 0, by_list.stderr
    assert (actor, name) == ("order/ord-1", "billing")
    assert json.loads(by_list.stdout) == json.loads(by_parts.stdout)
    cancelled = run("reminders", "cancel", "--db", sqlite_url, "order/eu/ord-9", "r")
    assert cancelled.stdout.startswith("cancelled reminder order/eu/ord-9:r: ")
    assert [str(record.key) for record in everything(sqlite_url)] == ["order/ord-1:billing"]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["order", "billing"], "expected TYPE KEY NAME or TYPE/KEY NAME, got 2 arguments"),
        (["order/ord-1"], "expected TYPE KEY NAME or TYPE/KEY NAME, got 1 argument "),
        (["order/", "billing"], "KEY must not be empty"),
        (["/ord-1", "billing"], "TYPE must not be empty"),
    ],
    ids=["no-slash", "one", "empty-key", "empty-type"],
)
def test_show_refuses_a_key_that_is_neither_form(
    sqlite_url: str, args: list[str], problem: str
) -> None:
    """Anything but `TYPE KEY NAME` or `TYPE/KEY NAME` with no empty part is a usage error."""
    seed(sqlite_url, reminder("billing", T0))
    result = run("reminders", "show", "--db", sqlite_url, *args)
    assert result.exit_code == EXIT_ERROR
    assert problem in result.stderr


def test_counts_of_one_are_singular(sqlite_url: str, tmp_path: Path) -> None:
    """Every count the command line prints reads "1 reminder", never "1 reminder(s)"."""
    seed(sqlite_url, reminder("a", T0), reminder("b", T0 + SECOND))
    listed = run("reminders", "list", "--db", sqlite_url, "--limit", "1")
    assert "showing the first 1 reminder; more follow" in listed.stderr
    exported = tmp_path / "one.jsonl"
    run("reminders", "export", "--db", sqlite_url, "--type", "order", "--out", str(exported))
    exported.write_text(exported.read_text(encoding="utf-8").splitlines()[0] + "\n")
    target = f"sqlite:///{tmp_path / 'other.db'}"
    imported = run("reminders", "import", "--db", target, str(exported))
    assert imported.stdout == f"imported 1 reminder into {target}\n"
    again = run("reminders", "export", "--db", target)
    assert again.stderr == "exported 1 reminder to stdout\n"


def test_import_from_a_terminal_says_what_it_waits_for(tmp_path: Path) -> None:
    """`reminders import` reading a terminal says on stderr that it reads JSON lines until end
    of input (Ctrl-D) before it waits; piped input gets no such line."""
    master, slave = pty.openpty()
    try:
        os.write(master, b"\x04")  # end of input, as Ctrl-D at the start of a line
        script = Path(sys.executable).with_name("plexspaces")
        done = subprocess.run(
            [str(script), "reminders", "import", "--db", f"sqlite:///{tmp_path / 'r.db'}"],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "reading reminders as JSON lines from stdin until end of input (Ctrl-D)\n"
    )
    assert done.stdout.startswith("imported 0 reminders into ")
    piped = run("reminders", "import", "--db", f"sqlite:///{tmp_path / 'r.db'}", input="")
    assert piped.stderr == ""


# -- export and import ---------------------------------------------------------------------------


def _varied() -> list[StoredReminder]:
    """Reminders using every field, and enough of them to span several pages."""
    records = [
        reminder(
            "payment-timeout",
            T0 + timedelta(minutes=15),
            payload={"order": "ord-100", "note": "žluť ☃", "n": [1, 2.5, None, True]},
        ),
        reminder(
            "billing",
            T0 + timedelta(days=30, microseconds=7),
            anchor_at=T0 - timedelta(microseconds=999_999),
            period=timedelta(days=30, microseconds=7),
            max_count=12,
            fire_count=4,
            missed="all",
            payload={"plan": "gold"},
            pending_fire=4,
            pending_scheduled_at=T0 + timedelta(microseconds=1),
            claimed_by="node-a",
            claimed_until=T0 + 10 * SECOND,
            created_at=T0 - timedelta(days=1),
            updated_at=T0 + timedelta(microseconds=42),
        ),
        reminder(
            "done",
            T0 - timedelta(days=1),
            actor_type="invoice",
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=T0 - timedelta(days=1),
            finished=True,
            missed="skip",
        ),
        reminder("[weird] name: ☃", T0, actor_key="key with spaces", payload="text"),
    ]
    records += [
        reminder(f"bulk-{index:05d}", T0 + index * SECOND, actor_key=f"b-{index % 11}")
        for index in range(PAGE + 3)
    ]
    return records


def _without_claims(records: list[StoredReminder]) -> list[StoredReminder]:
    return [replace(record, claimed_by=None, claimed_until=None) for record in records]


def test_export_from_sqlite_import_into_postgresql_and_back(
    sqlite_url: str, pg_url: str, tmp_path: Path
) -> None:
    """An export holds every field exactly; importing it into PostgreSQL restores every reminder
    (claims dropped), importing it twice changes nothing, and PostgreSQL's export imported into
    a new SQLite file gives the same reminders again."""
    records = _varied()
    seed(sqlite_url, *records)
    exported = tmp_path / "reminders.jsonl"
    result = run("reminders", "export", "--db", sqlite_url, "--out", str(exported))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"exported {len(records)} reminders to {exported}\n"
    lines = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(records)
    billing = next(line for line in lines if line["name"] == "billing")
    assert billing == {
        "actor_type": "order",
        "actor_key": "ord-1",
        "name": "billing",
        "due_at": "2026-01-31T12:00:00.123463Z",
        "anchor_at": "2026-01-01T11:59:59.123457Z",
        "period_us": 30 * 86_400_000_000 + 7,
        "max_count": 12,
        "fire_count": 4,
        "missed": "all",
        "payload": {"plan": "gold"},
        "pending_fire": 4,
        "pending_scheduled_at": "2026-01-01T12:00:00.123457Z",
        "finished": False,
        "claimed_by": "node-a",
        "claimed_until": "2026-01-01T12:00:10.123456Z",
        "created_at": "2025-12-31T12:00:00.123456Z",
        "updated_at": "2026-01-01T12:00:00.123498Z",
    }

    shown_pg = make_url(pg_url).render_as_string(hide_password=True)
    for _ in range(2):  # idempotent: the second import leaves the same state
        result = run("reminders", "import", "--db", pg_url, str(exported))
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"imported {len(records)} reminders into {shown_pg}\n"
        assert everything(pg_url) == _without_claims(everything(sqlite_url))

    back = tmp_path / "back.db"
    from_pg = run("reminders", "export", "--db", pg_url)
    assert from_pg.exit_code == 0
    result = run("reminders", "import", "--db", f"sqlite:///{back}", "-", input=from_pg.stdout)
    assert result.exit_code == 0, result.stderr
    assert everything(f"sqlite:///{back}") == everything(pg_url)
    assert len(everything(f"sqlite:///{back}")) == len(records)


def test_export_skips_undecodable_rows_with_a_warning(sqlite_url: str, tmp_path: Path) -> None:
    """Rows that cannot be decoded are left out of an export; stderr says how many and which,
    and the exit status is 0."""
    seed(sqlite_url, reminder("good", T0))
    insert_undecodable(sqlite_url, "broken")
    result = run("reminders", "export", "--db", sqlite_url)
    assert result.exit_code == 0
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["good"]
    assert result.stderr.splitlines() == [
        "exported 1 reminder to stdout",
        "warning: 1 stored row cannot be decoded and was not exported: order/ord-1:broken "
        "(see 'plexspaces doctor')",
    ]


def test_export_filters_by_type_and_key(sqlite_url: str) -> None:
    """--type and --key export only the matching reminders."""
    seed(
        sqlite_url,
        reminder("a", T0),
        reminder("b", T0, actor_key="k2"),
        reminder("c", T0, actor_type="x"),
    )
    result = run("reminders", "export", "--db", sqlite_url, "--type", "order", "--key", "k2")
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["b"]


def _good_line(name: str) -> dict[str, Any]:
    return {
        "actor_type": "order",
        "actor_key": "ord-1",
        "name": name,
        "due_at": "2026-01-01T12:00:00.000000Z",
        "anchor_at": "2026-01-01T12:00:00.000000Z",
        "period_us": None,
        "max_count": None,
        "fire_count": 0,
        "missed": "once",
        "payload": None,
        "pending_fire": None,
        "pending_scheduled_at": None,
        "finished": False,
        "claimed_by": "somewhere",
        "claimed_until": "2026-01-01T12:00:10.000000Z",
        "created_at": "2026-01-01T12:00:00.000000Z",
        "updated_at": "2026-01-01T12:00:00.000000Z",
    }


_BAD_LINES: list[tuple[str, str, str]] = [
    ("not json", "{not json", "not JSON"),
    ("not an object", "[1, 2]", "expected a JSON object"),
    (
        "unknown field",
        json.dumps({**_good_line("x"), "colour": "red"}),
        "unknown field 'colour'",
    ),
    (
        "missing field",
        json.dumps({k: v for k, v in _good_line("x").items() if k != "fire_count"}),
        "missing field 'fire_count'",
    ),
    (
        "naive time",
        json.dumps({**_good_line("x"), "due_at": "2026-01-01T12:00:00"}),
        "due_at '2026-01-01T12:00:00' has no UTC offset",
    ),
    (
        "bad time",
        json.dumps({**_good_line("x"), "created_at": "yesterday"}),
        "created_at 'yesterday' is not an ISO 8601 datetime",
    ),
    (
        "above max_count",
        json.dumps({**_good_line("x"), "max_count": 2, "fire_count": 3}),
        "fire_count 3 is above max_count 2",
    ),
    (
        "float period",
        json.dumps({**_good_line("x"), "period_us": 1.5}),
        "period_us 1.5 must be a whole number of microseconds",
    ),
    (
        "nan payload",
        json.dumps(_good_line("x")).replace('"payload": null', '"payload": NaN'),
        "NaN",
    ),
    ("empty name", json.dumps({**_good_line("")}), "name ''"),
    (
        "bad policy",
        json.dumps({**_good_line("x"), "missed": "sometimes"}),
        "missed policy 'sometimes'",
    ),
]


@pytest.mark.parametrize(
    ("line", "message"), [case[1:] for case in _BAD_LINES], ids=[case[0] for case in _BAD_LINES]
)
def test_import_checks_every_line_first_and_imports_nothing_on_a_bad_one(
    tmp_path: Path, line: str, message: str
) -> None:
    """One bad line (the fourth, after three good ones) is one error naming the file, the line
    and what is wrong; nothing is imported, and a new SQLite file is not even created."""
    source = tmp_path / "in.jsonl"
    good = [json.dumps(_good_line(f"g{index}")) for index in range(3)]
    source.write_text("\n".join([*good, line, json.dumps(_good_line("after"))]) + "\n")
    target = tmp_path / "target.db"
    result = run("reminders", "import", "--db", f"sqlite:///{target}", str(source))
    error = error_line(result, EXIT_ERROR)
    assert error.startswith(f"Error: {source}, line 4: ")
    assert message in error
    assert error.endswith("nothing was imported")
    assert not target.exists()


def test_import_into_an_existing_database_changes_nothing_on_a_bad_line(sqlite_url: str) -> None:
    """A bad line leaves an existing database exactly as it was."""
    seed(sqlite_url, reminder("kept", T0, payload={"v": 1}))
    before = everything(sqlite_url)
    lines = [json.dumps({**_good_line("kept"), "payload": {"v": 2}}), "{oops"]
    result = run("reminders", "import", "--db", sqlite_url, input="\n".join(lines) + "\n")
    assert "Error: stdin, line 2: not JSON" in error_line(result, EXIT_ERROR)
    assert everything(sqlite_url) == before


def test_import_drops_claims_and_replaces_reminders_of_the_same_name(sqlite_url: str) -> None:
    """Imported reminders carry no claim; one of an existing name replaces it, others stay;
    blank lines are skipped."""
    seed(sqlite_url, reminder("kept", T0), reminder("g0", T0, payload={"old": True}))
    lines = [json.dumps(_good_line("g0")), "", json.dumps(_good_line("g1"))]
    result = run("reminders", "import", "--db", sqlite_url, "-", input="\n".join(lines))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"imported 2 reminders into {sqlite_url}\n"
    stored = {record.key.name: record for record in everything(sqlite_url)}
    assert sorted(stored) == ["g0", "g1", "kept"]
    assert stored["g0"].payload is None
    assert all(record.claimed_by is None for record in stored.values())


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["reminders", "list"],
        ["reminders", "show", "order", "ord-1", "r"],
        ["reminders", "cancel", "order", "ord-1", "r"],
        ["reminders", "export"],
        ["doctor"],
    ],
    ids=["list", "show", "cancel", "export", "doctor"],
)
def test_commands_never_create_a_sqlite_file(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db the database is $PLEXSPACES_STORAGE_URL, else plexspaces.db in the current
    directory, as for ActorSystem(); a file that does not exist is one error line (exit 2), and
    is not created."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLEXSPACES_STORAGE_URL", raising=False)
    line = error_line(run(*command), EXIT_ERROR)
    assert (
        f"no reminder database at '{tmp_path / 'plexspaces.db'}': the file does not exist" in line
    )
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("PLEXSPACES_STORAGE_URL", f"sqlite:///{elsewhere}")
    line = error_line(run(*command), EXIT_ERROR)
    assert f"'{elsewhere}'" in line
    assert sorted(os.listdir(tmp_path)) == []


def test_a_database_without_plexspaces_tables_is_not_written_to(
    sqlite_url: str, db_file: Path
) -> None:
    """An existing database that holds no plexspaces tables is an error for list, and doctor
    reports it as a problem; neither creates the tables."""
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    line = error_line(run("reminders", "list", "--db", sqlite_url), EXIT_ERROR)
    assert line == f"Error: {sqlite_url} holds no plexspaces tables: nothing was ever stored there"
    result = run("doctor", "--db", sqlite_url, "--json")
    assert result.exit_code == EXIT_NO
    report = json.loads(result.stdout)
    assert report["schema"]["found"] is None
    assert report["problems"] == 1
    assert SqlReminderStore.read_schema_version(sqlite_url) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://u@h/db", "names the database 'mysql'"),
        ("not a url", "is not a SQLAlchemy URL"),
        ("sqlite+nosuchdriver:///x.db", "names a driver SQLAlchemy does not know"),
    ],
)
def test_a_bad_url_is_one_error_line(url: str, fragment: str) -> None:
    """A URL that is not one the store can use is one error line, exit 2."""
    assert fragment in error_line(run("reminders", "list", "--db", url), EXIT_ERROR)


def test_an_unreachable_server_is_one_error_line() -> None:
    """A PostgreSQL URL where no server listens is StoreUnavailableError's message in one line
    (password hidden), exit 2, for reading and importing alike."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg://app:s3cret@127.0.0.1:{port}/app"
    for result in (
        run("reminders", "list", "--db", url),
        run("doctor", "--db", url),
        run("reminders", "import", "--db", url, input=json.dumps(_good_line("x"))),
    ):
        line = error_line(result, EXIT_ERROR)
        assert f"app:***@127.0.0.1:{port}/app is unavailable" in line
        assert "s3cret" not in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--due-before", "yesterday"], "Invalid value for '--due-before': 'yesterday' is neither"),
        (["--due-after", "2026-13-01"], "Invalid value for '--due-after'"),
        (["--now", "soon"], "Invalid value for '--now'"),
        (["--limit", "-1"], "Invalid value for '--limit'"),
        (["--type", ""], "Invalid value for '--type': must not be empty"),
        (["--colour"], "No such option '--colour'"),
    ],
)
def test_bad_arguments_are_one_usage_error_line(
    sqlite_url: str, args: list[str], fragment: str
) -> None:
    """Bad datetimes, limits, filters and options are one line naming the option, exit 2."""
    seed(sqlite_url)
    line = error_line(run("reminders", "list", "--db", sqlite_url, *args), EXIT_ERROR)
    assert fragment in line
    assert line.endswith("(see 'plexspaces reminders list --help')")


def test_another_schema_version_is_an_error_for_commands_and_a_finding_for_doctor(
    any_url: str,
) -> None:
    """A database written by another version is refused by list and import in one line, and
    reported (found and expected) by doctor, exit 1; nothing is changed."""
    seed(any_url, reminder("r", T0))
    set_schema_version(any_url, SCHEMA_VERSION + 1)
    line = error_line(run("reminders", "list", "--db", any_url), EXIT_ERROR)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than version {SCHEMA_VERSION}" in line
    imported = run("reminders", "import", "--db", any_url, input=json.dumps(_good_line("x")))
    assert "schema version" in error_line(imported, EXIT_ERROR)
    result = run("doctor", "--db", any_url)
    assert result.exit_code == EXIT_NO
    assert f"schema version: {SCHEMA_VERSION + 1}, expected {SCHEMA_VERSION}:" in result.stdout
    assert result.stdout.rstrip().endswith("1 problem found")
    report = json.loads(run("doctor", "--db", any_url, "--json").stdout)
    assert report["schema"]["found"] == SCHEMA_VERSION + 1
    assert report["schema"]["expected"] == SCHEMA_VERSION
    assert SqlReminderStore.read_schema_version(any_url) == SCHEMA_VERSION + 1


# -- doctor --------------------------------------------------------------------------------------


def test_doctor_on_a_healthy_database_exits_0(any_url: str) -> None:
    """Reminders due in the future, a fresh pending fire and live leases are healthy."""
    now = T0
    seed(
        any_url,
        reminder("later", now + timedelta(hours=1), claimed_by="n1", claimed_until=now + SECOND),
        reminder("just-due", now - 30 * SECOND),
        reminder(
            "fresh-pending",
            now + timedelta(hours=1),
            period=timedelta(hours=1),
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=now - timedelta(minutes=1),
        ),
    )
    result = run("doctor", "--db", any_url, "--now", "2026-01-01T12:00:00.123456Z")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.rstrip().endswith("healthy")
    assert "rows that cannot be decoded: 0" in result.stdout


def test_doctor_shows_the_database_file_it_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor on the default database names the SQLite file by its absolute path, in text and
    in JSON."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLEXSPACES_STORAGE_URL", raising=False)
    seed("sqlite:///plexspaces.db", reminder("r", T0 + timedelta(days=1)))
    args = ("doctor", "--now", "2026-01-01T12:00:00Z")
    text_report = run(*args)
    assert text_report.exit_code == 0, text_report.stderr
    assert f"database file: {tmp_path / 'plexspaces.db'}\n" in text_report.stdout
    report = json.loads(run(*args, "--json").stdout)
    assert report["path"] == str(tmp_path / "plexspaces.db")


def test_doctor_finds_every_kind_of_problem(any_url: str) -> None:
    """doctor reports undecodable rows, reminders overdue beyond --overdue with no fire
    pending, fires pending beyond --pending, and nodes whose leases all ended more than
    --stale-lease ago (reminder claims and activation leases, grouped by node); exit 1."""
    now = T0
    seed(
        any_url,
        reminder("overdue", now - timedelta(minutes=10)),
        reminder("slightly-late", now - 30 * SECOND),
        reminder(
            "stuck",
            now + timedelta(hours=1),
            period=timedelta(hours=1),
            fire_count=2,
            pending_fire=2,
            pending_scheduled_at=now - timedelta(hours=1),
        ),
        reminder(
            "finished-stuck",
            now - timedelta(hours=2),
            fire_count=1,
            pending_fire=1,
            pending_scheduled_at=now - timedelta(hours=2),
            finished=True,
        ),
        reminder(
            "dead-1",
            now + timedelta(days=1),
            claimed_by="dead",
            claimed_until=now - timedelta(minutes=5),
        ),
        reminder(
            "dead-2",
            now + timedelta(days=2),
            claimed_by="dead",
            claimed_until=now - timedelta(minutes=4),
        ),
        reminder("alive", now + timedelta(days=1), claimed_by="alive", claimed_until=now + SECOND),
        reminder(
            "just-ended", now + timedelta(days=1), claimed_by="blip", claimed_until=now - SECOND
        ),
    )
    insert_undecodable(any_url, "broken")
    with SqlReminderStore(any_url) as store:
        for actor_key, node, lease_until in [
            ("o1", "dead", now - timedelta(minutes=3)),
            ("o2", "gone", now - timedelta(hours=1)),
            ("o3", "alive", now + SECOND),
        ]:
            assert (
                store.claim_activation(
                    "order",
                    actor_key,
                    node,
                    activation_id=actor_key,
                    lease_until=lease_until,
                    now=lease_until - SECOND,
                )
                is None
            )
    args = ["doctor", "--db", any_url, "--now", "2026-01-01T12:00:00.123456Z"]
    result = run(*args, "--json")
    assert result.exit_code == EXIT_NO, result.stdout
    report = json.loads(result.stdout)
    assert report["schema"] == {"found": SCHEMA_VERSION, "expected": SCHEMA_VERSION}
    assert report["undecodable"]["count"] == 1
    assert report["undecodable"]["rows"][0]["reminder"] == "order/ord-1:broken"
    # broken (due at the epoch) is undecodable, not overdue: it cannot be read.
    assert [row["reminder"] for row in report["overdue"]["rows"]] == ["order/ord-1:overdue"]
    assert [row["reminder"] for row in report["pending"]["rows"]] == [
        "order/ord-1:finished-stuck",
        "order/ord-1:stuck",
    ]
    assert report["stale_leases"]["rows"] == [
        {
            "node_id": "dead",
            "reminder_claims": 2,
            "activation_leases": 1,
            "lease_until": "2026-01-01T11:57:00.123456Z",
        },
        {
            "node_id": "gone",
            "reminder_claims": 0,
            "activation_leases": 1,
            "lease_until": "2026-01-01T11:00:00.123456Z",
        },
    ]
    assert report["problems"] == 1 + 1 + 2 + 2

    # Thresholds move what counts: nothing is overdue by 1h, no fire pending for 3h, no node
    # silent for a day.
    relaxed = run(*args, "--overdue", "1h", "--pending", "3h", "--stale-lease", "1d", "--json")
    assert json.loads(relaxed.stdout)["problems"] == 1  # the undecodable row

    text_report = run(*args, "--show", "1")
    assert text_report.exit_code == EXIT_NO
    assert "fires pending (recorded, not acknowledged) for more than 5m: 2" in text_report.stdout
    assert "... and 1 more" in text_report.stdout
    assert "(they stopped renewing): 2" in text_report.stdout
    assert text_report.stdout.rstrip().endswith("6 problems found")


def test_doctor_without_a_database_file_is_an_error(sqlite_url: str, db_file: Path) -> None:
    """doctor on a SQLite file that does not exist cannot check anything: exit 2."""
    assert "does not exist" in error_line(run("doctor", "--db", sqlite_url), EXIT_ERROR)
    assert not db_file.exists()


# -- a live system -------------------------------------------------------------------------------


class Fires:
    """The reminder fires handled by `Order` actors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, int]] = []

    def add(self, actor_id: str, name: str, count: int) -> None:
        with self.lock:
            self.seen.append((actor_id, name, count))

    def names(self) -> list[str]:
        with self.lock:
            return [name for _, name, _ in self.seen]


class Order(Actor):
    """A virtual actor with ReminderFacet that registers reminders when asked to."""

    fires: ClassVar[Fires]

    def on_start(self) -> None:
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case ("remind", name, kwargs):
                return self.facet(ReminderFacet).register_reminder(name, **kwargs)
            case ReminderFired(reminder_name=name, fire_count=count):
                self.fires.add(self.ctx.actor_id, name, count)
                return None
            case "names":
                return sorted(info.name for info in self.facet(ReminderFacet).list_reminders())
        raise AssertionError(f"unexpected message {message!r}")


@pytest.fixture
def live(
    request: pytest.FixtureRequest,
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
    tmp_path: Path,
) -> tuple[ActorSystem, str, Fires]:
    """A running system (ManualClock at START) on SQLite or PostgreSQL with virtual type
    "order"; its URL and the fires its actors handled."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'live.db'}"
    fires = Fires()
    system = make_system(storage_url=url, clock=clock, node_id="node-a")
    system.register_virtual("order", type("Order", (Order,), {"fires": fires}))
    return system, url, fires


@pytest.mark.parametrize("live", ["sqlite", "postgresql"], indirect=True)
def test_a_live_systems_reminders_are_listed_and_cancelled_from_the_command_line(
    live: tuple[ActorSystem, str, Fires], clock: ManualClock
) -> None:
    """While a system runs, list shows the reminders its actors registered (with the node's
    claim in a cluster), cancel deletes one, and the node drops it at its fire: only the other
    reminder fires, and list then shows its advanced count."""
    system, url, fires = live
    ref = system.virtual("order", "ord-100")
    ref.ask(("remind", "payment-timeout", {"due": "10s", "payload": {"order": "ord-100"}}))
    ref.ask(("remind", "heartbeat", {"due": "10s", "period": "10s", "max_count": 3}))
    other = system.virtual("order", "ord-200")
    other.ask(("remind", "renewal", {"due": "30d"}))

    listed = run("reminders", "list", "--db", url, "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["actor_key"], row["name"]) for row in rows] == [
        ("ord-100", "heartbeat"),
        ("ord-100", "payment-timeout"),
        ("ord-200", "renewal"),
    ]
    assert rows[0]["due_at"] == "2026-01-01T00:00:10.000000Z"
    assert rows[0]["period_us"] == 10_000_000
    assert rows[1]["payload"] == {"order": "ord-100"}
    assert rows[2]["due_at"] == "2026-01-31T00:00:00.000000Z"
    clustered = system.cluster
    # In a cluster the node that registered a reminder due soon claims it; alone it claims none.
    assert rows[0]["claimed_by"] == ("node-a" if clustered else None)
    assert rows[2]["claimed_by"] is None

    cancelled = run("reminders", "cancel", "--db", url, "order", "ord-100", "payment-timeout")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert cancelled.stdout.startswith(
        "cancelled reminder order/ord-100:payment-timeout: next fire 2026-01-01T00:00:10Z"
    )
    clock.advance("10s")
    assert ref.ask("names", timeout=WAIT) == ["heartbeat"]
    assert fires.names() == ["heartbeat"]
    assert fires.seen == [("order/ord-100", "heartbeat", 1)]

    shown = run("reminders", "show", "--db", url, "--json", "order", "ord-100", "heartbeat")
    record = json.loads(shown.stdout)
    assert record["fire_count"] == 1
    assert record["due_at"] == "2026-01-01T00:00:20.000000Z"
    assert record["pending_fire"] is None  # acknowledged once the handler returned
    health = run("doctor", "--db", url, "--now", clock.now().isoformat())
    assert health.exit_code == 0, health.stdout


# -- the installed command -----------------------------------------------------------------------


def _plexspaces(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed `plexspaces` console script (from the venv the tests run in) as a
    separate process."""
    script = Path(sys.executable).with_name("plexspaces")
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_runs_as_its_own_process(pg_url: str, tmp_path: Path) -> None:
    """As a separate process, with the database from $PLEXSPACES_STORAGE_URL: export from
    PostgreSQL, import into SQLite, list it, and errors are one line with no traceback."""
    seed(
        pg_url,
        reminder("payment-timeout", T0, payload={"order": "ord-100"}),
        reminder("b", T0 + SECOND),
    )
    env = {"PLEXSPACES_STORAGE_URL": pg_url}
    exported = _plexspaces("reminders", "export", cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == "exported 2 reminders to stdout\n"
    (tmp_path / "dump.jsonl").write_text(exported.stdout, encoding="utf-8")

    local = {"PLEXSPACES_STORAGE_URL": ""}  # empty: the default file in the working directory
    imported = _plexspaces("reminders", "import", "dump.jsonl", cwd=tmp_path, env=local)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == f"imported 2 reminders into sqlite:///{tmp_path / 'plexspaces.db'}\n"
    listed = _plexspaces("reminders", "list", cwd=tmp_path, env=local)
    assert listed.returncode == 0, listed.stderr
    assert [row[1] for row in table_rows(listed.stdout)[1:]] == ["payment-timeout", "b"]
    assert everything(f"sqlite:///{tmp_path / 'plexspaces.db'}") == everything(pg_url)

    missing = _plexspaces("reminders", "show", "order", "ord-1", "nope", cwd=tmp_path, env=local)
    assert missing.returncode == EXIT_NO
    assert missing.stderr == "Error: no reminder order/ord-1:nope\n"
    bad = _plexspaces("reminders", "list", "--due-before", "never", cwd=tmp_path, env=local)
    assert bad.returncode == EXIT_ERROR
    assert len(bad.stderr.splitlines()) == 1
    assert "Traceback" not in bad.stderr
    version = _plexspaces("--version", cwd=tmp_path, env=local)
    assert version.returncode == 0
    assert version.stdout.startswith("plexspaces, version ")


# -- terminal escapes ----------------------------------------------------------------------------

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
CSI = "\x9b31m"
BIDI = "\u202e"


def seeded_with(tmp_path: Path, **fields: Any) -> str:
    """A SQLite file holding one reminder (with `fields`); its URL."""
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    seed(url, reminder(**fields))
    return url


def test_the_cli_escapes_control_characters_in_human_output(tmp_path: Path) -> None:
    """Keys, names, payloads and node ids with terminal escapes are printed as visible escapes
    in tables, show, doctor, cancel and errors; the JSON output keeps them exactly."""
    actor_type, actor_key, name = f"order{CLEAR}", f"k{TITLE}", f"n{CSI}{BIDI}"
    url = seeded_with(
        tmp_path,
        actor_type=actor_type,
        actor_key=actor_key,
        name=name,
        payload={"note": f"{CLEAR}{CSI}"},
        claimed_by=f"node{TITLE}",
        claimed_until=T0,
    )
    key = (actor_type, actor_key, name)
    human = [
        run("reminders", "list", "--db", url),
        run("reminders", "show", "--db", url, *key),
        run("doctor", "--db", url),
        run("reminders", "show", "--db", url, actor_type, actor_key, f"missing{CLEAR}"),
        run("reminders", "cancel", "--db", url, *key),
    ]
    assert [result.exit_code for result in human] == [0, 0, 1, 1, 0]
    for result in human:
        output = result.stdout + result.stderr
        assert not any(char in output for char in ("\x1b", "\x07", "\x9b", BIDI)), repr(output)
    assert "order\\x1b[2J" in human[0].stdout
    assert "\\x9b31m\\u202e" in human[1].stdout
    assert "node\\x1b]0;pwned\\x07" in human[2].stdout
    assert "missing\\x1b[2J" in human[3].stderr

    url = seeded_with(tmp_path, actor_type=actor_type, actor_key=actor_key, name=name)
    exported = run("reminders", "list", "--json", "--db", url).stdout
    record = json.loads(exported)
    assert (record["actor_type"], record["actor_key"], record["name"]) == key


def test_python_dash_m_plexspaces_is_the_command_line() -> None:
    """`python -m plexspaces` runs the command line, as the `plexspaces` script does."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "plexspaces", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "reminders" in done.stdout
    assert "doctor" in done.stdout


def test_the_distribution_has_a_name_of_its_own_and_both_postgres_extras() -> None:
    """The distribution is not called `plexspaces` (that PyPI name is another project), the
    install hints use its name, and `[postgres]` is the same extra as `[postgresql]`."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "plexspaces-facets"
    extras = project["optional-dependencies"]
    assert extras["postgres"] == extras["postgresql"]
    assert project["classifiers"]
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "install 'plexspaces[" not in text, path
        assert 'install "plexspaces[' not in text, path
