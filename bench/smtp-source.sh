#!/usr/bin/env bash
# Throughput benchmark: Postfix's smtp-source against mx6 (durable spool,
# delivering into Maildir), against a stock Postfix with the discard
# transport, against Postfix delivering into Maildir with virtual(8) (the same
# job as mx6), on the same machine in the same run, and against smtp-sink (a
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

# No journal on this VM's ext4 (as on many cloud images): an inode freed in
# the last 60 s is skipped when a new one is allocated, at a cost per skipped
# inode -- and in the last 300 s while its inode table block is dirty, which
# allocating a new inode in that block makes it. Nobody pays for another's
# deletions: this script deletes the last run's files (about 80,000) first
# and notes when; mx6 runs once they are 301 s old (smtp-sink runs while
# they age). Postfix deletes a queue file per message; each of its runs
# waits until the deletions before it are written and a minute old.
settle() { sync; sleep "${SETTLE:-61}"; }
STAMP=${STAMP:-/tmp/mx6-bench.deleted}
if [ -e "$WORK" ]; then rm -rf "$WORK"; sync; date +%s > "$STAMP"; fi
aged() {
    local left=$(( $(cat "$STAMP" 2>/dev/null || echo 0) + ${AGE:-301} - $(date +%s) ))
    if [ "$left" -gt 0 ]; then sleep "$left"; fi
}
mkdir -p "$WORK"
SINK_PORT=${SINK_PORT:-2624}
cleanup() {
    [ -n "${MX6_PID:-}" ] && kill "$MX6_PID" 2>/dev/null || true
    [ -n "${SINK_PID:-}" ] && kill "$SINK_PID" 2>/dev/null || true
    postfix -c "$WORK/postfix" stop >/dev/null 2>&1 || true
    postfix -c "$WORK/postfix-maildir" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- mx6 ------------------------------------------------------------------
# A fresh data directory per run: deleting the last run's files right before
# would slow inode allocation (see settle above).
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

# ---- Postfix: stock with the discard transport, and delivering into Maildir
# with virtual(8), the same job mx6 does ------------------------------------
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
PFM=$WORK/postfix-maildir
PFM_PORT=${PFM_PORT:-2627}
mkdir -p "$PFM" "$WORK/pf-mail"; chown nobody:nogroup "$WORK/pf-mail"
postfix_instance "$PFM" "127.0.0.1:$PFM_PORT" "$WORK"
# user-1@ and user-N@, a Maildir each (the trailing slash); virtual(8)
# allows no substitution in this table.
printf '/^user-%s@bench\\.test$/ bench.test/user-%s/\n' 1 1 N N > "$PFM/mailboxes"
cat >> "$PFM/main.cf" <<CF
inet_protocols = ipv4
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $WORK/pf-mail
virtual_mailbox_maps = regexp:$PFM/mailboxes
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_transport = discard
CF
for d in "$PF" "$PFM"; do
    postfix -c "$d" check >/dev/null 2>&1 || { echo "postfix check failed; run: script -qc \"postfix -c $d check\" /dev/null"; exit 1; }
done

# ---- runs -----------------------------------------------------------------
# run NAME PORT MODE: MODE "1" = one message per connection, "N" = PER_CONN per connection
run() {
    local port=$2 mode=$3 start end
    start=$(date +%s.%N)
    if [ "$mode" = 1 ]; then
        smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f bench@client.test -t "$RCPT" "127.0.0.1:$port"
    else
        local batch=$((SESSIONS * PER_CONN)) rounds=$((MESSAGES / (SESSIONS * PER_CONN)))
        for _ in $(seq "$rounds"); do
            smtp-source -d -s "$SESSIONS" -l "$SIZE" -m "$batch" -f bench@client.test -t "$RCPT" "127.0.0.1:$port"
        done
    fi
    end=$(date +%s.%N)
    echo "$MESSAGES / ($end - $start)" | bc -l
}

count_new() { find "$1" -path '*/new/*' -type f 2>/dev/null | wc -l; }
wait_delivered() {
    local start=$1 dir=$2
    while [ "$(count_new "$dir")" -lt "$MESSAGES" ]; do sleep 0.05; done
    echo "$MESSAGES / ($(date +%s.%N) - $start)" | bc -l
}

# ---- smtp-sink: a server that answers and stores nothing, the ceiling ----
RCPT=user@bench.test
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 &
SINK_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$SINK_PORT) 2>/dev/null && break; sleep 0.1; done
sink=$(run sink "$SINK_PORT" 1)
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=

declare -A R
# mx6 first: it deletes no files, so it leaves nothing for Postfix to pay for.
aged
for mode in 1 N; do
    start_mx6 "$mode"
    t0=$(date +%s.%N)
    R[mx6_$mode]=$(run mx6 "$MX6_PORT" "$mode")
    R[mx6_both_$mode]=$(wait_delivered "$t0" "$MX6_DATA/mail")
    kill "$MX6_PID"; wait "$MX6_PID" 2>/dev/null || true; MX6_PID=
done
postfix -c "$PF" start >/dev/null 2>&1
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PF_PORT) 2>/dev/null && break; sleep 0.1; done
for mode in 1 N; do
    settle
    R[pf_$mode]=$(run postfix "$PF_PORT" "$mode")
done
postfix -c "$PF" stop >/dev/null 2>&1
postfix -c "$PFM" start >/dev/null 2>&1
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PFM_PORT) 2>/dev/null && break; sleep 0.1; done
for mode in 1 N; do
    settle
    # One mailbox per run, so the second run waits for its own files.
    RCPT=user-$mode@bench.test
    t0=$(date +%s.%N)
    R[pfm_$mode]=$(run postfix-maildir "$PFM_PORT" "$mode")
    R[pfm_both_$mode]=$(wait_delivered "$t0" "$WORK/pf-mail/bench.test/user-$mode")
done

printf '%-30s %9s %9s %9s %8s %8s %14s %14s %12s\n' workload "pf discard" "pf maildir" "mx6" "/discard" "/maildir" \
    "pf maildir a+d" "mx6 a+d" "of smtp-sink"
for mode in 1 N; do
    label="1 msg/conn"; [ "$mode" = N ] && label="$PER_CONN msg/conn"
    mx=${R[mx6_$mode]} pf=${R[pf_$mode]} pfm=${R[pfm_$mode]}
    of_sink=""; [ "$mode" = 1 ] && of_sink=$(echo "100 * $mx / $sink" | bc -l | xargs printf '%.0f%%')
    printf '%-30s %9.0f %9.0f %9.0f %7.2fx %7.2fx %14.0f %14.0f %12s\n' "$SIZE B, $SESSIONS sess, $label" "$pf" "$pfm" "$mx" \
        "$(echo "$mx / $pf" | bc -l)" "$(echo "$mx / $pfm" | bc -l)" "${R[pfm_both_$mode]}" "${R[mx6_both_$mode]}" "$of_sink"
done
printf 'smtp-sink (stores nothing), 1 msg/conn: %.0f msg/s, %s\n' "$sink" "$(date -u +%Y-%m-%d)"
