//! `mx6 queue` against a running server (control socket) and a stopped one
//! (spool files): list, show, hold, release, delete, flush.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn queue(s: &Server, args: &[&str]) -> (i32, String) {
    let out = Command::new(mx6_bin()).arg("queue").args(args).arg("--config").arg(&s.config).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn list(s: &Server) -> Vec<serde_json::Value> {
    let (code, out) = queue(s, &["list", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn queue_commands_on_running_and_stopped_server() {
    let mut r = Server::start("queue-recv", "[local]\ndomains = [\"dest.test\"]\n");
    r.kill9();
    let zone = "dest.test MX 10 mx.dest.test\nmx.dest.test A 127.0.0.1\n";
    let mut s = Server::start_with_zone(
        "queue-send",
        zone,
        &format!("[delivery]\nport = {}\n[queue]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n", r.port),
    );
    for subject in ["q1", "q2"] {
        let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "u@dest.test", "--h-Subject", subject]);
        assert!(out.contains("250 2.0.0 Ok: queued"));
    }
    wait_for("two deferred messages", || list(&s).iter().filter(|m| m["state"] == "deferred").count() == 2);
    let l = list(&s);
    assert_eq!(l[0]["attempts"], 1);
    assert!(l[0]["last_error"].as_str().unwrap().contains("connect"), "{l:?}");
    assert!(l[0]["next_attempt"].as_str().is_some());
    assert_eq!(l[0]["recipients"][0]["address"], "u@dest.test");
    let (id1, id2) = (l[0]["id"].as_str().unwrap().to_string(), l[1]["id"].as_str().unwrap().to_string());
    let (code, text) = queue(&s, &["list"]);
    assert!(code == 0 && text.contains(&id1) && text.contains("last error:"), "{text}");
    let (code, shown) = queue(&s, &["show", &id1]);
    assert!(code == 0 && shown.contains("Subject: q1"), "{shown}");
    assert_eq!(queue(&s, &["show", "0000000000000000"]).0, 1);

    assert_eq!(queue(&s, &["hold", &id1]).0, 0);
    assert_eq!(queue(&s, &["delete", &id2]).0, 0);
    wait_for("the deletion", || list(&s).len() == 1);
    assert_eq!(list(&s)[0]["state"], "hold");
    let (_, metrics) = s.http_get("/metrics");
    assert!(metrics.contains("mx6_queue_messages{state=\"hold\"} 1"), "{metrics}");
    assert!(s.log_has("removed from the queue by the operator"));

    // The receiver comes back; flush leaves the held message alone, release sends it.
    r.spawn(&[]);
    assert_eq!(queue(&s, &["flush"]).0, 0);
    std::thread::sleep(Duration::from_millis(500));
    let inbox = r.data().join("mail/dest.test/u/new");
    assert_eq!(std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(0), 0, "a held message was delivered");
    assert_eq!(queue(&s, &["release", &id1]).0, 0);
    let m = r.mail_texts("u", "dest.test", 1);
    assert_eq!(m.len(), 1);
    assert!(m[0].contains("Subject: q1"), "{}", m[0]);
    wait_for("an empty queue", || list(&s).is_empty());

    // A stopped server: list, hold and delete on the spool files.
    r.kill9();
    let out = swaks_ok(&["--server", "::1", "--port", &s.port.to_string(), "--to", "u@dest.test", "--h-Subject", "q3"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    wait_for("q3 deferred", || list(&s).iter().any(|m| m["state"] == "deferred"));
    s.terminate();
    let l = list(&s);
    assert_eq!(l.len(), 1, "{l:?}");
    let id3 = l[0]["id"].as_str().unwrap().to_string();
    assert_eq!(queue(&s, &["hold", &id3]).0, 0);
    assert_eq!(list(&s)[0]["state"], "hold");
    let (code, shown) = queue(&s, &["show", &id3]);
    assert!(code == 0 && shown.contains("Subject: q3"), "{shown}");
    assert_eq!(queue(&s, &["delete", &id3]).0, 0);
    assert!(list(&s).is_empty());
}
