//! The deployment kit under deploy/: every shipped config passes
//! `mx6 config check`, the systemd unit passes `systemd-analyze verify` without
//! warnings, and the Ansible role passes `ansible-playbook --syntax-check`
//! (Debian `systemd`, `ansible-core`; installed by scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn shipped_configs_are_valid() {
    let mut files = vec![deploy().join("mx6.toml")];
    files.extend(list(&deploy().join("examples")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")));
    assert!(files.len() >= 3);
    for f in files {
        let out = mx6(&["config".as_ref(), "check".as_ref(), "--config".as_ref(), f.as_os_str()]);
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn systemd_unit_verifies_cleanly() {
    // verify insists that ExecStart exists: point it at the built binary.
    let unit = std::fs::read_to_string(deploy().join("systemd/mx6.service")).unwrap();
    let dir = std::env::temp_dir().join(format!("mx6-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mx6.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/mx6", mx6_bin())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (Debian systemd)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("mx6.service")).collect();
    assert!(out.status.success() && warnings.is_empty(), "{text}");
    for hardening in [
        "User=mx6",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ansible_role_passes_syntax_check() {
    let out = Command::new("ansible-playbook")
        .args(["--syntax-check", "-i", "mx.example,", "site.yml"])
        .current_dir(deploy().join("ansible"))
        .output()
        .expect("ansible-playbook (Debian ansible-core)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
