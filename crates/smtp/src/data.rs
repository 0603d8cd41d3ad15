//! Message content: DATA decoding (RFC 5321 §4.1.1.4, §4.5.2 dot-stuffing) and
//! BDAT content checks (RFC 3030).
//!
//! Defends against SMTP smuggling (CVE-2023-51764 and kin): the end of DATA is
//! only `<CRLF>.<CRLF>`; a bare LF or bare CR anywhere in the content marks the
//! message, which is then refused as a whole with 550 5.5.2 once its real end is
//! seen. Nothing is normalised, so what one receiver sees as two messages can
//! never be stored by us as one (or the other way round). Also bounded: text
//! lines (a limit the session sets: 998 octets + CRLF as §4.5.3.1.6 says when
//! long lines are refused, [`LONG_LINE`] when they are accepted as most MTAs
//! do), message size (RFC 1870), NUL octets.

use memchr::memchr;

/// Why a message's content is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    TooBig,
    BareNewline,
    LineTooLong,
    Nul,
}

/// Longest text line without its CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 998;

/// Longest text line accepted when long lines are accepted (sloppy but
/// common senders write them; Postfix accepts them too).
pub const LONG_LINE: usize = 64 << 10;

/// Incremental DATA decoder. Feed it bytes; it reports how many it consumed and
/// whether the terminating `<CRLF>.<CRLF>` was seen.
#[derive(Debug)]
pub struct DataDecoder {
    out: Vec<u8>,
    max_size: usize,
    /// Longest line without its CRLF.
    max_line: usize,
    /// Octets consumed so far (for the session's minimum-rate deadline).
    pub consumed: u64,
    /// The previous line ended with CRLF (true at the start: DATA's own CRLF).
    prev_crlf: bool,
    /// Octets of the current line already consumed (an overlong line in pieces).
    partial_len: usize,
    /// The consumed piece of the current line ended with CR.
    partial_cr: bool,
    error: Option<ContentError>,
}

impl DataDecoder {
    pub fn new(max_size: usize, max_line: usize) -> DataDecoder {
        DataDecoder {
            out: Vec::with_capacity(8192),
            max_size,
            max_line,
            consumed: 0,
            prev_crlf: true,
            partial_len: 0,
            partial_cr: false,
            error: None,
        }
    }

    fn flag(&mut self, e: ContentError) {
        // The first problem found is the one reported, except that a size
        // overrun wins: the client must learn the limit.
        if self.error.is_none() || e == ContentError::TooBig {
            self.error = Some(e);
        }
    }

    /// Consume as much of `input` as possible. Returns `(consumed, finished)`.
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let r = self.feed_lines(input);
        self.consumed += r.0 as u64;
        r
    }

    fn feed_lines(&mut self, input: &[u8]) -> (usize, bool) {
        let mut pos = 0;
        while pos < input.len() {
            match memchr(b'\n', &input[pos..]) {
                Some(i) => {
                    let line = &input[pos..pos + i + 1];
                    pos += i + 1;
                    if self.line(line) {
                        return (pos, true);
                    }
                }
                None => {
                    let rest = &input[pos..];
                    if self.partial_len + rest.len() > self.max_line + 2 {
                        // An overlong line: consume it in pieces, remembering
                        // only what is needed to find its end.
                        self.flag(ContentError::LineTooLong);
                        let body = rest.strip_suffix(b"\r").unwrap_or(rest);
                        if self.partial_cr || memchr(b'\r', body).is_some() {
                            self.flag(ContentError::BareNewline);
                        }
                        if memchr(0, rest).is_some() {
                            self.flag(ContentError::Nul);
                        }
                        self.partial_len += rest.len();
                        self.partial_cr = rest.ends_with(b"\r");
                        return (input.len(), false);
                    }
                    return (pos, false);
                }
            }
        }
        (pos, false)
    }

    /// One line including its LF. Returns true at the end of data.
    fn line(&mut self, line: &[u8]) -> bool {
        let continued = self.partial_len > 0;
        let (content, crlf) = if let Some(c) = line.strip_suffix(b"\r\n") {
            (c, true)
        } else if continued && self.partial_cr && line == b"\n" {
            (&line[..0], true)
        } else {
            (&line[..line.len() - 1], false)
        };
        if !continued && self.prev_crlf && crlf && content == b"." {
            return true;
        }
        if !crlf {
            self.flag(ContentError::BareNewline);
        }
        if (continued && self.partial_cr && !(crlf && content.is_empty())) || memchr(b'\r', content).is_some() {
            self.flag(ContentError::BareNewline);
        }
        if memchr(0, content).is_some() {
            self.flag(ContentError::Nul);
        }
        if self.partial_len + content.len() > self.max_line {
            self.flag(ContentError::LineTooLong);
        }
        if self.error.is_none() {
            let content = if self.prev_crlf && content.first() == Some(&b'.') { &content[1..] } else { content };
            if self.out.len() + content.len() + 2 > self.max_size {
                self.flag(ContentError::TooBig);
            } else {
                self.out.extend_from_slice(content);
                self.out.extend_from_slice(b"\r\n");
            }
        } else if self.error == Some(ContentError::TooBig) || self.out.len() + content.len() + 2 > self.max_size {
            self.flag(ContentError::TooBig);
        }
        self.prev_crlf = crlf;
        self.partial_len = 0;
        self.partial_cr = false;
        false
    }

    /// The decoded message, or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, ContentError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Check BDAT content once its last chunk arrived: the same rules as DATA, since
