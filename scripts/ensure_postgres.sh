#!/bin/sh
# The PostgreSQL server binaries (postgres, initdb) that the postgres storage kind's tests and a
# cluster's managed PostgreSQL run. Installed with the distribution's package when missing and we
# may (root with apt-get, as in CI); otherwise one line says how.
set -eu

have_server() {
    if command -v pg_config >/dev/null 2>&1; then
        bindir=$(pg_config --bindir 2>/dev/null || true)
        [ -n "$bindir" ] && [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && return 0
    fi
    for dir in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /usr/local/pgsql/bin; do
        [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && return 0
    done
    return 1
}

have_server && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL server not found: installing the distribution's package (apt-get install postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql </dev/null >/dev/null
    have_server && exit 0
fi
echo "PostgreSQL server not found: install it (sudo apt-get install postgresql, or your system's postgresql-server package) and run make again" >&2
exit 1
