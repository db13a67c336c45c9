#!/usr/bin/env bash
# Make sure the PostgreSQL server programs (initdb, pg_ctl, postgres) are on this machine, so the
# test suite can start a throwaway server on loopback. Installs Debian's `postgresql` package when
# they are missing and this runs as root (or with password-less sudo). Prints the directory of the
# programs on stdout. Nothing is started here: the tests start and stop their own servers.
#
# Set PLEXSPACES_PG_BINDIR to use programs elsewhere.
set -euo pipefail

find_bindir() {
    local dir
    if [ -n "${PLEXSPACES_PG_BINDIR:-}" ] && [ -x "$PLEXSPACES_PG_BINDIR/initdb" ]; then
        echo "$PLEXSPACES_PG_BINDIR"
        return 0
    fi
    # Debian keeps the server programs out of PATH, one directory per major version.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

if bindir="$(find_bindir)"; then
    echo "$bindir"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_postgres: the PostgreSQL server programs are missing and this user cannot" \
         "install them; install Debian's 'postgresql' package, set PLEXSPACES_PG_BINDIR, or" \
         "point PLEXSPACES_TEST_PG_URL at a server" >&2
    exit 1
fi

echo "ensure_postgres: installing Debian's postgresql package" >&2
log="$(mktemp)"
if ! { "${as_root[@]}" apt-get update &&
       DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends \
           postgresql; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure_postgres: installing postgresql failed" >&2
    exit 1
fi
rm -f "$log"
# The package starts a cluster of its own on port 5432; the tests never use it.
find_bindir || { echo "ensure_postgres: postgresql installed but initdb not found" >&2; exit 1; }
