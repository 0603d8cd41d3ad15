//! Prometheus metrics after known traffic from both families: exact counter
//! values with the right labels, and `promtool check metrics` on the output.

mod common;

use common::*;

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn counters_are_exact_and_labelled_by_family() {
    let zone = "2001:db8::5 PTR mail5.example.net\nmail5.example.net AAAA 2001:db8::5\n";
    let s = Server::start_with_zone("metrics", zone, "[local]\ndomains = [\"mx.test\"]\n");
    let p = s.port;
    for _ in 0..2 {
        swaks_ok(&["--server", "::1", "--port", &p.to_string(), "--to", "m6@mx.test"]);
    }
    swaks_ok(&["--server", "127.0.0.1", "--port", &p.to_string(), "--to", "m4@mx.test"]);
    // A stranger on each family tries to relay.
    for proxy in ["PROXY TCP6 2001:db8::5 ::1 40000 25\r\n", "PROXY TCP4 192.0.2.5 127.0.0.1 40000 25\r\n"] {
        let mut c = Raw::connect(v6(s.proxy_port));
        c.send(proxy.as_bytes());
        c.reply();
        c.cmd("EHLO x.example");
        c.cmd("MAIL FROM:<a@example.net>");
        assert!(c.cmd("RCPT TO:<x@other.test>").starts_with("554"));
        c.cmd("QUIT");
    }
    // An IPv6 client without reverse DNS.
    let mut c = Raw::connect(v6(s.proxy_port));
    c.send(b"PROXY TCP6 2001:db8::6 ::1 40000 25\r\n");
    c.reply();
    c.cmd("EHLO x.example");
    assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("550 5.7.25"));
    c.cmd("QUIT");
    drop(c);
    // A smuggling attempt over IPv4.
    let mut c = Raw::open(v4(p));
    c.cmd("EHLO x.example");
    c.cmd("MAIL FROM:<a@example.net>");
    c.cmd("RCPT TO:<m4@mx.test>");
    c.cmd("DATA");
    assert!(c.cmd("a\n.\nb\r\n.").starts_with("550 5.5.2"));
    c.cmd("QUIT");
    drop(c);
    assert_eq!(s.wait_mail("m6", "mx.test", 2).len(), 2);
    assert_eq!(s.wait_mail("m4", "mx.test", 1).len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(300));

    let (status, body) = s.http_get("/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let l6 = format!("[::1]:{p}");
    let l4 = format!("127.0.0.1:{p}");
    let lp = format!("[::1]:{}", s.proxy_port);
    // Connections include the one per family with which the test harness
    // waited for the server to listen.
    let want: Vec<(String, f64)> = vec![
        (format!("mx6_connections_total{{family=\"ipv6\",listener=\"{l6}\"}}"), 3.0),
        (format!("mx6_connections_total{{family=\"ipv4\",listener=\"{l4}\"}}"), 3.0),
        (format!("mx6_connections_total{{family=\"ipv6\",listener=\"{lp}\"}}"), 2.0),
        (format!("mx6_connections_total{{family=\"ipv4\",listener=\"{lp}\"}}"), 1.0),
        (format!("mx6_messages_accepted_total{{family=\"ipv6\",listener=\"{l6}\"}}"), 2.0),
        (format!("mx6_messages_accepted_total{{family=\"ipv4\",listener=\"{l4}\"}}"), 1.0),
        ("mx6_rejections_total{family=\"ipv6\",reason=\"relay_denied\",stage=\"rcpt\"}".into(), 1.0),
        ("mx6_rejections_total{family=\"ipv4\",reason=\"relay_denied\",stage=\"rcpt\"}".into(), 1.0),
        ("mx6_rejections_total{family=\"ipv4\",reason=\"bare_newline\",stage=\"data\"}".into(), 1.0),
        ("mx6_rejections_total{family=\"ipv6\",reason=\"no_ptr\",stage=\"mail\"}".into(), 1.0),
        ("mx6_delivery_attempts_total{family=\"ipv6\",result=\"delivered\"}".into(), 2.0),
        ("mx6_delivery_attempts_total{family=\"ipv4\",result=\"delivered\"}".into(), 1.0),
        (format!("mx6_sessions_active{{family=\"ipv6\",listener=\"{l6}\"}}"), 0.0),
        ("mx6_delivery_duration_seconds_count{family=\"ipv6\",result=\"delivered\"}".into(), 2.0),
        ("mx6_delivery_duration_seconds_count{family=\"ipv4\",result=\"delivered\"}".into(), 1.0),
        ("mx6_greylist_total{family=\"ipv6\",result=\"new\"}".into(), 0.0),
        ("mx6_queue_messages{state=\"active\"}".into(), 0.0),
        ("mx6_queue_messages{state=\"hold\"}".into(), 0.0),
    ];
    for (series, v) in want {
        assert_eq!(line_value(&body, &series), Some(v), "{series} in\n{body}");
    }
    // No raw client address in any label.
    assert!(!body.contains("2001:db8::5") && !body.contains("192.0.2.5"));
    for name in ["mx6_delivery_duration_seconds", "mx6_sessions_active", "mx6_queue_messages"] {
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert_eq!(s.http_get("/healthz"), ("HTTP/1.1 200 OK".into(), "ok\n".into()));

    // Every metric the Grafana dashboard queries is exported (histograms by
    // their _bucket series).
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/mx6.json")).unwrap())
            .unwrap();
    let mut names = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("mx6_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 10);
    for n in names {
        if n == "mx6_ratelimit_hits_total" {
            // Its series are labelled by the configured rate-limit rules, which
            // this version does not have yet: nothing to export until then.
            continue;
        }
        assert!(
            body.lines().any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} "))),
            "dashboard queries {n}, not exported"
        );
    }

    // promtool (Debian `prometheus`, installed by scripts/test.sh) accepts it.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs the prometheus package)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
