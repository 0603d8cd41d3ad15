#!/usr/bin/env bash
# The whole inbound policy, against the whole Postfix stack, in one run.
#
# Clients come from 4,096 distinct IPv6 /64s spread over 64 /48s (routed
# locally on lo: every connection really comes from its own address) and a
# tenth from 127.1.0.0/20; each source has PTR and forward records (FCrDNS
# fails for every 20th), the 64 sender domains have SPF, DKIM (messages
# signed once before the run, ed25519 and rsa2048) and DMARC p=reject; two
# DNSBL zones list some sources; greylisting is on with the triplets passed
# in a warm-up, and 2% of messages bring a new one; rate limits are on. All
# DNS data is served by one unbound on 127.0.0.1:53 (made by
# bench/full-policy/gen.py), for both contenders.
#
# mx6: every check on, embedded store. Postfix: reject_unknown_client_hostname,
# reject_rbl_client, postfix-policyd-spf-python and postgrey as policy
# services, opendkim and opendmarc as milters (Debian packages), discarding
# what it accepts (mx6 writes it to a Maildir).
#
# Prints msg/s, p50/p99 time to 250, refusals by code, CPU seconds per 1,000
# accepted messages (the machine's busy time less the load generator's), and
# the ratios. /etc/resolv.conf points at the unbound for the run (restored
# after): Postfix, its policy servers and milters resolve through libc.
#   bench/full-policy.sh                       # 50 sessions, 20 s each
#   SESSIONS=100 SECONDS_RUN=30 bench/full-policy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/postfix-instance.sh
SESSIONS=${SESSIONS:-50}
SECONDS_RUN=${SECONDS_RUN:-20}
MX6_PORT=${MX6_PORT:-2627}
METRICS_PORT=${METRICS_PORT:-9327}
PF_PORT=${PF_PORT:-2628}
PREFIX=2001:db8:100::/42
WORK=${WORK:-/tmp/mx6-bench-full}
ROOT=$PWD

need=()
for p in postfix postgrey opendkim opendmarc postfix-policyd-spf-python unbound python3-dkim python3-nacl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
ulimit -n "$(ulimit -Hn)"
cargo build --release -p mx6 -p mx6-loadgen >/dev/null
MX6=$ROOT/target/release/mx6
LOADGEN=$ROOT/target/release/mx6-loadgen

rm -rf "$WORK"; mkdir -p "$WORK"
/usr/bin/python3 bench/full-policy/gen.py "$WORK"
cp /etc/resolv.conf "$WORK/resolv.conf.orig"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
    [ -f "$WORK/postgrey.pid" ] && kill "$(cat "$WORK/postgrey.pid")" 2>/dev/null || true
    cat "$WORK/resolv.conf.orig" > /etc/resolv.conf
    ip -6 route del local "$PREFIX" dev lo 2>/dev/null || true
    ip route del local 198.18.0.0/16 dev lo 2>/dev/null || true
}
trap cleanup EXIT
ip -6 route replace local "$PREFIX" dev lo
ip route replace local 198.18.0.0/16 dev lo
unbound -d -c "$WORK/unbound.conf" 2>"$WORK/unbound.err" &
PIDS+=($!)
for _ in $(seq 100); do dig +short +time=1 @127.0.0.1 s1.bench.test TXT >/dev/null 2>&1 && break; sleep 0.1; done
echo "nameserver 127.0.0.1" > /etc/resolv.conf

cpu_busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
TICK=$(getconf CLK_TCK)

# run NAME PORT SECONDS [ARGS]: one load-generator run; its figures in R_*.
run() {
    local b0 b1 name=$1 port=$2 secs=$3
    shift 3
    b0=$(cpu_busy)
    /usr/bin/time -f "%U %S" -o "$WORK/loadgen.time" "$LOADGEN" --target6 "[::1]:$port" --target4 "127.0.0.1:$port" \
        --source6 "$PREFIX" --sources 4096 --v4-share 0.1 --sessions "$SESSIONS" --per-conn 1 --messages 0 \
        --seconds "$secs" --from-domains 64 --message-dir "$WORK/msgs" "$@" > "$WORK/$name.out"
    b1=$(cpu_busy)
    R_RATE=$(awk '/rate:/ {print $(NF-1)}' "$WORK/$name.out")
    R_SENT=$(awk '/messages:/ {print $4}' "$WORK/$name.out")
    R_P50=$(awk '/p50/ {for (i=1;i<=NF;i++) if ($i=="p50") print $(i+1)}' "$WORK/$name.out")
    R_P99=$(awk '/p99/ {for (i=1;i<=NF;i++) if ($i=="p99") print $(i+1)}' "$WORK/$name.out")
    R_ERR=$(grep '^error' "$WORK/$name.out" | sed 's/^error: //' | tr '\n' ';')
    local lg
    lg=$(awk '{print $1+$2}' "$WORK/loadgen.time")
    R_CPU=$(echo "(($b1 - $b0) / $TICK - $lg) * 1000 / ($R_SENT + 0.000001)" | bc -l)
}

