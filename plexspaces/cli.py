"""`plexspaces`: the operator's command line for the reminder store of a PlexSpaces database.

    plexspaces reminders list [--type T] [--key K] [--due-after WHEN] [--due-before WHEN]
                              [--limit N] [--json]
    plexspaces reminders show TYPE KEY NAME [--json]     (or TYPE/KEY NAME, as list prints it)
    plexspaces reminders cancel TYPE KEY NAME           (or TYPE/KEY NAME)
    plexspaces reminders count [--type T] [--prefix P]
    plexspaces reminders cancel-all [--type T] [--prefix P]
    plexspaces reminders dead [--type T] [--key K] [--name N] [--limit N] [--json]
    plexspaces reminders retry ID... | --type T [--key K] [--name N] | --all
    plexspaces reminders export [--out FILE] [--type T] [--key K]
    plexspaces reminders import [FILE | -]
    plexspaces doctor [--overdue 1m] [--pending 5m] [--stale-lease 1m] [--json]

Every command takes `--db URL`; without it the database is the one `ActorSystem(storage_url=None)`
uses: `$PLEXSPACES_STORAGE_URL`, else the SQLite file `plexspaces.db` in the current directory.
Everything goes through `SqlReminderStore`, the same store the nodes use, and reads in keyset
pages: no command loads a whole table.

Commands that only read (and `cancel`, `cancel-all`, `retry`) never create anything: a SQLite
file that does not exist, or a database without plexspaces tables, is an error rather than a new
empty database. `import` creates the database and its tables when they are missing.

Times are printed in UTC (ISO 8601, `Z`). WHEN arguments take an ISO 8601 datetime (one without
an offset is read as UTC), `now`, or a duration from now: `1h` or `+1h` is an hour from now,
`-30m` half an hour ago.

Exit status: 0 success (doctor: healthy); 1 a negative answer (doctor found problems, no such
reminder); 2 an error (bad arguments or input, a database that does not exist, cannot be reached
or was written by another version). Errors are one line on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click
import structlog
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import __version__
from ._clock import SystemClock
from ._duration import parse_duration
from ._errors import PlexSpacesError
from ._logging import ensure_logging_configured
from ._redact import redact_text
from ._retry import RetryPolicy
from ._store import (
    MAX_STORED_INT,
    SCHEMA_VERSION,
    DeadLetter,
    FireFailure,
    NodeLeases,
    ReminderKey,
    SqlReminderStore,
    StoredReminder,
    UndecodableReminder,
    encode_payload,
    json_text,
    validate_reminder,
)
from ._system import _resolve_storage_url

__all__ = ["EXIT_ERROR", "EXIT_NO", "CliError", "NotFoundError", "cli", "main"]

_T = TypeVar("_T")

PAGE: Final = 500
"""Reminders read (or imported) per store call."""

EXIT_NO: Final = 1
"""Exit status of a negative answer: doctor found problems, or there is no such reminder."""
EXIT_ERROR: Final = 2
"""Exit status of an error: bad arguments or input, or a database that cannot be used."""

_TABLE_ROWS: Final = 1_000  # rows per printed table, so a long listing is never held whole
_WIDTH_WHEN_PIPED: Final = 250  # rich wraps tables to 80 columns when it is not on a terminal
_US: Final = timedelta(microseconds=1)
_UNITS: Final = (
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
)

# The fields of one exported reminder (one JSON object per line), in the order written.
_EXPORT_FIELDS: Final = (
    "actor_type",
    "actor_key",
    "name",
    "due_at",
    "anchor_at",
    "period_us",
    "max_count",
    "fire_count",
    "missed",
    "payload",
    "pending_fire",
    "pending_scheduled_at",
    "finished",
    "claimed_by",
    "claimed_until",
    "created_at",
    "updated_at",
    "cron",
    "tz",
    "expires_at",
    "retry",
    "attempts",
    "last_fired_at",
    "last_handled_at",
    "last_error",
)
# Claims name nodes of the database exported from: an import may omit them, and drops them.
_CLAIM_FIELDS: Final = ("claimed_by", "claimed_until")
# A calendar schedule and an expiry are written only when a reminder has them, so the lines of
# other reminders read as before; an import takes a line without them as having none.
# So are the failure policy and the fire history, written when a reminder has them.
_OPTIONAL_FIELDS: Final = (
    "cron",
    "tz",
    "expires_at",
    "retry",
    "attempts",
    "last_fired_at",
    "last_handled_at",
    "last_error",
)


# -- errors --------------------------------------------------------------------------------------


class CliError(click.ClickException):
    """An error the command reports in one line on stderr, exiting with `EXIT_ERROR`."""

    exit_code = EXIT_ERROR


class NotFoundError(click.ClickException):
    """A negative answer (no such reminder), reported like an error but exiting with `EXIT_NO`."""

    exit_code = EXIT_NO


class _Cli(click.Group):
    """The command group, with every failure reported as one line on stderr: click's usage
    errors, the commands' own errors, and a database that cannot be used (never a traceback)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        # Log events (a store filling in what an older version left) go to stderr, never into
        # the output a command prints on stdout.
        ensure_logging_configured()
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            _fail(error.format_message() + hint, error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.Abort:
            _fail("aborted", EXIT_NO)
        except BrokenPipeError:
            # The reader went away (`plexspaces reminders export | head`): stop quietly.
            _silence_stdout()
            sys.exit(EXIT_NO)
        except (PlexSpacesError, SQLAlchemyError, OSError) as error:
            _fail(_describe(error), EXIT_ERROR)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit, which would fail on the closed pipe again.
    with suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(message: str, code: int) -> NoReturn:
    # Errors may quote a URL given on the command line, or a database's own message.
    click.echo(f"Error: {_printable(redact_text(' '.join(message.split())))}", err=True)
    sys.exit(code)


# Characters that rearrange how a line is displayed (bidirectional overrides and isolates), and
# would let a stored name pass for another one.
_BIDI_CONTROLS: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _printable(text: str, *, newlines: bool = False) -> str:
    """`text` safe to print on a terminal: control characters (ESC and every other C0 or C1
    code, line and paragraph separators) and bidirectional controls written as escapes
    (`\\x1b`, `\\u202e`), so a stored name cannot clear the screen, set the window title or
    disguise itself. Line breaks stay when `newlines` (multi-line values we format ourselves).
    Human-readable output only: the JSON output keeps every value exactly."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii") if _is_control(char, newlines) else char
        for char in text
    )


def _is_control(char: str, newlines: bool) -> bool:
    if char == "\n":
        return not newlines
    return char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")


def _text(value: str, *, newlines: bool = False) -> Text:
    """A table cell or line showing `value` printably (see `_printable`)."""
    return Text(_printable(value, newlines=newlines))


def _count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless the number is 1: "1 reminder", "3 reminders"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _say(message: str, *, err: bool = False) -> None:
    """One human-readable line on stdout (or stderr), printably (see `_printable`)."""
    click.echo(_printable(message), err=err)


def _describe(error: BaseException) -> str:
    if isinstance(error, DBAPIError) and error.orig is not None:
        lines = str(error.orig).strip().splitlines()
        return f"the database refused the request: {lines[0] if lines else error.orig!r}"
    if isinstance(error, SQLAlchemyError):
        return f"the database refused the request: {str(error).splitlines()[0]}"
    return str(error)


# -- arguments -----------------------------------------------------------------------------------

_When = datetime | timedelta
"""A moment as given on the command line: absolute, or relative to the command's `now`."""

if TYPE_CHECKING:
    # click's ParamType is generic from click 8.4 on; subscripted only for the type checker, so
    # older clicks still import this module.
    _WhenBase = click.ParamType[datetime | timedelta, Any]
    _DurationBase = click.ParamType[timedelta, Any]
else:
    _WhenBase = _DurationBase = click.ParamType


class _WhenType(_WhenBase):
    name = "when"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime | timedelta):
            return value
        text = str(value).strip()
        if text == "now":
            return timedelta(0)
        sign = -1 if text.startswith("-") else 1
        try:
            return sign * parse_duration(text.lstrip("+-"))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is neither an ISO 8601 datetime (2026-01-01T12:00:00Z; UTC when no "
                "offset is given) nor 'now' or a duration from now (1h, +1h, -30m)",
                param,
                ctx,
            )
        return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment


