"""Structured logging defaults."""

from __future__ import annotations

import logging

import structlog

__all__ = ["ensure_logging_configured"]


def ensure_logging_configured() -> None:
    """Give structlog a sensible level if the application has not configured it.

    structlog's own default prints every event, debug included. The runtime logs lifecycle events
    at debug level, so when nothing is configured it keeps structlog's console output and raises
    the level to INFO. An application that calls `structlog.configure()` itself is left alone.
    """
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
