//! Reading segments back: every valid record of a segment, in order, from
//! headers and envelopes only (bodies are not read; their checksum is checked
//! when a body is read for delivery).
//!
//! A region that is not a valid record (a flipped bit, garbage, a stray file
//! named like a segment) costs only itself: the scan resynchronises on the
//! next valid record, copies the bad octets to the quarantine directory, and
//! keeps every valid record after them. Nothing is truncated. A record cut
//! short at the end of a segment (a crash in the middle of a write, never
//! acknowledged) is set aside the same way, as incomplete rather than corrupt.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::envelope::Head;
use crate::record::{self, Location, Parsed, HEADER};

/// One valid record.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub location: Location,
    pub id: String,
    pub nrcpt: usize,
}

/// A region that was set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegion {
    pub offset: u64,
    pub len: u64,
    /// Corrupt (valid records may follow) rather than a write cut short at the end.
    pub corrupt: bool,
    /// Where its octets were copied, if they were.
    pub copy: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct SegmentScan {
    pub records: Vec<Scanned>,
    pub bad: Vec<BadRegion>,
}

/// Octets read at once for a header and (usually) its envelope.
const PEEK: usize = 4096;

fn read_at(f: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The record at `pos`, if a valid one starts there; `Err(incomplete)` otherwise.
fn record_at(f: &File, n: u64, pos: u64, size: u64) -> io::Result<Result<(Location, Vec<u8>), bool>> {
    let available = size - pos;
    let mut d = read_at(f, PEEK.min(available as usize), pos)?;
    loop {
        match record::parse(&d, available) {
            Parsed::Record { env_len, body_len, v1 } => {
                let loc = Location { segment: n, offset: pos, env_len, body_len, v1 };
                let h = loc.header_len() as usize;
                return Ok(Ok((loc, d[h..h + env_len as usize].to_vec())));
            }
            Parsed::Short => {
                // Read what the record says it needs (bounded by the file).
                let need = if d.len() >= HEADER {
                    let env = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as u64;
                    let body = u64::from_le_bytes(d[8..16].try_into().unwrap_or_default());
                    if &d[..4] == record::MAGIC_V1 {
                        20 + env + body
                    } else {
                        HEADER as u64 + env
                    }
                } else {
                    HEADER as u64
                };
                let need = need.min(available);
                if need as usize <= d.len() {
                    return Ok(Err(false));
                }
                d = read_at(f, need as usize, pos)?;
            }
            Parsed::Incomplete => return Ok(Err(true)),
            Parsed::Bad => return Ok(Err(false)),
        }
    }
}

/// The next offset after `from` at which a valid record starts, if any.
fn resync(f: &File, n: u64, from: u64, size: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let mut base = from;
    while base < size {
        let d = read_at(f, CHUNK.min((size - base) as usize) + 3, base)?;
        let mut i = 0;
        while let Some(j) = record::find_next(&d[i..]) {
            let at = base + (i + j) as u64;
            if at > from && record_at(f, n, at, size)?.is_ok() {
                return Ok(Some(at));
            }
            i += j;
        }
        base += CHUNK as u64;
    }
    Ok(None)
}

fn quarantine(f: &File, dir: &Path, n: u64, offset: u64, len: u64) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    crate::disk::set_mode(dir, 0o700);
    let path = dir.join(format!("{n:016x}-{offset}.bad"));
    let data = read_at(f, len.min(64 << 20) as usize, offset)?;
    let _ = std::fs::remove_file(&path);
    let mut out = crate::disk::create_private(&path)?;
    io::Write::write_all(&mut out, &data)?;
    out.sync_all()?;
    Ok(path)
}

/// Scan segment `n` at `path`; bad regions are copied into `quarantine_dir`
/// when one is given.
pub fn scan_segment(path: &Path, n: u64, quarantine_dir: Option<&Path>) -> io::Result<SegmentScan> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut scan = SegmentScan::default();
    let mut pos = 0u64;
    while pos < size {
        match record_at(&f, n, pos, size)? {
            Ok((loc, env)) => {
                match serde_json::from_slice::<Head>(&env) {
                    Ok(h) => scan.records.push(Scanned { location: loc, id: h.id, nrcpt: h.rcpts.len() }),
                    // A checksum that holds over an envelope that does not parse: set it aside.
                    Err(_) => scan.bad.push(BadRegion { offset: pos, len: loc.len(), corrupt: true, copy: None }),
                }
                pos += loc.len();
            }
            Err(incomplete) => {
                let next = resync(&f, n, pos, size)?;
                let end = next.unwrap_or(size);
                scan.bad.push(BadRegion { offset: pos, len: end - pos, corrupt: next.is_some() || !incomplete, copy: None });
                pos = end;
            }
        }
    }
    if let Some(dir) = quarantine_dir {
        for b in &mut scan.bad {
            b.copy = Some(quarantine(&f, dir, n, b.offset, b.len)?);
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, body: &[u8]) -> Vec<u8> {
        let env = format!("{{\"id\":\"{id}\",\"rcpts\":[1,2]}}");
        let mut r = record::header(env.as_bytes(), body).to_vec();
        r.extend_from_slice(env.as_bytes());
        r.extend_from_slice(body);
        r
    }

    fn tmp(name: &str, data: &[u8]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mx6-scan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("seg"), data).unwrap();
        d
    }

    #[test]
    fn a_flipped_bit_costs_one_record() {
        let (a, b, c) = (rec("a", b"one"), rec("b", &[7u8; 10_000]), rec("c", b"three"));
        let mut data = [a.clone(), b.clone(), c.clone()].concat();
        data[a.len() + 30] ^= 0x10; // inside b's envelope
        let d = tmp("flip", &data);
        let s = scan_segment(&d.join("seg"), 1, Some(&d.join("q"))).unwrap();
        let ids: Vec<&str> = s.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(s.records[1].nrcpt, 2);
        assert_eq!(s.bad.len(), 1);
        assert_eq!((s.bad[0].offset, s.bad[0].len, s.bad[0].corrupt), (a.len() as u64, b.len() as u64, true));
        let q = std::fs::read(s.bad[0].copy.as_ref().unwrap()).unwrap();
        assert_eq!(q.len(), b.len());
        assert_eq!(std::fs::read(d.join("seg")).unwrap().len(), data.len(), "nothing truncated");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_torn_tail_is_incomplete_and_garbage_is_skipped() {
        let (a, b) = (rec("a", b"one"), rec("b", b"two two two"));
        let mut data = [b"stray garbage".to_vec(), a.clone(), b[..b.len() - 3].to_vec()].concat();
        let d = tmp("torn", &data);
        let s = scan_segment(&d.join("seg"), 1, None).unwrap();
        assert_eq!(s.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(s.bad.len(), 2);
        assert!(s.bad[0].corrupt && s.bad[0].offset == 0 && s.bad[0].len == 13);
        assert!(!s.bad[1].corrupt, "a write cut short at the end");
        data.clear();
        let _ = std::fs::remove_dir_all(d);
    }
}
