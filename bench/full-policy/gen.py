"""Test data for bench/full-policy.sh, written into WORK:

- unbound.conf: an unbound on 127.0.0.1:53 serving bench.test and the
  reverse zones: 4,096 IPv6 sources (the /64s of 2001:db8:100::/42 spread
  over its 64 /48s, host ::1) and 4,096 IPv4 sources (198.18.0.1 to 198.18.16.96, RFC 2544's benchmarking range) with PTR
  records; forward records for all but every 20th (FCrDNS fails for those);
  64 sender domains s0..s63.bench.test (s<k> sends from /48 number k) with
  SPF, DMARC p=reject and DKIM keys (ed25519 for even k, rsa2048 for odd);
  two DNSBL zones listing every 50th source (bl1) and every 75th (bl2);
- msgs/<k>.eml: one 4 KiB message per domain, DKIM-signed once here.
"""
import base64, ipaddress, os, subprocess, sys

import dkim
import nacl.signing

work = sys.argv[1]
os.makedirs(f"{work}/msgs", exist_ok=True)
BASE = int(ipaddress.IPv6Address("2001:db8:100::"))


def src6(i):
    return ipaddress.IPv6Address(BASE | ((i % 64) << 80) | ((i // 64) << 64) | 1)


def src4(i):
    return ipaddress.IPv4Address(f"198.18.{i // 250}.{i % 250 + 1}")


def rev(ip):
    return ip.reverse_pointer + "."


def txt(name, value):
    # TXT strings are at most 255 octets each.
    parts = " ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))
    return f"local-data: '{name}. TXT {parts}'"


ed = nacl.signing.SigningKey.generate()
ed_priv = base64.b64encode(bytes(ed)).decode()
ed_pub = base64.b64encode(bytes(ed.verify_key)).decode()
subprocess.run(["openssl", "genrsa", "-traditional", "-out", f"{work}/rsa.key", "2048"], check=True, capture_output=True)
rsa_priv = open(f"{work}/rsa.key", "rb").read()
der = subprocess.run(["openssl", "rsa", "-in", f"{work}/rsa.key", "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
rsa_pub = base64.b64encode(der).decode()

lines = [
    "server:",
    "  interface: 127.0.0.1",
    "  port: 53",
    "  do-daemonize: no",
    '  username: ""',
    '  chroot: ""',
    f'  directory: "{work}"',
    f'  pidfile: "{work}/unbound.pid"',
    "  use-syslog: no",
    f'  logfile: "{work}/unbound.log"',
    "  access-control: 127.0.0.0/8 allow",
    "  num-threads: 1",
    "  msg-cache-size: 64m",
    "  rrset-cache-size: 128m",
    '  local-zone: "bench.test." static',
    '  local-zone: "1.0.8.b.d.0.1.0.0.2.ip6.arpa." static',
    '  local-zone: "18.198.in-addr.arpa." static',
    "  local-data: 'mx.bench.test. AAAA ::1'",
    "  local-data: 'mx.bench.test. A 127.0.0.1'",
    "  local-data: 'pf.bench.test. A 127.0.0.1'",
]
for i in range(4096):
    for ip, kind, host in ((src6(i), "AAAA", f"h{i}.bench.test"), (src4(i), "A", f"v{i}.bench.test")):
        lines.append(f"  local-data-ptr: '{ip} {host}'")
        if i % 20:
            lines.append(f"  local-data: '{host}. {kind} {ip}'")
        for n, zone in ((50, "bl1"), (75, "bl2")):
            if i % n == 0 and i:
                owner = rev(ip).replace(".ip6.arpa.", "").replace(".in-addr.arpa.", "")
                lines.append(f"  local-data: '{owner}.{zone}.bench.test. A 127.0.0.2'")
for k in range(64):
    net = ipaddress.IPv6Network((BASE | (k << 80), 48))
    d = f"s{k}.bench.test"
    lines.append("  " + txt(d, f"v=spf1 ip6:{net} ip4:198.18.0.0/16 -all"))
    lines.append("  " + txt(f"_dmarc.{d}", "v=DMARC1; p=reject"))
    lines.append("  " + txt(f"ed._domainkey.{d}", f"v=DKIM1; k=ed25519; p={ed_pub}"))
    lines.append("  " + txt(f"rsa._domainkey.{d}", f"v=DKIM1; k=rsa; p={rsa_pub}"))
    body = b"".join(b"line %04d of a message for the full-policy benchmark, 4 KiB in all\r\n" % n for n in range(56))
    msg = (
        f"From: <bench@{d}>\r\nTo: <user@bench.test>\r\nSubject: full policy {k}\r\n"
        f"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{k}@{d}>\r\n\r\n"
    ).encode() + body
    if k % 2 == 0:
        sig = dkim.sign(msg, b"ed", d.encode(), ed_priv.encode(), signature_algorithm=b"ed25519-sha256",
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    else:
        sig = dkim.sign(msg, b"rsa", d.encode(), rsa_priv, include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    open(f"{work}/msgs/{k}.eml", "wb").write(sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + msg)
open(f"{work}/unbound.conf", "w").write("\n".join(lines) + "\n")
