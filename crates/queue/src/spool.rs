//! The durable spool: append-only segment files written by one committer
//! thread with group commit, and a done-log of per-recipient outcomes
//! ([`crate::donelog`]), all private (files 0600, directories 0700).
//!
//! Layout under the spool directory:
//! - `NNNNNNNNNNNNNNNN.seg`: records ([`crate::record`]), 16 hex digits;
//! - `done.log`, and `done.log.N` from earlier runs until they are compacted.
//!
//! Promise (RFC 5321 §4.1.1.4, §6.1): [`SpoolHandle::append`] returns only after
//! the record is on stable storage (`fdatasync`, and for a new segment file an
//! `fsync` of the directory). Requests that arrive while one sync runs are
//! written together and covered by the next single sync: many concurrent
//! messages, one fsync.
//!
//! Faults: a write or an fsync that fails (ENOSPC, EIO, a short write) fails
//! every record of its batch — a failed fsync is never retried as if the
//! data were safe — and the segment is cut back to the end of its last
//! complete record before anything else is written (or, when even that fails,
//! writing moves to a fresh segment). The spool accepts again as soon as a
//! write succeeds: no restart, no operator action. [`SpoolError::is_full`]
//! tells "no space" (452 4.3.1) from other I/O errors (451 4.3.0).
//!
//! Start: the directory is listed (names that do not parse are ignored with a
//! warning), writing starts in a new segment at once, and the old segments are
//! read in the background by [`Recovery::run`] from headers and envelopes
//! only ([`crate::recovery`]); a segment is deleted once every message in it
//! is done.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::disk::{self, Disk};
use crate::donelog::{self, DoneEntry, Facts};
use crate::envelope::QueuedMessage;
use crate::record::{self, Location};
use crate::recovery;

/// Most requests written under one sync.
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool storage full: {0}")]
    Full(String),
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("spool committer has stopped")]
    Stopped,
    #[error("bad envelope in spool: {0}")]
    Envelope(#[from] serde_json::Error),
    #[error("spool record {segment:016x}:{offset} is corrupt: {what}")]
    Corrupt { segment: u64, offset: u64, what: String },
}

impl SpoolError {
    /// No space (or quota) left: RFC 3463 `4.3.1`, mail system full.
    pub fn is_full(&self) -> bool {
        match self {
            SpoolError::Full(_) => true,
            SpoolError::Io(e) => is_full(e),
            _ => false,
        }
    }
}

fn is_full(e: &io::Error) -> bool {
    // ENOSPC, EDQUOT
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded || matches!(e.raw_os_error(), Some(28 | 122))
}

/// A failure as the committer reports it to each waiter.
#[derive(Debug, Clone)]
struct Failure {
    full: bool,
    message: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure { full: is_full(e), message: e.to_string() }
    }
    fn error(self) -> SpoolError {
        if self.full {
            SpoolError::Full(self.message)
        } else {
            SpoolError::Io(io::Error::other(self.message))
        }
    }
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is closed and a new one started past this size.
    pub segment_size: u64,
    /// Where bad octets found at recovery are copied.
    pub quarantine: PathBuf,
}

impl Options {
    /// Defaults for a spool in `dir`: 64 MiB segments, `../quarantine`.
    pub fn for_dir(dir: &Path) -> Options {
        Options { segment_size: 64 << 20, quarantine: dir.parent().unwrap_or(dir).join("quarantine") }
    }
}

/// A message found on start with recipients still open.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub id: String,
    pub location: Location,
    pub nrcpt: usize,
    /// Indices of recipients already done.
    pub done: Vec<usize>,
    /// It had an attempt that left recipients open before the restart.
    pub deferred: bool,
    /// Its delay warning was sent before the restart.
    pub warned: bool,
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub messages: usize,
    /// Corrupt regions set aside (each copied to the quarantine directory).
    pub corrupt: u64,
    /// Records cut short at the end of a segment (never acknowledged).
    pub incomplete: u64,
    pub segments_removed: usize,
}