# probe PORT: one message whose From (s2) is not aligned with its SPF-passing
# envelope sender (s1) and has no signature, from a source whose other checks
# pass: the reply shows DMARC p=reject is enforced (550), not skipped.
probe() {
    { swaks --server 127.0.0.1 --port "$1" --local-interface 198.18.0.2 --helo client.bench.test \
        --from bench@s1.bench.test --to user@bench.test --h-From '<bench@s2.bench.test>' 2>&1 || true; } \
        | grep -E '^<[~*]* +[0-9]{3} ' | tail -2 | head -1 | sed 's/^<[~*]* *//' || true
}

warm() {  # greylisting: every source's triplet seen once, then passed
    run "$1-warm1" "$2" 0 --connections 4096
    sleep 2
    run "$1-warm2" "$2" 0 --connections 4096
}

# --- mx6 ---------------------------------------------------------------
# mx6_run STORE_SECTION NAME: one measured run of mx6 (fresh data_dir).
mx6_run() {
cat > "$WORK/mx6.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/mx6-data-$2"
$1
[[listener]]
address = "[::1]:$MX6_PORT"
[[listener]]
address = "127.0.0.1:$MX6_PORT"
[local]
domains = ["bench.test"]
[metrics]
listen = "[::1]:$METRICS_PORT"
[relay]
mynetworks = ["127.0.0.1/32", "::1/128"]
[dns]
nameservers = ["127.0.0.1:53"]
[policy.ipv4]
require_ptr = true
require_fcrdns = true
require_spf_or_dkim = true
[dnsbl]
threshold = 1
[[dnsbl.sites]]
zone = "bl1.bench.test"
[[dnsbl.sites]]
zone = "bl2.bench.test"
[greylist]
enabled = true
delay = "1s"
auto_allowlist = 0
[limits]
sessions = 2000
[[ratelimit]]
what = "connections"
prefix = "ipv6/64"
limit = 200
[[ratelimit]]
what = "connections"
prefix = "ipv4/32"
limit = 200
[[ratelimit]]
what = "messages"
prefix = "ipv6/64"
limit = 100000
window = "60s"
[[ratelimit]]
what = "messages"
prefix = "ipv6/48"
limit = 1000000
window = "60s"
TOML
"$MX6" config check --config "$WORK/mx6.toml" >/dev/null
"$MX6" serve --config "$WORK/mx6.toml" 2>"$WORK/mx6-$2.log" &
MX6_PID=$!
PIDS+=($MX6_PID)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$MX6_PORT) 2>/dev/null && break; sleep 0.1; done
warm "mx6-$2" "$MX6_PORT"
redis-cli -p 6390 config resetstat >/dev/null 2>&1 || true
R_TRIPS0=$(store_requests)
run "mx6-$2" "$MX6_PORT" "$SECONDS_RUN" --new-share 0.02
R_TRIPS=$(( $(store_requests) - R_TRIPS0 ))
kill "$MX6_PID"; wait "$MX6_PID" 2>/dev/null || true
}
# Round trips to the state store so far: mx6_store_requests_total (0 for
# the embedded store, which has none).
store_requests() {
    curl -s "http://[::1]:$METRICS_PORT/metrics" | awk '/^mx6_store_requests_total/ {n += $2} END {print n + 0}'
}
mx6_run "" embedded
M_RATE=$R_RATE M_P50=$R_P50 M_P99=$R_P99 M_ERR=$R_ERR M_CPU=$R_CPU
# Redis: the same run with the state on a Redis on loopback.
redis-server --port 6390 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done
mx6_run "$(printf '[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:6390/"')" redis
D_RATE=$R_RATE D_P50=$R_P50 D_P99=$R_P99 D_ERR=$R_ERR D_CPU=$R_CPU
# Round trips: the requests mx6 sent to Redis during the measured run
# (mx6_store_requests_total) over the messages accepted in it, refused
# attempts included; and the commands Redis ran for them (those inside the
# Lua script count one each).
D_CMDS=$(redis-cli -p 6390 info stats | awk -F: '/^total_commands_processed/ {print $2+0}')
D_TRIPS=$R_TRIPS
D_MSGS=$R_SENT
# The DMARC probe, against an mx6 started again on the embedded state.
"$MX6" serve --config <(sed "s|mx6-data-redis|mx6-data-embedded|; /^\[store\]/,/^url/d" "$WORK/mx6.toml") 2>>"$WORK/mx6-embedded.log" &
MX6_PID=$!
PIDS+=($MX6_PID)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$MX6_PORT) 2>/dev/null && break; sleep 0.1; done
M_PROBE=$(probe "$MX6_PORT")
kill "$MX6_PID"; wait "$MX6_PID" 2>/dev/null || true

