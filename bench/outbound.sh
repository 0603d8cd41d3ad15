#!/usr/bin/env bash
# Outbound benchmarks, mx6 against Postfix on the same machine in the same run.
# Not a test: it prints figures and never fails on timing.
#
# 1. Throughput from the queue to Postfix's smtp-sink on loopback: MESSAGES
#    messages are injected with smtp-source (mynetworks, relay allowed), and
#    the clock runs until the last one is accepted by the sink. Both MTAs use
#    the sink as their relayhost ([127.0.0.1]:port, no TLS, no AUTH).
# 2. Time from acceptance to delivery when the MX's IPv6 address hangs: the
#    MX host has an AAAA on `lo` whose listener's accept queue is full (SYNs
#    are dropped) and an A record that works. mx6 resolves it through a DNS
#    server on loopback (mx6-testdns); Postfix resolves it through /etc/hosts
#    (smtp_host_lookup = native), which the script extends and restores.
#
#   bench/outbound.sh                 # 5,000 x 4 KiB
#   MESSAGES=2000 bench/outbound.sh
#
# Needs root and Debian's postfix (smtp-source, smtp-sink); installs it if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/postfix-instance.sh
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-4096}
WORK=${WORK:-/tmp/mx6-bench-out}
SINK_PORT=${SINK_PORT:-2725}
MX6_PORT=${MX6_PORT:-2726}
PF_PORT=${PF_PORT:-2727}
DNS_PORT=${DNS_PORT:-2753}
HANG_V6=2001:db8:ffff::77

if ! command -v smtp-sink >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
fi
cargo build --release -p mx6 >/dev/null
cargo build --release -p mx6-testdns --example serve >/dev/null
MX6=$PWD/target/release/mx6
TESTDNS=$PWD/target/release/examples/serve

rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
    [ -f "$WORK/hosts.orig" ] && cp "$WORK/hosts.orig" /etc/hosts
    ip -6 addr del "$HANG_V6/128" dev lo 2>/dev/null || true
}
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

# ---- the sink ------------------------------------------------------------
smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$SINK_PORT"

# ---- Postfix: relays everything to the sink ------------------------------
PF=$WORK/postfix
postfix_instance "$PF" "127.0.0.1:$PF_PORT" "$WORK"
cat >> "$PF/main.cf" <<CF
inet_protocols = all
relayhost = [127.0.0.1]:$SINK_PORT
smtp_host_lookup = native
smtp_tls_security_level = none
CF
postfix -c "$PF" check >/dev/null 2>&1 || { echo "postfix check failed; run: script -qc \"postfix -c $PF check\" /dev/null"; exit 1; }
postfix -c "$PF" start >/dev/null 2>&1
wait_port "$PF_PORT"

# ---- mx6: relays everything to the sink ----------------------------------
cat > "$WORK/mx6.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/mx6-data"
[[listener]]
address = "127.0.0.1:$MX6_PORT"
[metrics]
listen = ""
[delivery]
relayhost = "[127.0.0.1]:$SINK_PORT"
TOML
"$MX6" serve --config "$WORK/mx6.toml" 2>"$WORK/mx6.log" &
RELAY_MX6=$!
PIDS+=($RELAY_MX6)
wait_port "$MX6_PORT"

pf_sent() { grep -c 'status=sent' "$PF/maillog" 2>/dev/null || true; }
mx6_sent() { grep -c 'status="sent"' "$WORK/mx6.log" 2>/dev/null || true; }

# throughput NAME PORT COUNTER
throughput() {
    local start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f bench@client.test -t user@remote.test "127.0.0.1:$2"
    while [ "$($3)" -lt "$MESSAGES" ]; do sleep 0.05; done
    end=$(date +%s.%N)
    echo "$MESSAGES / ($end - $start)" | bc -l
}

pf=$(throughput postfix "$PF_PORT" pf_sent)
mx=$(throughput mx6 "$MX6_PORT" mx6_sent)
printf '\n%-46s %12s %12s %8s\n' "outbound, queue to smtp-sink" "postfix msg/s" "mx6 msg/s" ratio
printf '%-46s %12.0f %12.0f %7.2fx\n' "$MESSAGES x $SIZE B, $SESSIONS injecting sessions" "$pf" "$mx" "$(echo "$mx / $pf" | bc -l)"

# ---- the MX whose IPv6 address hangs --------------------------------------
ip -6 addr add "$HANG_V6/128" dev lo 2>/dev/null || true
python3 - "$HANG_V6" "$SINK_PORT" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); c.settimeout(0.2)
    try: c.connect((sys.argv[1], int(sys.argv[2])))
    except OSError: pass
    fill.append(c)
time.sleep(3600)
PY
PIDS+=($!)
sleep 1
cat > "$WORK/zone" <<ZONE
hang.bench.test MX 10 mx.hang.bench.test
mx.hang.bench.test AAAA $HANG_V6
mx.hang.bench.test A 127.0.0.1
ZONE
"$TESTDNS" "$WORK/zone" "$DNS_PORT" >/dev/null &
PIDS+=($!)
sleep 0.5
cp /etc/hosts "$WORK/hosts.orig"
printf '%s mx.hang.bench.test\n127.0.0.1 mx.hang.bench.test\n' "$HANG_V6" >> /etc/hosts

# mx6 with MX delivery through the test DNS server, port = the sink's.
kill "$RELAY_MX6"; wait "$RELAY_MX6" 2>/dev/null || true
cat > "$WORK/mx6-hang.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/mx6-hang-data"
[[listener]]
address = "127.0.0.1:$MX6_PORT"
[metrics]
listen = ""
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[delivery]
port = $SINK_PORT
TOML
sleep 0.5
"$MX6" serve --config "$WORK/mx6-hang.toml" 2>"$WORK/mx6-hang.log" &
PIDS+=($!)
wait_port "$MX6_PORT"
postconf -c "$PF" -e "relayhost = [mx.hang.bench.test]:$SINK_PORT" "smtp_address_preference = ipv6" >/dev/null
postfix -c "$PF" reload >/dev/null 2>&1
sleep 1

# latency NAME PORT LOGFILE PATTERN: seconds from injection to the sink's acceptance
latency() {
    local before start
    before=$(grep -c "$4" "$3" 2>/dev/null || true)
    start=$(date +%s.%N)
    smtp-source -s 1 -m 1 -f bench@client.test -t user@hang.bench.test "127.0.0.1:$2"
    while [ "$(grep -c "$4" "$3" 2>/dev/null || true)" -le "$before" ]; do
        sleep 0.05
        if [ "$(echo "$(date +%s.%N) - $start > 300" | bc)" = 1 ]; then echo ">300"; return; fi
    done
    echo "$(date +%s.%N) - $start" | bc -l
}
mx=$(latency mx6 "$MX6_PORT" "$WORK/mx6-hang.log" 'status="sent"')
pf=$(latency postfix "$PF_PORT" "$PF/maillog" 'status=sent')
printf '\n%-46s %12s %12s\n' "MX whose IPv6 address hangs" "postfix s" "mx6 s"
printf '%-46s %12.2f %12.2f\n' "accepted -> delivered over IPv4" "$pf" "$mx"
