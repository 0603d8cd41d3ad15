//! MTA-STS policies (RFC 8461): our own policy's text (§3.2), the `id` to
//! publish in the `_mta-sts` TXT record (it must change whenever the policy
//! does, §3.1), which of our domains an HTTP `Host` of `mta-sts.<domain>`
//! names; and for anyone's policy: the strict parser of the policy file
//! (§3.2), the TXT record (§3.1) and whether an MX host matches a pattern (§4.1).

/// The policy file: `version`, `mode`, one `mx` line per pattern, `max_age`.
pub fn policy_text(mode: &str, mx: &[String], max_age_secs: u64) -> String {
    let mut t = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        t.push_str(&format!("mx: {}\r\n", m.trim_end_matches('.').to_ascii_lowercase()));
    }
    t.push_str(&format!("max_age: {max_age_secs}\r\n"));
    t
}

/// A TXT `id` for `text` (§3.1: 1 to 32 alphanumerics): 16 hex digits of
/// its FNV-1a hash, so the same policy always gets the same id.
pub fn policy_id(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The domain of `domains` that `host` (an HTTP Host, maybe with a port)
/// names as `mta-sts.<domain>`.
pub fn domain_for_host<'a>(host: &str, domains: &'a [String]) -> Option<&'a str> {
    if host.starts_with('[') {
        return None; // an address literal names no domain
    }
    let name = match host.rsplit_once(':') {
        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let d = name.strip_prefix("mta-sts.")?;
    domains.iter().find(|x| x.trim_end_matches('.').eq_ignore_ascii_case(d)).map(String::as_str)
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Lower-case patterns: `mx.example.org` or `*.example.org`.
    pub mx: Vec<String>,
    pub max_age: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// Why a policy file is refused (what TLS-RPT calls `sts-policy-invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {0}: not `key: value`")]
    Syntax(usize),
    #[error("no `version: STSv1` as the first line")]
    Version,
    #[error("`mode` is missing or not enforce, testing or none")]
    Mode,
    #[error("`max_age` is missing or not a number of seconds up to 31557600")]
    MaxAge,
    #[error("`mx: {0}` is not a host name pattern")]
    Mx(String),
    #[error("mode {0} without any `mx` line")]
    NoMx(&'static str),
    #[error("`{0}` appears twice")]
    Twice(&'static str),
}

fn is_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Parse a policy file strictly (§3.2): `version: STSv1` first, one `mode`,
/// one `max_age` (at most a year), `mx` patterns (at least one unless the
/// mode is `none`); unknown keys are ignored as §3.2 asks; lines end in CRLF
/// or LF.
pub fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let (mut version, mut mode, mut max_age, mut mx) = (false, None, None, Vec::new());
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or(PolicyError::Syntax(i + 1))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(PolicyError::Syntax(i + 1));
        }
        match k {
            "version" => {
                if i != 0 || v != "STSv1" {
                    return Err(PolicyError::Version);
                }
                version = true;
            }
            "mode" => {
                let m = match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(PolicyError::Mode),
                };
                if mode.replace(m).is_some() {
                    return Err(PolicyError::Twice("mode"));
                }
            }
            "max_age" => {
                let n: u64 = v.parse().ok().filter(|n| *n <= 31_557_600 && v.len() <= 10).ok_or(PolicyError::MaxAge)?;
                if max_age.replace(n).is_some() {
                    return Err(PolicyError::Twice("max_age"));
                }
            }
            "mx" => {
                let p = v.trim_end_matches('.').to_ascii_lowercase();
                if !is_pattern(&p) {
                    return Err(PolicyError::Mx(v.to_string()));
                }
                mx.push(p);
            }
            _ => {}
        }
    }
    if !version {
        return Err(PolicyError::Version);
    }
    let mode = mode.ok_or(PolicyError::Mode)?;
    let max_age = max_age.ok_or(PolicyError::MaxAge)?;
    if mx.is_empty() && mode != Mode::None {
        return Err(PolicyError::NoMx(if mode == Mode::Enforce { "enforce" } else { "testing" }));
    }
    Ok(Policy { mode, mx, max_age })
}

impl Policy {
    /// Whether `host` (an MX host name) matches one of the `mx` patterns
    /// (§4.1: a `*.` pattern matches exactly one leftmost label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(base) => host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == base),
            None => *p == host,
        })
    }
}

/// The `id` of a `_mta-sts` TXT record (§3.1): `v=STSv1; id=<1*32 alnum>`;
/// `None` when the record is not an STSv1 record or has no valid id.
pub fn record_id(txt: &str) -> Option<&str> {
    let mut parts = txt.split(';').map(str::trim);
    if parts.next()? != "v=STSv1" {
        return None;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim() == "id")
        .map(|(_, v)| v.trim())
        .filter(|v| (1..=32).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_hosts() {
        let t = policy_text("enforce", &["MX.example.org.".into(), "*.backup.example.org".into()], 604800);
        assert_eq!(t, "version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmx: *.backup.example.org\r\nmax_age: 604800\r\n");
        assert_eq!(policy_id(&t), policy_id(&t.clone()));
        assert_ne!(policy_id(&t), policy_id(&policy_text("testing", &["mx.example.org".into()], 604800)));
        assert_eq!(policy_id(&t).len(), 16);
        let d = vec!["example.org".to_string()];
        assert_eq!(domain_for_host("mta-sts.example.org", &d), Some("example.org"));
        assert_eq!(domain_for_host("MTA-STS.Example.ORG.:8443", &d), Some("example.org"));
        assert_eq!(domain_for_host("mta-sts.example.net", &d), None);
        assert_eq!(domain_for_host("example.org", &d), None);
        assert_eq!(domain_for_host("[::1]:443", &d), None);
    }

    #[test]
    fn policies_are_parsed_strictly() {
        let ours = policy_text("enforce", &["mx.example.org".into(), "*.backup.example.org".into()], 86400);
        let p = parse_policy(&ours).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("MX.example.org."));
        assert!(p.allows("a.backup.example.org"));
        assert!(!p.allows("a.b.backup.example.org"), "a wildcard covers one label");
        assert!(!p.allows("backup.example.org"));
        assert!(!p.allows("mx.example.net"));
        assert_eq!(parse_policy("version: STSv1\nmode: none\nmax_age: 5\nextension: ignored\n").unwrap().mode, Mode::None);
        assert_eq!(parse_policy("mode: enforce\nversion: STSv1\nmx: a\nmax_age: 1\n"), Err(PolicyError::Version));
        assert_eq!(parse_policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n"), Err(PolicyError::Mode));
        assert_eq!(parse_policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601\n"), Err(PolicyError::MaxAge));
        assert_eq!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 10\n"), Err(PolicyError::NoMx("enforce")));
        assert_eq!(parse_policy("version: STSv1\nmode: enforce\nmx: *.*.x\nmax_age: 10\n"), Err(PolicyError::Mx("*.*.x".into())));
        assert_eq!(parse_policy("version: STSv1\ngarbage\n"), Err(PolicyError::Syntax(2)));
        assert_eq!(parse_policy("<html>"), Err(PolicyError::Syntax(1)));
        assert_eq!(record_id("v=STSv1; id=20240101T000000"), Some("20240101T000000"));
        assert_eq!(record_id("v=STSv1;id=abc;"), Some("abc"));
        assert_eq!(record_id("v=STSv1; id=a-b"), None);
        assert_eq!(record_id("v=spf1 -all"), None);
    }
}
