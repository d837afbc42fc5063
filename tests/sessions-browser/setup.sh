#!/bin/sh
# Installs what the headless-Chromium session test (tests/integration/browser.rs, run.mjs)
# needs: coturn (tests/turn/setup.sh), Debian's chromium (tests/setup/chromium.sh) and
# playwright-core as pinned in the committed package-lock.json (tests/setup/npm-ci.sh). Each
# step does nothing when already done.
set -eu
cd "$(dirname "$0")"
../turn/setup.sh
../setup/chromium.sh
../setup/npm-ci.sh .
