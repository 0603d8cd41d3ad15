//! Reports end to end (`[reports]`, `mx6 report`): DMARC aggregate reports
//! counted from real evaluations, listed, shown and flushed through the
//! queue to the record's verified destinations, read by parsedmarc (PyPI)
//! and, as a report about one of our domains, by mx6 itself; TLS-RPT
//! reports from real outbound sessions, mailed as `multipart/report` and
//! POSTed over HTTPS; received reports (gzip, zip, TLS-RPT) summarised per
//! reporter and per network.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::https::{ca_and_cert, PolicyServer};
use common::*;

const RELAXED: &str = "[policy.ipv6]\nrequire_ptr = false\nrequire_fcrdns = false\nrequire_spf_or_dkim = false\n\
[policy.ipv4]\nrequire_ptr = false\nrequire_fcrdns = false\nrequire_spf_or_dkim = false\n";

/// example.org publishes SPF (softfail outside its networks, so mail from
/// elsewhere reaches end of data and DMARC) and DMARC p=reject with three
/// destinations: its own, an external one that agreed (RFC 7489 §7.1), and
/// an external one that did not.
const ZONE: &str = "
example.org TXT \"v=spf1 ip6:2001:db8:5::/48 ip4:192.0.2.0/24 ~all\"
_dmarc.example.org TXT \"v=DMARC1; p=reject; pct=100; rua=mailto:dmarc@example.org,mailto:agg@reports.test!1m,mailto:x@unverified.test\"
example.org._report._dmarc.reports.test TXT \"v=DMARC1\"
";

fn parsedmarc() -> String {
    std::env::var("MX6_PARSEDMARC").unwrap_or_else(|_| "/opt/mx6-test-venv/bin/parsedmarc".into())
}

/// parsedmarc's JSON for `file` (offline: no DNS lookups of its own).
fn parsedmarc_json(file: &Path) -> serde_json::Value {
    let out = Command::new(parsedmarc())
        .arg("--offline")
        .arg(file)
        .output()
        .expect("parsedmarc (PyPI; scripts/test.sh installs it in /opt/mx6-test-venv)");
    assert!(out.status.success(), "parsedmarc: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn report_cmd(s: &Server, args: &[&str]) -> (bool, String) {
    let mut a: Vec<&std::ffi::OsStr> = vec!["report".as_ref()];
    a.extend(args.iter().map(|x| x.as_ref() as &std::ffi::OsStr));
    a.extend(["--config".as_ref(), s.config.as_os_str()]);
    let out = mx6(&a);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `mx6 report list --json`, waiting until `ready` holds for it.
fn list_until(s: &Server, ready: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = report_cmd(s, &["list", "--json"]);
        assert!(ok, "{out}");
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        if ready(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "not ready: {out}\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn message(from: &str, subject: &str) -> String {
    format!("From: <{from}>\r\nTo: <u@mx.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\nhello\r\n")
}

/// A report mail as another provider sends it: `body` as an attachment
/// of content type `ct` named `name`.
fn report_mail(from: &str, ct: &str, name: &str, body: &[u8], extra_headers: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(body);
    let b64: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!(
        "From: <{from}>\r\nTo: <dmarc@example.org>\r\nSubject: Report Domain: example.org Submitter: x\r\n{extra_headers}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nA report.\r\n--b1\r\nContent-Type: {ct}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        b64.join("\r\n")
    )
}

/// `data` through a Python one-liner `script` (with `args`): its stdout.
fn python(script: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut c = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    c.wait_with_output().unwrap().stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    python("import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read()))", &[], data)
}

fn gunzip(data: &[u8]) -> String {
    String::from_utf8_lossy(&python("import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))", &[], data))
        .into_owned()
}

fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    python(
        "import io,sys,zipfile; b=io.BytesIO(); z=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED); z.writestr(sys.argv[1], sys.stdin.buffer.read()); z.close(); sys.stdout.buffer.write(b.getvalue())",
        &[name],
        data,
    )
}

const YAHOO_XML: &str = r#"<?xml version="1.0"?>
<feedback>
  <report_metadata><org_name>Yahoo</org_name><email>dmarchelp@yahooinc.com</email><report_id>y-1</report_id>
    <date_range><begin>BEGIN</begin><end>END</end></date_range></report_metadata>
  <policy_published><domain>example.org</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct></policy_published>
  <record><row><source_ip>2001:db8:5:77::9</source_ip><count>5</count>
    <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results><spf><domain>example.org</domain><result>softfail</result></spf></auth_results></record>
</feedback>"#;

const TLSRPT_JSON: &str = r#"{"organization-name":"Google Inc.","date-range":{"start-datetime":"START","end-datetime":"END"},
"contact-info":"smtp-tls-reporting@google.com","report-id":"g-1",
"policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx.example.org","max_age: 86400"],"policy-domain":"example.org","mx-host":["mx.example.org"]},
"summary":{"total-successful-session-count":40,"total-failure-session-count":3},
"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"2001:db8:ffff::1","receiving-mx-hostname":"mx.example.org","receiving-ip":"2001:db8:5:1::25","failed-session-count":3}]}]}"#;

