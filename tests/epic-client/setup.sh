#!/bin/sh
# Installs the npm dependencies of the Epic client test (tests/epic-client/run.mjs) exactly as
# pinned in the committed package-lock.json (see tests/setup/npm-ci.sh).
set -eu
cd "$(dirname "$0")"
../setup/npm-ci.sh .
