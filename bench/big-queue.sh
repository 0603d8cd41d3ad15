#!/usr/bin/env bash
# A big queue: N deferred messages (a destination that answers 4xx), then
#  - time from `mx6 serve` to the first 220 with that spool,
#  - time until the background recovery has indexed every message,
#  - resident memory at steady state with the whole backlog queued,
#  - accept throughput with the backlog against an empty queue (same run).
# Not a test: it prints figures, never fails on timing.
#
#   bench/big-queue.sh                      # N=1000000 messages of 2 KiB
#   N=100000 bench/big-queue.sh             # smaller
#
# The backlog is written by crates/queue/examples/fill_spool.rs as mx6 would
# have it after deferring each message once (records plus deferral marks), so
# the run does not first make N delivery attempts; a short SMTP phase
# (LIVE messages, default 20000) then sends real messages to a Postfix
# smtp-sink that answers 4xx and checks they join the backlog as deferred.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
SIZE=${SIZE:-2048}
LIVE=${LIVE:-20000}
ACCEPT=${ACCEPT:-20000}
SESSIONS=${SESSIONS:-20}
PORT=${PORT:-2825}
SINK=${SINK:-2826}
WORK=${WORK:-/tmp/mx6-bench-bigq}
if ! command -v smtp-source >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
fi
cargo build --release -p mx6 -p mx6-queue --example fill_spool >/dev/null 2>&1
MX6=$PWD/target/release/mx6
FILL=$PWD/target/release/examples/fill_spool
rm -rf "$WORK"; mkdir -p "$WORK"
cleanup() {
    [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
}
trap cleanup EXIT

# A destination that is up and answers every RCPT with a 4xx.
smtp-sink -u root -r rcpt "127.0.0.1:$SINK" 1000 &
SINK_PID=$!

config() {
    cat > "$WORK/mx6-$1.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/data-$1"
[[listener]]
address = "127.0.0.1:$PORT"
[local]
domains = ["bench.test"]
[delivery]
relayhost = "[127.0.0.1]:$SINK"
[limits]
sessions = 2000
[metrics]
listen = "127.0.0.1:$((PORT + 10))"
TOML
}
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status"; }
metric() { curl -s "http://127.0.0.1:$((PORT + 10))/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
banner_secs() { # seconds from now until a 220 greeting is read
    python3 - "$PORT" <<'PY'
import socket, sys, time
t = time.time()
while True:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
        if s.recv(512).startswith(b"220"):
            print(f"{time.time() - t:.3f}")
            break
    except OSError:
        time.sleep(0.005)
PY
}
start() {
    "$MX6" serve --config "$WORK/mx6-$1.toml" 2>>"$WORK/mx6-$1.log" &
    PID=$!
}
accept_rate() { # messages/s for ACCEPT messages, 1 per connection, local domain
    local t0 t1
    t0=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -l "$SIZE" -m "$ACCEPT" -f bench@client.test -t user@bench.test "127.0.0.1:$PORT"
    t1=$(date +%s.%N)
    echo "$ACCEPT / ($t1 - $t0)" | bc -l
}

# ---- empty queue -------------------------------------------------------------
config empty
start empty
banner_secs >/dev/null
EMPTY_RATE=$(accept_rate)
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=

# ---- the backlog -------------------------------------------------------------
config big
mkdir -p "$WORK/data-big"
echo "writing $N deferred messages of $SIZE octets ..."
"$FILL" "$WORK/data-big" "$N" "$SIZE" "u@remote.bench" 2>&1 | tail -1
du -sh "$WORK/data-big/spool" | awk '{print "spool on disk: " $1}'
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start big
T220=$(banner_secs)
t0=$(date +%s.%N)
while ! grep -q "recovered queued messages" "$WORK/mx6-big.log"; do sleep 0.2; done
TREC=$(echo "$(date +%s.%N) - $t0 + $T220" | bc -l)
sleep 2
RSS=$(rss_mib)
DEFERRED=$(metric 'mx6_queue_messages{state="deferred"}')
BACKLOG_RATE=$(accept_rate)
# Real messages to the 4xx destination join the backlog as deferred.
smtp-source -s "$SESSIONS" -l "$SIZE" -m "$LIVE" -f bench@client.test -t u@remote.bench "127.0.0.1:$PORT"
want=$((N + LIVE))
for _ in $(seq 600); do
    d=$(metric 'mx6_queue_messages{state="deferred"}'); d=${d:-0}
    [ "${d%.*}" -ge "$want" ] && break
    sleep 0.5
done
RSS_LIVE=$(rss_mib)
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=

printf '%-58s %s\n' "backlog" "$N x $SIZE B deferred (+ $LIVE sent live to a 4xx destination)"
printf '%-58s %s s\n' "mx6 serve to the first 220" "$T220"
printf '%-58s %.1f s\n' "mx6 serve to every message indexed (background)" "$TREC"
printf '%-58s %s\n' "deferred messages in the index after recovery" "$DEFERRED"
printf '%-58s %s MiB\n' "RSS at steady state with the backlog" "$RSS"
printf '%-58s %s MiB (deferred: %s)\n' "RSS after the live messages were deferred" "$RSS_LIVE" "$d"
printf '%-58s %.0f msg/s\n' "accept, empty queue (1 msg/conn, $SESSIONS sessions)" "$EMPTY_RATE"
printf '%-58s %.0f msg/s (%.1f%% of empty)\n' "accept, with the backlog" "$BACKLOG_RATE" "$(echo "100 * $BACKLOG_RATE / $EMPTY_RATE" | bc -l)"
