"""`TimerFacet` options on a ManualClock: fixed delay, max_count, expiry, overwrite, the batch
path `register_timers` and `unregister_all`, with the invariants every timer keeps (stale fires
dropped, one undelivered fire per timer, cancellation on every way out)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from facets.timer import TimerFacet, TimerInfo, TimerRegistration
from plexspaces import (
    DROP,
    ActorSystem,
    Facet,
    ManualClock,
    PlexSpacesError,
    TimerExistsError,
    TimerFired,
)
from tests.conftest import START
from tests.test_timer_facet import (
    WAIT,
    ObservedTimerFacet,
    fires,
    fires_waiting_in_mailbox,
    sink_fires,
    spawn_recorder,
    summary,
)

S = timedelta(seconds=1)

# -- fixed delay ---------------------------------------------------------------------------------


def test_fixed_delay_on_an_idle_actor_fires_every_interval(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A fixed-delay timer whose fires are handled at once ticks every interval, and the next tick
    is armed before advance() returns."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("poll", "1s", fixed_delay=True)
    clock.advance("3s")
    assert summary(fires(ref)) == [
        ("poll", 1, 1 * S, None, 0),
        ("poll", 2, 2 * S, None, 0),
        ("poll", 3, 3 * S, None, 0),
    ]
    info = timers.get_timer("poll")
    assert info is not None
    assert (info.fixed_delay, info.fire_count, info.next_fire_at) == (True, 3, START + 4 * S)


def test_fixed_delay_next_tick_is_one_interval_after_the_fire_was_handled(
    system: ActorSystem, clock: ManualClock
) -> None:
    """With a fixed delay, a fire handled late moves the next tick: one interval after it was
    handled, with no catching up and nothing missed (a fixed-rate timer would coalesce)."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("poll", "1s", fixed_delay=True)
    timers.register_periodic("rate", "1s")
    # The actor itself moves time 3.5 s on, so it is busy when the first ticks fall due.
    ref.ask(("advance", clock, "3500ms"), timeout=WAIT)
    assert sorted(summary(fires(ref))) == [
        ("poll", 1, 1 * S, None, 0),
        ("rate", 3, 3 * S, None, 2),
    ]
    poll = timers.get_timer("poll")
    assert poll is not None
    assert poll.next_fire_at == START + 4500 * S / 1000  # handled at 3.5 s

    clock.advance("1s")
    assert sorted(summary(fires(ref))) == [
        ("poll", 1, 1 * S, None, 0),
        ("poll", 2, 4500 * S / 1000, None, 0),
        ("rate", 3, 3 * S, None, 2),
        ("rate", 4, 4 * S, None, 0),
    ]


