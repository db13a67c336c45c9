"""`plexspaces reminders dead/retry/count/cancel-all` and the history in list/show/export, on a
real SQLite file beside a running system on a ManualClock (the system of
`tests.test_reminder_retry`), and from a stopped one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from plexspaces import ActorSystem, ManualClock, RetryPolicy
from plexspaces._store import SqlReminderStore
from plexspaces.cli import EXIT_ERROR, EXIT_NO
from tests.conftest import START
from tests.test_cli import error_line, run, table_rows
from tests.test_reminder_facet import Journal, db, journal, listed, register, rem
from tests.test_reminder_retry import ping

__all__ = ["db", "journal", "rem"]  # fixtures used by name

MINUTE = timedelta(minutes=1)


def dead_lettered(rem: ActorSystem, clock: ManualClock, journal: Journal, key: str = "k") -> int:
    """Dead-letter the first fire of reminder "r" of rem/KEY; its id."""
    register(rem.virtual("rem", key), "r", due="1m", retry=RetryPolicy(max_attempts=1))
    journal.failures[(f"rem/{key}", "r")] = 1
    clock.advance(MINUTE)
    letters = [d for d in rem.reminders.dead_letters() if d.actor_key == key]
    return letters[-1].id


def test_dead_lists_letters_and_retry_redrives_one_on_the_running_node(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """`dead` lists a dead letter (table and JSON); `retry ID` stores the request, and the
    running node delivers it at its next poll and deletes it."""
    letter_id = dead_lettered(rem, clock, journal)
    url = rem.storage_url
    shown = run("reminders", "dead", "--db", url)
    assert shown.exit_code == 0, shown.stderr
    rows = table_rows(shown.stdout)
    assert rows[0] == ["id", "actor", "name", "fire", "due (UTC)", "attempts", "dead at", "error"]
    assert rows[1] == [
        str(letter_id),
        "rem/k",
        "r",
        "#1",
        "2026-01-01T00:01:00Z",
        "1",
        "2026-01-01T00:01:00Z",
        "Boom: handler failed on r #1",
    ]
    [line] = run("reminders", "dead", "--db", url, "--json").stdout.splitlines()
    letter = json.loads(line)
    assert letter["error"] == {"type": "Boom", "text": "handler failed on r #1"}
    assert letter["retry_requested_at"] is None

    retried = run("reminders", "retry", "--db", url, str(letter_id))
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.startswith("asked to retry 1 dead letter")
    assert json.loads(run("reminders", "dead", "--db", url, "--json").stdout)["retry_requested_at"]
    clock.advance("1s")  # the node's poll for re-drives
    ping(rem)
    assert [f.fire_count for f in journal.fired("r")] == [1, 1]
    empty = run("reminders", "dead", "--db", url)
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", "no dead letters\n")


def test_retry_by_filter_while_the_node_is_down(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """`retry --type` asks for every matching letter while no node runs; the next node on the
    database delivers them when it starts."""
    dead_lettered(rem, clock, journal, "a")
    dead_lettered(rem, clock, journal, "b")
    url = rem.storage_url
    types = rem.virtual_types()
    rem.shutdown()
    retried = run("reminders", "retry", "--db", url, "--type", "rem", "--key", "b")
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.startswith("asked to retry 1 dead letter")
    second = make_system(storage_url=url, clock=clock)
    for name, cls in types.items():
        second.register_virtual(name, cls)
    assert len(second.reminders.dead_letters()) == 2
    clock.advance(0)
    ping(second, "b")
    assert [d.actor_key for d in second.reminders.dead_letters()] == ["a"]
    assert [f.actor_id for f in journal.fired("r")] == ["rem/a", "rem/b", "rem/b"]


def test_retry_refuses_what_names_nothing(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """`retry` without IDs or filters is an error; an id that is no dead letter is a negative
    answer; IDs and filters together are refused."""
    url = rem.storage_url
    dead_lettered(rem, clock, journal)
    assert "name the dead letters to retry" in error_line(
        run("reminders", "retry", "--db", url), EXIT_ERROR
    )
    assert "no dead letter 999" in error_line(
        run("reminders", "retry", "--db", url, "999"), EXIT_NO
    )
    assert "not both" in error_line(
        run("reminders", "retry", "--db", url, "1", "--all"), EXIT_ERROR
    )
    assert "no dead letters match" in error_line(
        run("reminders", "retry", "--db", url, "--type", "nope"), EXIT_NO
    )


def test_show_and_list_print_the_history_and_export_keeps_it(
    rem: ActorSystem, clock: ManualClock, journal: Journal, tmp_path: Path
) -> None:
    """show prints retry policy, failed attempts, last fired/handled and last error; list has
    a last error column; export writes them and import restores them exactly."""
    ref = rem.virtual("rem", "k")
    policy = RetryPolicy(max_attempts=5, backoff="2s", max_backoff="1m")
    register(ref, "r", due="1m", period="1m", retry=policy)
    clock.advance(MINUTE)
    journal.failures[("rem/k", "r")] = 1
    clock.advance(MINUTE)
    url = rem.storage_url
    shown = run("reminders", "show", "--db", url, "rem/k", "r")
    fields = {row[0]: row[1:] for row in table_rows(shown.stdout)}
    assert fields["retry"] == ["5 attempts, backoff 2s doubling to 1m"]
    assert fields["failed attempts"] == ["1"]
    assert fields["last fired"] == ["2026-01-01T00:02:00.000000Z"]
    assert fields["last handled"] == ["2026-01-01T00:01:00.000000Z"]
    assert fields["last error"] == ["Boom: handler failed on r #2"]
    listed_rows = table_rows(run("reminders", "list", "--db", url).stdout)
    assert listed_rows[1][-1] == "Boom: handler failed on r #2"

    exported = tmp_path / "out.jsonl"
    assert run("reminders", "export", "--db", url, "--out", str(exported)).exit_code == 0
    line = json.loads(exported.read_text(encoding="utf-8"))
    assert line["retry"] == {
        "max_attempts": 5,
        "backoff_us": 2_000_000,
        "max_backoff_us": 60_000_000,
    }
    assert (line["attempts"], line["last_error"]["type"]) == (1, "Boom")
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert run("reminders", "import", "--db", target, str(exported)).exit_code == 0
    with SqlReminderStore(url) as source, SqlReminderStore(target) as copy:
        [original] = source.list_actor("rem", "k")
        [restored] = copy.list_actor("rem", "k")
    assert restored == original
    assert restored.last_fired_at == START + 2 * MINUTE


def test_count_and_cancel_all_by_type_and_prefix(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """`count` counts by type and literal name prefix; `cancel-all` deletes the matching
    reminders, and the running node fires only the others."""
    for key in ("a", "b"):
        for name in ("pay-1", "pay-2", "ship"):
            register(rem.virtual("rem", key), name, due="1m")
    url = rem.storage_url
    assert run("reminders", "count", "--db", url).stdout == "6\n"
    assert run("reminders", "count", "--db", url, "--prefix", "pay-").stdout == "4\n"
    assert run("reminders", "count", "--db", url, "--type", "x").stdout == "0\n"
    assert "needs --type TYPE or --prefix PREFIX" in error_line(
        run("reminders", "cancel-all", "--db", url), EXIT_ERROR
    )
    cancelled = run("reminders", "cancel-all", "--db", url, "--type", "rem", "--prefix", "pay")
    assert cancelled.stdout == "cancelled 4 reminders\n"
    clock.advance(MINUTE)
    assert sorted((f.actor_id, f.name) for f in journal.fired()) == [
        ("rem/a", "ship"),
        ("rem/b", "ship"),
    ]
    assert listed(rem.virtual("rem", "a")) == []