class _DurationType(_DurationBase):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


_WHEN: Final = _WhenType()
_DURATION: Final = _DurationType()


def _non_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if isinstance(value, str) and not value:
        raise click.BadParameter("must not be empty", ctx, param)
    return value


def _at(when: _When | None, now: datetime) -> datetime | None:
    if when is None:
        return None
    return now + when if isinstance(when, timedelta) else when


def _db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db",
        metavar="URL",
        default=None,
        help=(
            "SQLAlchemy URL of the database (sqlite:///path.db, "
            "postgresql+psycopg://user@host/db). Default: $PLEXSPACES_STORAGE_URL, else "
            "plexspaces.db in the current directory, as ActorSystem() uses."
        ),
    )(command)


def _now_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        "now",
        type=_WHEN,
        default=None,
        metavar="WHEN",
        help="Evaluate relative times and thresholds at this moment instead of the current time.",
    )(command)


def _key_arguments(command: Callable[..., Any]) -> Callable[..., Any]:
    """The reminder's key as `TYPE KEY NAME`, or `TYPE/KEY NAME` as `list` prints the actor (an
    actor type never contains '/', so the first '/' splits it; the key may hold more)."""
    return click.argument(
        "reminder_key",
        nargs=-1,
        required=True,
        metavar="TYPE KEY NAME | TYPE/KEY NAME",
        callback=_reminder_key,
    )(command)


def _reminder_key(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    if len(value) == 2 and "/" in value[0]:
        actor_type, actor_key = value[0].split("/", 1)
        parts = (actor_type, actor_key, value[1])
    elif len(value) == 3:
        parts = value
    else:
        raise click.BadParameter(
            f"expected TYPE KEY NAME or TYPE/KEY NAME, got {len(value)} argument"
            f"{'' if len(value) == 1 else 's'}",
            ctx,
            param,
        )
    for label, part in zip(("TYPE", "KEY", "NAME"), parts, strict=True):
        if not part:
            raise click.BadParameter(f"{label} must not be empty", ctx, param)
    return ReminderKey(*parts)


# -- opening the database ------------------------------------------------------------------------


class _Undecodable:
    """A structlog processor that collects the rows the store reports as undecodable (event
    `reminder.undecodable`, logged once per row and store) and drops every event, so nothing
    the store logs lands in the command's output."""

    def __init__(self) -> None:
        self.problems: list[UndecodableReminder] = []

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> NoReturn:
        if event_dict.get("event") == "reminder.undecodable":
            key = ReminderKey(
                str(event_dict.get("actor_type")),
                str(event_dict.get("actor_key")),
                str(event_dict.get("name")),
            )
            self.problems.append(UndecodableReminder(key, str(event_dict.get("error"))))
        raise structlog.DropEvent

    def logger(self) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )


