# ruff: noqa: F811  (the fixtures of test_cli are imported by name)
"""The `plexspaces reminders` commands on calendar reminders and reminders that expire: list,
show, cancel and export/import carry cron, tz and expires_at."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.test_cli import (  # noqa: F401
    any_url,
    db_file,
    everything,
    run,
    seed,
    sqlite_url,
    table_rows,
)
from tests.test_store_contract import SECOND, T0, reminder

CALENDAR = {"cron": "0 9 * * MON-FRI", "tz": "Europe/Prague"}
EXPIRES = T0 + timedelta(days=7)


def test_list_shows_the_cron_schedule_and_the_expiry(any_url: str) -> None:
    """list shows a calendar reminder's cron and zone in the period column and an expiry in its
    own column; other reminders keep "one-shot" or their period and an empty expiry."""
    seed(
        any_url,
        reminder("cal", T0, **CALENDAR, expires_at=EXPIRES),
        reminder("tick", T0 + SECOND, period=SECOND),
    )
    result = run("reminders", "list", "--db", any_url)
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert rows[0][-1] == "expires (UTC)"
    assert rows[1] == [
        "order/ord-1",
        "cal",
        "2026-01-01T12:00:00.123456Z",
        "cron 0 9 * * MON-FRI (Europe/Prague)",
        "0",
        "2026-01-08T12:00:00.123456Z",
    ]
    assert rows[2] == ["order/ord-1", "tick", "2026-01-01T12:00:01.123456Z", "1s", "0"]


def test_show_prints_cron_zone_local_next_fire_and_expiry(any_url: str) -> None:
    """show adds cron, time zone, the next fire in that zone, and the expiry."""
    seed(any_url, reminder("cal", T0, **CALENDAR, expires_at=EXPIRES))
    result = run("reminders", "show", "--db", any_url, "order", "ord-1", "cal")
    assert result.exit_code == 0, result.stderr
    fields = {row[0]: row[1] if len(row) > 1 else "" for row in table_rows(result.stdout)}
    assert fields["cron"] == "0 9 * * MON-FRI"
    assert fields["time zone"] == "Europe/Prague"
    assert fields["next fire (local)"] == "2026-01-01T13:00:00.123456+01:00"
    assert fields["expires"] == "2026-01-08T12:00:00.123456Z"
    plain = run("reminders", "show", "--db", any_url, "--json", "order", "ord-1", "cal")
    shown = json.loads(plain.stdout)
    assert (shown["cron"], shown["tz"], shown["expires_at"]) == (
        "0 9 * * MON-FRI",
        "Europe/Prague",
        "2026-01-08T12:00:00.123456Z",
    )


def test_cancel_says_the_schedule_of_a_calendar_reminder(sqlite_url: str) -> None:
    """cancel names the cron schedule of what it deleted."""
    seed(sqlite_url, reminder("cal", T0, **CALENDAR))
    result = run("reminders", "cancel", "--db", sqlite_url, "order", "ord-1", "cal")
    assert result.exit_code == 0, result.stderr
    assert "period cron 0 9 * * MON-FRI (Europe/Prague)" in result.stdout


def test_export_and_import_carry_cron_tz_and_expiry(sqlite_url: str, tmp_path: Path) -> None:
    """An exported calendar reminder with an expiry imports back equal; a plain one's line has
    no cron, tz or expires_at fields (so older lines import as before)."""
    calendar = reminder("cal", T0, **CALENDAR, expires_at=EXPIRES)
    plain = reminder("plain", T0 + SECOND)
    seed(sqlite_url, calendar, plain)
    exported = run("reminders", "export", "--db", sqlite_url)
    assert exported.exit_code == 0, exported.stderr
    lines = {json.loads(line)["name"]: json.loads(line) for line in exported.stdout.splitlines()}
    assert {"cron", "tz", "expires_at"} <= set(lines["cal"])
    assert not {"cron", "tz", "expires_at"} & set(lines["plain"])
    target = f"sqlite:///{tmp_path}/copy.db"
    imported = run("reminders", "import", "--db", target, "-", input=exported.stdout)
    assert imported.exit_code == 0, imported.stderr
    assert everything(target) == [calendar, plain]


def test_import_refuses_a_line_with_a_bad_cron_naming_it(sqlite_url: str) -> None:
    """An import line whose cron is not valid is refused with the reason; nothing is stored."""
    line = {
        **json.loads(
            run_export_line(sqlite_url),
        ),
        "cron": "0 25 * * *",
        "tz": "UTC",
    }
    result = run("reminders", "import", "--db", sqlite_url, "-", input=json.dumps(line) + "\n")
    assert result.exit_code != 0
    assert "cron '0 25 * * *' is not valid" in result.stderr


def run_export_line(url: str) -> str:
    """One export line of a plain reminder stored at `url` and then cancelled."""
    seed(url, reminder("bad", T0))
    line = run("reminders", "export", "--db", url).stdout.splitlines()[0]
    assert run("reminders", "cancel", "--db", url, "order", "ord-1", "bad").exit_code == 0
    return line