enum Request {
    Append {
        env: Vec<u8>,
        body: Arc<Vec<u8>>,
        reply: oneshot::Sender<Result<Location, Failure>>,
    },
    /// Done-log lines; `releases` are segments a message finished in.
    Done {
        text: String,
        releases: Vec<u64>,
        reply: Option<oneshot::Sender<Result<(), Failure>>>,
    },
    /// A recovered segment with this many messages still open.
    Adopt {
        segment: u64,
        live: usize,
    },
}

/// Cheap to clone; all clones feed the one committer thread.
#[derive(Clone)]
pub struct SpoolHandle {
    tx: mpsc::Sender<Request>,
    dir: Arc<PathBuf>,
    space: Arc<Space>,
}

/// Free space on the spool's filesystem, looked up at most every 250 ms.
struct Space {
    free: AtomicU64,
    checked: Mutex<Option<Instant>>,
}

pub fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.seg"))
}

impl SpoolHandle {
    /// Store a message durably. Returns once it is on stable storage.
    pub async fn append(&self, msg: &QueuedMessage, body: Arc<Vec<u8>>) -> Result<Location, SpoolError> {
        let env = serde_json::to_vec(msg)?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Append { env, body, reply }).map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?.map_err(Failure::error)
    }

    fn done_request(&self, entries: &[DoneEntry]) -> (String, Vec<u64>) {
        let mut text = String::new();
        for e in entries {
            donelog::entry_line(&mut text, e);
        }
        (text, entries.iter().filter_map(|e| e.release).collect())
    }

    /// Record final outcomes durably.
    pub async fn done(&self, entries: Vec<DoneEntry>) -> Result<(), SpoolError> {
        let (text, releases) = self.done_request(&entries);
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Done { text, releases, reply: Some(reply) }).map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?.map_err(Failure::error)
    }

    /// [`SpoolHandle::done`] for callers outside an async runtime.
    pub fn done_blocking(&self, entries: Vec<DoneEntry>) -> Result<(), SpoolError> {
        let (text, releases) = self.done_request(&entries);
        self.lines_blocking(text, releases)
    }

    fn lines_blocking(&self, text: String, releases: Vec<u64>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Done { text, releases, reply: Some(reply) }).map_err(|_| SpoolError::Stopped)?;
        rx.blocking_recv().map_err(|_| SpoolError::Stopped)?.map_err(Failure::error)
    }

    /// Note that `id` had an attempt that left recipients open (written with
    /// the next group commit; nobody waits for it).
    pub fn mark_deferred(&self, id: &str) {
        self.mark(id, donelog::deferred_line);
    }

    /// Note that the delay warning of `id` was sent (with the next group
    /// commit; a crash before it costs at most a second warning).
    pub fn mark_warned(&self, id: &str) {
        self.mark(id, donelog::warned_line);
    }

    fn mark(&self, id: &str, line: fn(&mut String, &str)) {
        let mut text = String::new();
        line(&mut text, id);
        let _ = self.tx.send(Request::Done { text, releases: Vec::new(), reply: None });
    }

    /// The directory of this spool.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read a message body back, checking its checksum (blocking; usually
    /// served from the page cache).
    pub fn read_body(&self, loc: &Location) -> Result<Vec<u8>, SpoolError> {
        read_body(&self.dir, loc)
    }

    /// Read a message's envelope back.
    pub fn read_envelope(&self, loc: &Location) -> Result<QueuedMessage, SpoolError> {
        read_envelope(&self.dir, loc)
    }

    /// Free octets for unprivileged writers on the spool's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        let mut checked = self.space.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
            return Ok(self.space.free.load(Ordering::Relaxed));
        }
        let free = free_space(&self.dir)?;
        self.space.free.store(free, Ordering::Relaxed);
        *checked = Some(Instant::now());
        Ok(free)
    }
}

/// Free octets for unprivileged writers on the filesystem of `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

fn read_at(f: &File, len: u64, offset: u64, loc: &Location) -> Result<Vec<u8>, SpoolError> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            SpoolError::Corrupt { segment: loc.segment, offset: loc.offset, what: "the segment ends inside the record".into() }
        }
        _ => SpoolError::Io(e),
    })?;
    Ok(buf)
}

