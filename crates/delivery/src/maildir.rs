//! Maildir delivery (the format of qmail's maildir(5), as Dovecot and Courier
//! read it): write into `tmp/`, fsync the file, rename into `new/`, fsync `new/`.
//! A reader never sees a partial message, and a delivery that returned Ok
//! survives a crash.
//!
//! File names are derived from the queue id and recipient index, so a delivery
//! repeated after a crash (the message was written but its outcome not yet
//! recorded) finds the earlier file and does not deliver twice.
//!
//! Defends against path traversal: user and domain become path components only
//! after [`path_component`] (no `/`, no leading `.`, no control characters).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("maildir {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(PathBuf),
    /// A file for this queue id and recipient was already there.
    AlreadyDelivered(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MaildirError + '_ {
    move |source| MaildirError::Io { path: path.to_path_buf(), source }
}

/// Make `s` safe as one path component, keeping it readable.
pub fn path_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        let safe = c.is_alphanumeric() || "_+-=@".contains(c) || (c == '.' && i > 0);
        if safe {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The Maildir directory for a mailbox from a template like `mail/{domain}/{user}`.
pub fn mailbox_dir(base: &Path, template: &str, user: &str, domain: &str) -> PathBuf {
    let rel = template.replace("{domain}", &path_component(domain)).replace("{user}", &path_component(user));
    base.join(rel)
}

/// Unique, repeatable name: `<secs>.M<usecs>Q<queue id>R<index>.<host>`.
pub fn file_name(arrival_micros: u64, queue_id: &str, rcpt: usize, host: &str) -> String {
    let host = host.replace('/', "\\057").replace(':', "\\072");
    format!("{}.M{}Q{}R{}.{}", arrival_micros / 1_000_000, arrival_micros % 1_000_000, queue_id, rcpt, host)
}

fn ensure(dir: &Path) -> Result<(), MaildirError> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        let p = dir.join(sub);
        if !p.is_dir() {
            b.create(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// `head` then `body` in one write where the kernel takes it all.
fn write_both(f: &mut File, head: &[u8], body: &[u8]) -> io::Result<()> {
    let n = f.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])?;
    if n < head.len() {
        f.write_all(&head[n..])?;
        f.write_all(body)
    } else {
        f.write_all(&body[n - head.len()..])
    }
}

/// Whether a message named `name` is in `new/` or (flagged) in `cur/`.
pub fn find_existing(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join("new").join(name);
    if p.exists() {
        return Some(p);
    }
    let prefix = format!("{name}:");
    fs::read_dir(dir.join("cur")).ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        (*n == *name || n.starts_with(&prefix)).then(|| e.path())
    })
}

/// One message for one mailbox.
pub struct Item<'a> {
    /// The Maildir (created when missing).
    pub dir: PathBuf,
    /// File name from [`file_name`].
    pub name: String,
    /// Per-recipient header lines (Return-Path, Delivered-To).
    pub header: Vec<u8>,
    pub body: &'a [u8],
    /// An earlier delivery under the same name counts as done (after a restart).
    pub check_existing: bool,
}

/// Deliver `header` followed by `body` into the Maildir `dir` under `name`.
pub fn deliver(dir: &Path, name: &str, header: &[u8], body: &[u8], check_existing: bool) -> Result<Outcome, MaildirError> {
    let item = Item { dir: dir.to_path_buf(), name: name.to_string(), header: header.to_vec(), body, check_existing };
    deliver_batch(std::slice::from_ref(&item)).pop().expect("one result per item")
}

