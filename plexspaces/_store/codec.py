"""How the reminder store writes records down, and reads them back.

A payload is stored as JSON text, strictly both ways: `encode_payload` refuses what would not come
back as it went in, and `decode_payload` refuses what `encode_payload` would have refused. A record
is one row of the reminder table (`_row_values`, `_decode_row`): the key, times in microseconds,
the payload as JSON text. A row that does not decode into a record `validate_reminder` accepts
becomes an `UndecodableReminder`, never an exception: whatever goes wrong while decoding one row
(a payload nested too deep for the JSON parser included) must not stop the others from loading.

A payload is bounded: at most `MAX_PAYLOAD_DEPTH` levels of nested lists and objects, and at most
`MAX_PAYLOAD_BYTES` of JSON text (UTF-8). Both limits are far beyond what a reminder needs; they
exist so that one registration cannot store a value that no node can read back.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from .._retry import RetryPolicy
from .records import (
    _ONE_MICROSECOND,
    FireFailure,
    ReminderKey,
    StoredReminder,
    UndecodableReminder,
    bucket_of,
    from_micros,
    to_micros,
    validate_reminder,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import RowMapping

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "decode_payload",
    "encode_payload",
    "json_text",
]

MAX_PAYLOAD_DEPTH: Final = 64
"""The deepest nesting of lists and objects a payload may have (`[[1]]` is 2 deep)."""

MAX_PAYLOAD_BYTES: Final = 1024 * 1024
"""The most JSON text (in UTF-8 bytes, as `json_text` writes it) a payload may take: 1 MiB."""


# -- payloads ------------------------------------------------------------------------------------


def encode_payload(key: ReminderKey, payload: Any) -> str:
    """The JSON text of `payload`, refusing anything that would not come back as it went in.

    NaN and infinities are refused (not JSON), and so are dict keys that are not strings: JSON
    would turn `{1: "a"}` into `{"1": "a"}`, and a handler looking up `payload[1]` would fail only
    when the reminder fires, perhaps weeks later. Tuples are accepted and come back as lists.

    A payload nested deeper than `MAX_PAYLOAD_DEPTH`, or whose JSON text is longer than
    `MAX_PAYLOAD_BYTES`, is refused: it could be stored, but decoding it again may fail.

    Raises:
        ValueError: naming the reminder, where in the payload the problem is, and the value (or
            the limit it goes beyond).
    """
    shape = _measure(payload)
    if shape is not None:
        raise ValueError(f"payload of reminder {key} {shape}")
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
    size = _text_bytes(text)
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload of reminder {key} is {size} bytes of JSON; the most accepted is "
            f"{MAX_PAYLOAD_BYTES} (MAX_PAYLOAD_BYTES)"
        )
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
        ValueError: `text` is not a string of JSON, holds NaN or an infinity, is longer than
            `MAX_PAYLOAD_BYTES` or nests deeper than `MAX_PAYLOAD_DEPTH`.
    """
    if not isinstance(text, str):
        raise ValueError(f"payload {_short(text)} is not JSON text")
    size = _text_bytes(text)
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload is {size} bytes of JSON; the most accepted is {MAX_PAYLOAD_BYTES} "
            "(MAX_PAYLOAD_BYTES)"
        )
    try:
        value = _STRICT_JSON.decode(text)
    except RecursionError:
        # The C parser recurses once per level: a value nested this deep is refused, whatever
        # depth the thread's stack happened to allow when it was written.
        raise ValueError(
            f"payload nests too deep to parse; the deepest accepted is {MAX_PAYLOAD_DEPTH} "
            "levels (MAX_PAYLOAD_DEPTH)"
        ) from None
    depth = _depth_of_tree(value)
    if depth > MAX_PAYLOAD_DEPTH:
        raise ValueError(
            f"payload nests {depth} levels deep; the deepest accepted is {MAX_PAYLOAD_DEPTH} "
            "(MAX_PAYLOAD_DEPTH)"
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"payload holds {name}, which is not JSON")


# One decoder for every row: json.loads with an option builds a new decoder on each call.
_STRICT_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant)