/// Read a body from the spool in `dir`, checking its checksum.
pub fn read_body(dir: &Path, loc: &Location) -> Result<Vec<u8>, SpoolError> {
    let f = File::open(seg_path(dir, loc.segment))?;
    if loc.v1 {
        let all = read_at(&f, loc.len(), loc.offset, loc)?;
        if record::parse(&all, loc.len()) != (record::Parsed::Record { env_len: loc.env_len, body_len: loc.body_len, v1: true }) {
            return Err(SpoolError::Corrupt { segment: loc.segment, offset: loc.offset, what: "checksum".into() });
        }
        return Ok(all[(loc.body_offset() - loc.offset) as usize..].to_vec());
    }
    let header = read_at(&f, record::HEADER as u64, loc.offset, loc)?;
    let body = read_at(&f, loc.body_len, loc.body_offset(), loc)?;
    if !record::body_ok(&header, &body) {
        return Err(SpoolError::Corrupt { segment: loc.segment, offset: loc.offset, what: "body checksum".into() });
    }
    Ok(body)
}

/// Read an envelope from the spool in `dir`, checking its header.
pub fn read_envelope(dir: &Path, loc: &Location) -> Result<QueuedMessage, SpoolError> {
    let f = File::open(seg_path(dir, loc.segment))?;
    let len = if loc.v1 { loc.len() } else { loc.header_len() + loc.env_len as u64 };
    let d = read_at(&f, len, loc.offset, loc)?;
    if !matches!(record::parse(&d, loc.len()), record::Parsed::Record { .. }) {
        return Err(SpoolError::Corrupt { segment: loc.segment, offset: loc.offset, what: "header checksum".into() });
    }
    let h = loc.header_len() as usize;
    Ok(serde_json::from_slice(&d[h..h + loc.env_len as usize])?)
}

/// The spool directory's contents.
struct Listing {
    segments: Vec<u64>,
    done_logs: Vec<PathBuf>,
    /// The highest `done.log.N` suffix.
    max_done: u64,
}

fn list(dir: &Path) -> io::Result<Listing> {
    let mut l = Listing { segments: Vec::new(), done_logs: Vec::new(), max_done: 0 };
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %dir.display(), name = ?e.file_name(), "ignoring a file in the spool whose name is not UTF-8");
            continue;
        };
        if let Some(n) = name.strip_suffix(".seg") {
            match (n.len(), u64::from_str_radix(n, 16)) {
                (16, Ok(n)) => l.segments.push(n),
                _ => tracing::warn!(dir = %dir.display(), name, "ignoring a file named like a segment that is not one (16 hex digits)"),
            }
        } else if name == "done.log" {
            l.done_logs.push(e.path());
        } else if let Some(k) = name.strip_prefix("done.log.") {
            match k.parse::<u64>() {
                Ok(k) => {
                    l.max_done = l.max_done.max(k);
                    l.done_logs.push(e.path());
                }
                Err(_) => tracing::warn!(dir = %dir.display(), name, "ignoring a file named like a done-log that is not one"),
            }
        } else if !matches!(name, "hold" | "hold.tmp" | "done.log.new") {
            tracing::warn!(dir = %dir.display(), name, "ignoring an unknown file in the spool");
        }
    }
    l.segments.sort_unstable();
    Ok(l)
}

/// The next segment number: above every one in use, or (after the highest
/// possible number) the lowest free one.
fn next_number(used: &BTreeSet<u64>) -> u64 {
    match used.last() {
        None => 1,
        Some(&m) => m.checked_add(1).unwrap_or_else(|| (1..).find(|n| !used.contains(n)).unwrap_or(0)),
    }
}

/// Open (creating) the spool in `dir`: writing starts in a new segment at
/// once; the old segments are for [`Recovery::run`].
pub fn open(dir: &Path, opts: Options) -> Result<(SpoolHandle, Recovery), SpoolError> {
    open_with(dir, opts, Box::new(disk::Real))
}

