#!/usr/bin/env bash
# Runs every test: installs what the tests drive, each setup doing nothing when its tools are
# already there: the Node packages of Epic's client test, of the Chromium session test and of the
# interop suite from their committed package-lock.json files, coturn, redis-server (the cluster
# tests start their own), systemd-analyze (Debian's systemd) for the unit's check, and Debian's
# chromium;
# then the whole Cargo workspace (unit, property, integration and interop tests); then each fuzz
# target for a few seconds (scripts/fuzz.sh, which installs cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/epic-client/setup.sh
tests/turn/setup.sh
tests/redis/setup.sh
tests/systemd/setup.sh
tests/sessions-browser/setup.sh
tests/interop/setup.sh
cargo test --workspace --locked
./scripts/fuzz.sh 10
