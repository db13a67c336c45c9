"""Every use of pykka beyond its public API, in one place.

The runtime hosts each actor on a `pykka.ThreadingActor` and uses pykka's public API for
everything it can (`ActorRef.tell/ask/stop/is_alive`, `Future`, `Timeout`, `ActorDeadError`).
A few things pykka offers no public way to do: keep the messages queued behind a failure for a
virtual actor's next activation, put them back in order, replace pykka's failure handling, read
a mailbox's depth. This module does them, and `tests/test_pykka_compat.py` pins each behaviour
below with real actors and threads, so a pykka release that changes one fails there, not deep in
the runtime.

Written against `PYKKA_REQUIREMENT` (the pin in pyproject.toml); each contract below was read in
the source of pykka 4.1.0 and 4.5.0, where it is the same.

What is relied on, and why:

1. `pykka._envelope.Envelope` (private): every message in an inbox is wrapped in one, with
   `message` and `reply_to` (the future an `ask(block=False)` returned, None for a `tell`).
   Envelopes drained from a failed virtual actor wait in its key's slot; `Envelope(message)`
   stands for a `tell` sent from an `on_stop`; an ask kept for the next activation is answered
   through its `reply_to`, or failed through `reply_to.set_exception` when that activation
   cannot start.
2. `pykka.messages._ActorStop` (private): `ActorRef.stop()` asks, and `Actor.stop()` tells, an
   instance of it. A stop request drained with the other messages is answered with None, which
   is what pykka itself does for one left in a stopped actor's inbox: the waiting
   `ActorRef.stop()` then returns True.
3. `Actor.actor_inbox` (documented, but pykka asks callers to use `tell`/`ask`): pykka uses
   only its `put`, `get` and `empty` (its `ActorInbox` protocol), first in, first out. It is
   made by `Actor._create_actor_inbox()` (private, a static method that pykka calls once per
   actor in `Actor.__init__`); `FailureHookActor` overrides it to make a `queue.SimpleQueue`
   instead of `ThreadingActor`'s `queue.Queue`, which also has `qsize`. Envelopes put back in
   are handled in order, before anything sent after them, exactly as if sent through a ref.
4. `Actor.actor_stopped` (documented, but pykka asks callers to use `stop()`): a
   `threading.Event`. Once set, `ActorRef.is_alive()` is False and `tell`/`ask` refuse with
   `ActorDeadError`; the actor loop checks it before taking each envelope and, once it is set,
   answers the asks left in the inbox with `ActorDeadError` and stop requests with None.
   Setting it from the failure hook under a virtual actor's lock closes the actor to new
   messages before the queued ones are drained. `Actor.__init__` makes it and hands the same
   object to the actor's `ActorRef` (as `ActorRef.actor_stopped`); pykka only ever calls its
   `set` and `is_set`, so `FailureHookActor` replaces it on both with a `Flag`, which has
   those (and `wait`) without an Event's lock, condition and waiter deque.
5. `pykka.ActorRegistry.unregister(ref)` (public): `Actor.start()` registers every actor;
   pykka's failure handler unregisters it, so a hook that replaces that handler does too.
   Unregistering an actor that is not registered is harmless.
6. `Actor._handle_failure(exc_type, exc_value, traceback)` (private), replaced by
   `FailureHookActor`: pykka calls it on the actor's thread when `on_start` raises an
   `Exception`, when `on_receive` raises during a `tell` (during an `ask` the exception goes to
   the asker instead and the actor goes on), and when `on_stop` raises during a stop. After it
   returns from a failed `tell`, pykka calls `on_failure` with the same exception; in every case
   it then goes on with the next envelope unless `actor_stopped` is set: ending the actor is the
   hook's job. pykka's own handler logs through stdlib `logging`, unregisters and sets
   `actor_stopped`. A `BaseException` that is not an `Exception` (`SystemExit`) from `on_start`
   is not caught there and would end the thread: the runtime calls the hook itself for it.
7. A stop request runs pykka's stop: unregister, set `actor_stopped`, then `on_stop` on the
   actor's thread, and only then answer the request. So within `on_stop` the actor is no longer
   alive (a `tell` from there is refused) and `ActorRef.stop(block=True)` returns after
   `on_stop` has returned.

8. An ask's `reply_to` is answered through the public `Future.set(value)`, or
   `Future.set_exception()` inside the `except` block of the handler's exception, on the
   actor's thread: `CallbackFuture` overrides both to pass the answer on to a callback (how an
   ask from another node is answered).

Private names are reached as attributes and marked `# noqa: SLF001`, as pykka marks its own;
the linter checks this module for private access (and only this module). The private names
the linter cannot see, the overridden `_create_actor_inbox` and `_handle_failure`, are declared
by `FailureHookActor`.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import pykka
import pykka._envelope
import pykka.messages

from ._flag import Flag

__all__ = [
    "PYKKA_REQUIREMENT",
    "CallbackFuture",
    "Envelope",
    "FailureHookActor",
    "answer_stop",
    "drain_inbox",
    "inbox_empty",
    "inbox_size",
    "is_stop_request",
    "mark_stopped",
    "put_if_alive",
    "requeue",
    "unregister",
]

PYKKA_REQUIREMENT = ">=4.1,<5"
"""The pykka versions whose behaviour this module states; pyproject.toml pins the same range."""

Envelope = pykka._envelope.Envelope  # noqa: SLF001
"""pykka's wrapper of one message in an inbox: `message`, and `reply_to` (a future, or None)."""

