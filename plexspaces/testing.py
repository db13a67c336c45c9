"""Helpers for testing actors (the pytest fixtures in `plexspaces.pytest_plugin` use them).

```python
from plexspaces.testing import wait_until_drained

ref.tell("work")
wait_until_drained(ref)          # every message sent before has been handled
```
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Final

import pykka

from ._actor import _Control
from ._duration import Duration, duration_seconds
from ._errors import AskTimeoutError
from ._ref import ActorRef, VirtualActorRef

__all__ = ["TEST_START", "leaked_threads", "wait_until_drained"]

TEST_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
"""Where the `manual_clock` fixture starts: a fixed instant, so tests see the same times on every
run."""


def wait_until_drained(ref: ActorRef, timeout: Duration = 5.0) -> None:
    """Return once the actor has handled every message sent to it before this call.

    Works for spawned and virtual refs; an actor that is not running (stopped, or a virtual actor
    not active now) has nothing to drain. Interceptors never see the marker this sends.

    Raises:
        AskTimeoutError: the messages were not handled within `timeout`.
    """
    seconds = duration_seconds(timeout)
    cell = ref._system._activation(ref) if isinstance(ref, VirtualActorRef) else ref._cell
    if cell is None or not cell.actor_ref.is_alive():
        return
    if cell.thread is threading.current_thread():
        raise AskTimeoutError(
            f"actor {ref.actor_id!r} cannot wait for its own mailbox to drain from its handler"
        )
    future = cell.actor_ref.ask(_Control(lambda: None), block=False)
    try:
        future.get(timeout=seconds)
    except pykka.Timeout:
        raise AskTimeoutError(
            f"actor {ref.actor_id!r} did not drain its mailbox within {timeout!r}"
        ) from None
    except Exception:
        # The actor stopped meanwhile: whatever was queued is gone with it.
        if cell.actor_ref.is_alive():
            raise


def leaked_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads alive now that were not in `before`."""
    return [
        thread for thread in threading.enumerate() if thread not in before and thread.is_alive()
    ]
