#!/bin/sh
# Installs systemd-analyze from Debian's systemd package for the unit test
# (tests/integration/packaging.rs). Idempotent: does nothing when it is already installed.
# Needs root (as in CI) or sudo-less apt.
set -eu
if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd >/dev/null
