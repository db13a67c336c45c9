#!/usr/bin/env bash
# Every check and test of the project: lint, format, types, pytest, and each example's test.sh.
# Creates or reuses .venv and installs what it needs (scripts/bootstrap.sh). Exits non-zero if
# anything fails. Extra arguments go to pytest (e.g. ./test.sh -k timer).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
# shellcheck source=scripts/bootstrap.sh
source scripts/bootstrap.sh || { echo "test.sh: bootstrap failed" >&2; exit 1; }

failed=()
step() {
    local name="$1"; shift
    echo "==> $name"
    if "$@"; then
        echo "<== $name: ok"
    else
        echo "<== $name: FAILED" >&2
        failed+=("$name")
    fi
}

step "ruff check" ruff check plexspaces facets examples tests benchmarks
step "ruff format" ruff format --check plexspaces facets examples tests benchmarks
step "mypy (strict)" mypy
step "pytest" python -m pytest "$@"
# The benchmark suite in quick mode, so it never rots; it asserts no timings (goals are read
# from its report, benchmarks/results/quick.md).
step "benchmarks (quick)" python -m benchmarks --quick
for example in examples/*/; do
    if [ -x "$example/test.sh" ]; then
        step "example $(basename "$example")" "$example/test.sh"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: failed: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all checks passed"
