//! The SPAMC/SPAMD protocol (SpamAssassin's spamd, protocol 1.5): the client
//! sends `SYMBOLS SPAMC/1.5`, a `Content-length` header and the message, and
//! closes its side; spamd answers `SPAMD/1.1 0 EX_OK`, a `Spam: True ; 12.3 / 5.0`
//! header and the names of the rules that hit, comma-separated.

/// The request for `message`.
pub fn request(message: &[u8]) -> Vec<u8> {
    let mut r = format!("SYMBOLS SPAMC/1.5\r\nContent-length: {}\r\n\r\n", message.len()).into_bytes();
    r.extend_from_slice(message);
    r
}

/// spamd's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: f64,
    /// spamd's own threshold (`required_score`).
    pub required: f64,
    /// Names of the rules that hit.
    pub tests: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("spamd answered `{0}`")]
    Status(String),
    #[error("spamd's answer has no Spam header")]
    NoSpamHeader,
    #[error("spamd's answer is not what the protocol says: {0}")]
    Malformed(String),
}

/// Parse spamd's whole answer.
pub fn parse(answer: &[u8]) -> Result<Verdict, Error> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.split_whitespace();
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("SPAMD/") || code != "0" {
        return Err(Error::Status(status.to_string()));
    }
    let spam = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("spam"))
        .map(|(_, v)| v.trim().to_string())
        .ok_or(Error::NoSpamHeader)?;
    // "True ; 1000.0 / 5.0"
    let (_, nums) = spam.split_once(';').ok_or_else(|| Error::Malformed(spam.clone()))?;
    let (score, required) = nums.split_once('/').ok_or_else(|| Error::Malformed(spam.clone()))?;
    let num = |s: &str| s.trim().parse::<f64>().map_err(|_| Error::Malformed(spam.clone()));
    let tests = body.split(',').map(|t| t.trim()).filter(|t| !t.is_empty()).map(str::to_string).collect();
    Ok(Verdict { score: num(score)?, required: num(required)?, tests })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_symbols_answer() {
        let a = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 26\r\nSpam: True ; 1002.5 / 5.0\r\n\r\nGTUBE,MISSING_DATE,MX6_X\r\n";
        let v = parse(a).unwrap();
        assert_eq!(v.score, 1002.5);
        assert_eq!(v.required, 5.0);
        assert_eq!(v.tests, ["GTUBE", "MISSING_DATE", "MX6_X"]);
        let v = parse(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.1 / 5.0\r\n\r\n").unwrap();
        assert_eq!((v.score, v.tests.len()), (-0.1, 0));
        assert!(matches!(parse(b"SPAMD/1.0 76 Bad header line\r\n\r\n"), Err(Error::Status(_))));
        assert_eq!(parse(b"SPAMD/1.1 0 EX_OK\r\n\r\n"), Err(Error::NoSpamHeader));
        assert!(request(b"abc").ends_with(b"Content-length: 3\r\n\r\nabc"));
    }
}
