//! The durable spool: append-only segment files written by one committer thread
//! with group commit, and a done-log of per-recipient outcomes.
//!
//! Layout under the spool directory:
//! - `NNNNNNNNNNNNNNNN.seg`: records `"MX6M" | u32 env_len | u64 body_len |
//!   u32 crc32(env ‖ body) | envelope JSON | body`, all little-endian;
//! - `done.log`: lines `<queue id> <recipient index> <status>`.
//!
//! Promise (RFC 5321 §4.1.1.4, §6.1): [`SpoolHandle::append`] returns only after
//! the record is on stable storage (`fdatasync`, and for a new segment file an
//! `fsync` of the directory). Requests that arrive while one sync runs are
//! written together and covered by the next single sync: many concurrent
//! messages, one fsync. On start, a record whose length or checksum does not
//! hold (a write cut short by a crash) ends its segment: the segment is truncated
//! there, so an incomplete message is never delivered. A segment is deleted once
//! every message in it is done.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const MAGIC: &[u8; 4] = b"MX6M";
const HEADER: usize = 4 + 4 + 8 + 4;
/// A segment is closed and a new one started past this size.
const SEGMENT_SIZE: u64 = 64 << 20;
/// Most requests written under one sync.
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("spool committer has stopped")]
    Stopped,
    #[error("bad envelope in spool: {0}")]
    Envelope(#[from] serde_json::Error),
}

/// The envelope of a queued message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    /// Reverse path without brackets; empty for the null sender.
    pub from: String,
    pub rcpts: Vec<Recipient>,
    /// Arrival, unix seconds.
    pub received: i64,
    pub client: String,
    pub helo: String,
    #[serde(default)]
    pub smtputf8: bool,
    /// Deliver into the Junk folder (DMARC quarantine, spam).
    #[serde(default)]
    pub junk: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// `Some((user, domain))` for local delivery, `None` for onward relay.
    pub local: Option<(String, String)>,
}

/// Where a message's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneStatus {
    Delivered,
    Bounced,
    Deleted,
}

impl DoneStatus {
    fn as_str(self) -> &'static str {
        match self {
            DoneStatus::Delivered => "delivered",
            DoneStatus::Bounced => "bounced",
            DoneStatus::Deleted => "deleted",
        }
    }
}

/// One recipient's final outcome. `release` names the segment when this was the
/// message's last open recipient.
#[derive(Debug, Clone)]
pub struct DoneEntry {
    pub id: String,
    pub rcpt: usize,
    pub status: DoneStatus,
    pub release: Option<u64>,
}

/// A message found on start with recipients still open.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub message: QueuedMessage,
    pub location: Location,
    /// Indices of recipients already done.
    pub done: Vec<usize>,
}

enum Request {
    Append { record: Vec<u8>, body: Arc<Vec<u8>>, reply: oneshot::Sender<Result<Location, String>> },
    Done { entries: Vec<DoneEntry>, reply: oneshot::Sender<Result<(), String>> },
}

/// Cheap to clone; all clones feed the one committer thread.
#[derive(Clone)]
pub struct SpoolHandle {
    tx: mpsc::Sender<Request>,
    dir: Arc<PathBuf>,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016x}.seg"))
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode_header(env: &[u8], body_len: u64, crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&(env.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&body_len.to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

impl SpoolHandle {
    /// Store a message durably. Returns once it is on stable storage.
    pub async fn append(&self, msg: &QueuedMessage, body: Arc<Vec<u8>>) -> Result<Location, SpoolError> {
        let env = serde_json::to_vec(msg)?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Append { record: env, body, reply }).map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?.map_err(|e| SpoolError::Io(io::Error::other(e)))
    }

    /// Record final outcomes durably.
    pub async fn done(&self, entries: Vec<DoneEntry>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Done { entries, reply }).map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?.map_err(|e| SpoolError::Io(io::Error::other(e)))
    }

    /// [`SpoolHandle::done`] for callers outside an async runtime (the CLI).
    pub fn done_blocking(&self, entries: Vec<DoneEntry>) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Done { entries, reply }).map_err(|_| SpoolError::Stopped)?;
        rx.blocking_recv().map_err(|_| SpoolError::Stopped)?.map_err(|e| SpoolError::Io(io::Error::other(e)))
    }

    /// Read a message body back (blocking; usually served from the page cache).
    pub fn read_body(&self, loc: &Location) -> io::Result<Vec<u8>> {
        read_body(&self.dir, loc)
    }
}