def test_fixed_delay_fire_dropped_by_an_interceptor_still_rearms(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A fixed-delay fire that an interceptor drops counts as handled: the timer goes on."""

    class DropTimers(Facet):
        facet_type = "drop-timers"

        def before_message(self, message: Any) -> Any:
            return DROP if isinstance(message, TimerFired) else None

    ref, timers = spawn_recorder(system)
    ref.attach_facet(DropTimers(), priority=90)
    timers.register_periodic("poll", "1s", fixed_delay=True)
    clock.advance("3s")
    assert fires(ref) == []
    info = timers.get_timer("poll")
    assert info is not None
    assert (info.fire_count, info.next_fire_at) == (3, START + 4 * S)


def test_unregistering_a_fixed_delay_timer_discards_its_waiting_fire_and_stops_it(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A fixed-delay timer unregistered while its fire waits: the fire is discarded and no next
    tick is armed when the actor gets to it."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("poll", "1s", fixed_delay=True)
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        assert timers.unregister_timer("poll") is True
    clock.advance("10s")
    assert fires(ref) == []
    assert len(system.scheduler) == 0


def test_fixed_delay_fire_whose_handler_fails_ends_the_actor_and_arms_nothing(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A failure while handling a fixed-delay fire ends the actor as any tell does, and no next
    tick is armed for it."""

    class FailOnFire(Facet):
        facet_type = "fail-on-fire"

        def before_message(self, message: Any) -> Any:
            if isinstance(message, TimerFired):
                raise RuntimeError("failure while handling a fire")
            return None

    sink: list[Any] = []
    facet = ObservedTimerFacet()
    ref, timers = spawn_recorder(system, sink=sink, facet=facet)
    ref.attach_facet(FailOnFire())
    timers.register_periodic("poll", "1s", fixed_delay=True)
    clock.advance("1s")
    assert facet.detached.wait(WAIT)
    assert len(system.scheduler) == 0
    clock.advance("5s")
    assert sink_fires(sink) == []
    assert not ref.is_alive()


# -- max_count -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fixed_delay", [False, True])
def test_max_count_fires_that_many_times_then_removes_the_timer(
    system: ActorSystem, clock: ManualClock, fixed_delay: bool
) -> None:
    """A periodic timer with max_count fires that many times, then is removed."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", max_count=3, fixed_delay=fixed_delay)
    info = timers.get_timer("p")
    assert info is not None
    assert info.max_count == 3
    clock.advance("10s")
    assert summary(fires(ref)) == [
        ("p", 1, 1 * S, None, 0),
        ("p", 2, 2 * S, None, 0),
        ("p", 3, 3 * S, None, 0),
    ]
    assert timers.list_timers() == []
    assert timers.unregister_timer("p") is False
    assert len(system.scheduler) == 0


def test_max_count_is_never_exceeded_by_coalesced_ticks(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Ticks coalesced into a waiting fire count towards max_count: a busy actor gets one fire
    standing for the last tick, and nothing after it."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", max_count=3)
    ref.ask(("advance", clock, "10s"), timeout=WAIT)
    assert summary(fires(ref)) == [("p", 3, 3 * S, None, 2)]
    assert timers.list_timers() == []
    clock.advance("10s")
    assert len(fires(ref)) == 1
    assert len(system.scheduler) == 0


def test_unregistering_the_last_tick_of_max_count_discards_its_waiting_fire(
    system: ActorSystem, clock: ManualClock
) -> None:
    """The last fire of a max_count timer still in the mailbox is discarded by unregister."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", max_count=1)
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        assert timers.list_timers() == []  # its last fire is made: no longer listed
        assert timers.unregister_timer("p") is True
    assert fires(ref) == []


# -- expiry --------------------------------------------------------------------------------------


def test_expires_at_allows_no_tick_at_or_after_it(system: ActorSystem, clock: ManualClock) -> None:
    """A periodic timer with expires_at fires before it, never at or after it, then is removed."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", expires_at=START + 3 * S)
    info = timers.get_timer("p")
    assert info is not None
    assert info.expires_at == START + 3 * S
    clock.advance("10s")
    assert [f.fire_count for f in fires(ref)] == [1, 2]
    assert timers.list_timers() == []
    assert len(system.scheduler) == 0


def test_ttl_counts_from_registration(system: ActorSystem, clock: ManualClock) -> None:
    """A ttl is a duration from registration: a 1 s timer with ttl 3.5 s fires three times."""
    clock.advance("250ms")
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", ttl="3500ms")
    info = timers.get_timer("p")
    assert info is not None
    assert info.expires_at == START + 3750 * S / 1000
    clock.advance("10s")
    assert [f.fire_count for f in fires(ref)] == [1, 2, 3]
    assert timers.list_timers() == []


def test_fixed_delay_timer_expires_when_its_next_tick_would_be_too_late(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A fixed-delay timer is removed once its next tick, one interval after the fire was
    handled, would be at or after its expiry."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", fixed_delay=True, ttl="2500ms")
    clock.advance("10s")
    assert [f.fire_count for f in fires(ref)] == [1, 2]
    assert timers.list_timers() == []
    assert len(system.scheduler) == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"expires_at": START + 1 * S}, "never fire"),
        ({"expires_at": START - 1 * S}, "never fire"),
        ({"ttl": "1s"}, "never fire"),
        ({"ttl": 0}, "never fire"),
        ({"expires_at": datetime(2026, 1, 2)}, "aware datetime"),
        ({"expires_at": "2026-01-02"}, "aware datetime"),
        ({"expires_at": START + 9 * S, "ttl": "9s"}, "not both"),
        ({"ttl": "-1s"}, "ttl"),
        ({"max_count": 0}, "max_count 0"),
        ({"max_count": True}, "max_count True"),
        ({"max_count": "3"}, "max_count '3'"),
        ({"fixed_delay": "yes"}, "fixed_delay 'yes'"),
        ({"overwrite": None}, "overwrite None"),
    ],
)
def test_bad_options_raise_value_error_and_register_nothing(
    system: ActorSystem, options: dict[str, Any], named: str
) -> None:
    """Each bad option is a ValueError naming it; nothing is registered, the old timer stays."""
    _, timers = spawn_recorder(system)
    timers.register_periodic("p", "5s")
    with pytest.raises(ValueError, match=named):
        timers.register_periodic("p", "1s", **options)
    assert [(i.name, i.interval) for i in timers.list_timers()] == [("p", 5 * S)]
    assert len(system.scheduler) == 1


# -- overwrite -----------------------------------------------------------------------------------


def test_overwrite_false_refuses_an_existing_name_and_keeps_the_timer(
    system: ActorSystem, clock: ManualClock
) -> None:
    """overwrite=False on a registered name raises TimerExistsError naming the actor and the
    timer; the registered timer goes on unchanged."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s", payload="old")
    with pytest.raises(TimerExistsError, match=rf"{ref.actor_id!r}.*'p'"):
        timers.register_periodic("p", "5s", payload="new", overwrite=False)
    with pytest.raises(TimerExistsError):
        timers.register_one_shot("p", "5s", overwrite=False)
    clock.advance("2s")
    assert [(f.fire_count, f.payload) for f in fires(ref)] == [(1, "old"), (2, "old")]
    assert issubclass(TimerExistsError, PlexSpacesError)


