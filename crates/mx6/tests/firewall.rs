//! `mx6 firewall`: the rulesets are accepted by the real tools in check mode
//! (`nft -c`, `iptables-restore --test`, `ip6tables-restore --test`; Debian
//! `nftables` and `iptables`, installed by scripts/test.sh) and contain what the
//! config implies. Nothing is applied.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn check_with(tool: &str, args: &[&str], input: &str) {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} is installed (scripts/test.sh installs it): {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{tool} {args:?} refused the ruleset: {}\n{input}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rulesets_pass_the_real_tools_and_follow_the_config() {
    let dir = std::env::temp_dir().join(format!("mx6-fw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mx6.toml");
    std::fs::write(
        &cfg,
        r#"
[[listener]]
address = "[::]:25"
[[listener]]
address = "0.0.0.0:25"
[[listener]]
address = "[2001:db8::25]:587"
kind = "submission"
allow = ["2001:db8:1::/48"]
[[listener]]
address = "192.0.2.25:465"
kind = "submissions"
allow = ["198.51.100.0/24", "203.0.113.7/32"]
[[listener]]
address = "[::1]:2525"
[metrics]
listen = "[2001:db8::25]:9325"
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["firewall".as_ref(), "--config".as_ref(), cfg.as_os_str()];
        a.extend(args.iter().map(|s| std::ffi::OsStr::new(*s)));
        let out = mx6(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let nft = run(&[]);
    check_with("nft", &["-c", "-f", "-"], &nft);
    for want in [
        "policy drop;",
        "meta nfproto ipv6 tcp dport 25 accept",
        "meta nfproto ipv4 tcp dport 25 accept",
        "ip6 daddr 2001:db8::25 ip6 saddr { 2001:db8:1::/48 } tcp dport 587 accept",
        "ip daddr 192.0.2.25 ip saddr { 198.51.100.0/24, 203.0.113.7/32 } tcp dport 465 accept",
        "ip6 daddr 2001:db8::25 tcp dport 9325 accept",
        "packet-too-big",
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "rt type 0 drop",
        "exthdr frag exists limit rate over",
        "tcp dport 22 accept",
    ] {
        assert!(nft.contains(want), "missing {want:?} in\n{nft}");
    }
    assert!(!nft.contains("2525"), "loopback listeners need no rule");

    let v4 = run(&["--format", "iptables", "--family", "ipv4", "--ssh-port", "2222"]);
    check_with("iptables-restore", &["--test"], &v4);
    assert!(v4.contains("-A INPUT -s 198.51.100.0/24 -d 192.0.2.25 -p tcp -m tcp --dport 465"), "{v4}");
    assert!(v4.contains("--dport 2222 -j ACCEPT") && !v4.contains("--dport 22 -j"), "{v4}");
    assert!(!v4.contains("2001:db8"), "{v4}");
    let v6 = run(&["--format", "iptables", "--family", "ipv6"]);
    check_with("ip6tables-restore", &["--test"], &v6);
    assert!(v6.contains("-A INPUT -s 2001:db8:1::/48 -d 2001:db8::25 -p tcp -m tcp --dport 587"), "{v6}");
    assert!(v6.contains("-m rt --rt-type 0 -j DROP") && v6.contains("--icmpv6-type packet-too-big"), "{v6}");
    let _ = std::fs::remove_dir_all(&dir);
}
