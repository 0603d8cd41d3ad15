//! What each DMARC evaluation at end of data adds to the aggregate reports
//! (RFC 7489 §7.2): the source, identifiers, SPF and DKIM results, DMARC's
//! aligned verdicts, the record as published and the disposition applied,
//! with the reason when it differs from the policy (`pct` sampling,
//! `[policy] enforce_dmarc = false`). Counted in the state store off the
//! session's path (see [`mx6_reports::evaluation`]).

use std::net::IpAddr;

use mx6_auth::verify::{Message, Spf};
use mx6_policy::inbound::{AuthResult, DmarcPolicy, Verdict};
use mx6_reports::evaluation::{Dkim, Evaluation, Published};

/// The row of one message, when its From domain publishes a DMARC record.
pub fn evaluation(client: IpAddr, helo: &str, sender: &str, spf: &Spf, m: &Message, verdict: &Verdict) -> Option<(Evaluation, Published)> {
    let d = m.dmarc.as_ref()?;
    let disposition = match verdict {
        Verdict::Refuse { reason: "dmarc_reject", .. } => "reject",
        Verdict::Quarantine { reason: "dmarc_quarantine" } => "quarantine",
        _ => "none",
    };
    let failed = m.facts.dmarc == AuthResult::Fail;
    let override_reason = if !failed || d.requested.as_str() == disposition {
        None
    } else if m.facts.dmarc_policy != d.requested && m.facts.dmarc_policy.as_str() == disposition {
        // RFC 7489 §6.6.4: not selected by `pct`.
        Some("sampled_out")
    } else if d.requested != DmarcPolicy::None {
        Some("local_policy")
    } else {
        None
    };
    let envelope_from = match sender.rsplit_once('@') {
        Some((_, dom)) => dom.to_ascii_lowercase(),
        None => helo.to_ascii_lowercase(),
    };
    let e = Evaluation {
        source_ip: mx6_policy::prefix::canonical(client),
        header_from: d.header_from.to_ascii_lowercase(),
        envelope_from,
        spf_result: spf.facts.result.as_str().to_string(),
        spf_domain: spf.domain.to_ascii_lowercase(),
        spf_scope: if sender.is_empty() { "helo" } else { "mfrom" }.to_string(),
        dkim: m
            .dkim
            .iter()
            .map(|k| Dkim { result: k.result.as_str().to_string(), domain: k.domain.to_ascii_lowercase(), selector: k.selector.clone() })
            .collect(),
        dkim_aligned: d.dkim_aligned,
        spf_aligned: d.spf_aligned,
        disposition: disposition.to_string(),
        override_reason: override_reason.map(str::to_string),
    };
    Some((e, Published { domain: d.record_domain.clone(), record: d.record.clone() }))
}
