#!/bin/sh
# Installs what the interop suite (tests/interop/run.mjs) needs: Debian's chromium
# (tests/setup/chromium.sh), Debian's redis-server for the cluster scenario (tests/redis/setup.sh)
# and the npm packages pinned in the committed package-lock.json
# (tests/setup/npm-ci.sh). Each step does nothing when already done; FORCE=1 reinstalls the
# npm packages.
set -eu
cd "$(dirname "$0")"
../setup/chromium.sh
../redis/setup.sh
../setup/npm-ci.sh .
