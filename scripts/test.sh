#!/usr/bin/env bash
# Runs every test: installs the Node packages of Epic's client test and of the interop suite
# from their committed package-lock.json files (the interop setup also installs Debian's chromium
# if it is missing), then the whole Cargo workspace (unit, property, integration and interop tests).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/epic-client/setup.sh
tests/interop/setup.sh
cargo test --workspace --locked