def _resolve(db: str | None) -> tuple[str, str]:
    """The URL to use and how to show it (password hidden)."""
    try:
        url = _resolve_storage_url(db)
    except (ValueError, ImportError) as error:
        raise CliError(str(error)) from None
    return url, make_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL naming one (not in-memory, not a `?uri=true` URL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if str(parsed.query.get("uri", "")).lower() in ("1", "true", "yes", "on"):
        return None
    return Path(parsed.database or "")


def _require_database(url: str) -> int | None:
    """Refuse a SQLite file that does not exist (rather than create it); the schema version
    the database records, None if it has no plexspaces tables."""
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CliError(
            f"no reminder database at {str(path)!r}: the file {what} (pass --db URL, or set "
            "PLEXSPACES_STORAGE_URL)"
        )
    return SqlReminderStore.read_schema_version(url)


@contextmanager
def _open_store(
    db: str | None, *, create: bool = False
) -> Iterator[tuple[SqlReminderStore, _Undecodable]]:
    """The store on `db`, and what it reports as undecodable while it is used. Unless `create`,
    the database must already hold plexspaces tables of this schema version."""
    url, shown = _resolve(db)
    if not create:
        version = _require_database(url)
        if version is None:
            raise CliError(f"{shown} holds no plexspaces tables: nothing was ever stored there")
        if version != SCHEMA_VERSION:
            raise CliError(_version_problem(shown, version))
    undecodable = _Undecodable()
    store = SqlReminderStore(url, log=undecodable.logger())
    try:
        yield store, undecodable
    finally:
        store.close()


def _version_problem(shown: str, version: int) -> str:
    relation = "newer" if version > SCHEMA_VERSION else "older"
    return (
        f"the reminder tables in {shown} have schema version {version}, {relation} than version "
        f"{SCHEMA_VERSION} that this plexspaces reads and writes; use the plexspaces version "
        "that wrote them"
    )


def _clock_now(now: _When | None) -> datetime:
    current = SystemClock().now()
    return current if now is None else (_at(now, current) or current)


def _scan(
    store: SqlReminderStore, *, limit: int | None = None, **filters: Any
) -> Iterator[StoredReminder]:
    """Every reminder matching `filters`, in (due_at, key) order, read in keyset pages."""
    after: tuple[datetime, ReminderKey] | None = None
    given = 0
    while True:
        want = PAGE if limit is None else min(PAGE, limit - given)
        if want <= 0:
            return
        page = store.scan(want, after=after, **filters)
        yield from page
        given += len(page)
        if len(page) < want:
            return
        after = (page[-1].due_at, page[-1].key)


# -- formatting ----------------------------------------------------------------------------------


def _iso(value: datetime, *, exact: bool = False) -> str:
    """`value` in UTC as ISO 8601 with a `Z`; microseconds when `exact` or not zero."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    spec = "microseconds" if exact or utc.microsecond else "seconds"
    return f"{utc.isoformat(timespec=spec)}Z"


def _duration_text(value: timedelta) -> str:
    """`value` the way `parse_duration` reads it back: `30d`, `1h30m`, `1s500ms`."""
    micros = value // _US
    parts = []
    for unit, size in _UNITS:
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _record_json(record: StoredReminder) -> dict[str, Any]:
    """One reminder as an export line's object: every field, times exact in UTC."""

    def time(value: datetime | None) -> str | None:
        return None if value is None else _iso(value, exact=True)

    return {
        "actor_type": record.key.actor_type,
        "actor_key": record.key.actor_key,
        "name": record.key.name,
        "due_at": time(record.due_at),
        "anchor_at": time(record.anchor_at),
        "period_us": None if record.period is None else record.period // _US,
        "max_count": record.max_count,
        "fire_count": record.fire_count,
        "missed": record.missed,
        "payload": record.payload,
        "pending_fire": record.pending_fire,
        "pending_scheduled_at": time(record.pending_scheduled_at),
        "finished": record.finished,
        "claimed_by": record.claimed_by,
        "claimed_until": time(record.claimed_until),
        "created_at": time(record.created_at),
        "updated_at": time(record.updated_at),
        **({} if record.cron is None else {"cron": record.cron, "tz": record.tz}),
        **({} if record.expires_at is None else {"expires_at": time(record.expires_at)}),
        **({} if record.retry is None else {"retry": _retry_json(record.retry)}),
        **({} if not record.attempts else {"attempts": record.attempts}),
        **({} if record.last_fired_at is None else {"last_fired_at": time(record.last_fired_at)}),
        **(
            {}
            if record.last_handled_at is None
            else {"last_handled_at": time(record.last_handled_at)}
        ),
        **({} if record.last_error is None else {"last_error": _failure_json(record.last_error)}),
    }


def _retry_json(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": policy.max_attempts,
        "backoff_us": policy.backoff_delta // _US,
        "max_backoff_us": policy.max_backoff_delta // _US,
    }


def _failure_json(failure: FireFailure | None) -> dict[str, str] | None:
    return None if failure is None else {"type": failure.type, "text": failure.text}


def _failure_text(failure: FireFailure | None, *, width: int | None = None) -> str:
    if failure is None:
        return ""
    text = f"{failure.type}: {failure.text}" if failure.text else failure.type
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _retry_text(policy: RetryPolicy | None) -> str:
    policy = policy or RetryPolicy()
    attempts = "for ever" if policy.max_attempts is None else f"{policy.max_attempts} attempts"
    return (
        f"{attempts}, backoff {_duration_text(policy.backoff_delta)} doubling to "
        f"{_duration_text(policy.max_backoff_delta)}"
    )


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter as a JSON object: every field, times exact in UTC."""
    return {
        "id": letter.id,
        "actor_type": letter.actor_type,
        "actor_key": letter.actor_key,
        "name": letter.reminder_name,
        "fire_count": letter.fire_count,
        "max_count": letter.max_count,
        "scheduled_at": _iso(letter.scheduled_at, exact=True),
        "payload": letter.payload,
        "error": _failure_json(letter.error),
        "attempts": letter.attempts,
        "dead_at": _iso(letter.dead_at, exact=True),
        "retry_requested_at": (
            None
            if letter.retry_requested_at is None
            else _iso(letter.retry_requested_at, exact=True)
        ),
    }


def _console(*, err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    width = None if stream.isatty() else _WIDTH_WHEN_PIPED
    # No markup, emoji or highlighting: names and payloads are printed exactly as stored.
    return Console(file=stream, width=width, markup=False, emoji=False, highlight=False)


def _fires(record: StoredReminder) -> str:
    if record.max_count is None:
        return str(record.fire_count)
    return f"{record.fire_count}/{record.max_count}"


def _next_fire(record: StoredReminder) -> str:
    return "finished" if record.finished else _iso(record.due_at)


def _pending(record: StoredReminder) -> str:
    if record.pending_fire is None or record.pending_scheduled_at is None:
        return ""
    return f"#{record.pending_fire} due {_iso(record.pending_scheduled_at)}"


def _claim(record: StoredReminder) -> str:
    if record.claimed_by is None or record.claimed_until is None:
        return ""
    return f"{record.claimed_by} until {_iso(record.claimed_until)}"


def _period(record: StoredReminder) -> str:
    if record.cron is not None:
        return f"cron {record.cron} ({record.tz})"
    return "one-shot" if record.period is None else _duration_text(record.period)


def _expires(record: StoredReminder) -> str:
    return "" if record.expires_at is None else _iso(record.expires_at)


def _list_table() -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False)
    for header in (
        "actor",
        "name",
        "next fire (UTC)",
        "period",
        "fires",
        "pending fire",
        "claimed by",
        "last error",
        "expires (UTC)",
    ):
        table.add_column(header, overflow="fold")
    return table


def _list_row(table: Table, record: StoredReminder) -> None:
    key = record.key
    table.add_row(
        *(
            _text(cell)
            for cell in (
                f"{key.actor_type}/{key.actor_key}",
                key.name,
                _next_fire(record),
                _period(record),
                _fires(record),
                _pending(record),
                _claim(record),
                _failure_text(record.last_error, width=60),
                _expires(record),
            )
        )
    )


def _warn_undecodable(undecodable: _Undecodable, what: str) -> None:
    problems = undecodable.problems
    if not problems:
        return
    shown = ", ".join(str(problem.key) for problem in problems[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    _say(
        f"warning: {_count(len(problems), 'stored row')} cannot be decoded and "
        f"{'was' if len(problems) == 1 else 'were'} not {what}: "
        f"{shown}{more} (see 'plexspaces doctor')",
        err=True,
    )


# -- the commands --------------------------------------------------------------------------------


@click.group(cls=_Cli, name="plexspaces", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plexspaces")
def cli() -> None:
    """Look into and repair the durable reminders of a PlexSpaces database.

    Exit status: 0 success, 1 a negative answer (doctor found problems, no such reminder),
    2 an error.
    """


@cli.group()
def reminders() -> None:
    """List, show, count, cancel, export and import stored reminders; list and retry dead
    letters."""


@reminders.command("list")
@_db_option
@click.option(
    "--type", "actor_type", metavar="TYPE", callback=_non_empty, help="Only actors of this type."
)
@click.option(
    "--key", "actor_key", metavar="KEY", callback=_non_empty, help="Only actors with this key."
)
@click.option(
    "--due-after", type=_WHEN, metavar="WHEN", help="Only reminders due after WHEN (strictly)."
)
@click.option(
    "--due-before", type=_WHEN, metavar="WHEN", help="Only reminders due before WHEN (strictly)."
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    default=100,
    show_default=True,
    help="Show at most this many reminders; 0 for all of them.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the export format).")
@_now_option
def list_reminders(
    *,
    db: str | None,
    actor_type: str | None,
    actor_key: str | None,
    due_after: _When | None,
    due_before: _When | None,
    limit: int,
    as_json: bool,
    now: _When | None,
) -> None:
    """List reminders by next fire time, then actor and name.

    WHEN is an ISO 8601 datetime (UTC unless it has an offset), 'now', or a duration from now:
    '1h' (or '+1h') is an hour from now, '-30m' half an hour ago.
    """
    moment = _clock_now(now)
    filters = {
        "actor_type": actor_type,
        "actor_key": actor_key,
        "due_after": _at(due_after, moment),
        "due_before": _at(due_before, moment),
    }
    with _open_store(db) as (store, undecodable):
        # One more than asked for tells whether the listing was cut short.
        records = _scan(store, limit=None if limit == 0 else limit + 1, **filters)
        shown = 0
        more = False
        console = _console()
        table = _list_table()
        for record in records:
            if limit and shown == limit:
                more = True
                break
            shown += 1
            if as_json:
                click.echo(json_text(_record_json(record)))
                continue
            _list_row(table, record)
            if table.row_count == _TABLE_ROWS:
                console.print(table)
                table = _list_table()
        if not as_json and table.row_count:
            console.print(table)
        _warn_undecodable(undecodable, "listed")
    if not shown:
        click.echo("no reminders", err=True)
    elif more:
        click.echo(
            f"showing the first {_count(limit, 'reminder')}; "
            "more follow (raise --limit, 0 for all)",
            err=True,
        )


@reminders.command("show")
@_db_option
@_key_arguments
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the export format).")
def show_reminder(db: str | None, reminder_key: ReminderKey, as_json: bool) -> None:
    """Show every field of the reminder NAME of the actor TYPE/KEY."""
    key = reminder_key
    with _open_store(db) as (store, undecodable):
        record = store.get(key)
    if record is None:
        broken = [problem for problem in undecodable.problems if problem.key == key]
        if broken:
            raise NotFoundError(
                f"reminder {key} is stored but cannot be decoded: {broken[0].error} (it is "
                "kept and never fired; re-register or cancel it)"
            )
        raise NotFoundError(f"no reminder {key}")
    if as_json:
        click.echo(json_text(_record_json(record)))
        return
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")

    def time(value: datetime | None) -> str:
        return "" if value is None else _iso(value, exact=True)

    fields = [
        ("actor type", key.actor_type),
        ("actor key", key.actor_key),
        ("name", key.name),
        ("next fire", "" if record.finished else time(record.due_at)),
        ("anchor", time(record.anchor_at)),
        ("period", _period(record)),
        *_calendar_fields(record),
        ("fire count", str(record.fire_count)),
        ("max count", "unlimited" if record.max_count is None else str(record.max_count)),
        ("missed ticks", record.missed),
        ("payload", json.dumps(record.payload, ensure_ascii=False, indent=2)),
        ("pending fire", "" if record.pending_fire is None else f"#{record.pending_fire}"),
        ("pending due", time(record.pending_scheduled_at)),
        ("finished", "yes (its last fire is pending)" if record.finished else "no"),
        ("claimed by", record.claimed_by or ""),
        ("claimed until", time(record.claimed_until)),
        ("created", time(record.created_at)),
        ("updated", time(record.updated_at)),
        ("expires", time(record.expires_at)),
        ("retry", _retry_text(record.retry)),
        ("failed attempts", str(record.attempts) if record.attempts else ""),
        ("last fired", time(record.last_fired_at)),
        ("last handled", time(record.last_handled_at)),
        ("last error", _failure_text(record.last_error)),
    ]
    for field, value in fields:
        table.add_row(Text(field), _text(value, newlines=field == "payload"))
    _console().print(table)


def _calendar_fields(record: StoredReminder) -> list[tuple[str, str]]:
    """The schedule of a calendar reminder, for `show`: the cron, the zone, and the next fire
    in that zone (as the schedule reads it). Nothing for other reminders."""
    if record.cron is None or record.tz is None:
        return []
    local = "" if record.finished else record.due_at.astimezone(ZoneInfo(record.tz)).isoformat()
    return [("cron", record.cron), ("time zone", record.tz), ("next fire (local)", local)]


@reminders.command("cancel")
@_db_option
@_key_arguments
def cancel_reminder(db: str | None, reminder_key: ReminderKey) -> None:
    """Delete the reminder NAME of the actor TYPE/KEY, and say what was deleted.

    A node that has it armed finds it gone at its next fire (the fire's compare-and-set fails)
    and drops it; a fire already delivered is not taken back.
    """
    key = reminder_key
    with _open_store(db) as (store, _):
        record = store.get(key)
        deleted = store.delete(key)
    if not deleted:
        raise NotFoundError(f"no reminder {key}; nothing was cancelled")
    if record is None:
        _say(f"cancelled reminder {key} (its stored row could not be decoded)")
        return
    _say(
        f"cancelled reminder {key}: next fire {_next_fire(record)}, period {_period(record)}, "
        f"fires {_fires(record)}"
    )


@reminders.command("count")
@_db_option
@click.option(
    "--type", "actor_type", metavar="TYPE", callback=_non_empty, help="Only actors of this type."
)
@click.option(
    "--prefix",
    "name_prefix",
    metavar="PREFIX",
    callback=_non_empty,
    help="Only reminders whose name starts with PREFIX (taken literally).",
)
def count_reminders(db: str | None, actor_type: str | None, name_prefix: str | None) -> None:
    """Print how many reminders there are (of TYPE, named PREFIX...): one query."""
    with _open_store(db) as (store, _):
        click.echo(store.count_matching(actor_type=actor_type, name_prefix=name_prefix))


@reminders.command("cancel-all")
@_db_option
@click.option(
    "--type", "actor_type", metavar="TYPE", callback=_non_empty, help="Only actors of this type."
)
@click.option(
    "--prefix",
    "name_prefix",
    metavar="PREFIX",
    callback=_non_empty,
    help="Only reminders whose name starts with PREFIX (taken literally).",
)
def cancel_all(db: str | None, actor_type: str | None, name_prefix: str | None) -> None:
    """Delete every reminder of the actor type TYPE and/or named PREFIX..., in pages of 500.

    Needs --type or --prefix. A node that has one armed finds it gone at its next fire (the
    fire's compare-and-set fails) and drops it.
    """
    if actor_type is None and name_prefix is None:
        raise CliError("cancel-all needs --type TYPE or --prefix PREFIX (or both)")
    deleted = 0
    with _open_store(db) as (store, _):
        after: ReminderKey | None = None
        while True:
            page = store.find(PAGE, actor_type=actor_type, name_prefix=name_prefix, after=after)
            if page:
                deleted += store.delete_many([record.key for record in page])
                after = page[-1].key
            if len(page) < PAGE:
                break
    _say(f"cancelled {_count(deleted, 'reminder')}")


def _letter_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in (
        click.option(
            "--name", "name", metavar="NAME", callback=_non_empty, help="Only this reminder name."
        ),
        click.option(
            "--key", "actor_key", metavar="KEY", callback=_non_empty, help="Only this actor key."
        ),
        click.option(
            "--type",
            "actor_type",
            metavar="TYPE",
            callback=_non_empty,
            help="Only actors of this type.",
        ),
    ):
        command = option(command)
    return command


def _dead_table() -> Table:
    table = Table(box=box.SIMPLE, pad_edge=False)
    for header in ("id", "actor", "name", "fire", "due (UTC)", "attempts", "dead at", "error"):
        table.add_column(header, overflow="fold")
    return table


@reminders.command("dead")
@_db_option
@_letter_filters
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    default=100,
    show_default=True,
    help="Show at most this many dead letters; 0 for all of them.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, every field.")
def dead_letters(
    *,
    db: str | None,
    actor_type: str | None,
    actor_key: str | None,
    name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters, oldest first: fires whose handler failed as often as their retry
    policy allows. Re-drive them with 'plexspaces reminders retry'."""
    shown = 0
    more = False
    with _open_store(db) as (store, _):
        console = _console()
        table = _dead_table()
        after: int | None = None
        while not more:
            want = PAGE if limit == 0 else min(PAGE, limit + 1 - shown)
            page = store.dead_letters(
                want, after=after, actor_type=actor_type, actor_key=actor_key, name=name
            )
            for letter in page:
                if limit and shown == limit:
                    more = True
                    break
                shown += 1
                if as_json:
                    click.echo(json_text(_letter_json(letter)))
                    continue
                requested = " (re-drive asked for)" if letter.retry_requested_at else ""
                table.add_row(
                    *(
                        _text(cell)
                        for cell in (
                            str(letter.id),
                            letter.actor_id,
                            letter.reminder_name,
                            f"#{letter.fire_count}",
                            _iso(letter.scheduled_at),
                            str(letter.attempts),
                            _iso(letter.dead_at) + requested,
                            _failure_text(letter.error, width=80),
                        )
                    )
                )
                if table.row_count == _TABLE_ROWS:
                    console.print(table)
                    table = _dead_table()
            if len(page) < want or not page:
                break
            after = page[-1].id
        if not as_json and table.row_count:
            console.print(table)
    if not shown:
        click.echo("no dead letters", err=True)
    elif more:
        click.echo(
            f"showing the first {_count(limit, 'dead letter')}; more follow (raise --limit, 0 "
            "for all)",
            err=True,
        )


@reminders.command("retry")
@_db_option
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@_letter_filters
@click.option("--all", "every", is_flag=True, help="Every dead letter (with no ID or filter).")
@_now_option
def retry_dead_letters(
    *,
    db: str | None,
    ids: tuple[int, ...],
    actor_type: str | None,
    actor_key: str | None,
    name: str | None,
    every: bool,
    now: _When | None,
) -> None:
    """Ask for dead letters to be delivered once more: by ID, by --type/--key/--name, or --all.

    The request is stored; a running node serving the actor type delivers each at its next
    look for re-drives (every poll interval while dead letters exist, backing off to a minute
    while nobody asks), a stopped one when it starts. A letter whose handler returns is
    deleted; one that fails again stays, with one attempt more and the new error.
    """
    filtered = actor_type is not None or actor_key is not None or name is not None
    if not ids and not filtered and not every:
        raise CliError("name the dead letters to retry: ID..., --type/--key/--name, or --all")
    if ids and (filtered or every):
        raise CliError("give dead letter IDs, or filters (--type/--key/--name/--all), not both")
    moment = _clock_now(now)
    with _open_store(db) as (store, _):
        if ids:
            asked = store.request_retry(ids, now=moment)
            if asked < len(set(ids)):
                found = {letter.id for letter in store.dead_letters(len(ids), ids=ids)}
                missing = ", ".join(str(i) for i in sorted(set(ids) - found))
                if not asked:
                    raise NotFoundError(f"no dead letter {missing}; nothing to retry")
                _say(f"no dead letter {missing}", err=True)
        else:
            asked = 0
            after: int | None = None
            while True:
                page = store.dead_letters(
                    PAGE, after=after, actor_type=actor_type, actor_key=actor_key, name=name
                )
                if page:
                    asked += store.request_retry([letter.id for letter in page], now=moment)
                    after = page[-1].id
                if len(page) < PAGE:
                    break
            if not asked:
                raise NotFoundError("no dead letters match; nothing to retry")
    _say(
        f"asked to retry {_count(asked, 'dead letter')}: a node serving the actor type delivers "
        f"{'it' if asked == 1 else 'them'} at its next poll, or when it starts"
    )


@reminders.command("export")
@_db_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path, allow_dash=True),
    default="-",
    help="Write to FILE (replaced once the export is complete) instead of stdout.",
)
@click.option(
    "--type", "actor_type", metavar="TYPE", callback=_non_empty, help="Only actors of this type."
)
@click.option(
    "--key", "actor_key", metavar="KEY", callback=_non_empty, help="Only actors with this key."
)
def export_reminders(
    db: str | None, out: Path, actor_type: str | None, actor_key: str | None
) -> None:
    """Write reminders as JSON lines, one reminder per line with every field.

    Times are ISO 8601 UTC with microseconds and the period is in microseconds, so an import
    restores each reminder exactly. Rows that cannot be decoded are not exported: a warning on
    stderr names them (exit status 0).
    """
    with _open_store(db) as (store, undecodable):
        records = _scan(store, actor_type=actor_type, actor_key=actor_key)
        if str(out) == "-":
            count = _write_lines(sys.stdout, records)
            where = "stdout"
        else:
            count = _write_file(out, records)
            where = str(out)
    _say(f"exported {_count(count, 'reminder')} to {where}", err=True)
    _warn_undecodable(undecodable, "exported")


def _write_lines(stream: IO[str], records: Iterator[StoredReminder]) -> int:
    count = 0
    for record in records:
        stream.write(json_text(_record_json(record)) + "\n")
        count += 1
    stream.flush()
    return count


def _write_file(path: Path, records: Iterator[StoredReminder]) -> int:
    # Into a file beside it, renamed over it at the end: a failed export never leaves a
    # truncated file that looks complete.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            count = _write_lines(stream, records)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


@reminders.command("import")
@_db_option
@click.argument(
    "source",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    default="-",
    metavar="[FILE|-]",
)
def import_reminders(db: str | None, source: str) -> None:
    """Upsert the reminders of an export (FILE, or stdin for '-' or nothing).

    Every line is checked first: one bad line is an error naming it, and nothing is imported.
    Each reminder replaces the stored one of the same actor and name (others are left alone),
    so importing a file twice leaves the same state. Claims are dropped: they name nodes of the
    database the file came from. Creates the database and its tables if they are missing.
    """
    name = "stdin" if source == "-" else source
    _, shown = _resolve(db)
    with _import_source(source) as stream:
        # Every line is read and checked before anything is written.
        try:
            count = sum(1 for _ in _read_records(stream, name))
        except _BadInput as error:
            raise CliError(f"{error}; nothing was imported") from None
        stream.seek(0)
        with _open_store(db, create=True) as (store, _):
            written = 0
            try:
                batch: list[StoredReminder] = []
                for record in _read_records(stream, name):
                    batch.append(record)
                    if len(batch) == PAGE:
                        written += store.upsert_many(batch)
                        batch.clear()
                written += store.upsert_many(batch)
            except (_BadInput, PlexSpacesError, SQLAlchemyError, OSError, ValueError) as error:
                # The input changed under us, or the database failed: say what is stored now.
                raise CliError(
                    f"{_describe(error)}; {written} of {_count(count, 'reminder')} "
                    f"{'was' if written == 1 else 'were'} imported before the import stopped"
                ) from None
    _say(f"imported {_count(count, 'reminder')} into {shown}")


class _BadInput(ValueError):
    """A line of an import that cannot be imported, named by its number."""


@contextmanager
def _import_source(source: str) -> Iterator[IO[str]]:
    """The lines to import, in a stream that can be read twice (stdin is spooled to a
    temporary file)."""
    if source != "-":
        with open(source, encoding="utf-8") as stream:
            yield stream
        return
    if sys.stdin.isatty():
        # Otherwise a terminal would wait with no word of what it waits for.
        _say("reading reminders as JSON lines from stdin until end of input (Ctrl-D)", err=True)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        for line in sys.stdin:
            spool.write(line)
        spool.seek(0)
        yield spool


def _read_records(stream: IO[str], name: str) -> Iterator[StoredReminder]:
    """The records of an export's lines (blank lines skipped); the first bad line is a
    `_BadInput` naming it. A reminder on two lines is refused: the file would say two things
    about one reminder, and counting it twice would misreport the import."""
    lines = iter(stream)
    number = 0
    seen: dict[ReminderKey, int] = {}
    while True:
        number += 1
        try:
            line = next(lines, None)
        except UnicodeDecodeError as error:
            reason = error.reason
            raise _BadInput(f"{name}, near line {number}: not UTF-8 text ({reason})") from None
        if line is None:
            return
        if not line.strip():
            continue
        try:
            record = _parse_record(line)
        except ValueError as error:
            raise _BadInput(f"{name}, line {number}: {error}") from None
        first = seen.setdefault(record.key, number)
        if first != number:
            raise _BadInput(
                f"{name}, line {number}: reminder {record.key} is also on line {first}; "
                "each reminder may appear once"
            )
        yield record


def _parse_record(line: str) -> StoredReminder:
    """One export line as a record, checked as the store checks it; claims dropped.

    Raises:
        ValueError: what is wrong with the line.
    """
    try:
        value = json.loads(
            line, parse_constant=_refuse_constant, object_pairs_hook=_object_without_repeats
        )
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object (one reminder), got {_short(value)}")
    unknown = sorted(set(value) - set(_EXPORT_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown {'field' if len(unknown) == 1 else 'fields'} {', '.join(map(repr, unknown))}"
        )
    missing = [
        field
        for field in _EXPORT_FIELDS
        if field not in value and field not in _CLAIM_FIELDS and field not in _OPTIONAL_FIELDS
    ]
    if missing:
        raise ValueError(
            f"missing {'field' if len(missing) == 1 else 'fields'} {', '.join(map(repr, missing))}"
        )
    key = ReminderKey(value["actor_type"], value["actor_key"], value["name"])
    period_us = value["period_us"]
    if period_us is not None and (isinstance(period_us, bool) or not isinstance(period_us, int)):
        raise ValueError(f"period_us {period_us!r} must be a whole number of microseconds or null")
    try:
        period = None if period_us is None else timedelta(microseconds=period_us)
    except OverflowError:
        raise ValueError(
            f"period_us {period_us!r} is out of range; accepted are 1 to {MAX_STORED_INT} "
            "microseconds, or null"
        ) from None
    record = StoredReminder(
        key=key,
        due_at=_parse_time(value, "due_at"),
        anchor_at=_parse_time(value, "anchor_at"),
        period=period,
        max_count=value["max_count"],
        fire_count=value["fire_count"],
        missed=value["missed"],
        payload=value["payload"],
        pending_fire=value["pending_fire"],
        pending_scheduled_at=_parse_optional_time(value, "pending_scheduled_at"),
        finished=value["finished"],
        claimed_by=None,
        claimed_until=None,
        created_at=_parse_time(value, "created_at"),
        updated_at=_parse_time(value, "updated_at"),
        cron=value.get("cron"),
        tz=value.get("tz"),
        expires_at=_parse_optional_time(value, "expires_at") if "expires_at" in value else None,
        retry=_parse_retry(value.get("retry")),
        attempts=value.get("attempts", 0),
        last_fired_at=(
            _parse_optional_time(value, "last_fired_at") if "last_fired_at" in value else None
        ),
        last_handled_at=(
            _parse_optional_time(value, "last_handled_at") if "last_handled_at" in value else None
        ),
        last_error=_parse_failure(value.get("last_error")),
    )
    validate_reminder(record)
    encode_payload(key, record.payload)
    return record


def _parse_time(value: dict[str, Any], field: str) -> datetime:
    text = value[field]
    if not isinstance(text, str):
        raise ValueError(f"{field} {_short(text)} must be an ISO 8601 datetime string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field} {text!r} is not an ISO 8601 datetime") from None
    if moment.utcoffset() is None:
        raise ValueError(f"{field} {text!r} has no UTC offset (exported times end in Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{field} {text!r} is outside the datetime range in UTC; accepted are times from "
            "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
        ) from None


def _parse_optional_time(value: dict[str, Any], field: str) -> datetime | None:
    return None if value.get(field) is None else _parse_time(value, field)


def _parse_retry(value: Any) -> RetryPolicy | None:
    if value is None:
        return None
    fields = ("max_attempts", "backoff_us", "max_backoff_us")
    if not isinstance(value, dict) or sorted(value) != sorted(fields):
        raise ValueError(
            f"retry {_short(value)} must be null or an object with {', '.join(fields)}"
        )
    for field in fields[1:]:
        micros = value[field]
        if isinstance(micros, bool) or not isinstance(micros, int) or micros < 1:
            raise ValueError(f"retry {field} {_short(micros)} must be a positive integer")
    try:
        return RetryPolicy(
            max_attempts=value["max_attempts"],
            backoff=timedelta(microseconds=value["backoff_us"]),
            max_backoff=timedelta(microseconds=value["max_backoff_us"]),
        )
    except OverflowError:
        raise ValueError(f"retry {_short(value)} holds a duration out of range") from None


def _parse_failure(value: Any) -> FireFailure | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or sorted(value) != ["text", "type"]
        or not all(isinstance(part, str) for part in value.values())
    ):
        raise ValueError(
            f"last_error {_short(value)} must be null or an object with the strings type and text"
        )
    return FireFailure(value["type"], value["text"])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a field that appears twice (at any depth): JSON
    parsers keep the last one silently, so the line would not say what it seems to say."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for field, _ in pairs:
            if field in seen:
                raise ValueError(f"field {field!r} appears twice in one object; give it once")
            seen.add(field)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# -- doctor --------------------------------------------------------------------------------------


@cli.command()
@_db_option
@click.option(
    "--overdue",
    type=_DURATION,
    default="1m",
    show_default=True,
    help="Report reminders due longer ago than this with no fire pending: nobody fires them.",
)
@click.option(
    "--pending",
    type=_DURATION,
    default="5m",
    show_default=True,
    help="Report fires recorded longer ago than this and still not acknowledged.",
)
@click.option(
    "--stale-lease",
    type=_DURATION,
    default="1m",
    show_default=True,
    help="Report nodes whose every lease ended longer ago than this: they stopped renewing.",
)
@click.option(
    "--show",
    "examples",
    type=click.IntRange(min=0),
    metavar="N",
    default=10,
    show_default=True,
    help="List at most this many examples of each problem.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@_now_option
def doctor(
    *,
    db: str | None,
    overdue: timedelta,
    pending: timedelta,
    stale_lease: timedelta,
    examples: int,
    as_json: bool,
    now: _When | None,
) -> None:
    """Check a database: its schema version, rows that cannot be decoded, reminders nobody
    fires, fires never acknowledged, and nodes that stopped renewing their leases.

    Exit status 0 when healthy, 1 when problems were found (each is listed), 2 when the
    database cannot be checked.
    """
    moment = _clock_now(now)
    url, shown = _resolve(db)
    version = _require_database(url)
    report: dict[str, Any] = {
        "database": shown,
        "path": None if (path := _sqlite_file(url)) is None else str(path.resolve()),
        "checked_at": _iso(moment, exact=True),
        "schema": {"found": version, "expected": SCHEMA_VERSION},
    }
    problems = 0
    if version is None:
        report["schema"]["problem"] = "no plexspaces tables: nothing was ever stored here"
        problems += 1
    elif version != SCHEMA_VERSION:
        report["schema"]["problem"] = _version_problem(shown, version)
        problems += 1
    else:
        with _open_store(db) as (store, _):
            sections = _diagnose(
                store,
                now=moment,
                overdue=overdue,
                pending=pending,
                stale_lease=stale_lease,
                examples=examples,
            )
        report.update(sections)
        problems += sum(section["count"] for section in sections.values())
    report["problems"] = problems
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report, overdue, pending, stale_lease)
    if problems:
        click.get_current_context().exit(EXIT_NO)


def _diagnose(
    store: SqlReminderStore,
    *,
    now: datetime,
    overdue: timedelta,
    pending: timedelta,
    stale_lease: timedelta,
    examples: int,
) -> dict[str, dict[str, Any]]:
    undecodable = store.errors()
    sections: dict[str, dict[str, Any]] = {
        "undecodable": {
            "count": len(undecodable),
            "rows": [
                {"reminder": str(problem.key), "error": problem.error}
                for problem in undecodable[:examples]
            ],
        }
    }

    def reminder_summary(record: StoredReminder) -> dict[str, Any]:
        summary = _record_json(record)
        return {
            "reminder": str(record.key),
            "due_at": summary["due_at"],
            "pending_scheduled_at": summary["pending_scheduled_at"],
            "claimed_by": record.claimed_by,
            "claimed_until": summary["claimed_until"],
        }

    overdue_cutoff = now - overdue
    late = (
        record
        for record in _scan(store, due_before=overdue_cutoff)
        if not record.finished and record.pending_fire is None
    )
    sections["overdue"] = _tally(late, examples, reminder_summary)
    sections["overdue"]["due_before"] = _iso(overdue_cutoff, exact=True)

    pending_cutoff = now - pending
    sections["pending"] = _tally(_pending_before(store, pending_cutoff), examples, reminder_summary)
    sections["pending"]["scheduled_before"] = _iso(pending_cutoff, exact=True)

    lease_cutoff = now - stale_lease
    stale = [node for node in store.lease_holders(now) if node.lease_until < lease_cutoff]
    sections["stale_leases"] = _tally(iter(stale), examples, _node_summary)
    sections["stale_leases"]["ended_before"] = _iso(lease_cutoff, exact=True)
    return sections


def _pending_before(store: SqlReminderStore, cutoff: datetime) -> Iterator[StoredReminder]:
    """Reminders with a fire pending since before `cutoff`, from the store's due scan (which
    places a pending fire by its scheduled time, and reads it from the pending index)."""
    after: tuple[datetime, ReminderKey] | None = None
    while True:
        page = store.due(cutoff, PAGE, after=after)
        for record in page:
            if record.position[0] >= cutoff:
                return
            if record.pending_fire is not None:
                yield record
        if len(page) < PAGE:
            return
        after = page[-1].position


def _node_summary(node: NodeLeases) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "reminder_claims": node.live_claims + node.expired_claims,
        "activation_leases": node.live_activations + node.expired_activations,
        "lease_until": _iso(node.lease_until, exact=True),
    }