/// Open (creating) the spool in `dir`, recover what is there, and start the
/// committer thread.
pub fn open(dir: &Path) -> Result<(SpoolHandle, Vec<Recovered>), SpoolError> {
    fs::create_dir_all(dir)?;
    let (messages, max_seg) = scan_segments(dir)?;
    let done = read_done_log(&dir.join("done.log"))?;

    let mut live: HashMap<u64, usize> = HashMap::new();
    let mut recovered = Vec::new();
    let mut done_of: Vec<(String, u64, Vec<usize>)> = Vec::new();
    for (message, location) in messages {
        let done_idx: Vec<usize> = (0..message.rcpts.len()).filter(|i| done.contains_key(&(message.id.clone(), *i))).collect();
        done_of.push((message.id.clone(), location.segment, done_idx.clone()));
        if done_idx.len() == message.rcpts.len() {
            continue;
        }
        *live.entry(location.segment).or_default() += 1;
        recovered.push(Recovered { message, location, done: done_idx });
    }
    // Outcomes are kept for every message whose segment stays.
    let mut keep_done: Vec<(String, usize, String)> = Vec::new();
    for (id, seg, idx) in done_of {
        if live.contains_key(&seg) {
            for i in idx {
                keep_done.push((id.clone(), i, done[&(id.clone(), i)].clone()));
            }
        }
    }
    // Segments with nothing open are gone; the done-log keeps only what matters.
    for n in 0..=max_seg {
        let p = seg_path(dir, n);
        if p.exists() && !live.contains_key(&n) {
            fs::remove_file(&p)?;
        }
    }
    let tmp = dir.join("done.log.new");
    {
        let mut f = File::create(&tmp)?;
        let mut text = String::new();
        for (id, i, s) in &keep_done {
            text.push_str(&format!("{id} {i} {s}\n"));
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("done.log"))?;

    let current = max_seg + 1;
    let seg = new_segment(dir, current)?;
    let done_file = OpenOptions::new().append(true).open(dir.join("done.log"))?;
    fsync_dir(dir)?;

    let (tx, rx) = mpsc::channel();
    let mut c = Committer { dir: dir.to_path_buf(), current, seg, seg_len: 0, done: done_file, live };
    std::thread::Builder::new().name("mx6-spool".into()).spawn(move || c.run(rx))?;
    Ok((SpoolHandle { tx, dir: Arc::new(dir.to_path_buf()) }, recovered))
}

fn new_segment(dir: &Path, n: u64) -> io::Result<File> {
    OpenOptions::new().create_new(true).append(true).open(seg_path(dir, n))
}

/// Read every segment, truncating each at its first bad record.
fn scan_segments(dir: &Path) -> Result<(Vec<(QueuedMessage, Location)>, u64), SpoolError> {
    let mut segs: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| u64::from_str_radix(n, 16).ok()))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for &n in &segs {
        let path = seg_path(dir, n);
        let mut data = Vec::new();
        File::open(&path)?.read_to_end(&mut data)?;
        let mut pos = 0usize;
        while pos < data.len() {
            match parse_record(&data[pos..]) {
                Some((env, body_off, body_len, total)) => {
                    let msg: QueuedMessage = match serde_json::from_slice(env) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::error!(segment = n, offset = pos, error = %e, "spool record with a valid checksum but a bad envelope; skipped");
                            pos += total;
                            continue;
                        }
                    };
                    out.push((msg, Location { segment: n, offset: (pos + body_off) as u64, len: body_len as u64 }));
                    pos += total;
                }
                None => {
                    tracing::warn!(segment = n, offset = pos, discarded = data.len() - pos, "incomplete spool record discarded");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    break;
                }
            }
        }
    }
    Ok((out, segs.last().copied().unwrap_or(0)))
}

