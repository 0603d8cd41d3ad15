//! One owner per `data_dir`: `mx6 serve` holds an exclusive `flock` on
//! `data_dir/mx6.lock` for its whole life (the file names its pid), and the
//! offline tools take the same lock before they touch the spool or the
//! embedded state, so a second server or a tool can never rewrite the files
//! of a running one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path} is locked by a running mx6{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("mx6.lock")
}

/// Take the lock of `data_dir` (which must exist) without waiting.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = path(data_dir);
    let io = |source| LockError::Io { path: path.clone(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(io)?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held { path, pid: text.trim().parse().ok() });
        }
        return Err(io(e.into()));
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_owner_at_a_time() {
        let d = std::env::temp_dir().join(format!("mx6-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let l = super::acquire(&d).unwrap();
        match super::acquire(&d) {
            Err(super::LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(l);
        assert!(super::acquire(&d).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
