//! Reading the header section as raw bytes (RFC 5322 §2.2, §3.2.2 folding;
//! RFC 6532 8-bit field bodies): where it ends, its fields with their
//! continuation lines, and removing fields with everything else kept byte for
//! byte.
//!
//! Lines end in CRLF in mx6's messages (the DATA decoder guarantees it); a bare
//! LF is still understood, so a stored message from elsewhere is read the same.
//!
//! Defends against: header lines without a colon (kept as they are, never
//! merged into a neighbour), a message without a body or an empty line.

/// Offset of the empty line that ends the header section (just past the last
/// field's line ending), or the message length when there is none.
pub fn header_end(msg: &[u8]) -> usize {
    let mut pos = 0;
    while pos < msg.len() {
        if msg[pos..].starts_with(b"\r\n") || msg[pos] == b'\n' {
            return pos;
        }
        pos = next_line(msg, pos);
    }
    msg.len()
}

/// The header section, with the line ending of its last field.
pub fn header_section(msg: &[u8]) -> &[u8] {
    &msg[..header_end(msg)]
}

/// Offset of the body: past the empty line (the message length without one).
pub fn body_start(msg: &[u8]) -> usize {
    let end = header_end(msg);
    if msg[end..].starts_with(b"\r\n") {
        end + 2
    } else if msg[end..].starts_with(b"\n") {
        end + 1
    } else {
        end
    }
}

/// The body (after the empty line).
pub fn body(msg: &[u8]) -> &[u8] {
    &msg[body_start(msg)..]
}

/// Offset just past the line that starts at `from`.
fn next_line(msg: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &msg[from..]).map(|i| from + i + 1).unwrap_or(msg.len())
}

/// One header field: its first line and its continuation lines, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Offset of the field in the message.
    pub offset: usize,
    /// The field with its line ending(s).
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The field name (before the colon, trailing white space dropped); the
    /// whole first line for a line without a colon.
    pub fn name(&self) -> &'a [u8] {
        match memchr::memchr(b':', self.raw) {
            Some(c) => self.raw[..c].trim_ascii_end(),
            None => self.raw.trim_ascii_end(),
        }
    }

    /// Whether this is a field of that name (case-insensitive, RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        memchr::memchr(b':', self.raw).is_some() && self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The field body: everything after the colon up to the final line
    /// ending, leading space and folding included, as sent.
    pub fn value(&self) -> &'a [u8] {
        let Some(c) = memchr::memchr(b':', self.raw) else { return &[] };
        let v = &self.raw[c + 1..];
        let v = v.strip_suffix(b"\n").unwrap_or(v);
        v.strip_suffix(b"\r").unwrap_or(v)
    }

    /// The field body as text with folding removed and surrounding white
    /// space trimmed (for decisions, never for re-writing the field).
    pub fn unfolded(&self) -> String {
        let v = String::from_utf8_lossy(self.value());
        v.split(['\r', '\n']).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("").trim().to_string()
    }
}

/// The fields of the header section, in order.
pub fn fields(msg: &[u8]) -> Fields<'_> {
    Fields { msg, pos: 0, end: header_end(msg) }
}

pub struct Fields<'a> {
    msg: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;
    fn next(&mut self) -> Option<Field<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        let mut end = next_line(self.msg, start);
        while end < self.end && matches!(self.msg.get(end), Some(b' ' | b'\t')) {
            end = next_line(self.msg, end);
        }
        self.pos = end;
        Some(Field { offset: start, raw: &self.msg[start..end] })
    }
}

/// Whether the header section has a field of that name.
pub fn has_field(msg: &[u8], name: &str) -> bool {
    fields(msg).any(|f| f.is(name))
}

/// The message without the header fields for which `gone` is true; `None`
/// when there was nothing to remove. Everything else is kept byte for byte.
pub fn remove_fields(msg: &[u8], gone: impl Fn(&Field<'_>) -> bool) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut kept_to = 0;
    for f in fields(msg) {
        if gone(&f) {
            if out.capacity() == 0 {
                out.reserve(msg.len());
            }
            out.extend_from_slice(&msg[kept_to..f.offset]);
            kept_to = f.offset + f.raw.len();
        }
    }
    if kept_to == 0 {
        return None;
    }
    out.extend_from_slice(&msg[kept_to..]);
    Some(out)
}

/// The message without any field named `name`.
pub fn remove_named(msg: &[u8], name: &str) -> Option<Vec<u8>> {
    remove_fields(msg, |f| f.is(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nSubject:no space\r\nnot a field\r\nX-8bit: caf\xc3\xa9\r\n\r\nbody\r\n\r\nmore\r\n";

    #[test]
    fn sections() {
        assert_eq!(header_section(MSG), &MSG[..MSG.len() - 16]);
        assert_eq!(body(MSG), b"body\r\n\r\nmore\r\n");
        assert_eq!(body(b"Subject: x\r\n"), b"");
        assert_eq!(header_end(b"\r\nbody"), 0);
        assert_eq!(body(b"A: b\n\nbody\n"), b"body\n");
    }

    #[test]
    fn fields_are_raw() {
        let f: Vec<Field> = fields(MSG).collect();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].raw, b"Received: from x\r\n\tby y\r\n");
        assert_eq!(f[0].value(), b" from x\r\n\tby y");
        assert_eq!(f[0].unfolded(), "from x\tby y");
        assert!(f[1].is("subject") && f[1].value() == b"no space");
        assert!(!f[2].is("not a field"));
        assert_eq!(f[3].value(), " café".as_bytes());
        let joined: Vec<u8> = f.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(joined, header_section(MSG));
    }

    #[test]
    fn removal_keeps_the_rest_byte_for_byte() {
        let out = remove_named(MSG, "SUBJECT").unwrap();
        assert_eq!(out, b"Received: from x\r\n\tby y\r\nnot a field\r\nX-8bit: caf\xc3\xa9\r\n\r\nbody\r\n\r\nmore\r\n");
        assert!(remove_named(MSG, "To").is_none());
        let m = b"X-Mx6-Client: forged\r\n\tmore\r\nSubject: x\r\nx-mx6-client: again\r\n\r\nX-Mx6-Client: body\r\n";
        assert_eq!(remove_named(m, "X-Mx6-Client").unwrap(), b"Subject: x\r\n\r\nX-Mx6-Client: body\r\n");
        assert!(has_field(m, "subject") && !has_field(m, "date"));
    }
}