/// Deliver many messages with group commit: write every file into `tmp/`,
/// fsync them all, rename each into `new/`, then fsync each `new/` directory
/// once. Every item gets its own result, in order; a failure leaves no file
/// behind.
pub fn deliver_batch(items: &[Item<'_>]) -> Vec<Result<Outcome, MaildirError>> {
    let mut results: Vec<Option<Result<Outcome, MaildirError>>> = Vec::with_capacity(items.len());
    let mut files: Vec<Option<File>> = Vec::with_capacity(items.len());
    // 1. write
    for it in items {
        let r = (|| {
            if it.check_existing {
                ensure(&it.dir)?;
                if let Some(p) = find_existing(&it.dir, &it.name) {
                    return Ok(Err(Outcome::AlreadyDelivered(p)));
                }
            }
            let tmp = it.dir.join("tmp").join(&it.name);
            let open = || OpenOptions::new().write(true).create(true).truncate(true).open(&tmp);
            // The Maildir is made on first delivery: no look before each file.
            let mut f = match open() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    ensure(&it.dir)?;
                    open()
                }
                r => r,
            }
            .map_err(io_err(&tmp))?;
            write_both(&mut f, &it.header, it.body).map_err(io_err(&tmp))?;
            Ok(Ok(f))
        })();
        match r {
            Ok(Ok(f)) => {
                files.push(Some(f));
                results.push(None);
            }
            Ok(Err(done)) => {
                files.push(None);
                results.push(Some(Ok(done)));
            }
            Err(e) => {
                files.push(None);
                let _ = fs::remove_file(items[results.len()].dir.join("tmp").join(&items[results.len()].name));
                results.push(Some(Err(e)));
            }
        }
    }
    // 2. make the contents durable, every file before any is renamed: the
    // inode table blocks they share are then written once, not per file.
    for (i, it) in items.iter().enumerate() {
        let Some(f) = &files[i] else { continue };
        if let Err(e) = f.sync_all() {
            let tmp = it.dir.join("tmp").join(&it.name);
            let _ = fs::remove_file(&tmp);
            files[i] = None;
            results[i] = Some(Err(MaildirError::Io { path: tmp, source: e }));
        }
    }
    // 3. publish
    let mut dirs: Vec<&Path> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if files[i].take().is_none() {
            continue;
        }
        let tmp = it.dir.join("tmp").join(&it.name);
        let new = it.dir.join("new").join(&it.name);
        // new/ gone since tmp/ was there (removed by hand): made again.
        let publish = || match fs::rename(&tmp, &new) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tmp.exists() => {
                ensure(&it.dir).map_err(|_| e).and_then(|_| fs::rename(&tmp, &new))
            }
            r => r,
        };
        match publish() {
            Ok(()) => {
                results[i] = Some(Ok(Outcome::Delivered(new)));
                if !dirs.contains(&it.dir.as_path()) {
                    dirs.push(&it.dir);
                }
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                results[i] = Some(Err(MaildirError::Io { path: new, source: e }));
            }
        }
    }
    // 4. make the renames durable
    for d in dirs {
        if let Err(e) = File::open(d.join("new")).and_then(|f| f.sync_all()) {
            for (i, it) in items.iter().enumerate() {
                if it.dir == d && matches!(results[i], Some(Ok(Outcome::Delivered(_)))) {
                    results[i] = Some(Err(MaildirError::Io { path: d.join("new"), source: io::Error::new(e.kind(), e.to_string()) }));
                }
            }
        }
    }
    results.into_iter().map(|r| r.expect("every item has a result")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_safe() {
        assert_eq!(path_component("alice"), "alice");
        assert_eq!(path_component("../etc"), "%2E.%2Fetc");
        assert_eq!(path_component("a/b"), "a%2Fb");
        assert_eq!(path_component(".hidden"), "%2Ehidden");
        assert_eq!(path_component(""), "_");
        assert_eq!(path_component("jörg"), "jörg");
        let d = mailbox_dir(Path::new("/data"), "mail/{domain}/{user}", "..", "x.test");
        assert_eq!(d, PathBuf::from("/data/mail/x.test/%2E."));
    }

    #[test]
    fn deliver_once() {
        let dir = std::env::temp_dir().join(format!("mx6-maildir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let name = file_name(1_700_000_000_123_456, "abc", 0, "mx.test");
        assert_eq!(name, "1700000000.M123456Qabc.R0.mx.test".replace("Qabc.R0", "QabcR0"));
        let out = deliver(&dir, &name, b"Return-Path: <a@b>\r\n", b"body\r\n", false).unwrap();
        let Outcome::Delivered(p) = out else { panic!() };
        assert_eq!(fs::read(&p).unwrap(), b"Return-Path: <a@b>\r\nbody\r\n");
        assert!(fs::read_dir(dir.join("tmp")).unwrap().next().is_none());
        // Moved to cur/ by a reader with flags: still found.
        fs::rename(&p, dir.join("cur").join(format!("{name}:2,S"))).unwrap();
        assert!(matches!(deliver(&dir, &name, b"", b"x", true).unwrap(), Outcome::AlreadyDelivered(_)));
        let _ = fs::remove_dir_all(&dir);
    }
}
