#!/bin/sh
# Installs the npm packages of the Node package in DIR exactly as its committed
# package-lock.json pins them (npm ci). Idempotent: does nothing when node_modules already
# matches the lockfile. FORCE=1 reinstalls anyway. Shared by every tests/*/setup.sh.
#   tests/setup/npm-ci.sh DIR
set -eu
cd "$1"

command -v node >/dev/null 2>&1 || { echo "npm-ci.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "npm-ci.sh: npm not found" >&2; exit 1; }

# npm records what it installed in node_modules/.package-lock.json; compare every package of
# the committed lockfile with it (optional ones for other platforms, e.g. esbuild's, are never
# installed).
if [ "${FORCE:-0}" != 1 ] && node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages;
    const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages;
    for (const [k, v] of Object.entries(want)) {
        if (k === "") continue;
        const h = have[k];
        if (!h && v.optional) continue;
        if (!h || h.version !== v.version || h.integrity !== v.integrity || !fs.existsSync(k + "/package.json")) process.exit(1);
    }
' 2>/dev/null; then
    exit 0
fi

# Playwright never downloads a browser here: the tests launch Debian's /usr/bin/chromium.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
