#!/usr/bin/env bash
# What the abuse defenses (greylisting, rate limits, escalation, reputation)
# cost. Not a test: it never fails on timing.
#
#  1. Policy decisions per second, without SMTP, with the embedded store and
#     with a real Redis (crates/server/examples/policy_decisions.rs): one
#     decision = connect limits + message and recipient counts + a greylist
#     triplet + reputation read and update, over 4,096 /64s.
#  2. Accept throughput of the foundation benchmark (Postfix's smtp-source,
#     4 KiB messages into Maildir) with the defenses off and on, the client
#     treated as a stranger (mynetworks = []) so that every check runs;
#     inbound SPF/DMARC checks run in both, against a loopback DNS server.
#
#   bench/abuse-defense.sh                  # 20,000 messages per run
#   MESSAGES=5000 ROUNDS=1 bench/abuse-defense.sh
#
# Each configuration runs ROUNDS times (default 2), interleaved, and the best
# run counts: on a small VM single runs vary by ±15%.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-20000}
DECISIONS=${DECISIONS:-200000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
PER_CONN=${PER_CONN:-100}
ROUNDS=${ROUNDS:-2}
MX6_PORT=${MX6_PORT:-2627}
DNS_PORT=${DNS_PORT:-5395}
REDIS_PORT=${REDIS_PORT:-6399}
WORK=${WORK:-/tmp/mx6-bench-abuse}

need=()
command -v smtp-source >/dev/null || need+=(postfix)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
cargo build --release -p mx6 >/dev/null
cargo build --release -p mx6-testdns --example serve >/dev/null
cargo build --release -p mx6-server --example policy_decisions >/dev/null
MX6=$PWD/target/release/mx6
TESTDNS=$PWD/target/release/examples/serve
DECIDE=$PWD/target/release/examples/policy_decisions

rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

# ---- 1. decisions per second -------------------------------------------------
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
wait_port "$REDIS_PORT"
echo "== policy decisions (greylist + limits + reputation), 64 concurrent tasks"
"$DECIDE" embedded "$DECISIONS"
"$DECIDE" "redis://127.0.0.1:$REDIS_PORT/0" "$DECISIONS"

# ---- 2. accept throughput, defenses off and on -------------------------------
cat > "$WORK/zone" <<ZONE
client.test TXT "v=spf1 ip4:127.0.0.0/8 -all"
ZONE
"$TESTDNS" "$WORK/zone" "$DNS_PORT" >/dev/null &
PIDS+=($!)
sleep 0.5

defenses() { # off | embedded | redis
    if [ "$1" = off ]; then
        printf '[greylist]\nenabled = false\n[reputation]\nenabled = false\n'
        return
    fi
    if [ "$1" = redis ]; then
        printf '[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/1"\n' "$REDIS_PORT"
    fi
    cat <<TOML
[greylist]
enabled = true
delay = "1s"
[[ratelimit]]
what = "connections"
prefix = "ipv4/32"
limit = 1000
[[ratelimit]]
what = "connection_rate"
prefix = "ipv4/24"
limit = 100000000
window = "1h"
[[ratelimit]]
what = "messages"
prefix = "ipv4/32"
limit = 100000000
window = "1h"
[[ratelimit]]
what = "recipients"
prefix = "ipv4/24"
limit = 100000000
window = "1h"
TOML
}

start_mx6() { # NAME off|embedded|redis
    MX6_DATA=$WORK/data-$1
    cat > "$WORK/mx6.toml" <<TOML
$([ "$2" = off ] && echo 'ratelimit = []')
hostname = "mx.bench.test"
data_dir = "$MX6_DATA"
[[listener]]
address = "127.0.0.1:$MX6_PORT"
[local]
domains = ["bench.test"]
[relay]
mynetworks = []
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
$(defenses "$2")
TOML
    "$MX6" serve --config "$WORK/mx6.toml" 2>"$WORK/mx6-$1.log" &
    MX6_PID=$!
    PIDS+=($MX6_PID)
    wait_port "$MX6_PORT"
    # Pass the benchmark's one triplet (spf:client.test, bench@client.test, user@bench.test).
    smtp-source -m 1 -f bench@client.test -t user@bench.test "127.0.0.1:$MX6_PORT" 2>/dev/null || true
    sleep 1.2
}

run() { # MODE: 1 = one message per connection, N = PER_CONN per connection
    local start end
    start=$(date +%s.%N)
    if [ "$1" = 1 ]; then
        smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f bench@client.test -t user@bench.test "127.0.0.1:$MX6_PORT"
    else
        for _ in $(seq $((MESSAGES / (SESSIONS * PER_CONN)))); do
            smtp-source -d -s "$SESSIONS" -l "$SIZE" -m $((SESSIONS * PER_CONN)) -f bench@client.test -t user@bench.test "127.0.0.1:$MX6_PORT"
        done
    fi
    end=$(date +%s.%N)
    echo "$MESSAGES / ($end - $start)" | bc -l
}

# Messages that got 250 so far (the log's "queued" lines).
queued() { grep -c ' queued ' "$WORK/mx6-$1.log" || true; }

echo
echo "== accept throughput ($MESSAGES x $SIZE B, $SESSIONS sessions, client is a stranger)"
printf '%-22s %14s %14s %14s %12s %12s\n' workload "off msg/s" "embedded msg/s" "redis msg/s" "embedded cost" "redis cost"
for mode in 1 N; do
    label="1 msg/conn"; [ "$mode" = N ] && label="$PER_CONN msg/conn"
    declare -A r=([off]=0 [embedded]=0 [redis]=0)
    for round in $(seq "$ROUNDS"); do
        for d in off embedded redis; do
            name="$d-$mode-$round"
            start_mx6 "$name" "$d"
            before=$(queued "$name")
            rate=$(run "$mode")
            sleep 0.5
            got=$(( $(queued "$name") - before ))
            kill "$MX6_PID"; wait "$MX6_PID" 2>/dev/null || true
            [ "$got" -ge "$MESSAGES" ] || echo "warning: $d accepted only $got of $MESSAGES (see $WORK/mx6-$name.log)"
            if (( $(echo "$rate > ${r[$d]}" | bc -l) )); then r[$d]=$rate; fi
            sleep "${SETTLE:-5}"
        done
    done
    printf '%-22s %14.0f %14.0f %14.0f %11.1f%% %11.1f%%\n' "$label" "${r[off]}" "${r[embedded]}" "${r[redis]}" \
        "$(echo "(1 - ${r[embedded]} / ${r[off]}) * 100" | bc -l)" "$(echo "(1 - ${r[redis]} / ${r[off]}) * 100" | bc -l)"
done
