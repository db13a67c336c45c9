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
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

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

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "decode_payload",
    "encode_payload",
    "json_text",
    "stored_payload",
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
    return _encode(key, payload)[0]


def _encode(key: ReminderKey, payload: Any) -> tuple[str, bool]:
    """`encode_payload`, and whether `payload` is flat (see `_is_flat`)."""
    flat = _is_flat(payload)
    if flat:
        # Scalars, or one short list or str-keyed dict of them (most payloads): nothing to
        # measure or hunt for, JSON writes them as they are; only the size is left to check.
        text = json_text(payload)
    else:
        shape = _measure(payload)
        if shape is not None:
            raise ValueError(f"payload of reminder {key} {shape}")
        try:
            text = json_text(payload)
        except (TypeError, ValueError, RecursionError) as error:
            problem = _find_non_json(payload) or str(error)
            raise ValueError(
                f"payload of reminder {key} is not JSON (dict with str keys, list, str, int, "
                f"finite float, bool, None): {problem}"
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
    return text, flat


def stored_payload(key: ReminderKey, payload: Any) -> tuple[str, Any]:
    """`encode_payload(key, payload)`, and the value a store will hand back for it (tuples
    become lists; a copy, so changing `payload` later changes nothing stored).

    Raises:
        ValueError: as `encode_payload`.
    """
    text, flat = _encode(key, payload)
    if not flat:
        return text, json.loads(text)
    if type(payload) is dict:
        return text, dict(payload)
    if type(payload) in (list, tuple):
        return text, list(payload)
    return text, payload  # a scalar


# Types JSON writes and reads back as the same value (a float only when finite).
_SCALARS: Final = frozenset({str, int, bool, float, type(None)})
# The longest list or dict `_is_flat` takes without measuring it.
_FLAT_ITEMS: Final = 64


def _is_flat(payload: Any) -> bool:
    """Whether `payload` is a scalar, or a short list, tuple or str-keyed dict of scalars: what
    JSON carries back unchanged (a tuple as a list) without a walk of the value."""
    kind = type(payload)
    if kind is dict:
        if len(payload) > _FLAT_ITEMS:
            return False
        for item_key, item in payload.items():
            if type(item_key) is not str or not _is_scalar(item):
                return False
        return True
    if kind is list or kind is tuple:
        return len(payload) <= _FLAT_ITEMS and all(map(_is_scalar, payload))
    return _is_scalar(payload)


def _is_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    return kind in _SCALARS


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
    # Runs once per row written: equal times (due and anchor, created and updated, as a new
    # registration has them) are converted once, and unset optional fields cost a test each.
    due_at, anchor_at = record.due_at, record.anchor_at
    due_us = to_micros(due_at)
    created_at, updated_at = record.created_at, record.updated_at
    created_us = to_micros(created_at)
    pending_at, claimed_until = record.pending_scheduled_at, record.claimed_until
    expires_at, fired_at, handled_at = (
        record.expires_at,
        record.last_fired_at,
        record.last_handled_at,
    )
    retry, error, key = record.retry, record.last_error, record.key
    return {
        "actor_type": key.actor_type,
        "actor_key": key.actor_key,
        "name": key.name,
        "due_us": due_us,
        "anchor_us": due_us if anchor_at is due_at else to_micros(anchor_at),
        "period_us": None if record.period is None else record.period // _ONE_MICROSECOND,
        "max_count": record.max_count,
        "fire_count": record.fire_count,
        "missed": record.missed,
        "payload": payload,
        "pending_fire": record.pending_fire,
        "pending_scheduled_us": None if pending_at is None else to_micros(pending_at),
        "finished": record.finished,
        "claimed_by": record.claimed_by,
        "claimed_until_us": None if claimed_until is None else to_micros(claimed_until),
        "created_us": created_us,
        "updated_us": created_us if updated_at is created_at else to_micros(updated_at),
        "bucket": _bucket(key.actor_type, key.actor_key),
        "cron": record.cron,
        "tz": record.tz,
        "expires_us": None if expires_at is None else to_micros(expires_at),
        "retry_max_attempts": None if retry is None else retry.max_attempts,
        "retry_backoff_us": None if retry is None else retry.backoff_delta // _ONE_MICROSECOND,
        "retry_max_backoff_us": (
            None if retry is None else retry.max_backoff_delta // _ONE_MICROSECOND
        ),
        "attempts": record.attempts or None,
        "last_fired_us": None if fired_at is None else to_micros(fired_at),
        "last_handled_us": None if handled_at is None else to_micros(handled_at),
        "last_error_type": None if error is None else error.type,
        "last_error_text": None if error is None else error.text,
    }


@lru_cache(maxsize=4096)
def _bucket(actor_type: str, actor_key: str) -> int:
    """`bucket_of`, remembered for the actors written lately (a batch is often one actor's)."""
    return bucket_of(actor_type, actor_key)


def _decode_retry(values: Sequence[Any]) -> RetryPolicy | None:
    backoff, longest = values[_AT["retry_backoff_us"]], values[_AT["retry_max_backoff_us"]]
    attempts = values[_AT["retry_max_attempts"]]
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


def _decode_failure(values: Sequence[Any]) -> FireFailure | None:
    kind, text = values[_AT["last_error_type"]], values[_AT["last_error_text"]]
    if kind is None and text is None:
        return None
    return FireFailure(str(kind), "" if text is None else str(text))


ROW_COLUMNS: Final = (
    "actor_type",
    "actor_key",
    "name",
    "due_us",
    "anchor_us",
    "period_us",
    "max_count",
    "fire_count",
    "missed",
    "payload",
    "pending_fire",
    "pending_scheduled_us",
    "finished",
    "claimed_by",
    "claimed_until_us",
    "created_us",
    "updated_us",
    "bucket",
    "cron",
    "tz",
    "expires_us",
    "retry_max_attempts",
    "retry_backoff_us",
    "retry_max_backoff_us",
    "attempts",
    "last_fired_us",
    "last_handled_us",
    "last_error_type",
    "last_error_text",
)
"""The columns of the reminder table, in the table's order: what `_decode_values` reads."""

_AT: Final = {column: index for index, column in enumerate(ROW_COLUMNS)}
# The columns that are NULL on a reminder with no calendar, expiry, failure policy, history,
# pending fire or claim (most rows after a restart): one slice to test before decoding each.
_OPTIONAL_FIRST: Final = _AT["cron"]
_OPTIONAL_LAST: Final = _AT["last_error_text"]


def _decode_row(row: Mapping[Any, Any]) -> StoredReminder | UndecodableReminder:
    """The record of one row of the reminder table, given as a mapping of its columns; an
    `UndecodableReminder` (never an exception) when it does not decode."""
    return _decode_values(tuple(row[column] for column in ROW_COLUMNS))


def _decode_values(
    values: Sequence[Any], times: dict[int, datetime] | None = None
) -> StoredReminder | UndecodableReminder:
    """`_decode_row` of the row's values in `ROW_COLUMNS` order (a row of a statement that
    selects the table's columns first). `times` shares equal times between the rows of one page.

    A service may hold a hundred thousand decoded rows at once (after a restart with many
    overdue): actor types and keys are shared between the rows of one actor (interned), and
    equal times (due and anchor, created and updated, rows written together) are one object.
    """
    (
        actor_type,
        actor_key,
        name,
        due_us,
        anchor_us,
        period_us,
        max_count,
        fire_count,
        missed,
        payload_text,
        pending_fire,
        pending_us,
        finished,
        claimed_by,
        claimed_until_us,
        created_us,
        updated_us,
    ) = values[: _AT["bucket"]]
    key = ReminderKey(sys.intern(str(actor_type)), sys.intern(str(actor_key)), str(name))
    if times is None:
        times = {}

    def time(micros: Any, column: str) -> datetime:
        found = times.get(micros) if type(micros) is int else None
        if found is None:
            try:
                found = from_micros(micros)
            except ValueError as error:
                raise ValueError(f"{column}: {error}") from None
            times[micros] = found
        return found

    try:
        if period_us is not None and (
            isinstance(period_us, bool) or not isinstance(period_us, int) or period_us <= 0
        ):
            raise ValueError(f"period_us {period_us!r} is not a positive number of microseconds")
        try:
            payload = decode_payload(payload_text)
        except json.JSONDecodeError as error:
            raise ValueError(f"payload is not valid JSON: {error}") from None
        common = (
            key,
            time(due_us, "due_us"),
            time(anchor_us, "anchor_us"),
            None if period_us is None else timedelta(microseconds=period_us),
            max_count,
            fire_count,
            missed,
            payload,
            pending_fire,
            None if pending_us is None else time(pending_us, "pending_scheduled_us"),
            finished,
            claimed_by,
            None if claimed_until_us is None else time(claimed_until_us, "claimed_until_us"),
            time(created_us, "created_us"),
            time(updated_us, "updated_us"),
        )
        attempts = values[_AT["attempts"]] or 0
        optional = values[_OPTIONAL_FIRST : _OPTIONAL_LAST + 1]
        if optional.count(None) == len(optional):
            record = StoredReminder(*common, attempts=attempts)
        else:

            def optional_time(column: str) -> datetime | None:
                micros = values[_AT[column]]
                return None if micros is None else time(micros, column)

            record = StoredReminder(
                *common,
                cron=values[_AT["cron"]],
                tz=values[_AT["tz"]],
                expires_at=optional_time("expires_us"),
                retry=_decode_retry(values),
                attempts=attempts,
                last_fired_at=optional_time("last_fired_us"),
                last_handled_at=optional_time("last_handled_us"),
                last_error=_decode_failure(values),
            )
        validate_reminder(record, times_checked=True)
    except Exception as error:
        # Any failure to decode one row makes that row undecodable, nothing more: a decoder
        # error of a kind not foreseen here must not stop every other reminder from loading.
        return UndecodableReminder(key, str(error) or type(error).__name__)
    return record
