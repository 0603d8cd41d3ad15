#!/usr/bin/env bash
# Run the whole test suite on a fresh Debian machine: install what the tests
# need (once), check formatting and lints, then run every test.
#   scripts/test.sh            # everything
#   scripts/test.sh -p mx6-smtp  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use as real peers and clients.
packages=(swaks python3 python3-yaml python3-spf python3-dkim python3-nacl openssl dovecot-lmtpd dovecot-imapd ca-certificates prometheus nftables iptables postfix libsasl2-modules systemd ansible-core redis-server spamassassin spamc opendkim opendkim-tools python3-milter rspamd pebble unbound ldnsutils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# PyPI peers, in a virtualenv of their own: parsedmarc reads the DMARC and
# TLS-RPT reports mx6 sends.
venv=/opt/mx6-test-venv
if [ ! -x "$venv/bin/parsedmarc" ]; then
    echo "== installing parsedmarc (PyPI) in $venv"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" \
        || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
    $SUDO python3 -m venv "$venv"
    $SUDO "$venv/bin/pip" install -q parsedmarc
fi
export MX6_PARSEDMARC="$venv/bin/parsedmarc"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --release "$@" 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
