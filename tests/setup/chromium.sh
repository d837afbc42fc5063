#!/bin/sh
# Installs Debian's chromium (/usr/bin/chromium) for the browser tests, if it is missing.
# Playwright's own browser download does not work here. Needs root (as in CI).
set -eu
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "chromium.sh: /usr/bin/chromium is missing; run as root (apt-get install chromium)" >&2
    exit 1
fi
echo "chromium.sh: installing Debian's chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
