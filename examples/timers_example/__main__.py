"""Timers example: a heartbeat, a one-shot cleanup and a fast poll on one actor.

Usage: python -m examples.timers_example [SECONDS]   (how long the timers run; default 8)

The actor attaches `TimerFacet` in `on_start` and registers three timers:

1. "heartbeat": periodic, every 2 s (first fire at 2 s);
2. "cleanup": one-shot, after 5 s (then removed);
3. "poll": periodic, every 500 ms.

Each fire arrives in the actor's mailbox as a typed `TimerFired` message; the actor prints when it
was due (from the start) and how late it was handled. At the end the program asks the actor what
fired and which timers are still registered, stops it (its timers go with it) and shuts down.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

from facets.timer import TimerFacet
from plexspaces import Actor, ActorSystem, TimerFired


class TimerActor(Actor):
    """Registers the three timers and counts what fires."""

    def __init__(self, started: datetime) -> None:
        super().__init__()
        self.started = started
        self.fires: dict[str, int] = {}

    def on_start(self) -> None:
        # Timers are opt-in: an actor has none until a TimerFacet is attached.
        timers = self.attach_facet(TimerFacet())
        timers.register_periodic("heartbeat", "2s")
        timers.register_one_shot("cleanup", "5s")
        timers.register_periodic("poll", "500ms")

    def on_receive(self, message: Any) -> Any:
        match message:
            case TimerFired(timer_name=name, fire_count=count, scheduled_at=due):
                self.fires[name] = self.fires.get(name, 0) + 1
                at = (due - self.started).total_seconds()
                late_ms = (self.ctx.clock.now() - due).total_seconds() * 1000
                print(f"{at:5.2f}s  {name:<9} #{count:<2}  handled {late_ms:.1f} ms late")
            case "fires":
                return dict(sorted(self.fires.items()))
            case "timers":
                return [timer.name for timer in self.facet(TimerFacet).list_timers()]
        return None

    def on_stop(self) -> None:
        print("timer-actor stopping: its timers are cancelled with it")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    seconds = float(args[0]) if args else 8.0
    # Timers live in memory: the system opens no database for them.
    with ActorSystem() as system:
        ref = system.spawn(TimerActor, system.clock.now(), actor_id="timer-actor")
        time.sleep(seconds + 0.25)  # the timers run in real time; a little extra for the last tick
        print(f"fired: {ref.ask('fires')}")
        print(f"registered: {sorted(ref.ask('timers'))} (the fired one-shot is gone)")
        ref.stop()
        print(f"after stop: actor found: {system.lookup('timer-actor') is not None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
