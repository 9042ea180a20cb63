#!/bin/sh
# Install Azurite (Microsoft's Azure Storage emulator, from the npm registry)
# under .tools/azurite for the as:// / wasb:// tests. Idempotent: a no-op when
# the pinned version is present. 3.35.0 is the last release that runs on
# Debian's Node.js 20 without warnings about its engines.
set -eu

VERSION=3.35.0
DIR="$(cd "$(dirname "$0")/../.." && pwd)/.tools/azurite"
STAMP="$DIR/.installed-$VERSION"

[ -f "$STAMP" ] && exit 0
command -v npm >/dev/null 2>&1 || {
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends nodejs npm >/dev/null 2>&1 || {
        $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y --no-install-recommends nodejs npm
    }
}
echo "install-azurite: installing azurite@$VERSION into $DIR" >&2
rm -rf "$DIR"
mkdir -p "$DIR"
npm install --no-audit --no-fund --loglevel=error --prefix "$DIR" "azurite@$VERSION" >/dev/null
touch "$STAMP"
