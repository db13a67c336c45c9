"""Failure policy, dead letters, fire history and whole-type views of durable reminders.

Mostly on the ManualClock: a handler that raises (the journal tells it to) is delivered again
after its `RetryPolicy` backoff, then dead-lettered; the reminder goes on with its next tick;
dead letters are re-driven; attempts survive a restart (a second system on the same SQLite
file). Whole-type views run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from plexspaces import (
    ActorSystem,
    DeadLetter,
    FacetConfigError,
    FireFailure,
    ManualClock,
    RetryPolicy,
)
from plexspaces._store import SqlReminderStore
from tests.conftest import START
from tests.test_reminder_facet import (
    WAIT,
    Journal,
    Reminding,
    bound,
    db,
    journal,
    listed,
    register,
    rem,
    restart,
)

__all__ = ["db", "journal", "rem"]  # fixtures used by name

MINUTE = timedelta(minutes=1)
S = timedelta(seconds=1)


def handled_at(journal: Journal, name: str = "r") -> list[timedelta]:
    """When each delivery of `name` was handled, as time since START."""
    return [fire.handled_at - START for fire in journal.fired(name)]


def ping(system: ActorSystem, key: str = "k") -> None:
    """Returns once the actor handled everything sent to it before (a re-drive included)."""
    assert system.virtual("rem", key).ask("ping", timeout=WAIT) == "pong"


# -- the failure policy ----------------------------------------------------------------------------


def test_a_failing_fire_is_retried_with_doubling_backoff_then_dead_lettered(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A one-shot whose handler keeps raising is delivered max_attempts times, backoff doubling
    up to max_backoff, then kept as a dead letter (error, attempts, when) and the reminder is
    finished; nothing fires after that."""
    policy = RetryPolicy(max_attempts=4, backoff="2s", max_backoff="5s")
    register(rem.virtual("rem", "k"), "r", due="1m", payload={"order": 7}, retry=policy)
    journal.failures[("rem/k", "r")] = 100
    clock.advance(MINUTE)
    clock.advance(2 * S - timedelta(milliseconds=1))
    assert handled_at(journal) == [MINUTE]
    clock.advance("1h")
    assert handled_at(journal) == [MINUTE, MINUTE + 2 * S, MINUTE + 6 * S, MINUTE + 11 * S]
    assert [fire.fire_count for fire in journal.fired("r")] == [1, 1, 1, 1]
    [letter] = rem.reminders.dead_letters()
    assert isinstance(letter, DeadLetter)
    assert (letter.actor_id, letter.reminder_name, letter.fire_count) == ("rem/k", "r", 1)
    assert letter.scheduled_at == START + MINUTE
    assert letter.payload == {"order": 7}
    assert letter.error == FireFailure("Boom", "handler failed on r #1")
    assert letter.attempts == 4
    assert letter.dead_at == START + MINUTE + 11 * S
    assert letter.retry_requested_at is None
    assert listed(rem.virtual("rem", "k")) == []


