#!/usr/bin/env bash
# Runs the payment-timeout example and checks what it printed: every event of the scenario at its
# exact virtual minute (each reminder fires when due, paid orders fire nothing), the orders'
# statuses and reminders the same on both sides of the restart, and none left at the end. Prints
# PASS or FAIL per check and exits non-zero if any check fails. Run from anywhere; creates or
# reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "payment_timeout: running"
status=0
start=$SECONDS
python -m examples.payment_timeout 2>&1 | tee "$output" || status=$?
elapsed=$((SECONDS - start))
echo

python - "$output" "$status" "$elapsed" <<'PY'
"""Checks the example's output against the scenario's one correct outcome."""

import sys

from examples.output_check import OutputCheck

out = OutputCheck("payment_timeout", sys.argv[1], sys.argv[2], summary=False)
both = "awaiting_payment, payment-reminder 09:10, payment-timeout 09:15"

out.has_lines(
    "each event at its virtual minute, in order",
    [
        "09:00  ord-100: created for cust-42, 99.99; reminder at 09:10, timeout at 09:15",
        "09:00  ord-101: created for cust-7, 25.00; reminder at 09:10, timeout at 09:15",
        "09:00  ord-102: created for cust-13, 310.50; reminder at 09:10, timeout at 09:15",
        "09:05  ord-100: paid 99.99; cancelled payment-reminder, payment-timeout",
        "09:09  ord-103: created for cust-42, 42.00; reminder at 09:19, timeout at 09:24",
        "09:10  ord-101: payment-reminder (due 09:10): notify cust-7, 5 min left",
        "09:10  ord-102: payment-reminder (due 09:10): notify cust-13, 5 min left",
        "09:12  ord-101: paid 25.00; cancelled payment-timeout",
        "09:15  ord-102: payment-timeout (due 09:15): cancelled",
        "09:19  ord-103: payment-reminder (due 09:19): notify cust-42, 5 min left",
        "09:24  ord-103: payment-timeout (due 09:24): cancelled",
    ],
)
out.has_lines(
    "statuses and reminders before the restart",
    [
        "09:07  before restart  ord-100: paid, no reminders",
        f"09:07  before restart  ord-101: {both}",
        f"09:07  before restart  ord-102: {both}",
    ],
)
out.has_lines(
    "the same after the restart",
    [
        "09:07  after restart   ord-100: paid, no reminders",
        f"09:07  after restart   ord-101: {both}",
        f"09:07  after restart   ord-102: {both}",
    ],
)
out.has_lines(
    "final statuses, no reminders left",
    [
        "09:30  final           ord-100: paid, no reminders",
        "09:30  final           ord-101: paid, no reminders",
        "09:30  final           ord-102: cancelled, no reminders",
        "09:30  final           ord-103: cancelled, no reminders",
    ],
)
out.equal("reminders fired in all (no cancelled one fired)", len(out.matching(r" \(due ")), 5)
out.equal("customers notified", len(out.matching(r": notify ")), 3)
out.equal("nothing ignored, warned or failed", out.matching(r"ignored|warning|error|Traceback"), [])
out.check("30 virtual minutes in under 10 s", int(sys.argv[3]) < 10, f"took {sys.argv[3]} s")

print()
out.finish()
PY
