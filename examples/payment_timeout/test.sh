#!/usr/bin/env bash
# Runs the payment-timeout example and checks what it printed: the SUMMARY line (each order's
# final status, its notifications, the exact virtual minute of every reminder fire, the reminders
# carried across the restart) and the log lines of the notifications and cancellations. Prints
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
python -m examples.payment_timeout 2>&1 | tee "$output" || status=$?
echo

python - "$output" "$status" <<'PY'
"""Checks the example's output against the scenario's one correct outcome."""

import re
import sys

from examples.output_check import OutputCheck

out = OutputCheck("payment_timeout", sys.argv[1], sys.argv[2])
check, lines, summary, equal = out.check, out.lines, out.summary, out.equal
orders = summary.get("orders") or {}


def order(order_id, key):
    return (orders.get(order_id) or {}).get(key)


# The scenario has exactly one right outcome.
equal(
    "final statuses",
    summary.get("statuses"),
    {"ord-100": "paid", "ord-101": "paid", "ord-102": "cancelled", "ord-103": "cancelled"},
)
equal("no order left awaiting payment", summary.get("awaiting_payment"), [])
equal(
    "notifications per order",
    summary.get("notifications"),
    {"ord-100": 0, "ord-101": 1, "ord-102": 1, "ord-103": 1},
)
equal("notifications in total", summary.get("notifications_total"), 3)

# Every reminder fired at its exact virtual minute (creation + 10 or + 15), and no other fired.
expected_fires = {
    "ord-100": {},
    "ord-101": {"payment-reminder": 10.0},
    "ord-102": {"payment-reminder": 10.0, "payment-timeout": 15.0},
    "ord-103": {"payment-reminder": 19.0, "payment-timeout": 24.0},
}
for order_id, fires in expected_fires.items():
    equal(f"{order_id}: reminders fired at (minute)", order(order_id, "fired_at_min"), fires)
equal("ord-100 paid at minute 5", order("ord-100", "paid_at_min"), 5.0)
equal("ord-101 notified at minute 10", order("ord-101", "notified_at_min"), [10.0])
equal("ord-101 paid at minute 12 (after its reminder)", order("ord-101", "paid_at_min"), 12.0)
equal("ord-102 cancelled at minute 15", order("ord-102", "cancelled_at_min"), 15.0)
equal("ord-103 created at minute 9 (after the restart)", order("ord-103", "created_at_min"), 9.0)
equal("ord-103 cancelled at minute 24", order("ord-103", "cancelled_at_min"), 24.0)
check("every fire handled exactly at its due time", summary.get("fires_on_time") is True)

# The restart at minute 7 kept statuses and reminders.
restart = summary.get("restart") or {}
equal("restart at minute 7", restart.get("at_min"), 7.0)
both = {"payment-reminder": 10.0, "payment-timeout": 15.0}
equal(
    "before the restart: statuses and reminders",
    restart.get("before"),
    {
        "ord-100": {"status": "paid", "reminders": {}},
        "ord-101": {"status": "awaiting_payment", "reminders": both},
        "ord-102": {"status": "awaiting_payment", "reminders": both},
    },
)
equal("after the restart: the same", restart.get("after"), restart.get("before"))
check("restart reported as preserving everything", restart.get("preserved") is True)

equal("no reminders left at the end", summary.get("reminders_left"), 0)
equal("example reported no problems", summary.get("problems"), [])
elapsed = summary.get("elapsed_s")
check(
    "30 virtual minutes took under 10 s of real time",
    isinstance(elapsed, (int, float)) and elapsed < 10,
    f"got {elapsed!r}",
)

# The log tells the same story, stamped with virtual time.
def logged(pattern):
    regex = re.compile(pattern)
    return [line for line in lines if regex.search(line)]


equal("log: notification.sent lines", len(logged(r"notification\.sent ")), 3)
equal(
    "log: cancellations at 09:15 (ord-102) and 09:24 (ord-103)",
    [re.search(r"order/(ord-\d+)", line)[1] for line in logged(r"^09:(15|24):00 .*order\.cancelled ")],
    ["ord-102", "ord-103"],
)
check(
    "log: the 09:10 reminder re-activated ord-102 from its file",
    bool(logged(r"^09:10:00 .*actor\.activated .*actor_id=order/ord-102 status=awaiting_payment")),
)
check(
    "log: payment of ord-101 cancelled only its timeout",
    bool(logged(r"payment\.received .*order/ord-101 .*reminders_cancelled=\['payment-timeout'\]")),
)

print()
out.finish()
PY