def test_after_a_dead_letter_a_periodic_reminder_goes_on_with_its_next_tick(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A periodic reminder whose fire is dead-lettered keeps its phase: the next tick fires on
    time with the next fire_count, and its history shows the error until a fire is handled."""
    ref = rem.virtual("rem", "k")
    register(ref, "r", due="1m", period="1m", retry=RetryPolicy(max_attempts=2))
    journal.failures[("rem/k", "r")] = 2
    clock.advance(MINUTE + S)  # fails at 1m and at 1m1s: dead
    [info] = listed(ref)
    assert (info.fire_count, info.pending_fire, info.attempts) == (1, None, 0)
    assert info.last_error == FireFailure("Boom", "handler failed on r #1")
    assert info.next_fire_at == START + 2 * MINUTE
    clock.advance(MINUTE - S)
    assert [(f.fire_count, f.handled_at - START) for f in journal.fired("r")] == [
        (1, MINUTE),
        (1, MINUTE + S),
        (2, 2 * MINUTE),
    ]
    [info] = listed(ref)
    assert info.last_error is None
    assert info.last_handled_at == START + 2 * MINUTE
    assert len(rem.reminders.dead_letters()) == 1


def test_without_a_policy_a_failing_fire_is_retried_for_ever_1s_doubling_to_60s(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """The default policy is the old behaviour: retried for ever, 1 s doubling to 60 s, never
    dead-lettered."""
    register(rem.virtual("rem", "k"), "r", due="1m")
    journal.failures[("rem/k", "r")] = 9
    clock.advance("10m")
    gaps = [b - a for a, b in zip(handled_at(journal), handled_at(journal)[1:], strict=False)]
    assert gaps == [timedelta(seconds=s) for s in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert rem.reminders.dead_letters() == []
    assert listed(rem.virtual("rem", "k")) == []  # the tenth delivery was handled


def test_the_facet_config_gives_the_default_policy_and_a_registration_overrides_it(
    system: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """ReminderFacet config {"retry": {...}} applies to reminders registered without a policy;
    one registered with its own keeps it."""
    system.register_virtual(
        "rem", bound(Reminding, journal, reminder_config={"retry": {"max_attempts": 1}})
    )
    ref = system.virtual("rem", "k")
    register(ref, "once", due="1m")
    register(ref, "twice", due="1m", retry=RetryPolicy(max_attempts=2, backoff="1s"))
    journal.failures[("rem/k", "once")] = 5
    journal.failures[("rem/k", "twice")] = 5
    clock.advance("1h")
    assert len(journal.fired("once")) == 1
    assert len(journal.fired("twice")) == 2
    letters = system.reminders.dead_letters()
    assert [(d.reminder_name, d.attempts) for d in letters] == [("once", 1), ("twice", 2)]
    assert [info.name for info in listed(ref)] == []  # dead-lettered one-shots are finished


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts 0"),
        ({"max_attempts": True}, "max_attempts True"),
        ({"max_attempts": "3"}, "max_attempts '3'"),
        ({"backoff": "0s"}, "backoff: duration '0s' must be positive"),
        ({"backoff": "5"}, "backoff"),
        ({"max_backoff": -1}, "max_backoff"),
        ({"backoff": "10s", "max_backoff": "5s"}, "max_backoff '5s' is shorter than backoff"),
    ],
)
def test_a_bad_retry_policy_is_refused_naming_the_value(kwargs: dict[str, Any], match: str) -> None:
    """RetryPolicy refuses a bad field with a ValueError naming the field and the value."""
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)


def test_retry_policies_given_in_other_units_are_equal() -> None:
    """Durations are normalized: "1s", 1 and timedelta(seconds=1) make equal policies."""
    assert RetryPolicy(3, "1s", "1m") == RetryPolicy(3, 1, timedelta(minutes=1))
    assert RetryPolicy().backoff == S
    assert RetryPolicy.of({"max_attempts": 2}) == RetryPolicy(max_attempts=2)


def test_a_bad_retry_config_is_a_facet_config_error(system: ActorSystem, journal: Journal) -> None:
    """An unknown key or a bad value under the facet's "retry" config is a FacetConfigError
    naming it; a bad retry argument to register_reminder stores nothing."""
    system.register_virtual(
        "bad", bound(Reminding, journal, reminder_config={"retry": {"attempts": 3}})
    )
    with pytest.raises(FacetConfigError, match="'attempts'"):
        system.virtual("bad", "k").ask("ping", timeout=WAIT)
    system.register_virtual("rem", bound(Reminding, journal))
    ref = system.virtual("rem", "k")
    with pytest.raises(ValueError, match="retry 'often'"):
        register(ref, "r", due="1m", retry="often")
    assert listed(ref) == []


# -- durability ------------------------------------------------------------------------------------


def test_failed_attempts_are_counted_in_the_store_and_survive_a_restart(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """Attempts are durable: after one failure and a restart on the same file, the fire is
    delivered again at once as attempt 2, and dead-lettered at attempt 3 as the policy says."""
    register(rem.virtual("rem", "k"), "r", due="1m", retry=RetryPolicy(max_attempts=3))
    journal.failures[("rem/k", "r")] = 100
    clock.advance(MINUTE)
    [info] = listed(rem.virtual("rem", "k"))
    assert (info.pending_fire, info.attempts) == (1, 1)
    second = restart(rem, make_system)
    clock.advance(0)  # delivered again at start: attempt 2
    [info] = listed(second.virtual("rem", "k"))
    assert info.attempts == 2
    clock.advance("1h")
    assert len(journal.fired("r")) == 3
    [letter] = second.reminders.dead_letters()
    assert letter.attempts == 3


# -- re-drives -------------------------------------------------------------------------------------


def dead_letter_one(rem: ActorSystem, clock: ManualClock, journal: Journal) -> DeadLetter:
    register(rem.virtual("rem", "k"), "r", due="1m", retry=RetryPolicy(max_attempts=1))
    journal.failures[("rem/k", "r")] = 1
    clock.advance(MINUTE)
    [letter] = rem.reminders.dead_letters()
    return letter


def test_a_redriven_dead_letter_is_delivered_once_more_and_removed_when_handled(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """retry_dead_letter delivers the same fire (fire_count, scheduled_at, payload) once more;
    handled, the letter is deleted."""
    letter = dead_letter_one(rem, clock, journal)
    assert rem.reminders.retry_dead_letter(letter) is True
    ping(rem)
    fires = journal.fired("r")
    assert [(f.fire_count, f.scheduled_at) for f in fires] == [(1, START + MINUTE)] * 2
    assert rem.reminders.dead_letters() == []
    assert rem.reminders.retry_dead_letter(letter.id) is False  # gone


def test_a_redrive_that_fails_again_goes_back_to_the_dead_letters(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A re-drive whose handler raises is a dead letter again: one attempt more, the new error,
    no re-drive pending; it can be re-driven again."""
    letter = dead_letter_one(rem, clock, journal)
    journal.failures[("rem/k", "r")] = 1
    clock.advance("5s")
    rem.reminders.retry_dead_letter(letter)
    ping(rem)
    [again] = rem.reminders.dead_letters()
    assert (again.id, again.attempts, again.retry_requested_at) == (letter.id, 2, None)
    assert again.dead_at == START + MINUTE + 5 * S
    assert rem.reminders.retry_dead_letters(actor_type="rem") == 1
    ping(rem)
    assert rem.reminders.dead_letters() == []
    assert len(journal.fired("r")) == 3


def test_a_redrive_asked_for_while_the_node_is_down_is_delivered_when_it_starts(
    rem: ActorSystem,
    clock: ManualClock,
    journal: Journal,
    make_system: Callable[..., ActorSystem],
) -> None:
    """A re-drive requested in the store while no system runs (as the CLI does) is delivered
    by the next system on that store when it starts, and the letter is deleted."""
    letter = dead_letter_one(rem, clock, journal)
    types = rem.virtual_types()
    url = rem.storage_url
    rem.shutdown()
    with SqlReminderStore(url) as store:
        assert store.request_retry([letter.id], now=clock.now()) == 1
    second = make_system(storage_url=url, clock=clock)
    for name, cls in types.items():
        second.register_virtual(name, cls)
    assert second.reminders.dead_letters()  # opened: its first load, due now, re-drives it
    clock.advance(0)
    ping(second)
    assert len(journal.fired("r")) == 2
    assert second.reminders.dead_letters() == []


def test_a_redrive_asked_for_by_another_process_is_picked_up_by_a_running_node(
    make_system: Callable[..., ActorSystem], journal: Journal
) -> None:
    """On the real clock, a node whose store holds dead letters looks for re-drives every
    poll: one requested through another store on the same file is delivered and removed."""
    system = make_system()
    system.register_virtual("rem", bound(Reminding, journal))
    journal.failures[("rem/k", "r")] = 1
    register(system.virtual("rem", "k"), "r", due=0, retry=RetryPolicy(max_attempts=1))
    assert journal.wait_until(lambda j: len(j.fired("r")) == 1)
    ping(system)  # the actor's next message waits until its failed fire was written
    [letter] = system.reminders.dead_letters()
    with SqlReminderStore(system.storage_url) as store:
        store.request_retry([letter.id], now=system.clock.now())
    assert journal.wait_until(lambda j: len(j.fired("r")) == 2)
    ping(system)
    assert system.reminders.dead_letters() == []


# -- history ---------------------------------------------------------------------------------------


def test_history_fields_follow_fires_handling_and_failures(
    rem: ActorSystem, clock: ManualClock, journal: Journal, db: Path
) -> None:
    """last_fired_at is when a fire was recorded, last_handled_at when its handler returned,
    last_error the last failure until a fire is handled; all durable."""
    ref = rem.virtual("rem", "k")
    info = register(ref, "r", due="1m", period="1m")
    assert (info.last_fired_at, info.last_handled_at, info.last_error) == (None, None, None)
    clock.advance(MINUTE)
    [info] = listed(ref)
    assert info.last_fired_at == info.last_handled_at == START + MINUTE
    journal.failures[("rem/k", "r")] = 1
    clock.advance(MINUTE)
    [info] = listed(ref)
    assert info.last_fired_at == START + 2 * MINUTE
    assert info.last_handled_at == START + MINUTE
    assert info.last_error == FireFailure("Boom", "handler failed on r #2")
    assert (info.pending_fire, info.attempts) == (2, 1)
    with SqlReminderStore(rem.storage_url) as store:
        [stored] = store.list_actor("rem", "k")
    assert stored.last_error == info.last_error
    clock.advance(S)  # the retry is handled
    [info] = listed(ref)
    assert info.last_error is None
    assert info.last_handled_at == START + 2 * MINUTE + S
    assert (info.pending_fire, info.attempts) == (None, 0)


# -- whole-type views ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def views(
    request: pytest.FixtureRequest,
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
    journal: Journal,
) -> ActorSystem:
    """A ManualClock system on SQLite or PostgreSQL with reminders of two types: "rem" keys
    k0..k4 with "pay-1", "pay_2" and "ship", and "other" key o with "pay-1"."""
    kwargs: dict[str, Any] = {"clock": clock}
    if request.param == "postgresql":
        kwargs["storage_url"] = request.getfixturevalue("pg_url")
    system = make_system(**kwargs)
    system.register_virtual("rem", bound(Reminding, journal))
    system.register_virtual("other", bound(Reminding, journal))
    for index in range(5):
        ref = system.virtual("rem", f"k{index}")
        for name in ("pay-1", "pay_2", "ship"):
            register(ref, name, due="1m")
    register(system.virtual("other", "o"), "pay-1", due="1m")
    return system


