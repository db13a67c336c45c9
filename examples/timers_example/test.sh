#!/usr/bin/env bash
# Runs the timers example for 8 s and checks what it printed: each timer's first fire at its own
# delay, the fire counts, the one-shot removed after it fired, nothing left after stop, and
# lateness well below the intervals. Prints PASS or FAIL per check and exits non-zero if any check
# fails. Run from anywhere; creates or reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "timers_example: running for 8 s"
status=0
python -m examples.timers_example 8 2>&1 | tee "$output" || status=$?
echo

python - "$output" "$status" <<'PY'
"""Checks the example's output; counts are for an 8 s run (ticks due at 8 s included)."""

import ast
import re
import sys

from examples.output_check import OutputCheck

out = OutputCheck("timers_example", sys.argv[1], sys.argv[2], summary=False)
fires = re.compile(r"^ *(\d+\.\d\d)s  (\w+) +#(\d+) +handled (\d+\.\d) ms late$")
seen = [match.groups() for line in out.lines if (match := fires.match(line.rstrip("\n")))]

for name, first in (("heartbeat", "2.00"), ("cleanup", "5.00"), ("poll", "0.50")):
    own = [fire for fire in seen if fire[1] == name]
    out.check(f"{name} first due at {first} s", bool(own) and own[0][0] == first, f"got {own[:1]}")
    out.check(
        f"{name} counts run 1, 2, ...",
        [int(fire[2]) for fire in own] == list(range(1, len(own) + 1)),
        f"got {[fire[2] for fire in own]}",
    )
counts = {name: sum(1 for fire in seen if fire[1] == name) for name in ("heartbeat", "cleanup", "poll")}
# Heartbeat every 2 s: 2, 4, 6, 8. Poll every 500 ms: 16 ticks. One tick of slack each way for a
# loaded machine, none for the one-shot.
out.within("heartbeat fires", counts["heartbeat"], 3, 5)
out.equal("cleanup fires", counts["cleanup"], 1)
out.within("poll fires", counts["poll"], 14, 17)
reported = out.matching(r"^fired: ")
out.check(
    "the actor counted what it printed",
    len(reported) == 1 and ast.literal_eval(reported[0].removeprefix("fired: ")) == counts,
    f"got {reported}",
)
out.has_lines(
    "the one-shot is removed once fired; nothing is left after stop",
    [
        "registered: ['heartbeat', 'poll'] (the fired one-shot is gone)",
        "timer-actor stopping: its timers are cancelled with it",
        "after stop: actor found: False",
    ],
)
late = [float(fire[3]) for fire in seen]
out.check("every fire handled within 250 ms", bool(late) and max(late) < 250, f"max {max(late or [0])}")
out.equal("nothing warned or failed", out.matching(r"warning|error|Traceback"), [])

print()
out.finish()
PY
