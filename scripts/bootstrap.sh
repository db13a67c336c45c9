#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install the project into it, then
# put it first on PATH. Sourced by ./test.sh, scripts/run and the examples' test.sh, so each works
# alone on a machine that has never seen the project. Re-installs only when pyproject.toml changed
# since the last install, or when the caller needs more than is installed. It leaves the caller's
# shell options alone (no `set -e` leaks out).
#
# PLEXSPACES_BOOTSTRAP=run installs only what running needs (the project and its PostgreSQL
# driver: scripts/run and the examples); anything else, the default, also installs the tools of
# ./test.sh (the dev extra: pytest, ruff, mypy, APScheduler for the benchmarks).

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
    local root venv python stamp wanted log extras installed what
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    venv="${PLEXSPACES_VENV:-$root/.venv}"
    if [ "${PLEXSPACES_BOOTSTRAP:-}" = "run" ]; then
        extras="postgresql,nats"
        what="plexspaces-facets"
    else
        extras="dev"
        what="plexspaces-facets and the tools of ./test.sh (pytest, ruff, mypy)"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        python="$(_plexspaces_find_python)" || return 1
        echo "bootstrap: creating $venv with $("$python" --version)" >&2
        "$python" -m venv "$venv" || return 1
    fi
    stamp="$venv/.plexspaces-installed"
    wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)" || return 1
    installed="$(cat "$stamp" 2>/dev/null || true)"
    # The stamp holds the pyproject hash and what was installed with it; the dev extra includes
    # everything running needs, so a venv set up for ./test.sh serves scripts/run as it is.
    if [ "$installed" != "$wanted dev" ] && [ "$installed" != "$wanted $extras" ]; then
        echo "bootstrap: installing $what into $venv (once; about a minute)" >&2
        log="$venv/install.log"
        # The distribution was called plexspaces before; a venv that still has it would hold
        # two installations of the same packages.
        "$venv/bin/python" -m pip uninstall --disable-pip-version-check -y plexspaces \
            >/dev/null 2>&1 || true
        # The build backend talks on stderr even with --quiet: keep its output, show it on
        # failure.
        if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
               "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[$extras]"; } \
               >"$log" 2>&1; then
            cat "$log" >&2
            echo "bootstrap: installing into $venv failed (log: $log)" >&2
            return 1
        fi
        echo "$wanted $extras" > "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
    export VIRTUAL_ENV="$venv"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _plexspaces_bootstrap || exit 1
else
    _plexspaces_bootstrap
fi