def _text_bytes(text: str) -> int:
    """The UTF-8 length of `text`, measured only when its length in characters leaves it open."""
    if len(text) * 4 <= MAX_PAYLOAD_BYTES:
        return len(text)  # at most 4 bytes a character: well within the limit either way
    return len(text.encode("utf-8", "surrogatepass"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _measure(payload: Any) -> str | None:
    """Why `payload` is beyond the limits, for an error message; None if it is within them.

    Iterative, and each container is measured once (a container met again reuses its
    measure), so neither deep nesting nor a structure that shares one list many times costs
    recursion or time. The nodes counted are those of the JSON text the payload becomes (a
    shared list is counted each time it is written): each takes at least one byte, so more
    nodes than `MAX_PAYLOAD_BYTES` is refused before a single byte of text is made. A cycle
    is left to `json.dumps`, which reports it.
    """
    if not isinstance(payload, dict | list | tuple):
        return None
    # id -> (depth, nodes) of every container measured so far
    measured: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(payload, False)]
    while stack:
        value, children_done = stack.pop()
        ident = id(value)
        items = value.values() if isinstance(value, dict) else value
        if not children_done:
            if ident in measured or ident in on_path:
                continue
            on_path.add(ident)
            stack.append((value, True))
            stack.extend(
                (item, False)
                for item in items
                if isinstance(item, dict | list | tuple) and id(item) not in measured
            )
            continue
        on_path.discard(ident)
        depth, nodes = 1, 1
        for item in items:
            if isinstance(item, dict | list | tuple):
                # Absent only for a cycle back to a container still being measured.
                child_depth, child_nodes = measured.get(id(item), (0, 0))
                depth = max(depth, child_depth + 1)
                nodes += child_nodes
            else:
                nodes += 1
        if isinstance(value, dict):
            nodes += len(value)  # the keys
        measured[ident] = (depth, nodes)
        if depth > MAX_PAYLOAD_DEPTH:
            return (
                f"nests more than {MAX_PAYLOAD_DEPTH} levels deep; the deepest accepted is "
                f"{MAX_PAYLOAD_DEPTH} (MAX_PAYLOAD_DEPTH)"
            )
        if nodes > MAX_PAYLOAD_BYTES:
            return (
                f"holds more than {MAX_PAYLOAD_BYTES} values, more JSON than the "
                f"{MAX_PAYLOAD_BYTES} bytes accepted (MAX_PAYLOAD_BYTES)"
            )
    return None


def _depth_of_tree(value: Any) -> int:
    """How deep lists and dicts nest in `value`, a tree just parsed from JSON; iterative."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_PAYLOAD_DEPTH:
                return deepest
        stack.extend((child, depth) for child in item)
    return deepest


def _find_non_json(payload: Any, root: str = "payload") -> str | None:
    """Where `payload` stops being plain JSON, described for an error message (the value itself
    called `root`); None if it is.

    Iterative, so deep nesting costs no recursion, and each container is visited once, so a
    cycle (which json.dumps reports) cannot loop.
    """
    stack: list[tuple[str, Any]] = [(root, payload)]
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
        "bucket": bucket_of(record.key.actor_type, record.key.actor_key),
        "cron": record.cron,
        "tz": record.tz,
        "expires_us": micros(record.expires_at),
        **_retry_values(record.retry),
        "attempts": record.attempts or None,
        "last_fired_us": micros(record.last_fired_at),
        "last_handled_us": micros(record.last_handled_at),
        "last_error_type": None if record.last_error is None else record.last_error.type,
        "last_error_text": None if record.last_error is None else record.last_error.text,
    }


def _retry_values(retry: RetryPolicy | None) -> dict[str, int | None]:
    if retry is None:
        return {"retry_max_attempts": None, "retry_backoff_us": None, "retry_max_backoff_us": None}
    return {
        "retry_max_attempts": retry.max_attempts,
        "retry_backoff_us": retry.backoff_delta // _ONE_MICROSECOND,
        "retry_max_backoff_us": retry.max_backoff_delta // _ONE_MICROSECOND,
    }


def _decode_retry(row: RowMapping) -> RetryPolicy | None:
    backoff, longest = row["retry_backoff_us"], row["retry_max_backoff_us"]
    attempts = row["retry_max_attempts"]
    if backoff is None and longest is None and attempts is None:
        return None
    if not all(type(value) is int for value in (backoff, longest)):
        raise ValueError(
            f"retry_backoff_us {backoff!r} and retry_max_backoff_us {longest!r} must both be "
            "whole microseconds when a retry policy is stored"
        )
    return RetryPolicy(
        max_attempts=attempts,
        backoff=timedelta(microseconds=backoff),
        max_backoff=timedelta(microseconds=longest),
    )


def _decode_failure(row: RowMapping) -> FireFailure | None:
    kind, text = row["last_error_type"], row["last_error_text"]
    if kind is None and text is None:
        return None
    return FireFailure(str(kind), "" if text is None else str(text))


def _decode_row(row: RowMapping) -> StoredReminder | UndecodableReminder:
    # A service may hold a hundred thousand decoded rows at once (after a restart with many
    # overdue): actor types and keys are shared between the rows of one actor (interned), and
    # equal times within a row (due and anchor, created and updated) are one object.
    key = ReminderKey(
        sys.intern(str(row["actor_type"])), sys.intern(str(row["actor_key"])), str(row["name"])
    )
    times: dict[int, datetime] = {}

    def time(column: str) -> datetime:
        micros = row[column]
        found = times.get(micros) if type(micros) is int else None
        if found is not None:
            return found
        try:
            value = from_micros(micros)
        except ValueError as error:
            raise ValueError(f"{column}: {error}") from None
        times[micros] = value
        return value

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
        except json.JSONDecodeError as error:
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
            cron=row["cron"],
            tz=row["tz"],
            expires_at=optional_time("expires_us"),
            retry=_decode_retry(row),
            attempts=row["attempts"] or 0,
            last_fired_at=optional_time("last_fired_us"),
            last_handled_at=optional_time("last_handled_us"),
            last_error=_decode_failure(row),
        )
        validate_reminder(record, times_checked=True)
    except Exception as error:
        # Any failure to decode one row makes that row undecodable, nothing more: a decoder
        # error of a kind not foreseen here must not stop every other reminder from loading.
        return UndecodableReminder(key, str(error) or type(error).__name__)
    return record
