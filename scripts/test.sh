#!/usr/bin/env bash
# Runs every test: installs the Node packages of Epic's client test from the committed
# package-lock.json, then the whole Cargo workspace (unit, property and integration tests).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/epic-client/setup.sh
cargo test --workspace --locked
