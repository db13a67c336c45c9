#!/usr/bin/env bash
# Runs the reminders example twice on the real clock (about 12 s each) and checks what it printed:
#   1. the child is SIGKILLed 5 s after registering, between fires;
#   2. the child is SIGKILLed inside a handler (--crash-in-handler), before the fire is
#      acknowledged, so that fire must be delivered again after the restart.
# Checked from the printed lines: fire counts run 1, 2, 3, ... across the kill (billing goes on
# counting, a repeat only at the crash), sla-check fires exactly 3 times and is then gone, every
# fire is due exactly on its reminder's 2-second grid, the store holds the child's counts after
# the kill, and fires activate the deactivated account in both processes. Prints PASS or FAIL per
# check and exits non-zero if any check fails. Run from anywhere; creates or reuses .venv.
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
from datetime import datetime

from examples.output_check import OutputCheck

mode = sys.argv[3]
out = OutputCheck(f"reminders_example ({mode})", sys.argv[1], sys.argv[2], tag=f"[{mode}] ", summary=False)
check, equal = out.check, out.equal
NAMES = ("billing", "sla-check")


def seconds(text):
    moment = datetime.strptime(text, "%H:%M:%S.%f")
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


first_due = {}
for line in out.matching(r"^child   registered "):
    name, due = re.search(r"registered (\S+)\s+first due (\S+),", line).groups()
    first_due[name] = seconds(due)
equal("both reminders registered by the child", sorted(first_due), sorted(NAMES))

fires = []  # (process, name, count, due in seconds of the day)
for line in out.matching(r"^(child|parent)\s+\S+ #\d+ due "):
    process, name, count, due = re.match(r"^(\S+)\s+(\S+) #(\d+) due (\S+)", line).groups()
    fires.append((process, name, int(count), seconds(due)))


def counts(name, process=None):
    return [c for p, n, c, _ in fires if n == name and process in (None, p)]


check("the child was killed by SIGKILL", bool(out.matching(r"^parent  killed the child with SIGKILL; its exit status: -9$")))
for name in NAMES:
    child, parent = counts(name, "child"), counts(name, "parent")
    distinct = set(counts(name))
    check(f"{name}: fire counts 1..n without a gap", bool(distinct) and distinct == set(range(1, max(distinct) + 1)), f"got {counts(name)}")
    check(f"{name}: fired in the child before the kill", bool(child), f"got {child}")
    # At-least-once: a count may be handled twice, only the child's last one, again after the kill.
    repeats = sorted(c for c in distinct if counts(name).count(c) > 1)
    check(f"{name}: a repeat only at the kill", repeats in ([], [max(child, default=0)]) and len(repeats) <= 1 and all(counts(name).count(c) == 2 for c in repeats), f"repeats {repeats}")
    check(f"{name}: the new process never goes back before the kill", all(c >= max(child, default=0) for c in parent), f"child {child}, parent {parent}")
    stored = out.matching(rf"^parent  found in the store: {name} fire_count ")
    # The store holds the child's last handled count, or one more when the kill came after the
    # next fire was recorded (fires due within milliseconds are recorded together) and before
    # it was handled: then the new process delivers exactly that count first (at-least-once).
    stored_counts = [int(re.search(r"fire_count (\d+),", line)[1]) for line in stored]
    last = max(child, default=0)
    check(f"{name}: found in the store after the kill with the child's count (or its recorded next)", stored_counts == [last] or (stored_counts == [last + 1] and parent[:1] == [last + 1]), f"got {stored_counts}, child {child}, parent {parent}")
    late = [c for p, n, c, due in fires if n == name and abs(due - (first_due.get(name, 0) + 2 * (c - 1))) > 1e-6]
    equal(f"{name}: every fire due exactly on its 2-second grid", late, [])

equal("billing: counting went on after the kill (no reset to 1)", counts("billing", "parent")[-1:], [5])
equal("sla-check: exactly 3 distinct fires (max_count 3 across the kill)", sorted(set(counts("sla-check"))), [1, 2, 3])
check("at the end: billing listed with fire_count 5", bool(out.matching(r"^parent  at the end: billing fire_count 5, ")))
check("at the end: sla-check is no longer listed", bool(out.matching(r"^parent  at the end: not listed: sla-check$")))
for process in ("child", "parent"):
    check(f"{process}: a fire activated the deactivated account", bool(out.matching(rf"^{process}\s+\S+ #\d+ due .*\(it activated the account\)")))
check("child: the account deactivated between fires", bool(out.matching(r"^child   deactivated$")))

if mode == "timed":
    equal("child: billing fires", counts("billing", "child"), [1, 2])
    equal("child: sla-check fires", counts("sla-check", "child"), [1, 2])
    equal("parent: billing fires", counts("billing", "parent"), [3, 4, 5])
    equal("parent: sla-check fires", counts("sla-check", "parent"), [3])
else:
    check("child: crashed inside the handler of billing #2", bool(out.matching(r"^child   crashing inside the handler of billing #2$")))
    equal("child: billing fires", counts("billing", "child"), [1, 2])
    equal("parent: billing #2 delivered again, then 3, 4, 5", counts("billing", "parent"), [2, 3, 4, 5])
equal("nothing warned or failed", out.matching(r"warning|error|Traceback"), [])

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
