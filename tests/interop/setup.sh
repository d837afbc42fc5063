#!/bin/sh
# Installs what the interop suite (tests/interop/run.mjs) needs: Debian's Chromium, if
# /usr/bin/chromium is missing (apt-get, as root), and the npm packages pinned in the committed
# package-lock.json (npm ci). Idempotent: does nothing when both are already in place.
# Set FORCE=1 to reinstall the npm packages anyway.
set -eu
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: /usr/bin/chromium is missing; run as root (apt-get install chromium)" >&2
        exit 1
    fi
    echo "setup.sh: installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

command -v node >/dev/null 2>&1 || { echo "setup.sh: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup.sh: npm not found" >&2; exit 1; }

# npm records what it installed in node_modules/.package-lock.json; compare every package
# of the committed lockfile with it (optional ones for other platforms, e.g. esbuild's, are
# never installed).
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

npm ci --no-audit --no-fund --loglevel=error >/dev/null
