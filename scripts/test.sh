#!/usr/bin/env bash
# Runs every test: installs the Node packages of Epic's client test and of the Chromium session
# test from their committed package-lock.json files, coturn and Debian's chromium (skipped when
# present), then the whole Cargo workspace (unit, property and integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/epic-client/setup.sh
tests/turn/setup.sh
tests/sessions-browser/setup.sh
cargo test --workspace --locked
