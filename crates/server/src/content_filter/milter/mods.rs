//! What one milter asked for at end of message, and how it is applied: header
//! changes spliced into the header section as received (every other field
//! keeps its bytes), the body replaced, the sender changed, recipients added
//! and removed, the message quarantined (held).

use mx6_filter::milter::{self, Reply as MReply};
use mx6_message::HeaderEdit;

use crate::content_filter::message::Message;
use crate::content_filter::milter::error::MilterError;

#[derive(Default)]
pub struct Mods {
    headers: Vec<MReply>,
    body: Option<Vec<u8>>,
    add_rcpt: Vec<String>,
    del_rcpt: Vec<String>,
    from: Option<String>,
    quarantine: Option<String>,
    /// Header values come with their leading white space (`SMFIP_HDR_LEADSPC`).
    leadspc: bool,
    /// The largest replacement body taken (the message size limit).
    max_body: usize,
}

/// `<a@b>` or `a@b` as mx6 keeps addresses.
fn bare(a: &str) -> String {
    a.trim().trim_start_matches('<').trim_end_matches('>').to_string()
}

/// A replacement body with CRLF line endings (milters often send LF).
fn crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    let mut prev = 0u8;
    for &b in body {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

impl Mods {
    pub fn new(leadspc: bool, max_body: usize) -> Mods {
        Mods { leadspc, max_body, ..Mods::default() }
    }

    /// Take one modification reply.
    pub fn take(&mut self, r: MReply) -> Result<(), MilterError> {
        match r {
            MReply::AddHeader { .. } | MReply::InsertHeader { .. } | MReply::ChangeHeader { .. } => self.headers.push(r),
            MReply::ReplaceBody(chunk) => {
                let b = self.body.get_or_insert_with(Vec::new);
                if b.len() + chunk.len() > self.max_body {
                    return Err(MilterError::BodyTooLarge(self.max_body));
                }
                b.extend_from_slice(&chunk);
            }
            MReply::AddRcpt { rcpt, .. } => self.add_rcpt.push(bare(&rcpt)),
            MReply::DelRcpt(rcpt) => self.del_rcpt.push(bare(&rcpt)),
            MReply::ChangeFrom { from, .. } => self.from = Some(bare(&from)),
            MReply::Quarantine(reason) => self.quarantine = Some(reason),
            other => return Err(MilterError::Unexpected(Box::new(other), "eom")),
        }
        Ok(())
    }

    pub fn quarantined(&self) -> bool {
        self.quarantine.is_some()
    }

    pub fn apply(self, m: &mut Message) {
        if !self.headers.is_empty() || self.body.is_some() {
            let mut edit = HeaderEdit::new(&m.data);
            for r in &self.headers {
                milter::edit_header(&mut edit, r, self.leadspc);
            }
            let body = self.body.as_deref().map(crlf);
            m.data = edit.render(body.as_deref());
        }
        for d in &self.del_rcpt {
            m.rcpts.retain(|r| !r.eq_ignore_ascii_case(d));
        }
        for a in self.add_rcpt {
            if !a.is_empty() && !m.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
                m.rcpts.push(a);
            }
        }
        if let Some(f) = self.from {
            m.from = f;
        }
        if let Some(q) = self.quarantine {
            m.hold = Some(q);
        }
    }

    /// The changes, for the log line.
    pub fn describe(&self) -> String {
        let name = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
        let mut v: Vec<String> = self
            .headers
            .iter()
            .map(|r| match r {
                MReply::AddHeader { name: n, .. } => format!("add header {}", name(n)),
                MReply::InsertHeader { name: n, index, .. } => format!("insert header {} at {index}", name(n)),
                MReply::ChangeHeader { name: n, value, index } if value.is_empty() => format!("delete header {} #{index}", name(n)),
                MReply::ChangeHeader { name: n, index, .. } => format!("change header {} #{index}", name(n)),
                _ => String::new(),
            })
            .collect();
        if self.body.is_some() {
            v.push("replace body".into());
        }
        v.extend(self.add_rcpt.iter().map(|r| format!("add rcpt <{r}>")));
        v.extend(self.del_rcpt.iter().map(|r| format!("delete rcpt <{r}>")));
        if let Some(f) = &self.from {
            v.push(format!("change sender <{f}>"));
        }
        if let Some(q) = &self.quarantine {
            v.push(format!("quarantine ({q})"));
        }
        v.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message {
            from: "a@example.org".into(),
            rcpts: vec!["b@example.net".into(), "c@example.net".into()],
            data: b"Subject:  odd\r\nX-8: caf\xc3\xa9\r\n\r\nbody\r\n".to_vec(),
            junk: false,
            hold: None,
        }
    }

    #[test]
    fn everything_a_milter_may_ask_for() {
        let mut m = msg();
        let mut mods = Mods::new(false, 1000);
        for r in [
            MReply::InsertHeader { index: 0, name: b"X-First".to_vec(), value: b"1".to_vec() },
            MReply::ReplaceBody(b"new\nbody\n".to_vec()),
            MReply::AddRcpt { rcpt: "<d@example.net>".into(), args: None },
            MReply::DelRcpt("<B@example.net>".into()),
            MReply::ChangeFrom { from: "<bounce@example.org>".into(), args: None },
            MReply::Quarantine("looks odd".into()),
        ] {
            mods.take(r).unwrap();
        }
        assert!(mods.take(MReply::Continue).is_err());
        assert_eq!(mods.describe(), "insert header X-First at 0; replace body; add rcpt <d@example.net>; delete rcpt <B@example.net>; change sender <bounce@example.org>; quarantine (looks odd)");
        mods.apply(&mut m);
        assert_eq!(m.data, b"X-First: 1\r\nSubject:  odd\r\nX-8: caf\xc3\xa9\r\n\r\nnew\r\nbody\r\n");
        assert_eq!(m.rcpts, ["c@example.net", "d@example.net"]);
        assert_eq!((m.from.as_str(), m.hold.as_deref()), ("bounce@example.org", Some("looks odd")));
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let mut m = msg();
        Mods::new(true, 10).apply(&mut m);
        assert_eq!(m.data, msg().data);
    }

    #[test]
    fn a_replacement_body_is_bounded() {
        let mut mods = Mods::new(false, 4);
        mods.take(MReply::ReplaceBody(b"1234".to_vec())).unwrap();
        assert!(matches!(mods.take(MReply::ReplaceBody(b"5".to_vec())), Err(MilterError::BodyTooLarge(4))));
    }
}
