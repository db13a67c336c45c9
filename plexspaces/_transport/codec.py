"""How messages between nodes become bytes, and bytes become messages again.

Two codecs come with the runtime:

- `"pickle"` (the default): any picklable object, at pickle's highest protocol. Unpickling runs
  code named by the data, so the subjects of a cluster are a trust boundary: whoever can publish
  on them can run code on every node. Only nodes you trust may reach the NATS server, with
  credentials and subject permissions that keep everyone else off `plexspaces.>`.
- `"json"`: JSON values only (dict with str keys, list, str, int, finite float, bool, None).
  Tuples are accepted and come back as lists; subclasses of those types come back as the base
  type. Anything else is refused when it is encoded, on the sending node, never on the receiving
  one.

A custom codec is a `Codec` subclass instance; `codec_named` accepts one as it is.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from typing import Any, Final

from .._errors import MessageDecodeError, MessageEncodeError
from .._store.codec import _find_non_json, json_text

__all__ = ["CODECS", "Codec", "JsonCodec", "PickleCodec", "codec_named"]


class Codec(ABC):
    """Turns messages into bytes and back. Both ends of a conversation must use the same codec.

    `encode` runs on the sending thread and raises `MessageEncodeError` (naming the message's
    type and the codec) for what it cannot carry; `decode` raises `MessageDecodeError`. Both
    must be safe to call from several threads at once.
    """

    name: str = ""
    """The codec's name, as `codec_named` takes it."""

    @abstractmethod
    def encode(self, obj: Any) -> bytes:
        """The bytes of `obj`."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """The object of `data`, as `encode` made it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _encode_error(obj: Any, codec: str, problem: object) -> MessageEncodeError:
    return MessageEncodeError(
        f"message of type {type(obj).__qualname__!r} cannot be encoded by the {codec} codec: "
        f"{problem}"
    )


class PickleCodec(Codec):
    """Any picklable object, at the highest pickle protocol. Decoding runs code: see the module
    docstring for the trust boundary."""

    name = "pickle"

    def encode(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as error:
            raise _encode_error(obj, self.name, error) from error

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as error:
            # Whatever unpickling raises (a missing class, truncated data) means the same to the
            # receiver: these bytes are not a message it can read.
            raise MessageDecodeError(
                f"{len(data)} bytes cannot be decoded by the pickle codec: "
                f"{type(error).__name__}: {error}"
            ) from error


class JsonCodec(Codec):
    """JSON values only; tuples come back as lists. Refuses NaN, infinities and dict keys that
    are not strings (JSON would turn `{1: "a"}` into `{"1": "a"}`)."""

    name = "json"

    def encode(self, obj: Any) -> bytes:
        problem = _find_non_json(obj, "message")
        if problem is not None:
            raise _encode_error(obj, self.name, f"{problem} (JSON-compatible values only)")
        try:
            return json_text(obj).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as error:  # a cycle, or too deep
            raise _encode_error(obj, self.name, error) from error

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise MessageDecodeError(
                f"{len(data)} bytes cannot be decoded by the json codec: {error}"
            ) from error


CODECS: Final[dict[str, Codec]] = {"pickle": PickleCodec(), "json": JsonCodec()}
"""The codecs that come with the runtime, by name."""


def codec_named(name_or_codec: str | Codec) -> Codec:
    """The codec called `name_or_codec` (`"pickle"` or `"json"`), or the `Codec` instance given.

    Raises:
        ValueError: an unknown name, or neither a name nor a `Codec`; the message lists the
            accepted names.
    """
    if isinstance(name_or_codec, Codec):
        return name_or_codec
    if isinstance(name_or_codec, str):
        codec = CODECS.get(name_or_codec)
        if codec is not None:
            return codec
    accepted = ", ".join(repr(name) for name in CODECS)
    raise ValueError(
        f"codec {name_or_codec!r} is not known; accepted are {accepted} or a "
        "plexspaces.Codec instance"
    )