def test_overwrite_false_registers_a_free_name(system: ActorSystem, clock: ManualClock) -> None:
    """overwrite=False registers a name that is free, also once a one-shot of it is gone."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("o", "1s", overwrite=False)
    clock.advance("1s")
    timers.register_one_shot("o", "1s", overwrite=False)
    clock.advance("1s")
    assert [f.scheduled_at for f in fires(ref)] == [START + 1 * S, START + 2 * S]


def test_overwrite_false_counts_a_one_shot_whose_fire_waits(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot whose fire still waits in the mailbox exists for overwrite=False (as for
    unregister_timer): the refusal keeps that fire."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("o", "1s", payload="first")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"), pytest.raises(TimerExistsError):
        timers.register_one_shot("o", "1s", overwrite=False)
    assert [f.payload for f in fires(ref)] == ["first"]


# -- unregister_all ------------------------------------------------------------------------------


def test_unregister_all_cancels_every_timer_and_discards_their_waiting_fires(
    system: ActorSystem, clock: ManualClock
) -> None:
    """unregister_all() cancels every timer, returns how many, discards fires already in the
    mailbox, and leaves the facet usable."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("a", "1s")
    timers.register_periodic("b", "1s", fixed_delay=True)
    timers.register_one_shot("c", "1s")
    timers.register_one_shot("d", "1h")
    with fires_waiting_in_mailbox(ref, clock, system, "1s"):
        assert timers.unregister_all() == 4
    assert fires(ref) == []
    assert timers.list_timers() == []
    assert len(system.scheduler) == 0
    assert timers.unregister_all() == 0

    timers.register_one_shot("e", "1s")
    clock.advance("1s")
    assert [f.timer_name for f in fires(ref)] == ["e"]


# -- listings ------------------------------------------------------------------------------------


def test_list_timers_shows_the_options(system: ActorSystem, clock: ManualClock) -> None:
    """TimerInfo shows fixed_delay, max_count, the fire count and the expiry of each timer."""
    _, timers = spawn_recorder(system)
    timers.register_periodic("a", "1s", fixed_delay=True, max_count=5)
    timers.register_periodic("b", "2s", expires_at=START + 1 * timedelta(hours=1), payload=7)
    timers.register_one_shot("c", "3s")
    clock.advance("2s")
    assert timers.list_timers() == [
        TimerInfo("a", True, 1 * S, START + 3 * S, 2, None, True, 5, None),
        TimerInfo("c", False, None, START + 3 * S, 0, None, False, None, None),
        TimerInfo("b", True, 2 * S, START + 4 * S, 1, 7, False, None, START + timedelta(hours=1)),
    ]


# -- TimerRegistration and the batch path --------------------------------------------------------