/// [`open`] with the committer's file operations given (tests inject faults).
pub fn open_with(dir: &Path, opts: Options, mut disk: Box<dyn Disk>) -> Result<(SpoolHandle, Recovery), SpoolError> {
    disk::private_dir(dir)?;
    let listing = list(dir)?;
    // The done-log of the last run is kept until recovery has compacted it.
    let mut done_logs = listing.done_logs;
    let current_log = dir.join("done.log");
    if current_log.exists() {
        let old = dir.join(format!("done.log.{}", listing.max_done + 1));
        fs::rename(&current_log, &old)?;
        done_logs.retain(|p| p != &current_log);
        done_logs.push(old);
    }
    let mut used: BTreeSet<u64> = listing.segments.iter().copied().collect();
    let current = next_number(&used);
    used.insert(current);
    // A segment that cannot be created now (no space, no inodes) is created
    // by the first append that can: the server still starts and delivers.
    let seg = match disk.create(&seg_path(dir, current)) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "spool: can not create a segment yet; mail is refused until it can");
            None
        }
    };
    let done = OpenOptions::new().create(true).append(true).mode(0o600).open(&current_log)?;
    disk.sync_dir(dir)?;
    let (tx, rx) = mpsc::channel();
    let mut c = Committer {
        dir: dir.to_path_buf(),
        disk,
        current,
        seg,
        seg_len: 0,
        seg_dirty: false,
        done,
        done_len: 0,
        done_dirty: false,
        live: HashMap::new(),
        used,
        segment_size: opts.segment_size.max(1),
        last_warning: None,
    };
    std::thread::Builder::new().name("mx6-spool".into()).spawn(move || c.run(rx))?;
    let space = Arc::new(Space { free: AtomicU64::new(0), checked: Mutex::new(None) });
    let handle = SpoolHandle { tx, dir: Arc::new(dir.to_path_buf()), space };
    let recovery =
        Recovery { dir: dir.to_path_buf(), segments: listing.segments, done_logs, quarantine: opts.quarantine, handle: handle.clone() };
    Ok((handle, recovery))
}

/// The old segments and done-logs of a spool just opened.
pub struct Recovery {
    dir: PathBuf,
    segments: Vec<u64>,
    done_logs: Vec<PathBuf>,
    quarantine: PathBuf,
    handle: SpoolHandle,
}

fn read_facts(paths: &[PathBuf]) -> io::Result<Facts> {
    let mut facts = Facts::default();
    for p in paths {
        donelog::read(p, &mut facts)?;
    }
    Ok(facts)
}

/// The recovered record with its facts, if it still has open recipients.
fn open_message(r: recovery::Scanned, facts: &Facts) -> Option<Recovered> {
    let n = crate::id::parse_id(&r.id);
    let done: Vec<usize> =
        n.and_then(|n| facts.done_of(n)).map(|d| d.keys().copied().filter(|&i| i < r.nrcpt).collect()).unwrap_or_default();
    (done.len() < r.nrcpt).then(|| Recovered {
        deferred: n.is_some_and(|n| facts.was_deferred(n)),
        warned: n.is_some_and(|n| facts.was_warned(n)),
        id: r.id,
        location: r.location,
        nrcpt: r.nrcpt,
        done,
    })
}

