#!/bin/sh
# The browser the console's tests drive (tests/console/): the distribution's Chromium, found on PATH as
# `chromium`. Playwright's own browser downloads are never used. Installed with the distribution's package
# when missing and we may (root with apt-get, as in CI); otherwise one line says how.
set -eu

command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Chromium not found: installing the distribution's package (apt-get install chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium </dev/null >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "Chromium not found: install it (sudo apt-get install chromium, or your system's chromium package) and run make again" >&2
exit 1