/// `(envelope, body offset, body length, record length)` of a whole, valid record.
fn parse_record(d: &[u8]) -> Option<(&[u8], usize, usize, usize)> {
    if d.len() < HEADER || &d[..4] != MAGIC {
        return None;
    }
    let env_len = u32::from_le_bytes(d[4..8].try_into().ok()?) as usize;
    let body_len = usize::try_from(u64::from_le_bytes(d[8..16].try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(d[16..20].try_into().ok()?);
    let total = HEADER.checked_add(env_len)?.checked_add(body_len)?;
    if d.len() < total {
        return None;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&d[HEADER..total]);
    if h.finalize() != crc {
        return None;
    }
    Some((&d[HEADER..HEADER + env_len], HEADER + env_len, body_len, total))
}

fn read_done_log(path: &Path) -> io::Result<HashMap<(String, usize), String>> {
    let mut map = HashMap::new();
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(e),
    };
    // Only whole lines count: a torn last line was never acknowledged.
    let whole = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..=i],
        None => &text[..0],
    };
    for line in String::from_utf8_lossy(whole).lines() {
        let mut p = line.split(' ');
        if let (Some(id), Some(i), Some(s)) = (p.next(), p.next(), p.next()) {
            if let Ok(i) = i.parse() {
                map.insert((id.to_string(), i), s.to_string());
            }
        }
    }
    Ok(map)
}

struct Committer {
    dir: PathBuf,
    current: u64,
    seg: File,
    seg_len: u64,
    done: File,
    live: HashMap<u64, usize>,
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

    fn commit(&mut self, batch: Vec<Request>) {
        let mut seg_buf: Vec<io::IoSlice> = Vec::new();
        let mut headers = Vec::new();
        let mut locations = Vec::new();
        let mut done_text = String::new();
        let mut releases = Vec::new();
        let mut offset = self.seg_len;
        for r in &batch {
            match r {
                Request::Append { record, body, .. } => {
                    let mut h = crc32fast::Hasher::new();
                    h.update(record);
                    h.update(body);
                    headers.push(encode_header(record, body.len() as u64, h.finalize()));
                    let body_off = offset + (HEADER + record.len()) as u64;
                    locations.push(Location { segment: self.current, offset: body_off, len: body.len() as u64 });
                    offset = body_off + body.len() as u64;
                }
                Request::Done { entries, .. } => {
                    for e in entries {
                        done_text.push_str(&format!("{} {} {}\n", e.id, e.rcpt, e.status.as_str()));
                        if let Some(s) = e.release {
                            releases.push(s);
                        }
                    }
                }
            }
        }
        let mut hi = 0;
        for r in &batch {
            if let Request::Append { record, body, .. } = r {
                seg_buf.push(io::IoSlice::new(&headers[hi]));
                seg_buf.push(io::IoSlice::new(record));
                seg_buf.push(io::IoSlice::new(body));
                hi += 1;
            }
        }
        let seg_result =
            if seg_buf.is_empty() { Ok(()) } else { write_all_vectored(&mut self.seg, &mut seg_buf).and_then(|_| self.seg.sync_data()) };
        let done_result =
            if done_text.is_empty() { Ok(()) } else { self.done.write_all(done_text.as_bytes()).and_then(|_| self.done.sync_data()) };
        drop(seg_buf);
        let appended = locations.len();
        if seg_result.is_ok() {
            self.seg_len = offset;
            *self.live.entry(self.current).or_default() += appended;
        } else {
            // A failed write may have left a partial record: start a new segment
            // so later records are not stranded behind it.
            self.seg_len = SEGMENT_SIZE;
        }
        let mut li = 0;
        for r in batch {
            match r {
                Request::Append { reply, .. } => {
                    let _ = reply.send(seg_result.as_ref().map(|_| locations[li]).map_err(|e| e.to_string()));
                    li += 1;
                }
                Request::Done { reply, .. } => {
                    let _ = reply.send(done_result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                }
            }
        }
        if done_result.is_ok() {
            for s in releases {
                if let Some(n) = self.live.get_mut(&s) {
                    *n = n.saturating_sub(1);
                    if *n == 0 && s != self.current {
                        self.live.remove(&s);
                        let _ = fs::remove_file(seg_path(&self.dir, s));
                    }
                }
            }
        }
        if self.seg_len >= SEGMENT_SIZE {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "could not start a new spool segment");
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.current + 1;
        let f = new_segment(&self.dir, next)?;
        fsync_dir(&self.dir)?;
        let old = self.current;
        self.seg = f;
        self.current = next;
        self.seg_len = 0;
        if self.live.get(&old).copied().unwrap_or(0) == 0 {
            self.live.remove(&old);
            let _ = fs::remove_file(seg_path(&self.dir, old));
        }
        Ok(())
    }
}

fn write_all_vectored(f: &mut File, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match f.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "spool write returned 0")),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// For tools that inspect a stopped server's spool without taking it over:
/// the open messages, read only.
/// Read a message body from the spool directory `dir` (also for a stopped server).
pub fn read_body(dir: &Path, loc: &Location) -> io::Result<Vec<u8>> {
    let f = File::open(seg_path(dir, loc.segment))?;
    let mut buf = vec![0u8; loc.len as usize];
    f.read_exact_at(&mut buf, loc.offset)?;
    Ok(buf)
}

