#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install the project into it.
# Sourced by ./test.sh and scripts/run, so each works alone on a machine that has never seen the
# project. Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PLEXSPACES_VENV:-$root/.venv}"

find_python() {
    local candidate
    for candidate in "${PLEXSPACES_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "bootstrap: Python 3.11 or newer is required (set PLEXSPACES_PYTHON to its path)" >&2
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    python="$(find_python)"
    echo "bootstrap: creating $venv with $("$python" --version)" >&2
    "$python" -m venv "$venv"
fi

stamp="$venv/.plexspaces-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "bootstrap: installing plexspaces and its dev tools into $venv" >&2
    log="$venv/install.log"
    # The build backend talks on stderr even with --quiet: keep its output, show it on failure.
    if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
           "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[dev]"; } \
           >"$log" 2>&1; then
        cat "$log" >&2
        echo "bootstrap: installing into $venv failed (log: $log)" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "$wanted" > "$stamp"
fi

export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
