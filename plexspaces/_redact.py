"""Keeping database passwords out of everything the runtime shows: log lines, tracebacks,
exception messages and the command line's output.

A storage URL may carry a password (`postgresql+psycopg://app:secret@db/prod`). The runtime
shows such a URL only through `shown_url`, which hides the password even when the URL cannot be
parsed, and the logging set-up runs every event (and every rendered traceback) through
`redact_text`, which hides the password of any URL written in the text.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any, Final

__all__ = ["HIDDEN", "quoted_url", "redact_event", "redact_text", "shown_url"]

HIDDEN: Final = "***"
"""What a password is replaced with; the same mask SQLAlchemy uses."""

# `scheme://user:password@`: the password runs to the first '@', as SQLAlchemy parses it. A
# password with a space or a line break ends the match early only if it has no '@' after it,
# and then nothing of the URL's authority is shown anyway.
_URL_PASSWORD: Final = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<password>[^@\n]*)@"
)
# A NATS URL carries a token as its whole user part (`nats://s3cr3t@host:4222`): with no ':' in
# it, the user part of a NATS URL is a secret as a whole.
_URL_TOKEN: Final = re.compile(r"(?P<head>\b(?:nats|tls|ws|wss)://)(?P<token>[^:/?#@\s]+)@")


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it (`scheme://user:password@host`) replaced by
    `***`, and the token of every NATS URL (`nats://token@host`) too."""
    if "@" not in text:
        return text
    text = _URL_PASSWORD.sub(rf"\g<head>:{HIDDEN}@", text)
    return _URL_TOKEN.sub(rf"\g<head>{HIDDEN}@", text)


def shown_url(url: object) -> str:
    """A storage URL as it may be shown: its password hidden, parsable or not.

    A URL SQLAlchemy parses is rendered by SQLAlchemy with the password hidden. Anything else
    (a leading space, a missing scheme, a typo) is shown with everything before its last '@'
    hidden when there is one (it may be `user:password`), so a malformed URL cannot carry its
    password into an error message.
    """
    if not isinstance(url, str):
        return redact_text(repr(url))  # a SQLAlchemy URL's repr hides its password itself
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        pass
    redacted = redact_text(url)
    if redacted != url or "@" not in url:
        return redacted
    scheme, separator, rest = url.rpartition("://")
    if separator and "@" in rest:
        return f"{scheme}://{HIDDEN}@{rest.rpartition('@')[2]}"
    return f"{HIDDEN}@{url.rpartition('@')[2]}"


def quoted_url(url: object) -> str:
    """`shown_url` quoted as `repr` quotes a string (any other value as its redacted `repr`), for
    error messages that name the value at fault."""
    return repr(shown_url(url)) if isinstance(url, str) else shown_url(url)


def redact_event(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A structlog processor: every string value of the event (the rendered `exception`
    included) with URL passwords hidden, and any other value rendered through `repr` and then
    redacted, so a password reaches no log line through a value either."""
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif value is None or isinstance(value, bool | int | float):
            continue
        else:
            text = repr(value)
            redacted = redact_text(text)
            if redacted != text:
                event_dict[key] = redacted
    return event_dict
