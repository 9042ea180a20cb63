#!/bin/sh
# Install Debian's chromium for the dashboard's browser tests (tests/e2e/),
# which drive it with the playwright Python package pointed at
# /usr/bin/chromium: no browser is downloaded. Idempotent: a quick no-op when
# it is present.
set -eu

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-chromium: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends chromium; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium
fi
