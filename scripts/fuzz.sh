#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for SECONDS (default 15) from its committed seed corpus
# (fuzz/corpus/<target>/), one after the other; exits non-zero on the first crash, which
# libFuzzer saves under fuzz/artifacts/<target>/. Installs cargo-fuzz when it is missing.
#
# cargo-fuzz wants nightly for its -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. No sanitizer: the crates forbid unsafe code, so AddressSanitizer would find nothing
# libFuzzer's own panic detection does not, and it doubles build and run time. Debug assertions
# are on (-a), so arithmetic overflow panics too.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
targets=(message router sessions handshake)
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --debug-assertions)
cargo fuzz build "${flags[@]}"
for target in "${targets[@]}"; do
    # New inputs go to a scratch corpus under fuzz/target; the committed seeds are only read.
    work="fuzz/target/corpus/$target"
    mkdir -p "$work"
    echo "== fuzz $target for ${seconds}s"
    cargo fuzz run "${flags[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
