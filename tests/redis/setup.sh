#!/bin/sh
# Installs redis-server from Debian for the cluster tests (tests/integration/support/redis.rs
# starts its own redis-server on an ephemeral port for each test). Idempotent: does nothing when
# redis-server is already installed. Needs root (as in CI) or sudo-less apt.
set -eu
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exiting 101: the package's maintainer scripts may not start its service (the
# tests start their own servers; a system one on 6379 would only be in the way).
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
install() {
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}
status=0
# apt-get update only when needed: the lists do not know the package, or are too old to fetch it.
if ! apt-cache show redis-server >/dev/null 2>&1 || ! install; then
    { apt-get update -qq && install; } || status=$?
fi
if [ -n "$created_policy" ]; then
    rm -f "$policy"
fi
[ "$status" -eq 0 ] || exit "$status"
# Where the package enabled its system service anyway, turn it off: it is not needed.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
command -v redis-server >/dev/null
