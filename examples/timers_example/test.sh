#!/usr/bin/env bash
# Runs the timers example for 8 s and checks what it printed: the SUMMARY line (fire counts, clean-up
# after stop, lateness) and the log lines of the fires. Prints PASS or FAIL per check and exits
# non-zero if any check fails. Run from anywhere; creates or reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

duration=8
output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "timers_example: running for ${duration} s"
status=0
python -m examples.timers_example --duration "$duration" 2>&1 | tee "$output" || status=$?
echo

python - "$output" "$status" <<'PY'
"""Checks the example's output; counts are for an 8 s run (ticks due at 8 s included)."""

import re
import sys

from examples.output_check import OutputCheck

out = OutputCheck("timers_example", sys.argv[1], sys.argv[2])
check, lines, summary, within = out.check, out.lines, out.summary, out.within

# Heartbeat every 2 s: 2, 4, 6, 8. Poll every 500 ms: 16 ticks. One slot of slack each way for a
# loaded machine, none for the one-shot.
within("heartbeat fires", summary.get("heartbeat"), 3, 5)
check("cleanup fired exactly once", summary.get("cleanup") == 1, f"got {summary.get('cleanup')!r}")
within("poll fires", summary.get("poll"), 14, 17)
check("one-shot removed after firing", summary.get("one_shot_removed") is True)
check(
    "no timers listed after stop",
    summary.get("timers_after_stop") == 0,
    f"got {summary.get('timers_after_stop')!r}",
)
check(
    "no scheduler entries armed after stop",
    summary.get("scheduler_armed_after_stop") == 0,
    f"got {summary.get('scheduler_armed_after_stop')!r}",
)
check("actor id free after stop", summary.get("id_free_after_stop") is True)
check("example reported no problems", summary.get("problems") == [], f"{summary.get('problems')!r}")
p99 = (summary.get("lateness_ms") or {}).get("p99")
check(
    "lateness p99 below 250 ms",
    isinstance(p99, (int, float)) and 0 <= p99 < 250,
    f"got {p99!r}",
)

# The log shows each scenario registered with its own first-fire delay...
delays = {"heartbeat": 2000, "cleanup": 5000, "poll": 500}
for name, delay in delays.items():
    pattern = re.compile(rf"timer\.registered .*first_fire_in_ms={delay}\b.*\btimer={name}\b")
    check(
        f"log: {name} registered, first fire in {delay} ms",
        any(pattern.search(line) for line in lines),
    )
# ...and one `timer.fired` line per handled fire, matching the SUMMARY counts.
for name in delays:
    pattern = re.compile(rf"timer\.fired .*\btimer={name}\b")
    logged = sum(1 for line in lines if pattern.search(line))
    expected = summary.get(name)
    check(
        f"log: {name} timer.fired lines match the count",
        isinstance(expected, int) and logged == expected and logged > 0,
        f"{logged} lines, SUMMARY says {expected!r}",
    )

print()
out.finish()
PY