/// the message may later travel over DATA. Appends a final CRLF when missing.
pub fn check_chunked(mut msg: Vec<u8>, max_line: usize) -> Result<Vec<u8>, ContentError> {
    if memchr(0, &msg).is_some() {
        return Err(ContentError::Nul);
    }
    let mut start = 0;
    while start < msg.len() {
        let (end, next) = match memchr(b'\n', &msg[start..]) {
            Some(i) => {
                if i == 0 || msg[start + i - 1] != b'\r' {
                    return Err(ContentError::BareNewline);
                }
                (start + i - 1, start + i + 1)
            }
            None => (msg.len(), msg.len()),
        };
        let line = &msg[start..end];
        if memchr(b'\r', line).is_some() {
            return Err(ContentError::BareNewline);
        }
        if line.len() > max_line {
            return Err(ContentError::LineTooLong);
        }
        start = next;
    }
    if !msg.is_empty() && !msg.ends_with(b"\r\n") {
        msg.extend_from_slice(b"\r\n");
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Result<Vec<u8>, ContentError>, usize, bool) {
        let mut d = DataDecoder::new(1 << 20, MAX_TEXT_LINE);
        let (n, done) = d.feed(input);
        (d.finish(), n, done)
    }

    #[test]
    fn dot_stuffing_and_end() {
        let (r, n, done) = decode(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(n, 24);
        assert_eq!(r.unwrap(), b"Subject: x\r\n\r\n.dot\r\n");
    }

    #[test]
    fn smuggling_variants_are_not_an_end_and_are_refused() {
        for variant in [&b"\n.\n"[..], b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"] {
            let mut msg = b"Subject: x\r\n\r\nbody".to_vec();
            msg.extend_from_slice(variant);
            msg.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\n");
            let mut d = DataDecoder::new(1 << 20, MAX_TEXT_LINE);
            let (n, done) = d.feed(&msg);
            assert!(!done, "{variant:?} must not end DATA");
            assert_eq!(n, msg.len());
            let (_, done) = d.feed(b".\r\n");
            assert!(done);
            assert_eq!(d.finish(), Err(ContentError::BareNewline), "{variant:?}");
        }
    }

    #[test]
    fn split_input_gives_the_same_result() {
        let msg = b"a\r\n..b\r\n\r\n.\r\n";
        for split in 0..msg.len() {
            let mut d = DataDecoder::new(100, MAX_TEXT_LINE);
            let (n1, done1) = d.feed(&msg[..split]);
            assert!(!done1);
            let mut rest = msg[n1..].to_vec();
            let (_, done) = d.feed(&rest);
            rest.clear();
            assert!(done, "split at {split}");
            assert_eq!(d.finish().unwrap(), b"a\r\n.b\r\n\r\n");
        }
    }

    #[test]
    fn long_lines_and_size() {
        let mut msg = vec![b'a'; 5000];
        msg.extend_from_slice(b"\r\n.\r\n");
        let mut d = DataDecoder::new(1 << 20, MAX_TEXT_LINE);
        let (n, done) = d.feed(&msg[..3000]);
        assert_eq!((n, done), (3000, false));
        let (_, done) = d.feed(&msg[3000..]);
        assert!(done);
        assert_eq!(d.finish(), Err(ContentError::LineTooLong));

        let (r, _, done) = {
            let mut d = DataDecoder::new(10, MAX_TEXT_LINE);
            let (n, done) = d.feed(b"0123456789\r\nabc\r\n.\r\n");
            (d.finish(), n, done)
        };
        assert!(done);
        assert_eq!(r, Err(ContentError::TooBig));
    }

    #[test]
    fn chunked_checks() {
        assert_eq!(check_chunked(b"a\r\nb".to_vec(), MAX_TEXT_LINE).unwrap(), b"a\r\nb\r\n");
        assert_eq!(check_chunked(b"a\nb\r\n".to_vec(), MAX_TEXT_LINE), Err(ContentError::BareNewline));
        assert_eq!(check_chunked(b"a\rb\r\n".to_vec(), MAX_TEXT_LINE), Err(ContentError::BareNewline));
        assert_eq!(check_chunked(b"a\0\r\n".to_vec(), MAX_TEXT_LINE), Err(ContentError::Nul));
    }
}
