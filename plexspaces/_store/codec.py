"""How the reminder store writes records down, and reads them back.

A payload is stored as JSON text, strictly both ways: `encode_payload` refuses what would not come
back as it went in, and `decode_payload` refuses what `encode_payload` would have refused.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from .records import ReminderKey

__all__ = ["decode_payload", "encode_payload"]


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
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
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