impl Recovery {
    /// Whether there is anything to recover.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.done_logs.is_empty()
    }

    /// Read the old segments (blocking; run it off the async runtime): hand
    /// every message with open recipients to `each`, oldest segment first,
    /// set aside bad regions, delete segments with nothing open, and compact
    /// the old done-logs into the new one.
    pub fn run(self, mut each: impl FnMut(Recovered)) -> Result<Report, SpoolError> {
        let facts = read_facts(&self.done_logs)?;
        let mut report = Report::default();
        let mut kept = String::new();
        for &n in &self.segments {
            let path = seg_path(&self.dir, n);
            let scan = recovery::scan_segment(&path, n, Some(&self.quarantine))?;
            for b in &scan.bad {
                let copy = b.copy.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                if b.corrupt {
                    report.corrupt += 1;
                    tracing::error!(segment = %format!("{n:016x}"), offset = b.offset, len = b.len, copy = %copy, "corrupt spool record set aside; the records after it are kept");
                } else {
                    report.incomplete += 1;
                    tracing::warn!(segment = %format!("{n:016x}"), offset = b.offset, len = b.len, copy = %copy, "incomplete spool record (a write cut short, never acknowledged) set aside");
                }
            }
            // Facts are kept for every message of a segment that stays, done or not.
            let mut facts_here = String::new();
            let mut open = Vec::new();
            for r in scan.records {
                if let Some(n) = crate::id::parse_id(&r.id) {
                    for (&i, &status) in facts.done_of(n).into_iter().flatten() {
                        donelog::entry_line(&mut facts_here, &DoneEntry { id: r.id.clone(), rcpt: i, status, release: None });
                    }
                    if facts.was_deferred(n) {
                        donelog::deferred_line(&mut facts_here, &r.id);
                    }
                    if facts.was_warned(n) {
                        donelog::warned_line(&mut facts_here, &r.id);
                    }
                }
                open.extend(open_message(r, &facts));
            }
            if open.is_empty() {
                fs::remove_file(&path)?;
                report.segments_removed += 1;
                continue;
            }
            kept.push_str(&facts_here);
            if kept.len() > 1 << 20 {
                self.handle.lines_blocking(std::mem::take(&mut kept), Vec::new())?;
            }
            // The committer counts them before any outcome of theirs can arrive.
            let _ = self.handle.tx.send(Request::Adopt { segment: n, live: open.len() });
            for r in open {
                report.messages += 1;
                each(r);
            }
        }
        if !kept.is_empty() {
            self.handle.lines_blocking(kept, Vec::new())?;
        }
        for p in &self.done_logs {
            fs::remove_file(p)?;
        }
        Ok(report)
    }
}

/// The open messages of a spool no server is running on, read only (for
/// `mx6 queue` on a stopped server).
pub fn inspect(dir: &Path) -> Result<Vec<Recovered>, SpoolError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let listing = list(dir)?;
    let facts = read_facts(&listing.done_logs)?;
    let mut out = Vec::new();
    for &n in &listing.segments {
        let scan = recovery::scan_segment(&seg_path(dir, n), n, None)?;
        out.extend(scan.records.into_iter().filter_map(|r| open_message(r, &facts)));
    }
    Ok(out)
}

/// Append done-log lines to a stopped server's spool (the caller holds the
/// data_dir lock); they are compacted at the next start.
pub fn append_done(dir: &Path, entries: &[DoneEntry]) -> Result<(), SpoolError> {
    use std::io::Write;
    let mut text = String::new();
    for e in entries {
        donelog::entry_line(&mut text, e);
    }
    let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join("done.log"))?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    Ok(())
}

struct Committer {
    dir: PathBuf,
    disk: Box<dyn Disk>,
    current: u64,
    /// The current segment; `None` while none could be created.
    seg: Option<File>,
    /// End of the last complete record of the current segment.
    seg_len: u64,
    /// Octets past `seg_len` may be there (a failed write not yet cut back).
    seg_dirty: bool,
    done: File,
    done_len: u64,
    done_dirty: bool,
    /// Open messages per segment.
    live: HashMap<u64, usize>,
    /// Segment numbers in use.
    used: BTreeSet<u64>,
    segment_size: u64,
    last_warning: Option<Instant>,
}