_STOP_MESSAGE: type[Any] = pykka.messages._ActorStop  # noqa: SLF001
"""The class of pykka's stop request message (bound at import, so a rename fails at once)."""


def is_stop_request(envelope: Envelope[Any]) -> bool:
    """Whether `envelope` is a stop request (from `ActorRef.stop()` or `Actor.stop()`)."""
    return isinstance(envelope.message, _STOP_MESSAGE)


def answer_stop(envelope: Envelope[Any]) -> None:
    """Answer a stop request taken out of an inbox: its `ActorRef.stop()` returns True."""
    if envelope.reply_to is not None:
        envelope.reply_to.set(None)


def inbox_empty(actor: pykka.Actor) -> bool:
    """Whether nothing waits in `actor`'s inbox (it may change right after)."""
    return actor.actor_inbox.empty()


def inbox_size(actor: FailureHookActor) -> int:
    """How many envelopes wait in `actor`'s inbox (a `queue.SimpleQueue`, see item 3)."""
    return cast("queue.SimpleQueue[Envelope[Any]]", actor.actor_inbox).qsize()


def drain_inbox(actor: pykka.Actor) -> list[Envelope[Any]]:
    """Take every envelope out of `actor`'s inbox, in order.

    Called on the actor's own thread (the inbox's only reader) once `mark_stopped` has closed
    it to senders, so `get` never blocks here.
    """
    inbox = actor.actor_inbox
    drained: list[Envelope[Any]] = []
    while not inbox.empty():
        drained.append(inbox.get())
    return drained


def requeue(actor: pykka.Actor, envelope: Envelope[Any]) -> None:
    """Put `envelope` into `actor`'s inbox, behind what is there, as if sent through a ref; an
    ask's `reply_to` is answered by this actor."""
    actor.actor_inbox.put(envelope)


def put_if_alive(actor: pykka.Actor, envelope: Envelope[Any]) -> None:
    """`requeue` for a sender: refused with `ActorDeadError`, as `tell` refuses, once the actor
    is stopped (so an ask with a future of the sender's own reaches only a live actor)."""
    if actor.actor_stopped.is_set():
        raise pykka.ActorDeadError(f"{actor} stopped")
    actor.actor_inbox.put(envelope)


class CallbackFuture(pykka.ThreadingFuture[Any]):
    """A future that calls `callback(value, None)` or `callback(None, exception)` when it is
    set: the `reply_to` of an ask whose answer goes somewhere other than a waiting thread.

    pykka's actor loop answers an ask through `reply_to.set(result)`, or
    `reply_to.set_exception()` inside the `except` block of the handler's exception (item 8);
    both are public methods of `pykka.Future`. The callback runs on the thread that sets it.
    """

    def __init__(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        super().__init__()
        self._callback = callback

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._callback(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        super().set_exception(exc_info)
        error = exc_info[1] if exc_info[1] is not None else exc_info[0]()
        self._callback(None, error)


def mark_stopped(actor: pykka.Actor) -> None:
    """Close `actor` to new messages and end its loop after the current envelope.

    From then on `is_alive()` is False and `tell`/`ask` raise `ActorDeadError`; the asks still
    in the inbox are answered with `ActorDeadError` when the loop ends, unless drained first.
    """
    actor.actor_stopped.set()


def unregister(actor_ref: pykka.ActorRef[Any]) -> None:
    """Remove `actor_ref` from pykka's registry, as pykka's failure handler does (harmless if it
    is not registered)."""
    pykka.ActorRegistry.unregister(actor_ref)


class FailureHookActor(pykka.ThreadingActor):
    """A `ThreadingActor` with a lighter inbox, whose unhandled failures go to
    `on_unhandled_failure`.

    pykka's hooks for these are the private `Actor._create_actor_inbox` and
    `Actor._handle_failure` (see items 3 and 6 of the module docstring for their contract in
    pykka 4.1-4.5); overriding them here keeps their names out of the rest of the code. Its
    `actor_stopped` is a `Flag` rather than an Event (item 4).
    """

    def __init__(self) -> None:
        super().__init__()
        # An Event is about 1.2 KB (lock, condition, waiter deque) that nobody waits on; the
        # one pykka made here is dropped at once. The actor and its ref must share the flag.
        stopped = cast("threading.Event", Flag())
        self.actor_stopped = stopped
        self.actor_ref.actor_stopped = stopped

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Envelope[Any]]:
        # `ThreadingActor`'s inbox is a `queue.Queue`: a lock, three conditions and a deque of
        # items, about 3.9 KB per actor before any message, as much as the rest of an idle actor
        # together. A `SimpleQueue` is one C object with one lock; it has everything an inbox
        # needs (put, blocking get, empty, qsize) and no bounded size or `join`, which pykka
        # never uses.
        return queue.SimpleQueue()

    def _handle_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.on_unhandled_failure(exc_type, exc_value, traceback)

    def on_unhandled_failure(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Runs on the actor's thread when `on_start`, `on_receive` handling a `tell`, or
        `on_stop` raises.

        An override ends the actor itself (`unregister`, then `mark_stopped`), or pykka goes on
        with the next message. The default is pykka's own handling: log through stdlib
        `logging`, unregister, mark stopped.
        """
        super()._handle_failure(exc_type, exc_value, traceback)