def test_register_timer_takes_the_options(system: ActorSystem, clock: ManualClock) -> None:
    """A TimerRegistration carries fixed_delay, max_count, ttl and overwrite to the timer."""
    ref, timers = spawn_recorder(system)
    timers.register_timer(
        TimerRegistration("p", interval="1s", periodic=True, max_count=2, fixed_delay=True)
    )
    with pytest.raises(TimerExistsError):
        timers.register_timer(TimerRegistration("p", due_time="1s", overwrite=False))
    clock.advance("5s")
    assert [f.fire_count for f in fires(ref)] == [1, 2]


@pytest.mark.parametrize(
    "option",
    [{"fixed_delay": True}, {"max_count": 2}, {"ttl": "1h"}, {"expires_at": START + 9 * S}],
)
def test_a_one_shot_registration_refuses_periodic_options(
    system: ActorSystem, option: dict[str, Any]
) -> None:
    """A one-shot TimerRegistration with a periodic-only option is a ValueError naming it."""
    _, timers = spawn_recorder(system)
    (key,) = option
    with pytest.raises(ValueError, match=f"one-shot timer 'o' takes no {key}"):
        timers.register_timer(TimerRegistration("o", due_time="1s", **option))
    with pytest.raises(ValueError, match=f"takes no {key}"):
        timers.register_timers([TimerRegistration("o", due_time="1s", **option)])
    assert timers.list_timers() == []


def test_register_timers_arms_a_batch_like_one_call_each(
    system: ActorSystem, clock: ManualClock
) -> None:
    """register_timers arms every registration as register_timer would, in order: a later one
    of the same name replaces the earlier."""
    ref, timers = spawn_recorder(system)
    timers.register_timers(
        [
            TimerRegistration("a", interval="1s", periodic=True, max_count=2),
            TimerRegistration("b", due_time="1500ms", payload="x"),
            TimerRegistration("c", interval="1s", due_time=0, periodic=True, fixed_delay=True),
            TimerRegistration("b", due_time="2500ms", payload="y"),
        ]
    )
    assert len(system.scheduler) == 3
    assert [i.name for i in timers.list_timers()] == ["c", "a", "b"]
    clock.advance("3s")
    assert sorted(summary(fires(ref))) == [
        ("a", 1, 1 * S, None, 0),
        ("a", 2, 2 * S, None, 0),
        ("b", 1, 2500 * S / 1000, "y", 0),
        ("c", 1, 0 * S, None, 0),
        ("c", 2, 1 * S, None, 0),
        ("c", 3, 2 * S, None, 0),
        ("c", 4, 3 * S, None, 0),
    ]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (TimerRegistration("", due_time="1s"), ValueError),
        (TimerRegistration("x", interval="0s", periodic=True), ValueError),
        (TimerRegistration("x", due_time="soon"), ValueError),
        (TimerRegistration("x", interval="1s", periodic=True, max_count=-1), ValueError),
        (TimerRegistration("kept", due_time="1s", overwrite=False), TimerExistsError),
        (TimerRegistration("new", due_time="1s", overwrite=False), TimerExistsError),
        ("not a registration", TypeError),
    ],
)
def test_register_timers_arms_none_when_one_is_refused(
    system: ActorSystem, clock: ManualClock, bad: Any, error: type[Exception]
) -> None:
    """One refused item fails the whole batch: nothing of it is armed or replaced."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("kept", "5s", payload="kept")
    batch = [
        TimerRegistration("new", due_time="1s"),
        TimerRegistration("kept", due_time="1s", payload="replaced"),
        bad,
    ]
    with pytest.raises(error):
        timers.register_timers(batch)
    assert [(i.name, i.next_fire_at) for i in timers.list_timers()] == [("kept", START + 5 * S)]
    assert len(system.scheduler) == 1
    clock.advance("5s")
    assert [f.payload for f in fires(ref)] == ["kept"]


def test_register_timers_plain_periodic_items_replace_and_refuse_like_the_others(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Plain periodic items of a batch (its common, fastest case) replace a registered timer of
    their name and its payload, count for overwrite=False later in the batch, and arm nothing
    when the batch is refused."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("p", "5s", payload="old")
    timers.register_periodic("warm", "2s")  # "2s" is now a period string already checked
    plain = [TimerRegistration(name, interval="2s", periodic=True) for name in ("p", "q")]
    with pytest.raises(TimerExistsError):
        timers.register_timers([*plain, TimerRegistration("q", due_time="1s", overwrite=False)])
    assert [(i.name, i.payload) for i in timers.list_timers()] == [("warm", None), ("p", "old")]
    assert len(system.scheduler) == 2
    timers.register_timers(plain)
    assert sorted(i.name for i in timers.list_timers()) == ["p", "q", "warm"]
    assert len(system.scheduler) == 3
    clock.advance("5s")
    assert sorted(summary(fires(ref))) == [
        (name, tick, tick * 2 * S, None, 0) for name in ("p", "q", "warm") for tick in (1, 2)
    ]


def test_register_timers_on_a_stopped_actor_arms_nothing(system: ActorSystem) -> None:
    """A batch for a stopped actor's facet raises and leaves nothing in the scheduler."""
    ref, timers = spawn_recorder(system)
    ref.stop()
    with pytest.raises(PlexSpacesError):
        timers.register_timers([TimerRegistration("a", due_time="1s")])
    assert len(system.scheduler) == 0


