//! Header fields both ways: as a milter gets them (the raw value, leading
//! white space kept only with `SMFIP_HDR_LEADSPC`, folds joined by LF) and
//! as a field it added or changed goes into the message; the modifications
//! are spliced into the header section as received
//! ([`mx6_message::HeaderEdit`]), so every untouched field keeps its bytes.

use super::reply::Reply;

/// A field's value as milters get it: the octets after the colon, with the
/// leading white space removed unless the milter negotiated
/// `SMFIP_HDR_LEADSPC`, and folded lines joined by LF (CRLF → LF), as Postfix
/// and Sendmail send it. 8-bit octets pass as they are.
pub fn field_value(raw_value: &[u8], leadspc: bool) -> Vec<u8> {
    let v = if leadspc { raw_value } else { trim_lead(raw_value) };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\r' && v.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn trim_lead(v: &[u8]) -> &[u8] {
    let n = v.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &v[n..]
}

/// A field a milter asked to add or change, as it goes into the message: the
/// value as the milter gave it after the colon with `SMFIP_HDR_LEADSPC`,
/// else after a single space (Postfix's and Sendmail's behaviour).
pub fn milter_field(name: &[u8], value: &[u8], leadspc: bool) -> Vec<u8> {
    if leadspc {
        mx6_message::field(name, value)
    } else {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.push(b' ');
        v.extend_from_slice(value);
        mx6_message::field(name, &v)
    }
}

/// Apply one header modification to `edit` (libmilter's rules: insert at a
/// 0-based position; change the `index`-th (1-based) field of that name, an
/// empty value deleting it; changing a field that does not exist adds it).
/// Returns false for a reply that is not a header modification.
pub fn edit_header(edit: &mut mx6_message::HeaderEdit<'_>, r: &Reply, leadspc: bool) -> bool {
    match r {
        Reply::AddHeader { name, value } => edit.add(milter_field(name, value, leadspc)),
        Reply::InsertHeader { index, name, value } => edit.insert(*index as usize, milter_field(name, value, leadspc)),
        Reply::ChangeHeader { index, name, value } => {
            let f = (!value.is_empty()).then(|| milter_field(name, value, leadspc));
            edit.change(name, (*index).max(1) as usize, f);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_both_ways() {
        assert_eq!(field_value(b" from x\r\n\tby y", false), b"from x\n\tby y");
        assert_eq!(field_value(b" from x\r\n\tby y", true), b" from x\n\tby y");
        assert_eq!(field_value(b"no space", false), b"no space");
        assert_eq!(milter_field(b"DKIM-Signature", b" v=1;\n\tb=x", true), b"DKIM-Signature: v=1;\r\n\tb=x\r\n");
        assert_eq!(milter_field(b"X-A", b"v", false), b"X-A: v\r\n");
    }

    #[test]
    fn modifications_are_spliced_into_the_raw_header() {
        let msg = b"Received: from x\r\n\tby y\r\nSubject:hi\r\nSubject: again\r\nX-Odd:  two  spaces\r\n\r\nbody\r\n";
        let mut e = mx6_message::HeaderEdit::new(msg);
        for r in [
            Reply::InsertHeader { index: 0, name: b"DKIM-Signature".to_vec(), value: b" v=1".to_vec() },
            Reply::ChangeHeader { index: 2, name: b"subject".to_vec(), value: b" changed".to_vec() },
            Reply::ChangeHeader { index: 1, name: b"Subject".to_vec(), value: Vec::new() },
            Reply::AddHeader { name: b"X-Added".to_vec(), value: b" 1".to_vec() },
        ] {
            assert!(edit_header(&mut e, &r, true));
        }
        assert_eq!(
            String::from_utf8(e.render(None)).unwrap(),
            "DKIM-Signature: v=1\r\nReceived: from x\r\n\tby y\r\nsubject: changed\r\nX-Odd:  two  spaces\r\nX-Added: 1\r\n\r\nbody\r\n"
        );
    }
}
