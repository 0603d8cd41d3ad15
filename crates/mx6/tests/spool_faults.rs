//! The spool under faults, on real filesystems: each test gives the spool a
//! small ext4 filesystem (a loop-mounted image file, a few MiB) mounted in a
//! mount namespace of the server's own, then makes it fail — full during DATA,
//! below `queue.min_free`, out of inodes when a segment rotates, an fsync that
//! fails — or damages the spool between runs: a flipped bit in a middle
//! record, a stray segment file. After each fault and a restart, every message
//! that got 250 is delivered exactly once and no message without 250 appears.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A fresh ext4 image of `kib` KiB (`inodes` of them when given).
fn image(s: &Server, kib: u32, inodes: Option<u32>) -> PathBuf {
    let img = s.dir.join("spool.img");
    let out = Command::new("truncate").arg("-s").arg(format!("{kib}K")).arg(&img).output().unwrap();
    assert!(out.status.success());
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-m", "0"]);
    if let Some(n) = inodes {
        mkfs.args(["-N", &n.to_string()]);
    }
    let out = mkfs.arg(&img).output().expect("mkfs.ext4 (e2fsprogs)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    img
}

/// Shell commands that mount `img` as the server's spool.
fn mount(s: &Server, img: &Path) -> String {
    let spool = s.data().join("spool");
    format!("mkdir -p {sp} && mount -o loop {img} {sp}", sp = spool.display(), img = img.display())
}

/// One message from mynetworks; the reply to its end of data (or the first
/// refusal before it).
fn send(s: &Server, token: &str, size: usize) -> String {
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO client.example");
    for cmd in ["MAIL FROM:<a@client.example>".to_string(), "RCPT TO:<f@mx.test>".to_string(), "DATA".to_string()] {
        let r = c.cmd(&cmd);
        if !r.starts_with('2') && !r.starts_with('3') {
            return r;
        }
    }
    let filler = "x".repeat(76);
    let mut body = format!("Subject: {token}\r\n\r\n");
    while body.len() < size {
        body.push_str(&filler);
        body.push_str("\r\n");
    }
    body.push_str(&format!("END-{token}\r\n."));
    let r = c.cmd(&body);
    c.cmd("QUIT");
    r
}

/// The tokens delivered to f@mx.test, waiting until `want` are there (and a
/// moment longer, so that a duplicate would show).
fn delivered(s: &Server, want: usize) -> Vec<String> {
    let texts = s.mail_texts("f", "mx.test", want);
    std::thread::sleep(Duration::from_millis(300));
    let mut tokens: Vec<String> = s
        .mail_texts("f", "mx.test", want)
        .iter()
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string)))
        .collect();
    tokens.sort();
    assert!(texts.len() >= want, "only {} of {want} delivered", texts.len());
    tokens
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn disk_full_during_data_refuses_with_452_and_accepts_again_when_space_returns() {
    let mut s = Server::prepare("full-data", "[queue]\nmin_free = 0\n");
    let img = image(&s, 4096, None);
    let spool = s.data().join("spool");
    let fill = format!("{}; dd if=/dev/zero of={}/filler bs=4k 2>/dev/null || true", mount(&s, &img), spool.display());
    s.spawn_in_namespace(&fill, &[]);
    let r = send(&s, "refused", 20_000);
    assert!(r.starts_with("452 4.3.1 "), "{r}");
    assert_eq!(s.metric("mx6_spool_write_failures_total{kind=\"full\"}"), 1.0);
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"storage_full\",stage=\"data\"}"), 1.0);
    // Space returns: accepted again, no restart, no operator action.
    let out = s.in_namespace(&format!("rm {}/filler", spool.display()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = send(&s, "after-space", 20_000);
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(delivered(&s, 1), ["after-space"]);
    // A crash and a restart on the same filesystem: nothing lost, nothing twice.
    s.kill9();
    s.spawn_in_namespace(&mount(&s, &img), &[]);
    assert!(send(&s, "after-restart", 1000).starts_with("250 "));
    assert_eq!(delivered(&s, 2), sorted(&["after-space", "after-restart"]));
}

#[test]
fn below_min_free_mail_gets_452_before_any_data() {
    let mut s = Server::prepare("min-free", "[queue]\nmin_free = \"2MiB\"\n");
    let img = image(&s, 4096, None);
    let spool = s.data().join("spool");
    // Leave about 1 MiB: below the reserve, but room enough for a message.
    let fill = format!("{}; dd if=/dev/zero of={}/filler bs=1M count=2 2>/dev/null", mount(&s, &img), spool.display());
    s.spawn_in_namespace(&fill, &[]);
    let mut c = Raw::open(v6(s.port));
    c.cmd("EHLO client.example");
    let r = c.cmd("MAIL FROM:<a@client.example>");
    assert!(r.starts_with("452 4.3.1 "), "{r}");
    c.cmd("QUIT");
    assert_eq!(s.metric("mx6_rejections_total{family=\"ipv6\",reason=\"insufficient_storage\",stage=\"mail\"}"), 1.0);
    let free = s.metric("mx6_spool_free_bytes");
    assert!(free > 0.0 && free < 2.0 * 1024.0 * 1024.0, "{free}");
    s.in_namespace(&format!("rm {}/filler", spool.display()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(send(&s, "ok", 1000).starts_with("250 "));
    assert_eq!(delivered(&s, 1), ["ok"]);
}

#[test]
fn a_segment_that_cannot_be_created_at_rotation_is_not_a_lost_message() {
    let mut s = Server::prepare("rotation", "[queue]\nsegment_size = \"64KiB\"\nmin_free = 0\n");
    let img = image(&s, 8192, Some(32));
    let spool = s.data().join("spool");
    // Use up every inode but the two the spool needs at start (a segment and the done-log).
    let pre = format!(
        "{}; i=0; while touch {sp}/f$i 2>/dev/null; do i=$((i+1)); done; rm {sp}/f0 {sp}/f1",
        mount(&s, &img),
        sp = spool.display()
    );
    s.spawn_in_namespace(&pre, &[]);
    let tokens: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    for t in &tokens {
        let r = send(&s, t, 20_000);
        assert!(r.starts_with("250 "), "{t}: {r}");
    }
    assert!(s.log_has("could not start a new segment"), "{}", s.log_text());
    let want: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_eq!(delivered(&s, 8), sorted(&want));
    // Inodes come back; a restart delivers nothing twice.
    s.in_namespace(&format!("rm -f {}/f*", spool.display()));
    s.kill9();
    s.spawn_in_namespace(&mount(&s, &img), &[]);
    assert!(send(&s, "m8", 1000).starts_with("250 "));
    let mut want = want;
    want.push("m8");
    assert_eq!(delivered(&s, 9), sorted(&want));
}

/// An LD_PRELOAD shim whose `fdatasync` fails once with EIO when a trigger file exists.
fn fsync_shim(dir: &Path) -> PathBuf {
    let src = dir.join("fail_fsync.c");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *t = getenv("MX6_FAIL_FSYNC");
    if (t && unlink(t) == 0) { errno = EIO; return -1; }
    return real(fd);
}
"#,
    )
    .unwrap();
    let so = dir.join("fail_fsync.so");
    let out = Command::new("gcc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&src).arg("-ldl").output().expect("gcc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    so
}

#[test]
fn a_failed_fsync_is_a_failed_write_never_a_250() {
    let mut s = Server::prepare("fsync", "[queue]\nmin_free = 0\n");
    let img = image(&s, 4096, None);
    let so = fsync_shim(&s.dir);
    let trigger = s.dir.join("fail-next-fsync");
    let env = [("LD_PRELOAD", so.to_str().unwrap()), ("MX6_FAIL_FSYNC", trigger.to_str().unwrap())];
    s.spawn_in_namespace(&mount(&s, &img), &env);
    assert!(send(&s, "before", 1000).starts_with("250 "));
    assert_eq!(delivered(&s, 1), ["before"]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&trigger, b"").unwrap();
    let r = send(&s, "fsync-failed", 5000);
    assert!(r.starts_with("451 4.3.0 "), "{r}");
    assert!(!trigger.exists(), "the fault was used");
    assert_eq!(s.metric("mx6_spool_write_failures_total{kind=\"io\"}"), 1.0);
    assert!(send(&s, "after", 1000).starts_with("250 "));
    s.kill9();
    s.spawn_in_namespace(&mount(&s, &img), &env);
    assert!(send(&s, "restarted", 1000).starts_with("250 "));
    assert_eq!(delivered(&s, 3), sorted(&["before", "after", "restarted"]));
}

#[test]
fn one_owner_per_data_dir() {
    let s = Server::start("owner", "");
    // A second server on the same data_dir exits at once, naming the first.
    let out = mx6(&["serve".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", s.pid())), "{err}");
    // An offline tool that cannot reach the running server refuses to touch its spool.
    assert!(send(&s, "queued", 500).starts_with("250 "));
    std::fs::remove_file(s.data().join("control.sock")).unwrap();
    let out = mx6(&["queue".as_ref(), "delete".as_ref(), "0000000000000001".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to touch the files of a running server"), "{err}");
    let out = mx6(&["state".as_ref(), "clear".as_ref(), "2001:db8::1".as_ref(), "--config".as_ref(), s.config.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_control_socket_path_that_cannot_be_bound_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("mx6-longpath-{}", std::process::id())).join("d".repeat(90));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mx6.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.test\"\ndata_dir = \"{}/data\"\n[[listener]]\naddress = \"[::1]:{}\"\n[metrics]\nlisten = \"\"\n",
            dir.display(),
            free_port()
        ),
    )
    .unwrap();
    let out = mx6(&["serve".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("control socket") && err.contains("choose a shorter data_dir"), "{err}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// Offsets of the records in a segment file.
fn records(seg: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = 0;
    while let Some(j) = seg[i..].windows(4).position(|w| w == b"MX6N") {
        v.push(i + j);
        i += j + 4;
    }
    v
}

#[test]
fn a_flipped_bit_costs_one_message_and_a_stray_segment_costs_nothing() {
    // The receiver is down: the messages wait in the sender's spool.
    let mut r = Server::start("flip-recv", "[local]\ndomains = [\"dest.test\"]\n");
    r.kill9();
    let zone = "dest.test MX 10 mx.dest.test\nmx.dest.test A 127.0.0.1\n";
    let mut s = Server::start_with_zone(
        "flip-send",
        zone,
        &format!("[delivery]\nport = {}\n[queue]\nretry_initial = \"1h\"\nretry_max = \"2h\"\n", r.port),
    );
    for t in ["one", "two", "three", "four"] {
        let out = swaks_ok(&[
            "--server",
            "::1",
            "--port",
            &s.port.to_string(),
            "--to",
            "u@dest.test",
            "--h-Subject",
            t,
            "--body",
            &format!("body of {t}"),
        ]);
        assert!(out.contains("250 2.0.0 Ok: queued"), "{out}");
    }
    wait_for("four deferred messages", || s.metric("mx6_queue_messages{state=\"deferred\"}") == 4.0);
    assert_eq!(s.terminate(), Some(0));
    // Damage: one bit in the second record's envelope, one in the fourth's body;
    // a stray file named like the last possible segment.
    let spool = s.data().join("spool");
    let seg =
        list(&spool).into_iter().find(|p| p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 0).unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let at = records(&data);
    assert_eq!(at.len(), 4);
    data[at[1] + 40] ^= 0x04;
    let n = data.len();
    data[n - 10] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    std::fs::write(spool.join("ffffffffffffffff.seg"), b"not a record at all").unwrap();
    let started = Instant::now();
    s.spawn(&[]);
    assert!(started.elapsed() < Duration::from_secs(10), "startup does not depend on segment numbers");
    assert!(s.log_has("recovered queued messages from the spool"), "{}", s.log_text());
    assert_eq!(s.metric("mx6_spool_corrupt_records_total"), 2.0, "the flipped envelope and the stray file");
    let q = walk(&s.data().join("quarantine"));
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(!spool.join("ffffffffffffffff.seg").exists());
    wait_for("three messages listed", || s.metric("mx6_queue_messages{state=\"deferred\"}") == 3.0);
    // The receiver comes back: the intact messages arrive once; the one whose
    // body was damaged is caught by its checksum and never delivered.
    r.spawn(&[]);
    let out = Command::new(mx6_bin()).args(["queue", "flush", "--config"]).arg(&s.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let texts = r.mail_texts("u", "dest.test", 2);
    wait_for("the corrupt body to be counted", || s.metric("mx6_spool_corrupt_records_total") == 3.0);
    std::thread::sleep(Duration::from_millis(500));
    let texts2 = r.mail_texts("u", "dest.test", 2);
    assert_eq!(texts.len(), 2);
    assert_eq!(texts2.len(), 2);
    let mut subjects: Vec<&str> = texts2.iter().filter_map(|t| t.lines().find_map(|l| l.strip_prefix("Subject: "))).collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "three"]);
    assert!(s.log_has("is corrupt; it cannot be delivered"));
    assert_eq!(s.metric("mx6_queue_messages{state=\"deferred\"}"), 0.0);
}

#[test]
fn the_spool_is_private_and_other_users_get_a_clear_refusal() {
    let s = Server::start("private", "[queue]\nretry_initial = \"1h\"\nretry_max = \"1h\"\n");
    assert!(send(&s, "p1", 500).starts_with("250 "));
    delivered(&s, 1);
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    for d in ["", "spool", "state", "tls"] {
        let p = s.data().join(d);
        if p.exists() {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
    }
    for f in walk(&s.data().join("spool")) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&s.data().join("mx6.lock")), 0o600);
    assert_eq!(mode(&s.data().join("tls/key.pem")), 0o600);
    // The config is readable by anyone; the spool is not.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", mx6_bin(), "queue", "list", "--config"])
        .arg(&s.config)
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Permission denied") && err.contains("run mx6 as root or as the user mx6 runs as"), "{err}");
}
