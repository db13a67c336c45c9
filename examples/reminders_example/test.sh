#!/usr/bin/env bash
# Runs the reminders example twice on the real clock (about 12 s each) and checks what it printed:
#   1. the child is SIGKILLed 5 s after registering, between fires;
#   2. the child is SIGKILLed inside a handler (--crash-in-handler), before the fire is
#      acknowledged, so that fire must be delivered again after the restart.
# The checks read the SUMMARY line (the fire counts each process handled, what the store held after
# the crash, what is listed at the end) and the log. Prints PASS or FAIL per check and exits
# non-zero if any check fails. Run from anywhere; creates or reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

failed=0
run_and_check() {
    local mode="$1"; shift
    echo "reminders_example ($mode): running"
    local status=0
    python -m examples.reminders_example "$@" 2>&1 | tee "$output" || status=$?
    echo
    python - "$output" "$status" "$mode" <<'PY' || failed=1
"""Checks one run's output. Mode "timed" or "crash-in-handler"."""

import re
import sys

from examples.output_check import OutputCheck

mode = sys.argv[3]
out = OutputCheck(f"reminders_example ({mode})", sys.argv[1], sys.argv[2], tag=f"[{mode}] ")
check, lines, summary = out.check, out.lines, out.summary

child = summary.get("child") or {}
parent = summary.get("parent") or {}
check("child ended by SIGKILL (return code -9)", child.get("returncode") == -9, f"got {child.get('returncode')!r}")
check("two different processes", child.get("pid") not in (None, parent.get("pid")))
check("the run was in the expected mode", summary.get("mode") == mode, f"got {summary.get('mode')!r}")


def fires(phase, name):
    return list(((phase.get("fires") or {}).get(name)) or [])


for name in ("billing", "sla-check"):
    before, after = fires(child, name), fires(parent, name)
    every = before + after
    distinct = sorted(set(every))
    check(
        f"{name}: fire counts contiguous from 1, no gaps",
        bool(distinct) and distinct == list(range(1, max(distinct) + 1)),
        f"child {before}, parent {after}",
    )
    check(f"{name}: fired in the child before the crash", bool(before), f"got {before}")
    check(f"{name}: fired in the new process after the crash", bool(after), f"got {after}")
    # At-least-once: a count may be handled twice, only at the crash boundary: the child's last
    # fire delivered again, once, to the new process.
    check(
        f"{name}: no repeat inside one process",
        len(set(before)) == len(before) and len(set(after)) == len(after),
    )
    repeated = sorted(set(before) & set(after))
    check(
        f"{name}: only the child's last fire may repeat after the restart",
        all(count == max(before) for count in repeated),
        f"repeated {repeated}",
    )
    check(
        f"{name}: the new process never goes back before the crash",
        bool(after) and bool(before) and min(after) >= max(before),
        f"child {before}, parent {after}",
    )
    check(f"{name}: handled in order", every == sorted(every), f"got {every}")

billing_child, billing_parent = fires(child, "billing"), fires(parent, "billing")
check(
    "billing: count kept growing across the crash (no reset to 1)",
    bool(billing_parent) and max(billing_parent) > max(billing_child or [0]) and 1 not in billing_parent,
    f"child {billing_child}, parent {billing_parent}",
)
billing_max = max(billing_child + billing_parent or [0])
check("billing: 4 to 5 fires in 11.5 s (ticks at 2, 4, ... 10 s)", 4 <= billing_max <= 5, f"got {billing_max}")

sla = fires(child, "sla-check") + fires(parent, "sla-check")
check("sla-check: exactly fire counts 1, 2, 3 in total", sorted(set(sla)) == [1, 2, 3], f"got {sla}")
check("sla-check: never above max_count 3", all(count <= 3 for count in sla), f"got {sla}")

# The store kept both reminders, with their counts, through the SIGKILL...
persisted = summary.get("persisted_at_restart") or {}
for name in ("billing", "sla-check"):
    kept = persisted.get(name) or {}
    check(
        f"{name}: found in the store after the crash with the child's count",
        kept.get("fire_count", -1) >= max(fires(child, name) or [0]) > 0,
        f"stored {kept!r}, child handled {fires(child, name)}",
    )
check("sla-check: stored with max_count 3", (persisted.get("sla-check") or {}).get("max_count") == 3)
# ...and the new process fired them without registering them again: a registration at restart
# would have moved them off the 2-second grid of the child's registration.
due = summary.get("due_s") or {}
grid = all(isinstance(t, (int, float)) and t > 0 and t % 2 == 0 for ts in due.values() for t in ts)
check("every fire due on the child's 2 s grid (never re-registered)", grid and bool(due), f"got {due}")
check("example confirms the grid", summary.get("on_phase") is True)

final = summary.get("final_reminders") or {}
check("at the end only billing is listed (sla-check deleted)", sorted(final) == ["billing"], f"got {sorted(final)}")
check(
    "billing listed with its last fire count",
    (final.get("billing") or {}).get("fire_count") == billing_max,
    f"got {final.get('billing')!r}, last fire {billing_max}",
)

# Deactivation between fires, and activation by a fire, in both processes.
check("child: the account deactivated between fires", child.get("deactivations", 0) >= 1)
check("child: a fire activated the deactivated account", child.get("woken_by_fire", 0) >= 1)
check("parent: a fire activated the account", parent.get("woken_by_fire", 0) >= 1)

duplicates = summary.get("duplicates")
if mode == "crash-in-handler":
    check(
        "the fire killed in its handler was delivered again with the same count",
        duplicates == [{"name": "billing", "fire_count": 2, "phases": ["child", "parent"]}],
        f"got {duplicates!r}",
    )
    check("the child died in the handler of billing fire 2", fires(child, "billing")[-1:] == [2])
else:
    check(
        "child killed about 5 s after registering",
        isinstance(child.get("killed_after_s"), (int, float)) and 4.9 <= child["killed_after_s"] < 5.9,
        f"got {child.get('killed_after_s')!r}",
    )
check("example reported no problems", summary.get("problems") == [], f"{summary.get('problems')!r}")

# The log: one journal.fired line per delivery, and the kill.
fired_lines = [line for line in lines if re.search(r"journal\.fired ", line)]
deliveries = sum((summary.get("deliveries") or {}).values())
check("log: one journal.fired line per delivery", len(fired_lines) == deliveries > 0, f"{len(fired_lines)} lines, {deliveries} deliveries")
check("log: child.killed with SIGKILL", any(re.search(r"child\.killed .*signal=SIGKILL", line) for line in lines))

print()
out.finish()
PY
    echo
}

run_and_check timed
run_and_check crash-in-handler --crash-in-handler

if [ "$failed" -ne 0 ]; then
    echo "reminders_example: FAILED"
    exit 1
fi
echo "reminders_example: all checks passed"
