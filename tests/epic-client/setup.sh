#!/bin/sh
# Installs the npm dependencies of the Epic client test (tests/epic-client/run.mjs) exactly as
# pinned in the committed package-lock.json. Idempotent: does nothing if node_modules already
# matches the lockfile. Set FORCE=1 to reinstall anyway.
set -eu
cd "$(dirname "$0")"

command -v node >/dev/null 2>&1 || { echo "setup.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup.sh: npm not found" >&2; exit 1; }

# npm records what it installed in node_modules/.package-lock.json; compare every package
# of the committed lockfile with it.
if [ "${FORCE:-0}" != 1 ] && node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages;
    const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages;
    for (const [k, v] of Object.entries(want)) {
        if (k === "") continue;
        const h = have[k];
        if (!h || h.version !== v.version || h.integrity !== v.integrity || !fs.existsSync(k + "/package.json")) process.exit(1);
    }
' 2>/dev/null; then
    exit 0
fi

npm ci --no-audit --no-fund --loglevel=error >/dev/null
