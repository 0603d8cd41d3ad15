//! Our own MTA-STS policy (RFC 8461 §3.2): its text, the `id` to publish in
//! the `_mta-sts` TXT record (it must change whenever the policy does, §3.1),
//! and which of our domains an HTTP `Host` of `mta-sts.<domain>` names.

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
}
