"""Structured logging set-up: one call (or two environment variables) picks the output.

```python
import plexspaces
plexspaces.configure_logging("json", level="INFO")     # production: one JSON object per line
plexspaces.configure_logging("console", level="DEBUG")  # development: coloured, aligned
```

or `PLEXSPACES_LOG_FORMAT=json PLEXSPACES_LOG_LEVEL=DEBUG` in the environment, read when an
`ActorSystem` starts and structlog has not been configured yet (an application that configures
structlog itself is left alone).

Every event of the runtime carries `actor_id` where an actor is concerned, `facet` where a facet
is, and fires carry the timer or reminder name and `lateness_ms` (`timer.fired`,
`reminder.fired`, at debug level).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final, TextIO

import structlog

from ._redact import redact_event

__all__ = ["LOG_FORMATS", "LOG_FORMAT_ENV", "LOG_LEVEL_ENV", "configure_logging"]

LOG_FORMAT_ENV: Final = "PLEXSPACES_LOG_FORMAT"
LOG_LEVEL_ENV: Final = "PLEXSPACES_LOG_LEVEL"
LOG_FORMATS: Final = ("console", "json")
_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def configure_logging(
    format: str | None = None,
    *,
    level: str | int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process.

    Args:
        format: `"console"` (human-readable, coloured on a terminal) or `"json"` (one JSON object
            per line, for log shippers). None: `$PLEXSPACES_LOG_FORMAT`, else `"console"`.
        level: the least severe level shown (`"DEBUG"`, `"INFO"`, ... or a `logging` number).
            None: `$PLEXSPACES_LOG_LEVEL`, else INFO.
        stream: where to write (default: standard error).

    Every event gets `timestamp` (ISO 8601, UTC) and `level`; exceptions are rendered as a
    plain traceback (console) or as an `exception` field (json), never with the values of local
    variables, and the password of any URL in an event or a traceback is replaced by `***`.

    Raises:
        ValueError: an unknown format or level, naming it and what is accepted.
    """
    chosen = format if format is not None else os.environ.get(LOG_FORMAT_ENV) or "console"
    if chosen not in LOG_FORMATS:
        raise ValueError(
            f"log format {chosen!r} is not one of {', '.join(map(repr, LOG_FORMATS))}"
            + (f" (from ${LOG_FORMAT_ENV})" if format is None else "")
        )
    number = _level(level if level is not None else os.environ.get(LOG_LEVEL_ENV) or "INFO")
    output = stream if stream is not None else sys.stderr
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks are rendered to text before the renderer sees them, so the redaction below
    # covers them too. structlog's console default would render them with rich and the values
    # of every frame's local variables: a storage URL with its password, among others.
    processors += [structlog.processors.format_exc_info, redact_event]
    if chosen == "json":
        processors.append(structlog.processors.JSONRenderer(sort_keys=False, default=repr))
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=_is_terminal(output), exception_formatter=structlog.dev.plain_traceback
            ),
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )


def ensure_logging_configured() -> None:
    """Configure logging from the environment unless the application configured structlog.

    structlog's own default prints every event, debug included; the runtime logs lifecycle
    events and fires at debug level, so an unconfigured process gets `configure_logging()`
    (console at INFO unless the environment says otherwise) when its first `ActorSystem` starts.
    """
    if not structlog.is_configured():
        configure_logging()


def _level(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"log level {value!r} must be one of {', '.join(_LEVELS)}")
    if isinstance(value, int):
        return value
    name = str(value).strip().upper()
    if name not in _LEVELS:
        raise ValueError(f"log level {value!r} must be one of {', '.join(_LEVELS)}")
    number: int = logging.getLevelNamesMapping()[name]
    return number


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
