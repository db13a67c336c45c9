"""The contract's quick-start example, end to end."""

from __future__ import annotations

from facets.timer import TimerFacet
from plexspaces import Actor, ActorSystem, ManualClock, TimerFired


class Heartbeat(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_start(self) -> None:
        self.attach_facet(TimerFacet(), priority=50, config={})
        timer = self.ctx.facet_service.get_facet(self.ctx.actor_id, "timer")
        timer.register_periodic("heartbeat", "2s")

    def on_receive(self, message: object) -> object:
        match message:
            case TimerFired(timer_name="heartbeat"):
                self.count += 1
            case "count":
                return self.count
        return None


def test_quick_start_heartbeat_counts_on_manual_clock(
    system: ActorSystem, clock: ManualClock
) -> None:
    """The DESIGN.md quick start: a 2 s heartbeat fires once per 2 s of virtual time."""
    ref = system.spawn(Heartbeat, actor_id="timer-actor")
    ref.tell("hello")
    assert ref.ask("count", timeout=1.0) == 0
    clock.advance("1999ms")
    assert ref.ask("count", timeout=1.0) == 0
    clock.advance("1ms")
    assert ref.ask("count", timeout=1.0) == 1
    clock.advance("6s")
    assert ref.ask("count", timeout=1.0) == 4