impl Committer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    /// A warning at most once a second (a full disk fails every batch).
    fn warn(&mut self, what: &str, e: &io::Error) {
        if self.last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_warning = Some(Instant::now());
            tracing::error!(segment = %format!("{:016x}", self.current), error = %e, "spool: {what}");
        }
    }

    /// Make the current segment end at its last complete record, else move
    /// to a fresh segment.
    fn clean_segment(&mut self) -> io::Result<()> {
        let Some(seg) = &self.seg else { return self.rotate() };
        if !self.seg_dirty {
            return Ok(());
        }
        match self.disk.truncate(seg, self.seg_len) {
            Ok(()) => {
                self.seg_dirty = false;
                Ok(())
            }
            Err(e) => {
                self.warn("could not cut a failed write back; starting a new segment", &e);
                self.rotate()
            }
        }
    }

    /// Write and sync the appends; their locations, or why they failed.
    fn append(&mut self, appends: &[(&[u8], &Arc<Vec<u8>>)]) -> Result<Vec<Location>, Failure> {
        self.clean_segment().map_err(|e| Failure::of(&e))?;
        let headers: Vec<[u8; record::HEADER]> = appends.iter().map(|(env, body)| record::header(env, body)).collect();
        let mut locations = Vec::with_capacity(appends.len());
        let mut offset = self.seg_len;
        let mut bufs: Vec<IoSlice> = Vec::with_capacity(appends.len() * 3);
        for ((env, body), h) in appends.iter().zip(&headers) {
            let loc = Location { segment: self.current, offset, env_len: env.len() as u32, body_len: body.len() as u64, v1: false };
            offset += loc.len();
            locations.push(loc);
            bufs.push(IoSlice::new(h));
            bufs.push(IoSlice::new(env));
            bufs.push(IoSlice::new(body));
        }
        let Some(seg) = self.seg.as_mut() else { return Err(Failure::of(&io::Error::other("no segment to write to"))) };
        let written = self.disk.append(seg, &mut bufs).and_then(|_| self.disk.sync(seg));
        match written {
            Ok(()) => {
                self.seg_len = offset;
                *self.live.entry(self.current).or_default() += locations.len();
                Ok(locations)
            }
            Err(e) => {
                // Whatever reached the file is cut back now; the records failed.
                self.seg_dirty = true;
                if self.seg.as_ref().is_some_and(|f| self.disk.truncate(f, self.seg_len).is_ok()) {
                    self.seg_dirty = false;
                }
                self.warn("a write or fsync failed; the messages of this batch were refused", &e);
                Err(Failure::of(&e))
            }
        }
    }

    fn write_done(&mut self, text: &str) -> Result<(), Failure> {
        use std::io::Write;
        if self.done_dirty {
            self.done.set_len(self.done_len).map_err(|e| Failure::of(&e))?;
            self.done_dirty = false;
        }
        let r = self.done.write_all(text.as_bytes()).and_then(|_| self.disk.sync(&self.done));
        match r {
            Ok(()) => {
                self.done_len += text.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.done_dirty = true;
                if self.done.set_len(self.done_len).is_ok() {
                    self.done_dirty = false;
                }
                self.warn("could not write the done-log", &e);
                Err(Failure::of(&e))
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let mut appends: Vec<(&[u8], &Arc<Vec<u8>>)> = Vec::new();
        let mut done_text = String::new();
        let mut releases = Vec::new();
        let mut adopted = Vec::new();
        for r in &batch {
            match r {
                Request::Append { env, body, .. } => appends.push((env, body)),
                Request::Done { text, releases: rel, .. } => {
                    done_text.push_str(text);
                    releases.extend_from_slice(rel);
                }
                Request::Adopt { segment, live } => adopted.push((*segment, *live)),
            }
        }
        for (s, n) in adopted {
            *self.live.entry(s).or_default() += n;
        }
        let appended = if appends.is_empty() { Ok(Vec::new()) } else { self.append(&appends) };
        drop(appends);
        let done = if done_text.is_empty() { Ok(()) } else { self.write_done(&done_text) };
        let mut li = 0;
        for r in batch {
            match r {
                Request::Append { reply, .. } => {
                    let _ = reply.send(appended.as_ref().map(|l| l[li]).map_err(Clone::clone));
                    li += 1;
                }
                Request::Done { reply: Some(reply), .. } => {
                    let _ = reply.send(done.clone());
                }
                Request::Done { reply: None, .. } | Request::Adopt { .. } => {}
            }
        }
        if done.is_ok() {
            for s in releases {
                if let Some(n) = self.live.get_mut(&s) {
                    *n = n.saturating_sub(1);
                    if *n == 0 && s != self.current {
                        self.live.remove(&s);
                        self.used.remove(&s);
                        let _ = fs::remove_file(seg_path(&self.dir, s));
                    }
                }
            }
        }
        if self.seg_len >= self.segment_size {
            if let Err(e) = self.rotate() {
                // Not fatal: the current segment is clean, writing goes on there.
                self.warn("could not start a new segment; the current one goes on", &e);
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = next_number(&self.used);
        let f = self.disk.create(&seg_path(&self.dir, next))?;
        if let Err(e) = self.disk.sync_dir(&self.dir) {
            let _ = fs::remove_file(seg_path(&self.dir, next));
            return Err(e);
        }
        let old = self.current;
        let had = self.seg.is_some();
        self.used.insert(next);
        self.seg = Some(f);
        self.current = next;
        self.seg_len = 0;
        self.seg_dirty = false;
        if !had {
            self.used.remove(&old);
        } else if self.live.get(&old).copied().unwrap_or(0) == 0 {
            self.live.remove(&old);
            self.used.remove(&old);
            let _ = fs::remove_file(seg_path(&self.dir, old));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Fault, Faulty};
    use crate::donelog::DoneStatus;
    use crate::envelope::Recipient;

    fn msg(id: &str, n: usize) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            from: "a@example.org".into(),
            rcpts: (0..n)
                .map(|i| Recipient {
                    address: format!("u{i}@x.test"),
                    local: Some((format!("u{i}"), "x.test".into())),
                    ..Default::default()
                })
                .collect(),
            received: 0,
            client: "::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
            ..Default::default()
        }
    }

    fn id(i: usize) -> String {
        format!("{i:016x}")
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mx6-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn recover(dir: &Path) -> (SpoolHandle, Vec<Recovered>, Report) {
        let (h, rec) = open(dir, Options::for_dir(dir)).unwrap();
        let mut v = Vec::new();
        let report = rec.run(|r| v.push(r)).unwrap();
        (h, v, report)
    }

    fn body(i: usize) -> Arc<Vec<u8>> {
        Arc::new(format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
    }

    #[tokio::test]
    async fn append_recover_done_and_a_torn_tail() {
        let dir = tempdir("basic");
        let (h, rec) = open(&dir, Options::for_dir(&dir)).unwrap();
        assert!(rec.is_empty());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.append(&msg(&id(i), 2), body(i)).await.unwrap() }));
        }
        let mut locs = Vec::new();
        for t in tasks {
            locs.push(t.await.unwrap());
        }
        assert_eq!(h.read_body(&locs[7]).unwrap(), *body(7));
        assert_eq!(h.read_envelope(&locs[7]).unwrap().id, id(7));
        h.done(vec![
            DoneEntry { id: id(0), rcpt: 0, status: DoneStatus::Delivered, release: None },
            DoneEntry { id: id(0), rcpt: 1, status: DoneStatus::Delivered, release: Some(locs[0].segment) },
            DoneEntry { id: id(1), rcpt: 1, status: DoneStatus::Delivered, release: None },
        ])
        .await
        .unwrap();
        h.mark_deferred(&id(2));
        h.mark_warned(&id(3));
        drop(h);
        // A crash in the middle of a write: a record cut short at the end.
        let seg = seg_path(&dir, locs[0].segment);
        let mut torn = record::header(b"{\"id\":\"x\"}", b"0123456789").to_vec();
        torn.extend_from_slice(b"{\"id\":\"x\"}0123");
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        io::Write::write_all(&mut f, &torn).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(50));
        let dir2 = dir.clone();
        let (h, rec, report) = tokio::task::spawn_blocking(move || recover(&dir2)).await.unwrap();
        assert_eq!(rec.len(), 49);
        assert_eq!((report.corrupt, report.incomplete), (0, 1));
        let r1 = rec.iter().find(|r| r.id == id(1)).unwrap();
        assert_eq!((r1.done.clone(), r1.deferred), (vec![1], false));
        assert!(rec.iter().find(|r| r.id == id(2)).unwrap().deferred);
        assert!(rec.iter().find(|r| r.id == id(3)).unwrap().warned && !rec.iter().find(|r| r.id == id(2)).unwrap().warned);
        // The compacted facts survive another restart.
        drop(h);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(inspect(&dir).unwrap().len(), 49);
        let (_h, rec, _) = tokio::task::spawn_blocking(move || recover(&dir)).await.unwrap();
        assert_eq!(rec.iter().find(|r| r.id == id(1)).unwrap().done, vec![1]);
        assert!(rec.iter().find(|r| r.id == id(2)).unwrap().deferred);
        assert!(rec.iter().find(|r| r.id == id(3)).unwrap().warned);
    }

    #[tokio::test]
    async fn failed_writes_and_syncs_refuse_their_batch_and_leave_a_readable_segment() {
        let dir = tempdir("faults");
        let faults = Arc::new(Mutex::new(Vec::new()));
        let (h, _) = open_with(&dir, Options::for_dir(&dir), Box::new(Faulty { faults: faults.clone() })).unwrap();
        h.append(&msg(&id(1), 1), body(1)).await.unwrap();
        // Disk full in the middle of a record: refused, and the torn bytes cut back.
        faults.lock().unwrap().push(Fault::AppendPartial(30));
        let e = h.append(&msg(&id(2), 1), body(2)).await.unwrap_err();
        assert!(e.is_full(), "{e}");
        // fsync fails: refused too (not full: an I/O error), never retried as safe.
        faults.lock().unwrap().push(Fault::SyncFails);
        let e = h.append(&msg(&id(3), 1), body(3)).await.unwrap_err();
        assert!(!e.is_full(), "{e}");
        // The cut back fails as well: writing moves to a fresh segment.
        faults.lock().unwrap().extend([Fault::AppendPartial(10), Fault::TruncateFails, Fault::TruncateFails]);
        assert!(h.append(&msg(&id(4), 1), body(4)).await.is_err());
        // Space is back: accepted again, no restart.
        let l5 = h.append(&msg(&id(5), 1), body(5)).await.unwrap();
        assert_eq!(h.read_body(&l5).unwrap(), *body(5));
        drop(h);
        std::thread::sleep(Duration::from_millis(50));
        let (_h, rec, report) = tokio::task::spawn_blocking(move || recover(&dir)).await.unwrap();
        let mut ids: Vec<String> = rec.into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, [id(1), id(5)], "exactly the acknowledged messages");
        assert_eq!(report.corrupt + report.incomplete, 1, "the torn record that could not be cut back is set aside: {report:?}");
    }

    #[tokio::test]
    async fn rotation_that_fails_is_retried_and_segments_are_found_by_listing() {
        let dir = tempdir("rotate");
        fs::create_dir_all(&dir).unwrap();
        // A stray segment with the highest possible number and a name that is not one.
        fs::write(seg_path(&dir, u64::MAX), b"not a record").unwrap();
        fs::write(dir.join("12.seg"), b"x").unwrap();
        let opts = || Options { segment_size: 100, ..Options::for_dir(&dir) };
        let faults = Arc::new(Mutex::new(vec![Fault::CreateFails]));
        {
            // No segment can be created at start: the spool opens, refuses
            // appends, and accepts once a segment can be created.
            let (h, _) = open_with(&dir, opts(), Box::new(Faulty { faults: faults.clone() })).unwrap();
            faults.lock().unwrap().push(Fault::CreateFails);
            assert!(h.append(&msg(&id(90), 1), body(90)).await.unwrap_err().is_full());
            h.append(&msg(&id(91), 1), body(91)).await.unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let faults = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (h, rec) = open_with(&dir, opts(), Box::new(Faulty { faults: faults.clone() })).unwrap();
        let report = tokio::task::spawn_blocking(move || rec.run(|_| {})).await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(report.corrupt, 1, "{report:?}");
        assert!(!seg_path(&dir, u64::MAX).exists(), "nothing open in it: removed after its octets were set aside");
        assert!(dir.join("12.seg").exists(), "a name that does not parse is left alone");
        faults.lock().unwrap().push(Fault::CreateFails);
        let mut locs = Vec::new();
        for i in 0..4 {
            locs.push(h.append(&msg(&id(i), 1), body(i)).await.unwrap());
        }
        assert_eq!(locs[0].segment, locs[1].segment, "the failed rotation kept the current segment");
        assert_ne!(locs[1].segment, locs[3].segment, "and was retried");
        for (i, l) in locs.iter().enumerate() {
            assert_eq!(h.read_body(l).unwrap(), *body(i));
        }
        let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&seg_path(&dir, locs[3].segment)), 0o600);
        assert_eq!(mode(&dir.join("done.log")), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
}
