"""The documented idioms type-check under `mypy --strict`: attaching a facet returns the facet's
own type, from inside an actor and through a ref."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TYPED = textwrap.dedent(
    """
    from typing import Any

    from facets.reminder import ReminderFacet
    from facets.timer import TimerFacet
    from plexspaces import Actor, ActorSystem, TimerFired


    class Heartbeat(Actor):
        def on_start(self) -> None:
            self.attach_facet(TimerFacet()).register_periodic("heartbeat", "2s")

        def on_receive(self, message: Any) -> Any:
            match message:
                case TimerFired(timer_name="heartbeat"):
                    return self.facet(TimerFacet).list_timers()
                case "poll":
                    self.facet_or_attach(TimerFacet).register_periodic("poll", "1s")
            return None


    def outside(system: ActorSystem) -> None:
        ref = system.spawn(Heartbeat)
        timers: TimerFacet = ref.attach_facet(TimerFacet, priority=50, config={})
        timers.unregister_timer("heartbeat")
        system.virtual("order", "ord-1").attach_facet(ReminderFacet()).list_reminders()
    """
)


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "typed_actor.py"
    path.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_the_attach_facet_one_liner_passes_mypy_strict(tmp_path: Path) -> None:
    """`self.attach_facet(TimerFacet()).register_periodic(...)` and its forms through a ref
    type-check under --strict."""
    done = _mypy(tmp_path, TYPED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_attach_facet_is_typed_as_the_facet_passed(tmp_path: Path) -> None:
    """What attach_facet returns is the facet's own type, so a wrong use is caught."""
    wrong = (
        TYPED
        + "\n\ndef wrong(actor: Heartbeat) -> int:\n    return actor.attach_facet(TimerFacet())\n"
    )
    done = _mypy(tmp_path, wrong)
    assert done.returncode != 0
    assert 'Incompatible return value type (got "TimerFacet", expected "int")' in done.stdout