def test_whole_type_list_pages_by_key_across_actors(views: ActorSystem) -> None:
    """list() pages reminders of a type (and name prefix) in (type, key, name) order with a
    keyset cursor, without activating anything."""
    service = views.reminders
    seen: list[tuple[str | None, str]] = []
    after = None
    while page := service.list("rem", limit=4, after=after):
        seen.extend((info.actor_key, info.name) for info in page)
        after = page[-1]
    assert seen == [(f"k{i}", n) for i in range(5) for n in ("pay-1", "pay_2", "ship")]
    prefixed = service.list(name_prefix="pay-", limit=100)
    assert [(i.actor_type, i.actor_key) for i in prefixed] == [("other", "o")] + [
        ("rem", f"k{i}") for i in range(5)
    ]
    # "_" is a plain character of the prefix, not a wildcard.
    assert {i.name for i in service.list("rem", name_prefix="pay_")} == {"pay_2"}
    assert service.count() == 16
    assert service.count("rem") == 15
    assert service.count("rem", name_prefix="pay") == 10
    assert service.count(name_prefix="nothing") == 0


def test_whole_type_cancel_deletes_durably_and_nothing_fires(
    views: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """cancel() deletes every matching reminder and disarms them: none of them fires, the
    others do."""
    service = views.reminders
    assert service.cancel("rem", name_prefix="pay") == 10
    assert service.count("rem") == 5
    clock.advance("1m")  # short: on PostgreSQL the node polls its cluster every second
    fired = {(f.actor_id, f.name) for f in journal.fired()}
    assert fired == {(f"rem/k{i}", "ship") for i in range(5)} | {("other/o", "pay-1")}
    with pytest.raises(ValueError, match="cancel needs actor_type or name_prefix"):
        service.cancel()


def test_a_reminder_cancelled_elsewhere_is_not_fired_by_a_node_that_had_it_armed(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """A reminder armed on a running node and deleted through another store (another node, the
    CLI) is refused by the fire's compare-and-set: it never fires, and is disarmed."""
    register(rem.virtual("rem", "k"), "r", due="1m", period="1m")
    with SqlReminderStore(rem.storage_url) as store:
        assert store.delete_many([store.list_actor("rem", "k")[0].key]) == 1
    clock.advance("5m")
    assert journal.fired("r") == []
    assert rem.reminders.gauges()["reminders.armed"] == 0


def test_a_node_looks_for_redrives_at_least_every_minute_while_dead_letters_exist(
    rem: ActorSystem, clock: ManualClock, journal: Journal
) -> None:
    """While nobody asks, the look for re-drives backs off (so a day on a ManualClock is not
    86,400 queries) but not beyond 60 poll intervals: a re-drive asked for by another process
    after an idle hour is delivered within a minute."""
    letter = dead_letter_one(rem, clock, journal)
    clock.advance("1h")
    with SqlReminderStore(rem.storage_url) as store:
        store.request_retry([letter.id], now=clock.now())
    clock.advance("60s")
    ping(rem)
    assert len(journal.fired("r")) == 2
    assert rem.reminders.dead_letters() == []
