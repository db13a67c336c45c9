"""How the reminder store writes records down, and reads them back.

A payload is stored as JSON text, strictly both ways: `encode_payload` refuses what would not come
back as it went in, and `decode_payload` refuses what `encode_payload` would have refused. A record
is one row of the reminder table (`_row_values`, `_decode_row`): the key, times in microseconds,
the payload as JSON text. A row that does not decode into a record `validate_reminder` accepts
becomes an `UndecodableReminder`, never an exception.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from .records import (
    _ONE_MICROSECOND,
    ReminderKey,
    StoredReminder,
    UndecodableReminder,
    from_micros,
    to_micros,
    validate_reminder,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import RowMapping

__all__ = ["decode_payload", "encode_payload", "json_text"]


# -- payloads ------------------------------------------------------------------------------------


def encode_payload(key: ReminderKey, payload: Any) -> str:
    """The JSON text of `payload`, refusing anything that would not come back as it went in.

    NaN and infinities are refused (not JSON), and so are dict keys that are not strings: JSON
    would turn `{1: "a"}` into `{"1": "a"}`, and a handler looking up `payload[1]` would fail only
    when the reminder fires, perhaps weeks later. Tuples are accepted and come back as lists.

    Raises:
        ValueError: naming the reminder, where in the payload the problem is, and the value.
    """
    try:
        text = json_text(payload)
    except (TypeError, ValueError, RecursionError) as error:
        problem = _find_non_json(payload) or str(error)
        raise ValueError(
            f"payload of reminder {key} is not JSON (dict with str keys, list, str, int, finite "
            f"float, bool, None): {problem}"
        ) from None
    lossy = _find_non_json(payload)
    if lossy is not None:
        raise ValueError(f"payload of reminder {key} would not come back as stored: {lossy}")
    return text


def json_text(value: Any) -> str:
    """`value` as compact JSON text, with no NaN or infinity: how a payload is stored, and how the
    `plexspaces` command writes a reminder as one line, so an exported payload reads exactly as
    the stored one.

    Raises:
        TypeError, ValueError, RecursionError: as `json.dumps` does for what is not JSON.
    """
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def decode_payload(text: Any) -> Any:
    """The value of the stored JSON `text`; strict, so a store never hands out what it refuses.

    Raises:
        ValueError: `text` is not a string of JSON, or holds NaN or an infinity.
    """
    if not isinstance(text, str):
        raise ValueError(f"payload {text!r} is not JSON text")
    return _STRICT_JSON.decode(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"payload holds {name}, which is not JSON")


# One decoder for every row: json.loads with an option builds a new decoder on each call.
_STRICT_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant)


def _find_non_json(payload: Any) -> str | None:
    """Where `payload` stops being plain JSON, described for an error message; None if it is.

    Iterative, so deep nesting costs no recursion, and each container is visited once, so a
    cycle (which json.dumps reports) cannot loop.
    """
    stack: list[tuple[str, Any]] = [("payload", payload)]
    seen: set[int] = set()
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | int):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {value!r}; JSON has no NaN or infinity"
            continue
        if id(value) in seen:
            continue
        if isinstance(value, dict):
            seen.add(id(value))
            for item_key, item in value.items():
                if not isinstance(item_key, str):
                    return (
                        f"{path} has the dict key {item_key!r}; JSON keys are strings, so it "
                        "would come back as another key"
                    )
                stack.append((f"{path}[{item_key!r}]", item))
        elif isinstance(value, list | tuple):
            seen.add(id(value))
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
        else:
            return f"{path} is {value!r} of type {type(value).__name__}"
    return None


# -- rows ----------------------------------------------------------------------------------------


def _row_values(record: StoredReminder, payload: str) -> dict[str, Any]:
    def micros(value: datetime | None) -> int | None:
        return None if value is None else to_micros(value)

    return {
        "actor_type": record.key.actor_type,
        "actor_key": record.key.actor_key,
        "name": record.key.name,
        "due_us": to_micros(record.due_at),
        "anchor_us": to_micros(record.anchor_at),
        "period_us": None if record.period is None else record.period // _ONE_MICROSECOND,
        "max_count": record.max_count,
        "fire_count": record.fire_count,
        "missed": record.missed,
        "payload": payload,
        "pending_fire": record.pending_fire,
        "pending_scheduled_us": micros(record.pending_scheduled_at),
        "finished": record.finished,
        "claimed_by": record.claimed_by,
        "claimed_until_us": micros(record.claimed_until),
        "created_us": to_micros(record.created_at),
        "updated_us": to_micros(record.updated_at),
    }


def _decode_row(row: RowMapping) -> StoredReminder | UndecodableReminder:
    key = ReminderKey(str(row["actor_type"]), str(row["actor_key"]), str(row["name"]))

    def time(column: str) -> datetime:
        try:
            return from_micros(row[column])
        except ValueError as error:
            raise ValueError(f"{column}: {error}") from None

    def optional_time(column: str) -> datetime | None:
        return None if row[column] is None else time(column)

    try:
        period_us = row["period_us"]
        if period_us is not None and (
            isinstance(period_us, bool) or not isinstance(period_us, int) or period_us <= 0
        ):
            raise ValueError(f"period_us {period_us!r} is not a positive number of microseconds")
        try:
            payload = decode_payload(row["payload"])
        except ValueError as error:
            raise ValueError(f"payload is not valid JSON: {error}") from None
        record = StoredReminder(
            key=key,
            due_at=time("due_us"),
            anchor_at=time("anchor_us"),
            period=None if period_us is None else timedelta(microseconds=period_us),
            max_count=row["max_count"],
            fire_count=row["fire_count"],
            missed=row["missed"],
            payload=payload,
            pending_fire=row["pending_fire"],
            pending_scheduled_at=optional_time("pending_scheduled_us"),
            finished=row["finished"],
            claimed_by=row["claimed_by"],
            claimed_until=optional_time("claimed_until_us"),
            created_at=time("created_us"),
            updated_at=time("updated_us"),
        )
        validate_reminder(record, times_checked=True)
    except (ValueError, TypeError, OverflowError) as error:
        return UndecodableReminder(key, str(error))
    return record
