#!/usr/bin/env bash
# Many concurrent active sessions: SESSIONS sessions at once (default
# 10,000), each from its own source address (4,096 IPv6 /64s over 64 /48s,
# routed locally on lo, and a tenth from 198.18.0.0/16), each sending
# PER_CONN messages per connection in a loop for SECONDS, against mx6 with a
# durable spool and Maildir delivery (the clients are in mynetworks: the core
# path). Prints msg/s, time to 250 (p50/p99), errors, and mx6's peak RSS.
#   bench/concurrent-sessions.sh                 # 10,000 sessions, 30 s
#   SESSIONS=2000 SECONDS_RUN=10 bench/concurrent-sessions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-10000}
PER_CONN=${PER_CONN:-10}
SECONDS_RUN=${SECONDS_RUN:-30}
PORT=${PORT:-2726}
PREFIX=${PREFIX:-2001:db8:100::/42}
WORK=${WORK:-/tmp/mx6-bench-concurrent}
ulimit -n "$(ulimit -Hn)"
cargo build --release -p mx6 -p mx6-loadgen >/dev/null
ip -6 route replace local "$PREFIX" dev lo
ip route replace local 198.18.0.0/16 dev lo
trap 'ip -6 route del local "$PREFIX" dev lo 2>/dev/null || true; ip route del local 198.18.0.0/16 dev lo 2>/dev/null || true' EXIT
rm -rf "$WORK"; mkdir -p "$WORK"
cat > "$WORK/mx6.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/data"
ratelimit = []
[[listener]]
address = "127.0.0.1:$PORT"
[[listener]]
address = "[::1]:$PORT"
[local]
domains = ["bench.test"]
[relay]
mynetworks = ["127.0.0.0/8", "198.18.0.0/16", "::1/128", "$PREFIX"]
[limits]
sessions = $((SESSIONS + 100))
[greylist]
enabled = false
TOML
target/release/mx6 serve --config "$WORK/mx6.toml" 2>"$WORK/mx6.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; ip -6 route del local "$PREFIX" dev lo 2>/dev/null || true; ip route del local 198.18.0.0/16 dev lo 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
echo "== $SESSIONS sessions, $PER_CONN messages per connection, ${SECONDS_RUN}s"
target/release/mx6-loadgen --target6 "[::1]:$PORT" --target4 "127.0.0.1:$PORT" --source6 "$PREFIX" \
    --sessions "$SESSIONS" --per-conn "$PER_CONN" --messages 0 --seconds "$SECONDS_RUN" --v4-share 0.1
echo "mx6 peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$PID/status"), now $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$PID/status")"
echo "mx6 CPU: $(awk '{printf "%.1f s", ($14+$15)/100}' "/proc/$PID/stat")"