#[test]
fn dmarc_reports_are_counted_sent_to_verified_destinations_and_read_back() {
    let s = Server::start_with_zone(
        "reports-dmarc",
        ZONE,
        &format!(
            "[local]\ndomains = [\"mx.test\", \"example.org\", \"reports.test\"]\n[reports]\nreceive = [\"dmarc@example.org\"]\n{RELAXED}"
        ),
    );
    // Two messages from one source, one from an IPv4 source: DMARC passes
    // (aligned SPF); one from outside example.org's networks fails and is
    // rejected (p=reject).
    for (src, subject) in [("2001:db8:5:1::25", "one"), ("2001:db8:5:1::25", "two"), ("192.0.2.10", "four")] {
        let r = Raw::proxied_mail(s.proxy_port, src, "a@example.org", "u@mx.test", &message("a@example.org", subject));
        assert!(r.starts_with("250 "), "{src}: {r}");
    }
    let r = Raw::proxied_mail(s.proxy_port, "2001:db8:6::1", "a@example.org", "u@mx.test", &message("a@example.org", "three"));
    assert!(r.starts_with("550 5.7.1"), "{r}");

    // One pending report with three rows and the two usable destinations.
    let list = list_until(&s, |v| v.iter().any(|r| r["kind"] == "dmarc" && r["count"] == 4));
    let rep = list.iter().find(|r| r["kind"] == "dmarc").unwrap();
    assert_eq!(rep["domain"], "example.org");
    assert_eq!(rep["rows"], 3, "{rep}");
    assert_eq!(rep["destinations"], serde_json::json!(["mailto:dmarc@example.org", "mailto:agg@reports.test"]), "{rep}");
    let skipped = rep["skipped"].to_string();
    assert!(skipped.contains("x@unverified.test") && skipped.contains("example.org._report._dmarc.unverified.test"), "{skipped}");
    let (ok, text) = report_cmd(&s, &["list"]);
    assert!(ok && text.contains("example.org") && text.contains("left out: mailto:x@unverified.test"), "{text}");

    // The document as it will be sent.
    let id = rep["id"].as_str().unwrap().to_string();
    let (ok, xml) = report_cmd(&s, &["show", &id]);
    assert!(ok, "{xml}");
    for want in [
        "<org_name>mx.test</org_name>",
        "<email>postmaster@mx.test</email>",
        "<domain>example.org</domain>",
        "<p>reject</p>",
        "<pct>100</pct>",
        "<source_ip>2001:db8:5:1::25</source_ip>",
        "<count>2</count>",
        "<source_ip>192.0.2.10</source_ip>",
        "<source_ip>2001:db8:6::1</source_ip>",
        "<disposition>reject</disposition>",
        "<result>softfail</result>",
    ] {
        assert!(xml.contains(want), "{want} in\n{xml}");
    }
    let (ok, err) = report_cmd(&s, &["show", "no-such-report"]);
    assert!(!ok && err.contains("no report no-such-report is pending"), "{err}");

    // Flush: queued once to both destinations, none to the unverified one.
    let (ok, out) = report_cmd(&s, &["flush"]);
    assert!(ok && out.contains("1 reports queued"), "{out}");
    let ours = s.wait_mail("dmarc", "example.org", 1);
    let theirs = s.wait_mail("agg", "reports.test", 1);
    assert_eq!((ours.len(), theirs.len()), (1, 1), "{}", s.log_text());
    let text = std::fs::read_to_string(&theirs[0]).unwrap().replace("\r\n ", " ");
    assert!(text.contains(&format!("Subject: Report Domain: example.org Submitter: mx.test Report-ID: <{id}>")), "{text}");
    assert!(text.contains("Content-Type: application/gzip") && text.contains("From: <postmaster@mx.test>"), "{text}");
    assert_eq!(s.metric("mx6_reports_total{kind=\"dmarc\",result=\"generated\"}"), 1.0);
    assert_eq!(s.metric("mx6_reports_total{kind=\"dmarc\",result=\"sent\"}"), 2.0);
    // The counts went with the report.
    let list = list_until(&s, |_| true);
    assert!(!list.iter().any(|r| r["kind"] == "dmarc"), "{list:?}");

    // parsedmarc reads what we sent.
    let p = parsedmarc_json(&theirs[0]);
    let agg = &p["aggregate_reports"][0];
    assert_eq!(agg["report_metadata"]["org_name"], "mx.test", "{p}");
    assert_eq!(agg["report_metadata"]["report_id"], id.as_str());
    assert_eq!(agg["policy_published"]["domain"], "example.org");
    assert_eq!(agg["policy_published"]["p"], "reject");
    assert_eq!(agg["policy_published"]["pct"], "100");
    let records = agg["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{p}");
    let two = records.iter().find(|r| r["source"]["ip_address"] == "2001:db8:5:1::25").unwrap();
    assert_eq!(two["count"], 2);
    assert_eq!(two["policy_evaluated"]["spf"], "pass");
    let bad = records.iter().find(|r| r["source"]["ip_address"] == "2001:db8:6::1").unwrap();
    assert_eq!(bad["policy_evaluated"]["disposition"], "reject");
    assert_eq!(bad["policy_evaluated"]["spf"], "fail");

    // dmarc@example.org is a report address: the report is about one of our
    // domains, so it was read on arrival too. So are a zipped DMARC report
    // and a gzipped TLS-RPT report from other providers.
    s.wait_log("report received");
    let now = chrono::Utc::now().timestamp();
    let yahoo = YAHOO_XML.replace("BEGIN", &(now - 86_400).to_string()).replace("END", &now.to_string());
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let tls = TLSRPT_JSON.replace("START", &format!("{day}T00:00:00Z")).replace("END", &format!("{day}T23:59:59Z"));
    let mails = [
        report_mail("dmarchelp@yahoo.example", "application/zip", "yahoo!example.org!1!2.zip", &zip("r.xml", yahoo.as_bytes()), ""),
        report_mail(
            "tls@google.example",
            "application/tlsrpt+gzip",
            "google.com!example.org!1!2.json.gz",
            &gzip(tls.as_bytes()),
            "TLS-Report-Domain: example.org\r\nTLS-Report-Submitter: google.com\r\n",
        ),
        // Not a report: delivered, counted as invalid, nothing kept.
        message("someone@mx.test", "hello there"),
    ];
    for m in &mails {
        let r = Raw::proxied_mail(s.proxy_port, "2001:db8:7::1", "reporter@elsewhere.example", "dmarc@example.org", m);
        assert!(r.starts_with("250 "), "{r}");
    }
    assert_eq!(s.wait_mail("dmarc", "example.org", 4).len(), 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric("mx6_reports_total{kind=\"unknown\",result=\"invalid\"}") < 1.0 {
        assert!(Instant::now() < deadline, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.metric("mx6_reports_total{kind=\"dmarc\",result=\"received\"}"), 2.0);
    assert_eq!(s.metric("mx6_reports_total{kind=\"tls\",result=\"received\"}"), 1.0);

    let (ok, out) = report_cmd(&s, &["summary", "example.org", "--json"]);
    assert!(ok, "{out}");
    let sum: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(sum["dmarc"]["reports"], 2, "{sum}");
    assert_eq!(sum["dmarc"]["total"], serde_json::json!({"pass": 3, "fail": 6}), "{sum}");
    assert_eq!(sum["dmarc"]["by_reporter"]["mx.test"], serde_json::json!({"pass": 3, "fail": 1}));
    assert_eq!(sum["dmarc"]["by_reporter"]["Yahoo"], serde_json::json!({"pass": 0, "fail": 5}));
    // Sources by /64 and /48: example.org's own /48 has a failing /64.
    assert_eq!(sum["dmarc"]["by_network"]["2001:db8:5::/48"], serde_json::json!({"pass": 2, "fail": 5}), "{sum}");
    assert_eq!(sum["dmarc"]["by_network"]["2001:db8:5:77::/64"], serde_json::json!({"pass": 0, "fail": 5}));
    assert_eq!(sum["dmarc"]["by_network"]["192.0.2.0/24"], serde_json::json!({"pass": 1, "fail": 0}));
    assert_eq!(sum["tls"]["reports"], 1);
    assert_eq!(sum["tls"]["total"], serde_json::json!({"pass": 40, "fail": 3}));
    assert_eq!(sum["tls"]["failures"]["certificate-expired"], 3);
    assert_eq!(sum["tls"]["by_network"]["2001:db8:5:1::/64"], serde_json::json!({"pass": 0, "fail": 3}));
    let (ok, text) = report_cmd(&s, &["summary", "example.org"]);
    assert!(ok && text.contains("DMARC: 2 reports, 3 messages passed, 6 failed"), "{text}");
    assert!(text.contains("TLS-RPT: 1 reports, 40 sessions passed, 3 failed"), "{text}");
    // Nothing about another domain.
    let (_, out) = report_cmd(&s, &["summary", "other.example", "--json"]);
    assert!(out.contains("\"reports\": 0"), "{out}");
}

#[test]
fn tls_reports_cover_real_sessions_and_go_by_mail_and_https() {
    let dir: PathBuf = std::env::temp_dir().join(format!("mx6-tlsrpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ca_and_cert(&dir, "sink", "tlsrpt.test", "DNS:tlsrpt.test");
    let sink = PolicyServer::start(&dir, "sink", "");
    let receiver = Server::start("tlsrpt-receiver", &format!("[local]\ndomains = [\"remote.test\"]\n[relay]\nmynetworks = []\n{RELAXED}"));
    let zone = format!(
        "remote.test MX 10 mx.remote.test\nmx.remote.test AAAA ::1\nmx.remote.test A 127.0.0.1\n\
         _smtp._tls.remote.test TXT \"v=TLSRPTv1; rua=mailto:tls@src.test,https://tlsrpt.test:{}/v1/report\"\n\
         tlsrpt.test AAAA ::1\nsrc.test TXT \"v=spf1 ip6:::1 ip4:127.0.0.1 -all\"\n",
        sink.port
    );
    let s = Server::start_with_zone(
        "tlsrpt-sender",
        &zone,
        &format!(
            "[local]\ndomains = [\"src.test\"]\n[delivery]\nport = {}\nca_file = \"{}/ca.crt\"\n[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n",
            receiver.port,
            dir.display()
        ),
    );
    // Two sessions to remote.test's MX with opportunistic TLS.
    s.submit("a@src.test", "u@remote.test");
    s.submit("a@src.test", "v@remote.test");
    assert_eq!(receiver.wait_mail("u", "remote.test", 1).len(), 1, "{}", s.log_text());
    assert_eq!(receiver.wait_mail("v", "remote.test", 1).len(), 1, "{}", s.log_text());

    let list = list_until(&s, |v| v.iter().any(|r| r["kind"] == "tls" && r["count"] == 2));
    let rep = list.iter().find(|r| r["kind"] == "tls").unwrap();
    assert_eq!(rep["domain"], "remote.test");
    let https = format!("https://tlsrpt.test:{}/v1/report", sink.port);
    assert_eq!(rep["destinations"], serde_json::json!(["mailto:tls@src.test", https]), "{rep}");
    let id = rep["id"].as_str().unwrap().to_string();
    let (ok, json) = report_cmd(&s, &["show", &id]);
    assert!(ok, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(doc["organization-name"], "mx.test");
    assert_eq!(doc["contact-info"], "postmaster@mx.test");
    assert_eq!(doc["policies"][0]["policy"]["policy-type"], "no-policy-found", "{doc}");
    assert_eq!(doc["policies"][0]["policy"]["policy-domain"], "remote.test");
    assert_eq!(doc["policies"][0]["policy"]["mx-host"], serde_json::json!(["mx.remote.test"]));
    assert_eq!(doc["policies"][0]["summary"]["total-successful-session-count"], 2);
    assert_eq!(doc["policies"][0]["summary"]["total-failure-session-count"], 0);

    let (ok, out) = report_cmd(&s, &["flush"]);
    assert!(ok && out.contains("1 reports queued"), "{out}");
    // By mail: multipart/report; report-type=tlsrpt with the gzip part.
    let mail = s.wait_mail("tls", "src.test", 1);
    assert_eq!(mail.len(), 1, "{}", s.log_text());
    let text = std::fs::read_to_string(&mail[0]).unwrap();
    assert!(text.contains("TLS-Report-Domain: remote.test") && text.contains("TLS-Report-Submitter: mx.test"), "{text}");
    assert!(text.contains("multipart/report") && text.contains("tlsrpt") && text.contains("application/tlsrpt+gzip"), "{text}");
    let p = parsedmarc_json(&mail[0]);
    let tls = &p["smtp_tls_reports"][0];
    assert_eq!(tls["organization_name"], "mx.test", "{p}");
    assert_eq!(tls["report_id"], id.as_str());
    assert_eq!(tls["policies"][0]["policy_domain"], "remote.test", "{p}");
    assert_eq!(tls["policies"][0]["successful_session_count"], 2, "{p}");
    // By HTTPS, verified against the test CA.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("posted.gz").exists() {
        assert!(Instant::now() < deadline, "nothing posted:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ct = std::fs::read_to_string(dir.join("posted.ct")).unwrap();
    assert_eq!(ct, "application/tlsrpt+gzip /v1/report");
    let posted: serde_json::Value = serde_json::from_str(&gunzip(&std::fs::read(dir.join("posted.gz")).unwrap())).unwrap();
    assert_eq!(posted["report-id"], id.as_str());
    assert_eq!(posted["policies"][0]["summary"]["total-successful-session-count"], 2);
    assert_eq!(s.metric("mx6_reports_total{kind=\"tls\",result=\"sent\"}"), 2.0);
    assert!(s.log_has("report posted"));
}

/// Two MX nodes on one Redis count into the same rows: one report per
/// domain and period, sent once, whichever node closes it.
#[test]
fn nodes_on_one_redis_add_up_into_one_report() {
    let redis = RedisServer::start();
    let extra = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\n[local]\ndomains = [\"mx.test\", \"example.org\", \"reports.test\"]\n{RELAXED}",
        redis.url()
    );
    let a = Server::start_with_zone("reports-redis-a", ZONE, &extra);
    let b = Server::start_with_zone("reports-redis-b", ZONE, &extra);
    for (node, subject) in [(&a, "on-a"), (&b, "on-b"), (&b, "on-b-again")] {
        let r = Raw::proxied_mail(node.proxy_port, "2001:db8:5:9::25", "a@example.org", "u@mx.test", &message("a@example.org", subject));
        assert!(r.starts_with("250 "), "{r}");
    }
    // Either node sees the sum.
    let on_a = list_until(&a, |v| v.iter().any(|r| r["kind"] == "dmarc" && r["count"] == 3));
    let rep = on_a.iter().find(|r| r["kind"] == "dmarc").unwrap();
    assert_eq!(rep["rows"], 1, "{rep}");
    list_until(&b, |v| v.iter().any(|r| r["kind"] == "dmarc" && r["count"] == 3));
    // Closed on one node: sent once, and gone from both.
    let (ok, out) = report_cmd(&a, &["flush"]);
    assert!(ok && out.contains("1 reports queued"), "{out}");
    let (ok, out) = report_cmd(&b, &["flush"]);
    assert!(ok && out.contains("0 reports queued"), "{out}");
    let got = a.mail_texts("agg", "reports.test", 1);
    assert_eq!(got.len(), 1);
    let p = parsedmarc_json(&a.wait_mail("agg", "reports.test", 1)[0]);
    assert_eq!(p["aggregate_reports"][0]["records"][0]["count"], 3, "{p}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.wait_mail("agg", "reports.test", 0).is_empty(), "the other node sent it too");
}
