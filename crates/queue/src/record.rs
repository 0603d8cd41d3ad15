//! The spool record format, without I/O. A record is one accepted message:
//!
//! - v2 (written): `"MX6N" | u32 env_len | u64 body_len | u32 crc32(first 16
//!   octets ‖ envelope) | u32 crc32(body) | envelope JSON | body`;
//! - v1 (read, from earlier versions): `"MX6M" | u32 env_len | u64 body_len |
//!   u32 crc32(envelope ‖ body) | envelope JSON | body`.
//!
//! All integers little-endian. The v2 header checksum covers the lengths and
//! the envelope, so recovery can index a segment without reading bodies; the
//! body has its own checksum, checked whenever the body is read.
//!
//! Defends against: torn writes (a record longer than what is there is
//! incomplete), flipped bits (checksums), absurd lengths (bounded by the
//! bytes available), and garbage between records ([`find_next`] resynchronises
//! on the next record whose header checksum holds).

pub const MAGIC: &[u8; 4] = b"MX6N";
pub const MAGIC_V1: &[u8; 4] = b"MX6M";
pub const HEADER: usize = 24;
pub const HEADER_V1: usize = 20;
/// Envelopes are JSON of a few hundred octets; anything this long is not one.
pub const MAX_ENVELOPE: usize = 16 << 20;

/// Where a record is: its segment, where it starts, and its parts' lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    /// Offset of the record (its magic) in the segment.
    pub offset: u64,
    pub env_len: u32,
    pub body_len: u64,
    /// A record of the earlier format.
    pub v1: bool,
}

impl Location {
    pub fn header_len(&self) -> u64 {
        if self.v1 {
            HEADER_V1 as u64
        } else {
            HEADER as u64
        }
    }
    pub fn env_offset(&self) -> u64 {
        self.offset + self.header_len()
    }
    pub fn body_offset(&self) -> u64 {
        self.env_offset() + self.env_len as u64
    }
    /// The whole record's length.
    pub fn len(&self) -> u64 {
        self.header_len() + self.env_len as u64 + self.body_len
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The header of a new record.
pub fn header(env: &[u8], body: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&(env.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&h[..16]);
    c.update(env);
    h[16..20].copy_from_slice(&c.finalize().to_le_bytes());
    h[20..24].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    h
}

/// What the bytes at the start of `d` are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A record whose header (and, for v1, whole record) checks out; `len` is
    /// the record's length. For v2 the body is not checked here.
    Record { env_len: u32, body_len: u64, v1: bool },
    /// A record header that checks out but whose record runs past `available`
    /// octets: a write cut short.
    Incomplete,
    /// Not a valid record.
    Bad,
    /// Fewer octets than a header.
    Short,
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[i..i + 8]);
    u64::from_le_bytes(b)
}

/// Parse the record at the start of `d`. `d` holds at least the header and
/// the envelope when they are there (for v1: the whole record); `available`
/// is how many octets of the segment there are from this record on.
pub fn parse(d: &[u8], available: u64) -> Parsed {
    if d.len() < 4 {
        return Parsed::Short;
    }
    let v1 = match &d[..4] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        _ => return Parsed::Bad,
    };
    let hl = if v1 { HEADER_V1 } else { HEADER };
    if d.len() < hl {
        return if (d.len() as u64) < available { Parsed::Short } else { Parsed::Incomplete };
    }
    let env_len = u32_at(d, 4);
    let body_len = u64_at(d, 8);
    if env_len as usize > MAX_ENVELOPE {
        return Parsed::Bad;
    }
    let env_end = hl + env_len as usize;
    let total = (env_end as u64).checked_add(body_len);
    if v1 {
        let Some(total) = total.filter(|t| *t <= available) else { return Parsed::Incomplete };
        if (d.len() as u64) < total {
            return Parsed::Short;
        }
        let crc = u32_at(d, 16);
        if crc32fast::hash(&d[HEADER_V1..total as usize]) != crc {
            return Parsed::Bad;
        }
        return Parsed::Record { env_len, body_len, v1 };
    }
    if d.len() < env_end {
        return if (d.len() as u64) < available { Parsed::Short } else { Parsed::Incomplete };
    }
    let mut c = crc32fast::Hasher::new();
    c.update(&d[..16]);
    c.update(&d[HEADER..env_end]);
    if c.finalize() != u32_at(d, 16) {
        return Parsed::Bad;
    }
    match total {
        Some(t) if t <= available => Parsed::Record { env_len, body_len, v1 },
        _ => Parsed::Incomplete,
    }
}

/// Whether `body` (read from a v2 record whose header is `header`) is intact.
pub fn body_ok(header: &[u8], body: &[u8]) -> bool {
    header.len() >= HEADER && crc32fast::hash(body) == u32_at(header, 20)
}

/// The offset in `d` (after its first octet) of the next octets that could
/// start a record: the next magic of either version.
pub fn find_next(d: &[u8]) -> Option<usize> {
    let a = memchr::memmem::find(d.get(1..)?, MAGIC).map(|i| i + 1);
    let b = memchr::memmem::find(&d[1..], MAGIC_V1).map(|i| i + 1);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(env: &[u8], body: &[u8]) -> Vec<u8> {
        let mut r = header(env, body).to_vec();
        r.extend_from_slice(env);
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn v2_records_check_header_and_body_separately() {
        let r = record(b"{\"id\":\"x\"}", b"body");
        assert_eq!(parse(&r, r.len() as u64), Parsed::Record { env_len: 10, body_len: 4, v1: false });
        assert!(body_ok(&r, b"body") && !body_ok(&r, b"bodY"));
        // A flipped bit in the envelope or a length is caught without the body.
        let mut bad = r.clone();
        bad[HEADER + 2] ^= 1;
        assert_eq!(parse(&bad, r.len() as u64), Parsed::Bad);
        let mut bad = r.clone();
        bad[9] ^= 1;
        assert_eq!(parse(&bad, r.len() as u64), Parsed::Bad);
        // Cut short: the header is fine, the record is not all there.
        assert_eq!(parse(&r[..r.len() - 1], r.len() as u64 - 1), Parsed::Incomplete);
        assert_eq!(parse(&r[..10], 10), Parsed::Incomplete);
        assert_eq!(parse(&r[..10], 100), Parsed::Short);
        assert_eq!(parse(b"garbage!", 8), Parsed::Bad);
    }

    #[test]
    fn v1_records_still_read() {
        let env = b"{\"id\":\"y\"}";
        let mut r = MAGIC_V1.to_vec();
        r.extend_from_slice(&(env.len() as u32).to_le_bytes());
        r.extend_from_slice(&2u64.to_le_bytes());
        let mut c = crc32fast::Hasher::new();
        c.update(env);
        c.update(b"hi");
        r.extend_from_slice(&c.finalize().to_le_bytes());
        r.extend_from_slice(env);
        r.extend_from_slice(b"hi");
        assert_eq!(parse(&r, r.len() as u64), Parsed::Record { env_len: 10, body_len: 2, v1: true });
        let loc = Location { segment: 0, offset: 0, env_len: 10, body_len: 2, v1: true };
        assert_eq!((loc.env_offset(), loc.body_offset(), loc.len()), (20, 30, 32));
    }

    #[test]
    fn resynchronises_on_the_next_magic() {
        let mut d = b"xxMX6Mjunk".to_vec();
        d.extend_from_slice(&record(b"{}", b""));
        assert_eq!(find_next(&d), Some(2));
        assert_eq!(find_next(&d[2..]), Some(8));
        assert_eq!(find_next(b"MX6N"), None);
    }
}
