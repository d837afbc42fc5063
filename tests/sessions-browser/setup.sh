#!/bin/sh
# Installs what the headless-Chromium session test (tests/integration/browser.rs, run.mjs)
# needs: Debian's chromium (Playwright's own browser download is not used), coturn (via
# tests/turn/setup.sh), and playwright-core exactly as pinned in the committed
# package-lock.json. Idempotent: each step does nothing when already done. FORCE=1 reinstalls
# the npm packages.
set -eu
cd "$(dirname "$0")"

../turn/setup.sh

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

command -v node >/dev/null 2>&1 || { echo "setup.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup.sh: npm not found" >&2; exit 1; }

# npm records what it installed in node_modules/.package-lock.json; compare with the lockfile.
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

# Playwright never downloads a browser here: the test launches /usr/bin/chromium.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
