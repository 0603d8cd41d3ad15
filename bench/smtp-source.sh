#!/usr/bin/env bash
# Throughput benchmark: Postfix's smtp-source against mx6 (durable spool,
# delivering into Maildir) and against a stock Postfix with the discard
# transport, on the same machine in the same run, and against smtp-sink (a
# server that stores nothing: the ceiling of the client and the machine).
# Prints messages/s and the ratios. Not a test: it never fails on timing.
#
#   bench/smtp-source.sh                 # 20,000 x 4 KiB, 20 sessions
#   MESSAGES=5000 bench/smtp-source.sh   # smaller run
#
# Needs root (to run a Postfix instance) and Debian's postfix package, which it
# installs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/postfix-instance.sh
MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
PER_CONN=${PER_CONN:-100}
MX6_PORT=${MX6_PORT:-2625}
PF_PORT=${PF_PORT:-2626}
WORK=${WORK:-/tmp/mx6-bench}

if ! command -v smtp-source >/dev/null || ! command -v postfix >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
fi
cargo build --release -p mx6 >/dev/null
MX6=$PWD/target/release/mx6

rm -rf "$WORK"; mkdir -p "$WORK"
SINK_PORT=${SINK_PORT:-2624}
cleanup() {
    [ -n "${MX6_PID:-}" ] && kill "$MX6_PID" 2>/dev/null || true
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
    postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- mx6 ------------------------------------------------------------------
# A fresh data directory per run: deleting the last run's files right before
# would slow inode allocation (see SETTLE below).
start_mx6() {
    MX6_DATA=$WORK/mx6-data-$1
    cat > "$WORK/mx6.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$MX6_DATA"
[[listener]]
address = "127.0.0.1:$MX6_PORT"
[local]
domains = ["bench.test"]
TOML
    "$MX6" serve --config "$WORK/mx6.toml" 2>"$WORK/mx6.log" &
    MX6_PID=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$MX6_PORT) 2>/dev/null && break; sleep 0.1; done
}

# ---- Postfix (stock, discard transport) ----------------------------------
PF=$WORK/postfix
mkdir -p "$PF"
postfix_instance "$PF" "127.0.0.1:$PF_PORT" "$WORK"
cat >> "$PF/main.cf" <<CF
inet_protocols = ipv4
relay_domains = bench.test
default_transport = discard
relay_transport = discard
local_transport = discard
CF
postfix -c "$PF" check >/dev/null 2>&1 || { echo "postfix check failed; run: script -qc \"postfix -c $PF check\" /dev/null"; exit 1; }
postfix -c "$PF" start >/dev/null 2>&1
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PF_PORT) 2>/dev/null && break; sleep 0.1; done

# ---- runs -----------------------------------------------------------------
# run NAME PORT MODE: MODE "1" = one message per connection, "N" = PER_CONN per connection
run() {
    local port=$2 mode=$3 start end
    start=$(date +%s.%N)
    if [ "$mode" = 1 ]; then
        smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f bench@client.test -t user@bench.test "127.0.0.1:$port"
    else
        local batch=$((SESSIONS * PER_CONN)) rounds=$((MESSAGES / (SESSIONS * PER_CONN)))
        for _ in $(seq "$rounds"); do
            smtp-source -d -s "$SESSIONS" -l "$SIZE" -m "$batch" -f bench@client.test -t user@bench.test "127.0.0.1:$port"
        done
    fi
    end=$(date +%s.%N)
    echo "$MESSAGES / ($end - $start)" | bc -l
}

maildir_count() { find "$MX6_DATA/mail" -path '*/new/*' -type f 2>/dev/null | wc -l; }
wait_delivered() {
    local start=$1
    while [ "$(maildir_count)" -lt "$MESSAGES" ]; do sleep 0.05; done
    echo "$MESSAGES / ($(date +%s.%N) - $start)" | bc -l
}

# ---- smtp-sink: a server that answers and stores nothing, the ceiling ----
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 &
SINK_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$SINK_PORT) 2>/dev/null && break; sleep 0.1; done
sink=$(run sink "$SINK_PORT" 1)
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=

printf '%-28s %12s %12s %8s %22s %14s\n' workload "postfix msg/s" "mx6 msg/s" ratio "mx6 accept+deliver/s" "of smtp-sink"
for mode in 1 N; do
    label="1 msg/conn"; [ "$mode" = N ] && label="$PER_CONN msg/conn"
    pf=$(run postfix "$PF_PORT" "$mode")
    # ext4 skips inodes freed in the last ~30 s when it allocates new ones
    # (recently_deleted); let Postfix's deleted queue files age out first.
    sleep "${SETTLE:-35}"
    start_mx6 "$mode"
    t0=$(date +%s.%N)
    mx=$(run mx6 "$MX6_PORT" "$mode")
    both=$(wait_delivered "$t0")
    kill "$MX6_PID"; wait "$MX6_PID" 2>/dev/null || true; MX6_PID=
    sleep "${SETTLE:-35}"
    of_sink=""; [ "$mode" = 1 ] && of_sink=$(echo "100 * $mx / $sink" | bc -l | xargs printf '%.0f%%')
    printf '%-28s %12.0f %12.0f %7.2fx %22.0f %14s\n' "$SIZE B, $SESSIONS sess, $label" "$pf" "$mx" "$(echo "$mx / $pf" | bc -l)" "$both" "$of_sink"
done
printf 'smtp-sink (stores nothing), 1 msg/conn: %.0f msg/s, %s\n' "$sink" "$(date -u +%Y-%m-%d)"
