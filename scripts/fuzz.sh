#!/usr/bin/env bash
# The fuzz campaign: every cargo-fuzz target under fuzz/ for SECONDS each
# (default 600), JOBS at a time (default 1), with the nightly toolchain
# cargo-fuzz needs (installed with `cargo install cargo-fuzz` when missing).
# Prints the executions each target ran; a crash stops that target and is
# left in fuzz/artifacts/TARGET/ (turn it into a regression test).
#
#   scripts/fuzz.sh                 # every target, 10 minutes each
#   SECONDS_EACH=60 scripts/fuzz.sh session data
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
EACH=${SECONDS_EACH:-600}
JOBS=${JOBS:-1}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || { echo "cargo-fuzz needs a nightly toolchain (rustup toolchain install nightly)"; exit 2; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build >/dev/null
mkdir -p logs
run() {
    local t=$1
    mkdir -p "corpus/$t"
    if cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$EACH" -print_final_stats=1 >"logs/$t.log" 2>&1; then
        echo "$t $(grep -o 'Done [0-9]* runs' "logs/$t.log" | tail -1 | awk '{print $2}') ok"
    else
        echo "$t $(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | awk '{print $2}') CRASH (fuzz/logs/$t.log)"
    fi
}
export -f run; export EACH
printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run {}' | sort | awk 'BEGIN {printf "%-12s %14s  %s\n", "target", "executions", "result"} {printf "%-12s %14s  %s\n", $1, $2, $3 " " $4 " " $5}'
