//! The spool committer's file operations behind one trait, so tests can make
//! any of them fail the way a full or failing disk does (ENOSPC on a write,
//! a short write, EIO on fsync, a segment that cannot be created). The real
//! implementation creates everything private (files 0600).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub trait Disk: Send {
    /// Create a new file for appending (it must not exist).
    fn create(&mut self, path: &Path) -> io::Result<File>;
    /// Write all of `bufs` at the end of `f`.
    fn append(&mut self, f: &mut File, bufs: &mut [IoSlice<'_>]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync(&mut self, f: &File) -> io::Result<()>;
    /// Cut `f` back to `len` octets.
    fn truncate(&mut self, f: &File, len: u64) -> io::Result<()>;
    /// `fsync` of a directory, after a file was created in it.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The filesystem as it is.
pub struct Real;

pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().create_new(true).append(true).mode(0o600).open(path)
}

impl Disk for Real {
    fn create(&mut self, path: &Path) -> io::Result<File> {
        create_private(path)
    }

    fn append(&mut self, f: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match f.write_vectored(bufs) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "spool write returned 0")),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync(&mut self, f: &File) -> io::Result<()> {
        f.sync_data()
    }

    fn truncate(&mut self, f: &File, len: u64) -> io::Result<()> {
        f.set_len(len)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Faults to inject, for tests: each is used once, in order of the calls it
/// matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next append writes `n` octets, then fails with ENOSPC.
    AppendPartial(usize),
    /// The next sync fails with EIO.
    SyncFails,
    /// The next create fails with ENOSPC.
    CreateFails,
    /// The next truncate fails with EIO.
    TruncateFails,
}

/// [`Real`] with faults taken from a shared list.
pub struct Faulty {
    pub faults: std::sync::Arc<std::sync::Mutex<Vec<Fault>>>,
}

impl Faulty {
    fn take(&self, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = f.iter().position(pred)?;
        Some(f.remove(i))
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl Disk for Faulty {
    fn create(&mut self, path: &Path) -> io::Result<File> {
        if self.take(|f| *f == Fault::CreateFails).is_some() {
            return Err(enospc());
        }
        Real.create(path)
    }

    fn append(&mut self, f: &mut File, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        if let Some(Fault::AppendPartial(n)) = self.take(|f| matches!(f, Fault::AppendPartial(_))) {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            f.write_all(&all[..n.min(all.len())])?;
            return Err(enospc());
        }
        Real.append(f, bufs)
    }

    fn sync(&mut self, f: &File) -> io::Result<()> {
        if self.take(|f| *f == Fault::SyncFails).is_some() {
            return Err(io::Error::from_raw_os_error(5));
        }
        Real.sync(f)
    }

    fn truncate(&mut self, f: &File, len: u64) -> io::Result<()> {
        if self.take(|f| *f == Fault::TruncateFails).is_some() {
            return Err(io::Error::from_raw_os_error(5));
        }
        Real.truncate(f, len)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        Real.sync_dir(dir)
    }
}

/// Set `path`'s permission bits (best effort: a file that is not ours keeps its own).
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Replace `path` with `data` atomically, private (0600): write a temporary
/// file, fsync it, rename it over `path`, fsync the directory.
pub fn replace_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = create_private(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Real.sync_dir(dir),
        _ => Ok(()),
    }
}

/// Create `dir` (and its parents) and make it private (0700).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700);
    Ok(())
}
