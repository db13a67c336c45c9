#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install the project into it, then
# put it first on PATH. Sourced by ./test.sh, scripts/run and the examples' test.sh, so each works
# alone on a machine that has never seen the project. Re-installs only when pyproject.toml changed
# since the last install. It leaves the caller's shell options alone (no `set -e` leaks out).

_plexspaces_find_python() {
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

_plexspaces_bootstrap() {
    local root venv python stamp wanted log
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    venv="${PLEXSPACES_VENV:-$root/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        python="$(_plexspaces_find_python)" || return 1
        echo "bootstrap: creating $venv with $("$python" --version)" >&2
        "$python" -m venv "$venv" || return 1
    fi
    stamp="$venv/.plexspaces-installed"
    wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)" || return 1
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        echo "bootstrap: installing plexspaces-facets and its dev tools into $venv" >&2
        log="$venv/install.log"
        # The distribution was called plexspaces before; a venv that still has it would hold
        # two installations of the same packages.
        "$venv/bin/python" -m pip uninstall --disable-pip-version-check -y plexspaces \
            >/dev/null 2>&1 || true
        # The build backend talks on stderr even with --quiet: keep its output, show it on
        # failure.
        if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
               "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[dev]"; } \
               >"$log" 2>&1; then
            cat "$log" >&2
            echo "bootstrap: installing into $venv failed (log: $log)" >&2
            return 1
        fi
        echo "$wanted" > "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
    export VIRTUAL_ENV="$venv"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _plexspaces_bootstrap || exit 1
else
    _plexspaces_bootstrap
fi