def test_register_timers_from_many_threads_keeps_one_entry_per_name(
    system: ActorSystem, clock: ManualClock
) -> None:
    """Batches of the same names from several threads at once leave one armed timer per name."""
    _, timers = spawn_recorder(system)
    batch = [TimerRegistration(f"t{i}", interval="1h", periodic=True) for i in range(200)]
    start = threading.Barrier(4)

    def arm() -> None:
        start.wait(WAIT)
        for _ in range(5):
            timers.register_timers(batch)

    threads = [threading.Thread(target=arm) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(timers) == 200
    assert len(system.scheduler) == 200


def test_timer_facet_is_importable_with_its_new_names() -> None:
    """TimerExistsError is public, and a facet never attached refuses a batch."""
    with pytest.raises(PlexSpacesError):
        TimerFacet().register_timers([TimerRegistration("a", due_time="1s")])


# -- sliding expiration: re-registering a timer before it fires ---------------------------------


def test_a_one_shot_pushed_later_fires_once_at_the_new_time_with_the_new_payload(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot registered again for later before it fired (a sliding timeout) fires only at
    the new time, with the new payload, and keeps one scheduler entry."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("idle", "2s", payload="first")
    clock.advance("1s")
    timers.register_one_shot("idle", "2s", payload="second")  # now due at 3 s
    assert len(system.scheduler) == 1
    info = timers.get_timer("idle")
    assert info is not None
    assert (info.next_fire_at, info.payload) == (START + 3 * S, "second")
    clock.advance("1500ms")
    assert fires(ref) == []  # nothing at the old time (2 s)
    assert [i.next_fire_at for i in timers.list_timers()] == [START + 3 * S]
    clock.advance("10s")
    assert summary(fires(ref)) == [("idle", 1, 3 * S, "second", 0)]
    assert len(system.scheduler) == 0


def test_a_timer_re_registered_sooner_fires_only_at_the_sooner_time(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A one-shot registered again for sooner fires at the sooner time only, once."""
    ref, timers = spawn_recorder(system)
    timers.register_one_shot("idle", "5s", payload="late")
    timers.register_one_shot("idle", "1s", payload="soon")
    clock.advance("10s")
    assert summary(fires(ref)) == [("idle", 1, 1 * S, "soon", 0)]


def test_a_timeout_re_armed_by_every_message_never_fires_while_messages_come(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A timeout re-armed on each of many messages fires once, one delay after the last."""
    ref, timers = spawn_recorder(system)
    for _ in range(50):
        timers.register_one_shot("idle", "1s")
        clock.advance("500ms")
    assert fires(ref) == []
    clock.advance("500ms")
    assert summary(fires(ref)) == [("idle", 1, 25500 * S / 1000, None, 0)]


def test_a_periodic_timer_pushed_later_before_its_first_tick_starts_at_the_new_time(
    system: ActorSystem, clock: ManualClock
) -> None:
    """A periodic timer registered again before its first tick starts on the new phase."""
    ref, timers = spawn_recorder(system)
    timers.register_periodic("p", "1s")
    clock.advance("500ms")
    timers.register_periodic("p", "1s")  # first tick now at 1.5 s
    clock.advance("2500ms")
    assert [f.scheduled_at for f in fires(ref)] == [
        START + 1500 * S / 1000,
        START + 2500 * S / 1000,
    ]
