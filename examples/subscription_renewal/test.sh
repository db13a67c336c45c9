#!/usr/bin/env bash
# Runs the subscription-renewal example and checks what it printed: the SUMMARY line (reminders
# listed before and after the restart, the manual renewal, the exact virtual time of every fire,
# nothing firing a second early, the final statuses) and the log lines of the fires. Prints PASS
# or FAIL per check and exits non-zero if any check fails. Run from anywhere; creates or reuses
# .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "subscription_renewal: running"
status=0
python -m examples.subscription_renewal 2>&1 | tee "$output" || status=$?
echo

python - "$output" "$status" <<'PY'
"""Checks the example's output against the scenario's one correct outcome."""

import re
import sys

from examples.output_check import OutputCheck
from datetime import datetime, timedelta

out = OutputCheck("subscription_renewal", sys.argv[1], sys.argv[2])
check, lines, summary, equal = out.check, out.lines, out.summary, out.equal
subscriptions = summary.get("subscriptions") or {}

# The restart on day 10 keeps both reminders of both subscriptions, at the same times.
restart = summary.get("restart") or {}
equal("restart on day 10", restart.get("at_day"), 10.0)
equal("2 reminders each before the restart", restart.get("reminders_before"), {"sub-001": 2, "sub-002": 2})
equal("2 reminders each after the restart", restart.get("reminders_after"), {"sub-001": 2, "sub-002": 2})
due = {"renewal-reminder": 23.0, "renewal": 30.0}
equal("next fire before the restart: day 23 and day 30", restart.get("before"), {"sub-001": due, "sub-002": due})
equal("next fire after the restart: unchanged", restart.get("after"), restart.get("before"))
check("restart reported as preserving the reminders", restart.get("preserved") is True)

# The manual renewal on day 20 moves sub-002's reminders to day 43 and day 50.
renewal = summary.get("manual_renewal") or {}
equal("manual renewal of sub-002 on day 20", (renewal.get("key"), renewal.get("at_day")), ("sub-002", 20.0))
equal(
    "after the renewal: reminders at day 43 and day 50",
    renewal.get("reminders_after"),
    {"renewal-reminder": 43.0, "renewal": 50.0},
)

# Every fire at its exact virtual time: scheduled_at == period start + 23 d / + 30 d, handled then.
start = datetime.fromisoformat("2026-03-01T00:00:00+00:00")
periods = {"sub-001": start, "sub-002": start + timedelta(days=20)}
delays = {"renewal-reminder": timedelta(days=23), "renewal": timedelta(days=30)}
for key, period_start in periods.items():
    fires = (subscriptions.get(key) or {}).get("fires") or []
    equal(f"{key}: fired reminders", [f["name"] for f in fires], ["renewal-reminder", "renewal"])
    for fire in fires:
        want = (period_start + delays[fire["name"]]).isoformat()
        equal(f"{key}: {fire['name']} scheduled_at", fire["scheduled_at"], want)
        equal(f"{key}: {fire['name']} handled at that instant", fire["handled_at"], want)
        equal(f"{key}: {fire['name']} fire_count", fire["fire_count"], 1)
check("example confirms every fire time exact", summary.get("exact_fire_times") is True)

# One second early nothing has happened; at the due time it has.
checkpoints = {c["label"]: c for c in summary.get("checkpoints") or []}


def seen(label, key):
    c = checkpoints.get(label) or {}
    return ((c.get("statuses") or {}).get(key), (c.get("notifications") or {}).get(key))


equal("day 23 - 1s: sub-001 active, no reminder yet", seen("day 23 - 1s", "sub-001"), ("active", 0))
equal("day 23: sub-001 got its renewal reminder", seen("day 23", "sub-001"), ("active", 1))
equal("day 23: renewed sub-002 got none", seen("day 23", "sub-002"), ("active", 0))
equal("day 30 - 1s: sub-001 still active", seen("day 30 - 1s", "sub-001"), ("active", 1))
equal("day 30: sub-001 expired", seen("day 30", "sub-001"), ("expired", 1))
equal("day 30: renewed sub-002 still active", seen("day 30", "sub-002"), ("active", 0))

equal("final statuses", summary.get("statuses"), {"sub-001": "expired", "sub-002": "expired"})
equal("one renewal reminder each", summary.get("notifications"), {"sub-001": 1, "sub-002": 1})
equal("sub-001 expired on day 30", (subscriptions.get("sub-001") or {}).get("expired_at_day"), 30.0)
equal("sub-002 expired on day 50", (subscriptions.get("sub-002") or {}).get("expired_at_day"), 50.0)
equal("no reminders left", summary.get("reminders_left"), 0)
equal("example reported no problems", summary.get("problems"), [])
elapsed = summary.get("elapsed_s")
check(
    "50 virtual days took under 10 s of real time",
    isinstance(elapsed, (int, float)) and elapsed < 10,
    f"got {elapsed!r}",
)

# The log, stamped with virtual time, shows each fire at its day.
fired = [
    (m[1], m[2], m[3])
    for m in (
        re.search(r"^day (\d+) (\d\d:\d\d:\d\d) .*reminder\.fired .*subscription/(sub-\d+)", line)
        for line in lines
    )
    if m
]
equal(
    "log: reminder.fired lines (day, time, subscription)",
    fired,
    [("23", "00:00:00", "sub-001"), ("30", "00:00:00", "sub-001"), ("43", "00:00:00", "sub-002"), ("50", "00:00:00", "sub-002")],
)
equal(
    "log: renewal_reminder notifications",
    len([line for line in lines if "notification.renewal_reminder" in line]),
    2,
)
check("log: no fire off schedule", not any("reminder.off_schedule" in line for line in lines))

print()
out.finish()
PY
