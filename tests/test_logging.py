"""`configure_logging`: console or JSON, level, the environment; what fire events carry."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from facets.reminder import ReminderFacet
from facets.timer import TimerFacet
from plexspaces import (
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    Actor,
    ActorSystem,
    ManualClock,
    ReminderFired,
    TimerFired,
    configure_logging,
)
from plexspaces._system import _store_location


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    """Each test configures structlog for the process; put the defaults back afterwards."""
    yield
    structlog.reset_defaults()


class Busy(Actor):
    def on_start(self) -> None:
        self.attach_facet(TimerFacet(), config={})
        self.attach_facet(ReminderFacet(), config={})

    def on_receive(self, message: Any) -> Any:
        match message:
            case TimerFired() | ReminderFired():
                return None
            case ("timer", name):
                self.facet(TimerFacet).register_one_shot(name, "1s")
            case ("reminder", name):
                self.facet(ReminderFacet).register_reminder(name, due="1s")
            case "ping":
                return "pong"
        return None


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_output_carries_actor_facet_name_and_lateness_of_every_fire(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    stream = io.StringIO()
    configure_logging("json", level="DEBUG", stream=stream)
    system = make_system(clock=clock)
    system.register_virtual("busy", Busy)
    ref = system.virtual("busy", "k")
    ref.ask(("timer", "t1"))
    ref.ask(("reminder", "r1"))
    clock.advance("1s")
    assert ref.ask("ping") == "pong"
    found = events(stream)
    assert all({"timestamp", "level", "event"} <= set(event) for event in found)
    [timer] = [event for event in found if event["event"] == "timer.fired"]
    assert timer["actor_id"] == "busy/k"
    assert timer["facet"] == "timer"
    assert timer["timer"] == "t1"
    assert timer["lateness_ms"] == 0.0
    assert timer["level"] == "debug"
    [reminder] = [event for event in found if event["event"] == "reminder.fired"]
    assert reminder["actor_id"] == "busy/k"
    assert reminder["facet"] == "reminder"
    assert reminder["reminder"] == "r1"
    assert reminder["lateness_ms"] == 0.0
    assert timer["timestamp"].endswith("Z")


def test_the_level_filters_and_console_output_is_plain_text(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    stream = io.StringIO()
    configure_logging("console", level="INFO", stream=stream)
    system = make_system(clock=clock)
    system.register_virtual("busy", Busy)
    ref = system.virtual("busy", "k")
    ref.ask(("timer", "t1"))
    clock.advance("1s")
    ref.ask("ping")
    structlog.get_logger("test").info("hello", answer=42)
    text = stream.getvalue()
    assert "timer.fired" not in text  # debug, filtered at INFO
    assert "hello" in text
    assert "answer=42" in text
    assert "\x1b[" not in text  # no colours into a non-terminal


def test_the_environment_chooses_format_and_level(
    monkeypatch: pytest.MonkeyPatch, make_system: Callable[..., ActorSystem]
) -> None:
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    monkeypatch.setenv(LOG_LEVEL_ENV, "warning")
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = structlog.get_logger("test")
    log.info("quiet")
    log.warning("loud", actor_id="a/b")
    [event] = events(stream)
    assert event["event"] == "loud"
    assert event["level"] == "warning"
    assert event["actor_id"] == "a/b"


def test_an_unconfigured_process_is_configured_from_the_environment_by_the_first_system(
    monkeypatch: pytest.MonkeyPatch, make_system: Callable[..., ActorSystem]
) -> None:
    structlog.reset_defaults()
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    make_system()
    assert structlog.is_configured()
    processors = structlog.get_config()["processors"]
    assert isinstance(processors[-1], structlog.processors.JSONRenderer)


def test_an_application_that_configured_structlog_is_left_alone(
    make_system: Callable[..., ActorSystem],
) -> None:
    renderer = structlog.processors.KeyValueRenderer()
    structlog.configure(processors=[renderer])
    make_system()
    assert structlog.get_config()["processors"] == [renderer]


@pytest.mark.parametrize(
    ("kwargs", "env", "fragment"),
    [
        ({"format": "xml"}, {}, "log format 'xml'"),
        (
            {},
            {LOG_FORMAT_ENV: "yaml"},
            f"log format 'yaml' is not one of 'console', 'json' (from ${LOG_FORMAT_ENV})",
        ),
        ({"level": "LOUD"}, {}, "log level 'LOUD'"),
        ({}, {LOG_LEVEL_ENV: "verbose"}, "log level 'verbose'"),
        ({"level": True}, {}, "log level True"),
    ],
)
def test_bad_formats_and_levels_are_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], env: dict[str, str], fragment: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = structlog.get_config()
    with pytest.raises(ValueError, match=r"must be one of|is not one of") as raised:
        configure_logging(**kwargs)
    assert fragment in str(raised.value)
    assert structlog.get_config() == before


# -- errors raised to the caller -----------------------------------------------------------------


class FailsToStart(Actor):
    def on_start(self) -> None:
        raise ValueError("bad configuration")


class FailsOnTell(Actor):
    def on_receive(self, message: Any) -> Any:
        raise RuntimeError("nobody receives this")


def test_an_on_start_failure_raised_to_spawn_is_logged_once_without_traceback(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """spawn raises the on_start error to its caller; the log has one warning for it, without
    a traceback, while a failing tell handler (nobody receives its error) keeps its traceback."""
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    system = make_system(clock=clock)
    with structlog.testing.capture_logs() as captured:
        with pytest.raises(ValueError, match="bad configuration"):
            system.spawn(FailsToStart, actor_id="starter")
        told = system.spawn(FailsOnTell, actor_id="told")
        told.tell("go")
        told.stop()
    failures = [event for event in captured if event["event"].startswith("actor.")]
    start = [event for event in failures if event["event"] == "actor.start_failed"]
    assert start == [
        {
            "event": "actor.start_failed",
            "log_level": "warning",
            "actor_id": "starter",
            "error": "ValueError('bad configuration')",
        }
    ]
    [failed] = [event for event in failures if event["event"] == "actor.failed"]
    assert failed["log_level"] == "error"
    assert failed["exc_info"][0] is RuntimeError


def test_a_caught_spawn_failure_prints_no_traceback(
    make_system: Callable[..., ActorSystem], clock: ManualClock
) -> None:
    """With the default console logging, a spawn failure the caller catches prints one line."""
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    system = make_system(clock=clock)
    for attempt in range(2):
        with pytest.raises(ValueError):
            system.spawn(FailsToStart, actor_id=f"starter-{attempt}")
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2, stream.getvalue()
    assert all("actor.start_failed" in line for line in lines)
    assert "Traceback" not in stream.getvalue()


def test_the_first_use_of_reminders_logs_where_the_store_is(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_system: Callable[..., ActorSystem],
    clock: ManualClock,
) -> None:
    """Opening the reminder store logs `store.opened` once at INFO, with the URL and, for a
    SQLite file given relative to the current directory, its absolute path."""
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    configure_logging("json", level="INFO", stream=stream)
    system = make_system(clock=clock, storage_url="sqlite:///relative.db")
    system.reminders.errors()
    system.reminders.errors()
    [opened] = [event for event in events(stream) if event["event"] == "store.opened"]
    assert opened["level"] == "info"
    assert opened["url"] == "sqlite:///relative.db"
    assert opened["path"] == str(tmp_path / "relative.db")


def test_the_store_location_hides_a_password() -> None:
    """A server URL is logged with its password hidden, and has no file path."""
    location = _store_location("postgresql+psycopg://app:s3cret@db.example/app")
    assert location == {"url": "postgresql+psycopg://app:***@db.example/app"}
