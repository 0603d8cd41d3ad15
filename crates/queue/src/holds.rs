//! Holds: messages the operator (`mx6 queue hold`) or a milter (quarantine)
//! keeps from delivery until `mx6 queue release`. Kept in `spool/hold`, one
//! queue id per line, so they survive a restart and can be set while the
//! server is stopped. The file is replaced atomically.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The hold file of the spool in `spool_dir`.
pub fn path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("hold")
}

/// The held ids (none when the file does not exist).
pub fn read(spool_dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(path(spool_dir))
        .map(|s| s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

/// Write the hold list atomically (write, fsync, rename).
pub fn write(spool_dir: &Path, ids: &HashSet<String>) -> std::io::Result<()> {
    crate::disk::private_dir(spool_dir)?;
    let mut v: Vec<&String> = ids.iter().collect();
    v.sort();
    crate::disk::replace_private(&path(spool_dir), v.iter().map(|s| format!("{s}\n")).collect::<String>().as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let d = std::env::temp_dir().join(format!("mx6-holds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert!(super::read(&d).is_empty());
        super::write(&d, &["b".to_string(), "a".to_string()].into()).unwrap();
        assert_eq!(std::fs::read_to_string(super::path(&d)).unwrap(), "a\nb\n");
        assert_eq!(super::read(&d).len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
