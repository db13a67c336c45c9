#!/usr/bin/env bash
# Runs the subscription-renewal example and checks what it printed: both subscriptions' reminders
# the same on both sides of the restart, the manual renewal moving sub-002's reminders, nothing
# firing a second early and every reminder firing at its exact virtual time, and both
# subscriptions expired with no reminders left. Prints PASS or FAIL per check and exits non-zero
# if any check fails. Run from anywhere; creates or reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "subscription_renewal: running"
status=0
start=$SECONDS
python -m examples.subscription_renewal 2>&1 | tee "$output" || status=$?
elapsed=$((SECONDS - start))
echo

python - "$output" "$status" "$elapsed" <<'PY'
"""Checks the example's output against the scenario's one correct outcome."""

import sys

from examples.output_check import OutputCheck

out = OutputCheck("subscription_renewal", sys.argv[1], sys.argv[2], summary=False)
first = "active, 0 notified, renewal-reminder day 23, renewal day 30"
renewed = "active, 0 notified, renewal-reminder day 43, renewal day 50"

out.has_lines(
    "activation registers both reminders",
    [
        "day 0   sub-001: activated for cust-42, plan premium",
        "day 0   sub-001: reminder on day 23, renewal on day 30",
        "day 0   sub-002: activated for cust-7, plan basic",
        "day 0   sub-002: reminder on day 23, renewal on day 30",
    ],
)
out.has_lines(
    "reminders the same before and after the restart",
    [
        f"day 10  before restart sub-001: {first}",
        f"day 10  before restart sub-002: {first}",
        f"day 10  after restart  sub-001: {first}",
        f"day 10  after restart  sub-002: {first}",
    ],
)
out.has_lines(
    "renewal by hand replaces sub-002's reminders",
    [
        "day 20  sub-002: renewed by hand",
        "day 20  sub-002: reminder on day 43, renewal on day 50",
    ],
)
out.has_lines(
    "nothing a second early, each fire at its exact time",
    [
        f"day 22 23:59:59 just before    sub-001: {first}",
        f"day 22 23:59:59 just before    sub-002: {renewed}",
        "day 23  sub-001: renewal-reminder (due day 23): premium expires in 7 days",
        "day 29 23:59:59 just before    sub-001: active, 1 notified, renewal day 30",
        f"day 29 23:59:59 just before    sub-002: {renewed}",
        "day 30  sub-001: renewal (due day 30): expired",
        "day 43  sub-002: renewal-reminder (due day 43): basic expires in 7 days",
        "day 50  sub-002: renewal (due day 50): expired",
    ],
)
out.has_lines(
    "both expired, one notification each, no reminders left",
    [
        "day 50  final          sub-001: expired, 1 notified, no reminders",
        "day 50  final          sub-002: expired, 1 notified, no reminders",
    ],
)
out.equal("reminders fired in all (the replaced ones never)", len(out.matching(r" \(due ")), 4)
out.equal("nothing ignored, warned or failed", out.matching(r"ignored|warning|error|Traceback"), [])
out.check("50 virtual days in under 10 s", int(sys.argv[3]) < 10, f"took {sys.argv[3]} s")

print()
out.finish()
PY
