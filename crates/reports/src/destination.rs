//! Where reports go: the `rua` URIs of a DMARC record (RFC 7489 §6.4, with
//! an optional `!size` limit, §6.2) and of a TLS-RPT record (RFC 8460 §3,
//! `mailto:` and `https:`), and the check that a destination outside the
//! policy domain's organization agreed to take its reports (RFC 7489 §7.1:
//! `<domain>._report._dmarc.<destination>` TXT starting `v=DMARC1`).

/// One destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Mail(String),
    Https(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub uri: Uri,
    /// Largest report it takes, in bytes (`!10m`); `None` = no limit.
    pub max_size: Option<u64>,
}

impl Destination {
    /// The domain of a `mailto:` address.
    pub fn mail_domain(&self) -> Option<&str> {
        match &self.uri {
            Uri::Mail(a) => a.rsplit_once('@').map(|(_, d)| d),
            Uri::Https(_) => None,
        }
    }

    pub fn as_string(&self) -> String {
        match &self.uri {
            Uri::Mail(a) => format!("mailto:{a}"),
            Uri::Https(u) => u.clone(),
        }
    }
}

/// `10m` → 10 MiB (RFC 7489 §6.2: k, m, g, t; bytes without a unit).
fn size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    let m = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(m)
}

/// The URIs of a `rua` tag value; unusable ones are left out.
pub fn parse(rua: &str) -> Vec<Destination> {
    rua.split(',')
        .filter_map(|u| {
            let u = u.trim();
            let (uri, max_size) = match u.rsplit_once('!') {
                Some((uri, s)) if !uri.is_empty() => (uri, size(s)),
                _ => (u, None),
            };
            let lower = uri.to_ascii_lowercase();
            if lower.starts_with("mailto:") {
                let addr = uri[7..].split('?').next().unwrap_or_default().trim();
                addr.contains('@').then(|| Destination { uri: Uri::Mail(addr.to_string()), max_size })
            } else if lower.starts_with("https://") {
                Some(Destination { uri: Uri::Https(uri.to_string()), max_size })
            } else {
                None
            }
        })
        .collect()
}

/// The value of `name` in a `tag=value; …` record.
pub fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record.split(';').filter_map(|t| t.split_once('=')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// The organizational domain (the public suffix plus one label).
pub fn organizational(domain: &str) -> String {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&d).map(str::to_string).unwrap_or(d)
}

/// The TXT name to ask when `dest` (a mailto: domain) is outside the
/// organization of `policy_domain`, else `None` (no check needed).
pub fn verification_name(policy_domain: &str, dest: &str) -> Option<String> {
    (organizational(policy_domain) != organizational(dest)).then(|| format!("{policy_domain}._report._dmarc.{dest}"))
}

/// Whether the records found at [`verification_name`] accept reports.
pub fn verified(txts: &[String]) -> bool {
    txts.iter().any(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rua_lists_with_sizes() {
        let d = parse("mailto:dmarc@example.org!10m, mailto:x@reports.example.net , https://r.example/t, ftp://no, mailto:bad");
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], Destination { uri: Uri::Mail("dmarc@example.org".into()), max_size: Some(10 << 20) });
        assert_eq!(d[1].max_size, None);
        assert_eq!(d[1].mail_domain(), Some("reports.example.net"));
        assert_eq!(d[2].uri, Uri::Https("https://r.example/t".into()));
        assert_eq!(parse("mailto:a@b.example!500")[0].max_size, Some(500));
    }

    #[test]
    fn external_destinations_are_checked() {
        assert_eq!(verification_name("example.org", "mail.example.org"), None);
        assert_eq!(verification_name("sub.example.org", "example.org"), None);
        assert_eq!(
            verification_name("example.org", "reports.example.net").as_deref(),
            Some("example.org._report._dmarc.reports.example.net")
        );
        assert!(verified(&["v=DMARC1".into()]));
        assert!(!verified(&["v=spf1 -all".into()]));
    }
}
