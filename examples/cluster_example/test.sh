#!/usr/bin/env bash
# Runs the cluster example against a throwaway PostgreSQL server and nats-server of its own (both
# on loopback, removed at the end) and checks what it printed: every deposit answered, the six
# accounts spread over both nodes, the reminder fired on the node that holds its account, after
# the SIGKILL of node-a every account answering from node-b within its lease and a bound, the
# client-only process hosting nothing, node-b stopping cleanly. Prints PASS or FAIL per check
# and exits non-zero if any check fails. Run from anywhere; creates or reuses .venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh

output="$(mktemp)"
trap 'rm -f "$output"' EXIT

echo "cluster_example: running (PostgreSQL and nats-server started for it)"
status=0
python - <<'PY' 2>&1 | tee "$output" || status=$?
"""Start the servers the example needs, run it, stop them."""

import os
import subprocess
import sys

from tests import natsserver, pgserver

nats = natsserver.NatsServer()
postgres = pgserver.from_environment()
try:
    with pgserver.scratch_database(postgres) as url:
        env = {**os.environ, "PLEXSPACES_STORAGE_URL": url, "PLEXSPACES_NATS_URL": nats.url}
        result = subprocess.run([sys.executable, "-m", "examples.cluster_example"], env=env)
finally:
    postgres.close()
    nats.close()
sys.exit(result.returncode)
PY
echo

python - "$output" "$status" <<'PY'
"""Checks the example's output."""

import re
import sys

from examples.output_check import OutputCheck

out = OutputCheck("cluster_example", sys.argv[1], sys.argv[2], summary=False)
check, equal = out.check, out.equal

deposits = [re.search(r"account/(\S+): balance (\d+) on (\S+)", line).groups() for line in out.matching(r"^web\s+deposit 10 ")]
equal("six deposits answered with balance 10", sorted((key, int(balance)) for key, balance, _ in deposits), [(f"acc-{i}", 10) for i in range(1, 7)])
holders = {key: node for key, _, node in deposits}
check("the accounts are spread over both nodes", set(holders.values()) == {"node-a", "node-b"}, f"got {holders}")
registered = out.matching(r"^web\s+account/acc-1 registered a reminder on (\S+)$")
fired = out.matching(r"^(node-\S)\s+account/acc-1: statement reminder fired, balance 10$")
check("the reminder fired once", len(fired) == 1, f"got {fired}")
check("it fired on the node holding the account", bool(fired) and fired[0].split()[0] == holders.get("acc-1"), f"fired {fired}, holders {holders}")
check("the client saw the fire", bool(out.matching(r"^web\s+account/acc-1 got 1 statement$")))
check("node-a was killed", bool(out.matching(r"^web\s+killed node-a with SIGKILL$")))
after = [re.search(r"account/(\S+): balance (\d+) on (\S+) \((\S+)s after", line).groups() for line in out.matching(r"^web\s+deposit 1 into ")]
equal("every account answered after the kill", sorted(key for key, *_ in after), [f"acc-{i}" for i in range(1, 7)])
check("all from node-b", {node for _, _, node, _ in after} == {"node-b"}, f"got {after}")
for key, balance, _, _ in after:
    expected = 11 if holders.get(key) == "node-b" else 1
    equal(f"{key}: balance after the kill ({'kept' if expected == 11 else 'lost with node-a'})", int(balance), expected)
check("the moved accounts answered within lease + poll + 2 s (plus room for a slow machine)", all(float(took) < 2 + 0.5 + 2 + 6 for *_, took in after), f"got {after}")
check("the client hosted no actor", bool(out.matching(r"^web\s+actors active on this client-only node: 0$")))
check("node-b stopped cleanly", bool(out.matching(r"^node-b\s+stopped cleanly$")))
equal("nothing failed", out.matching(r"Traceback|error"), [])

print()
out.finish()
PY
