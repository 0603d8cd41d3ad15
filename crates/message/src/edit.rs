//! Editing a header section without rewriting it: the fields are kept as
//! ranges of the original bytes, and only what is added or changed is new.
//! The operations are libmilter's (`smfi_addheader`, `smfi_insheader`,
//! `smfi_chgheader`): add at the end, insert at a position (0 = first), change
//! or delete the n-th field of a name (1-based; changing one that does not
//! exist adds it).

use crate::fields::{body_start, fields, header_end};

enum Item {
    /// A field of the original message: its byte range.
    Kept(usize, usize),
    /// A new field, name to final CRLF.
    New(Vec<u8>),
}

/// A field `name:value` as it goes into a message: folded lines that a
/// milter joined with LF (or CRLF) get CRLF, and the field ends with CRLF.
/// `value` is everything after the colon (leading white space included, as
/// given). A value cannot break the header section: an empty or blank line
/// in it is dropped (it would end the header section), a line that does not
/// start with white space is folded (it would start a field of its own), and
/// a lone CR becomes a space.
pub fn field(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 3);
    out.extend_from_slice(name);
    out.push(b':');
    for (i, line) in value.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i > 0 {
            if line.iter().all(|&b| b == b' ' || b == b'\t' || b == b'\r') {
                continue;
            }
            out.extend_from_slice(b"\r\n");
            if !matches!(line[0], b' ' | b'\t') {
                out.push(b'\t');
            }
        }
        out.extend(line.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn name_of(raw: &[u8]) -> &[u8] {
    match memchr::memchr(b':', raw) {
        Some(c) => raw[..c].trim_ascii_end(),
        None => &[],
    }
}

/// The header section of `msg` under edit.
pub struct HeaderEdit<'a> {
    msg: &'a [u8],
    items: Vec<Item>,
}

impl<'a> HeaderEdit<'a> {
    pub fn new(msg: &'a [u8]) -> HeaderEdit<'a> {
        let items = fields(msg).map(|f| Item::Kept(f.offset, f.offset + f.raw.len())).collect();
        HeaderEdit { msg, items }
    }

    fn raw<'b>(&'b self, i: &'b Item) -> &'b [u8] {
        match i {
            Item::Kept(a, b) => &self.msg[*a..*b],
            Item::New(v) => v,
        }
    }

    /// How many fields there are now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether nothing was changed.
    pub fn unchanged(&self) -> bool {
        self.items.iter().all(|i| matches!(i, Item::Kept(..))) && self.items.len() == fields(self.msg).count()
    }

    /// Append `field` (from [`field`]) after the last field.
    pub fn add(&mut self, field: Vec<u8>) {
        self.items.push(Item::New(field));
    }

    /// Insert `field` so that it becomes the `index`-th field (0 = the first;
    /// past the end = the last). Lines without a colon are not fields (a
    /// milter never sees them) and do not count.
    pub fn insert(&mut self, index: usize, field: Vec<u8>) {
        let at = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| memchr::memchr(b':', self.raw(i)).is_some())
            .nth(index)
            .map(|(p, _)| p)
            .unwrap_or(self.items.len());
        self.items.insert(at, Item::New(field));
    }

    /// Change the `nth` (1-based) field named `name` (case-insensitive) to
    /// `field`, or delete it when `field` is `None`. Changing a field that
    /// does not exist adds it. Returns whether a field was found.
    pub fn change(&mut self, name: &[u8], nth: usize, field: Option<Vec<u8>>) -> bool {
        let pos = self
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| name_of(self.raw(i)).eq_ignore_ascii_case(name))
            .nth(nth.max(1) - 1)
            .map(|(p, _)| p);
        match (pos, field) {
            (Some(p), Some(f)) => self.items[p] = Item::New(f),
            (Some(p), None) => {
                self.items.remove(p);
            }
            (None, Some(f)) => self.items.push(Item::New(f)),
            (None, None) => {}
        }
        pos.is_some()
    }

    /// The message with the edited header section and `body` (the original
    /// body when `None`), the empty line between them kept as it was.
    pub fn render(&self, body: Option<&[u8]>) -> Vec<u8> {
        let (end, start) = (header_end(self.msg), body_start(self.msg));
        let sep: &[u8] = if start > end { &self.msg[end..start] } else { b"\r\n" };
        let body = body.unwrap_or(&self.msg[start..]);
        let mut out = Vec::with_capacity(self.msg.len() + 256);
        for i in &self.items {
            out.extend_from_slice(self.raw(i));
        }
        out.extend_from_slice(sep);
        out.extend_from_slice(body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_value_cannot_break_the_header_section() {
        assert_eq!(field(b"X", b" a\n\tb"), b"X: a\r\n\tb\r\n");
        assert_eq!(field(b"X", b" a\r\n b\r\n"), b"X: a\r\n b\r\n", "a trailing line break is not a blank line");
        assert_eq!(field(b"X", b" a\n\nBcc: injected"), b"X: a\r\n\tBcc: injected\r\n");
        assert_eq!(field(b"X", b" a\n  \n\tb\rc"), b"X: a\r\n\tb c\r\n");
        assert_eq!(field(b"X", b""), b"X:\r\n");
    }

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nSubject:no space\r\nX-8bit: caf\xc3\xa9  \r\nsubject: again\r\n\r\nbody\r\n";

    #[test]
    fn lines_without_a_colon_stay_and_do_not_count() {
        let msg = b"odd line\r\nA: 1\r\nB: 2\r\n\r\nx";
        let mut e = HeaderEdit::new(msg);
        e.insert(1, field(b"X", b" new"));
        assert_eq!(e.render(None), b"odd line\r\nA: 1\r\nX: new\r\nB: 2\r\n\r\nx");
    }

    #[test]
    fn untouched_is_byte_identical() {
        let e = HeaderEdit::new(MSG);
        assert!(e.unchanged());
        assert_eq!(e.render(None), MSG);
        assert_eq!(e.len(), 4);
    }

    #[test]
    fn edits_touch_only_what_they_name() {
        let mut e = HeaderEdit::new(MSG);
        e.insert(0, field(b"DKIM-Signature", b" v=1; a=ed25519-sha256;\n\tb=xyz"));
        assert!(e.change(b"SUBJECT", 2, Some(field(b"Subject", b" changed"))));
        assert!(e.change(b"subject", 1, None));
        assert!(!e.change(b"X-Missing", 1, None));
        assert!(!e.change(b"X-New", 3, Some(field(b"X-New", b" added"))));
        e.add(field(b"X-Last", b"\t1"));
        assert!(!e.unchanged());
        assert_eq!(
            e.render(None),
            b"DKIM-Signature: v=1; a=ed25519-sha256;\r\n\tb=xyz\r\nReceived: from x\r\n\tby y\r\nX-8bit: caf\xc3\xa9  \r\nSubject: changed\r\nX-New: added\r\nX-Last:\t1\r\n\r\nbody\r\n"
        );
        assert!(e.render(Some(b"new body\r\n")).ends_with(b"\r\n\r\nnew body\r\n"));
    }
}
