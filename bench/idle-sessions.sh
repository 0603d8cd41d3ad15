#!/usr/bin/env bash
# Memory for many idle sessions: open N connections to mx6 (half over IPv6,
# half over IPv4), wait for every greeting, then read mx6's resident memory.
#   bench/idle-sessions.sh          # N=10000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
PORT=${PORT:-2725}
WORK=${WORK:-/tmp/mx6-bench-idle}
ulimit -n "$(ulimit -Hn)"
cargo build --release -p mx6 >/dev/null
rm -rf "$WORK"; mkdir -p "$WORK"
cat > "$WORK/mx6.toml" <<TOML
hostname = "mx.bench.test"
data_dir = "$WORK/data"
[[listener]]
address = "127.0.0.1:$PORT"
[[listener]]
address = "[::1]:$PORT"
[limits]
sessions = $((N + 100))
TOML
target/release/mx6 serve --config "$WORK/mx6.toml" 2>"$WORK/mx6.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
BASE=$(rss)
python3 - "$N" "$PORT" "$PID" "$BASE" <<'PY'
import socket, sys, time
n, port, pid, base = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
socks = []
for i in range(n):
    fam, host = (socket.AF_INET6, "::1") if i % 2 else (socket.AF_INET, "127.0.0.1")
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    socks.append(s)
greeted = 0
for s in socks:
    s.settimeout(30)
    if s.recv(512).startswith(b"220 "):
        greeted += 1
time.sleep(1)
rss = int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
print(f"idle sessions: {greeted} greeted of {n}")
print(f"mx6 RSS: {rss/1024:.1f} MiB total, {base/1024:.1f} MiB at start, {(rss-base)/n:.2f} KiB per session")
PY