def _tally(
    items: Iterator[_T], examples: int, summary: Callable[[_T], dict[str, Any]]
) -> dict[str, Any]:
    count = 0
    rows: list[dict[str, Any]] = []
    for item in items:
        count += 1
        if len(rows) < examples:
            rows.append(summary(item))
    return {"count": count, "rows": rows}


def _print_report(
    report: dict[str, Any], overdue: timedelta, pending: timedelta, stale_lease: timedelta
) -> None:
    console = _console()

    def line(text: str) -> None:
        console.print(_text(text))

    def rows(section: dict[str, Any], columns: list[tuple[str, str]]) -> None:
        if not section["rows"]:
            return
        table = Table(box=box.SIMPLE, pad_edge=False)
        for header, _ in columns:
            table.add_column(header, overflow="fold")
        for row in section["rows"]:
            table.add_row(
                *(_text("" if row[field] is None else str(row[field])) for _, field in columns)
            )
        console.print(table)
        if section["count"] > len(section["rows"]):
            line(f"  ... and {section['count'] - len(section['rows'])} more")

    schema = report["schema"]
    line(f"database: {report['database']} (checked at {report['checked_at']})")
    if report["path"] is not None:
        line(f"database file: {report['path']}")
    found = "none" if schema["found"] is None else schema["found"]
    status = schema.get("problem", "ok")
    line(f"schema version: {found}, expected {schema['expected']}: {status}")
    if "undecodable" in report:
        section = report["undecodable"]
        line(f"rows that cannot be decoded: {section['count']}")
        rows(section, [("reminder", "reminder"), ("error", "error")])
        reminder_columns = [
            ("reminder", "reminder"),
            ("due", "due_at"),
            ("pending fire due", "pending_scheduled_at"),
            ("claimed by", "claimed_by"),
            ("claimed until", "claimed_until"),
        ]
        section = report["overdue"]
        line(
            f"reminders overdue by more than {_duration_text(overdue)} with no fire pending "
            f"(nobody fires them): {section['count']}"
        )
        rows(section, reminder_columns)
        section = report["pending"]
        line(
            f"fires pending (recorded, not acknowledged) for more than "
            f"{_duration_text(pending)}: {section['count']}"
        )
        rows(section, reminder_columns)
        section = report["stale_leases"]
        line(
            f"nodes whose leases all ended more than {_duration_text(stale_lease)} ago "
            f"(they stopped renewing): {section['count']}"
        )
        rows(
            section,
            [
                ("node", "node_id"),
                ("reminder claims", "reminder_claims"),
                ("activation leases", "activation_leases"),
                ("last lease ended", "lease_until"),
            ],
        )
    problems = report["problems"]
    line("healthy" if not problems else f"{_count(problems, 'problem')} found")


def main() -> None:
    """The `plexspaces` console script."""
    cli.main(prog_name="plexspaces")


if __name__ == "__main__":
    main()