# --- Postfix with the usual stack ---------------------------------------
PF=$WORK/postfix
mkdir -p "$PF" "$WORK/postgrey"
chown postgrey "$WORK/postgrey"
postfix_instance "$PF" "127.0.0.1:$PF_PORT" "$WORK"
echo "[::1]:$PF_PORT inet n - n - - smtpd" >> "$PF/master.cf"
echo "policyd-spf unix - n n - 0 spawn user=nobody argv=/usr/bin/policyd-spf $WORK/policyd-spf.conf" >> "$PF/master.cf"
cat >> "$PF/main.cf" <<CF
inet_protocols = all
inet_interfaces = 127.0.0.1, [::1]
mynetworks = 127.0.0.1/32, [::1]/128
relay_domains = bench.test
default_transport = discard
relay_transport = discard
local_transport = discard
smtpd_client_restrictions = reject_unknown_client_hostname
unknown_client_reject_code = 550
smtpd_recipient_restrictions = reject_unauth_destination, reject_rbl_client bl1.bench.test, reject_rbl_client bl2.bench.test, check_policy_service unix:private/policyd-spf, check_policy_service inet:127.0.0.1:10023
policyd-spf_time_limit = 3600
smtpd_milters = inet:127.0.0.1:8891, inet:127.0.0.1:8893
milter_default_action = tempfail
smtpd_client_connection_count_limit = 200
smtpd_client_message_rate_limit = 100000
smtpd_client_connection_rate_limit = 100000
CF
cat > "$WORK/policyd-spf.conf" <<CF
debugLevel = 0
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.255/32
CF
cat > "$WORK/opendkim.conf" <<CF
Mode v
Socket inet:8891@127.0.0.1
Syslog no
UserID opendkim
PidFile $WORK/opendkim.pid
AuthservID pf.bench.test
AlwaysAddARHeader yes
CF
cat > "$WORK/opendmarc.conf" <<CF
Socket inet:8893@127.0.0.1
Syslog false
UserID opendmarc
PidFile $WORK/opendmarc.pid
AuthservID pf.bench.test
TrustedAuthservIDs pf.bench.test
RejectFailures true
SPFIgnoreResults false
SPFSelfValidate false
CF
opendkim -x "$WORK/opendkim.conf" -f 2>"$WORK/opendkim.err" &
PIDS+=($!)
opendmarc -c "$WORK/opendmarc.conf" -f 2>"$WORK/opendmarc.err" &
PIDS+=($!)
postgrey --inet=127.0.0.1:10023 --delay=1 --auto-whitelist-clients=0 --dbdir="$WORK/postgrey" \
    --pidfile="$WORK/postgrey.pid" --user=postgrey --group=postgrey --daemonize
postfix -c "$PF" check >/dev/null 2>&1 || { echo "postfix check failed; run: postfix -c $PF check"; exit 1; }
postfix -c "$PF" start >/dev/null 2>&1
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PF_PORT) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/10023) 2>/dev/null && break; sleep 0.1; done
warm postfix "$PF_PORT"
run postfix "$PF_PORT" "$SECONDS_RUN" --new-share 0.02
P_RATE=$R_RATE P_P50=$R_P50 P_P99=$R_P99 P_ERR=$R_ERR P_CPU=$R_CPU
P_PROBE=$(probe "$PF_PORT")

echo
echo "full policy, $SESSIONS sessions, 1 message per connection, ${SECONDS_RUN}s, $(date -u +%Y-%m-%d)"
printf '%-24s %10s %10s %10s %14s  %s\n' "" "msg/s" "p50 ms" "p99 ms" "CPU s/1000 msg" "refusals"
printf '%-24s %10s %10s %10s %14.2f  %s\n' "Postfix + stack" "$P_RATE" "$P_P50" "$P_P99" "$P_CPU" "$P_ERR"
printf '%-24s %10s %10s %10s %14.2f  %s\n' "mx6 (embedded store)" "$M_RATE" "$M_P50" "$M_P99" "$M_CPU" "$M_ERR"
printf '%-24s %10s %10s %10s %14.2f  %s\n' "mx6 (Redis store)" "$D_RATE" "$D_P50" "$D_P99" "$D_CPU" "$D_ERR"
echo "Redis: $D_TRIPS round trips ($D_CMDS commands inside them) for $D_MSGS accepted messages: $(echo "$D_TRIPS / $D_MSGS" | bc -l | xargs printf '%.2f') round trips per message ($(echo "$D_CMDS / $D_MSGS" | bc -l | xargs printf '%.1f') commands); Redis $(echo "(1 - $D_RATE / $M_RATE) * 100" | bc -l | xargs printf '%.1f')% slower than embedded"
echo "unaligned From, DMARC p=reject: Postfix: $P_PROBE"
echo "                                mx6: $M_PROBE"
echo "ratio msg/s: $(echo "$M_RATE / $P_RATE" | bc -l | xargs printf '%.2f')×   CPU per message: $(echo "$P_CPU / $M_CPU" | bc -l | xargs printf '%.2f')× less"
