#!/bin/sh
# Installs coturn (turnserver, turnutils_uclient) from Debian for the TURN tests
# (tests/integration/turn.rs, tests/integration/browser.rs). Idempotent: does nothing when
# turnserver is already installed. Needs root (as in CI) or sudo-less apt.
set -eu
if command -v turnserver >/dev/null 2>&1 && command -v turnutils_uclient >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq coturn >/dev/null
# The Debian package enables a system service on some setups; the tests start their own.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now coturn >/dev/null 2>&1 || true
fi