pub fn inspect(dir: &Path) -> Result<Vec<Recovered>, SpoolError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let done = read_done_log(&dir.join("done.log"))?;
    let mut segs: Vec<PathBuf> =
        fs::read_dir(dir)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    segs.sort();
    for p in segs {
        let n = p.file_stem().and_then(|s| s.to_str()).and_then(|s| u64::from_str_radix(s, 16).ok()).unwrap_or(0);
        let data = fs::read(&p)?;
        let mut pos = 0;
        while let Some((env, body_off, body_len, total)) = parse_record(&data[pos..]) {
            if let Ok(message) = serde_json::from_slice::<QueuedMessage>(env) {
                let done_idx: Vec<usize> = (0..message.rcpts.len()).filter(|i| done.contains_key(&(message.id.clone(), *i))).collect();
                if done_idx.len() < message.rcpts.len() {
                    out.push(Recovered {
                        message,
                        location: Location { segment: n, offset: (pos + body_off) as u64, len: body_len as u64 },
                        done: done_idx,
                    });
                }
            }
            pos += total;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, n: usize) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            from: "a@example.org".into(),
            rcpts: (0..n).map(|i| Recipient { address: format!("u{i}@x.test"), local: Some((format!("u{i}"), "x.test".into())) }).collect(),
            received: 0,
            client: "::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mx6-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn append_recover_done_and_truncate() {
        let dir = tempdir("basic");
        let (h, rec) = open(&dir).unwrap();
        assert!(rec.is_empty());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let body = Arc::new(format!("body {i}\r\n").into_bytes());
                h.append(&msg(&format!("id{i:03}"), 2), body).await.unwrap()
            }));
        }
        let mut locs = Vec::new();
        for t in tasks {
            locs.push(t.await.unwrap());
        }
        assert_eq!(h.read_body(&locs[7]).unwrap(), b"body 7\r\n");
        h.done(vec![
            DoneEntry { id: "id000".into(), rcpt: 0, status: DoneStatus::Delivered, release: None },
            DoneEntry { id: "id000".into(), rcpt: 1, status: DoneStatus::Delivered, release: Some(locs[0].segment) },
            DoneEntry { id: "id001".into(), rcpt: 1, status: DoneStatus::Delivered, release: None },
        ])
        .await
        .unwrap();
        drop(h);
        // A crash in the middle of a write: garbage at the end of the segment.
        let seg = seg_path(&dir, locs[0].segment);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"MX6M\x10\x00\x00\x00garbage").unwrap();
        drop(f);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_h, rec) = open(&dir).unwrap();
        assert_eq!(rec.len(), 49);
        let r1 = rec.iter().find(|r| r.message.id == "id001").unwrap();
        assert_eq!(r1.done, vec![1]);
        assert_eq!(inspect(&dir).unwrap().len(), 49);
        let _ = fs::remove_dir_all(&dir);
    }
}
