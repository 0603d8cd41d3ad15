//! Started as root with `user = "nobody"`, mx6 binds a port below 1024, gives
//! data_dir to that user and runs as it; mail still arrives. (CI runs as root;
//! as another user this test says so and fails.)

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next()).unwrap().parse().unwrap()
}

#[test]
fn root_binds_low_port_then_runs_as_user() {
    assert_eq!(std::fs::metadata("/proc/self").unwrap().uid(), 0, "this test needs root (CI runs as root)");
    // A free privileged port on [::1].
    let low = (900..1000).find(|p| std::net::TcpListener::bind(("::1", *p)).is_ok()).expect("a free port below 1024");
    let mut s = Server::start("privileges", &format!("[[listener]]\naddress = \"[::1]:{low}\"\n"));
    s.kill9();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("user = \"nobody\"\n{cfg}")).unwrap();
    // The parent of data_dir must be traversable by nobody.
    std::fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.spawn(&[]);
    // The port opens before root is dropped: wait for the line that says it was.
    assert!(s.log_has("dropped root privileges"), "{}", s.log_text());
    let nobody = 65534;
    assert_eq!(uid_of(s.pid()), nobody, "{}", s.log_text());
    let out = swaks_ok(&["--server", "::1", "--port", &low.to_string(), "--to", "low@mx.test"]);
    assert!(out.contains("250 2.0.0 Ok: queued"));
    let files = s.wait_mail("low", "mx.test", 1);
    assert_eq!(files.len(), 1, "{}", s.log_text());
    assert_eq!(std::fs::metadata(&files[0]).unwrap().uid(), nobody);
    assert_eq!(std::fs::metadata(s.data().join("spool")).unwrap().uid(), nobody);
}
