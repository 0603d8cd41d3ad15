//! The message as mx6 stores it: our trace headers on top (Received, RFC 5321
//! §4.4; Authentication-Results, RFC 8601; the `X-Mx6-Client` facts for
//! content filters; `X-Mx6-Quarantine`), Date and Message-ID added to
//! submissions that lack them (RFC 6409 §8.2, §8.3), forged copies of our own
//! fields removed (RFC 8601 §5), and the DKIM signature (RFC 6376) for mail
//! from our users and networks. Everything the client sent is kept as sent.

use mx6_smtp::received::Received;
use mx6_smtp::Envelope;

use crate::checks::inbound::ClientCheck;
use crate::session::context::{slog, Ctx};
use crate::session::services::Services;

/// The header lines end of data adds: our Authentication-Results, and
/// whether the message goes to the Junk folder (and why).
pub struct Checked {
    pub results: String,
    pub junk: Option<&'static str>,
}

/// RFC 6409 §8.2/§8.3: a submitted message without Date or Message-ID gets them.
pub fn submission_headers(data: &[u8], queue_id: &str, hostname: &str) -> String {
    let mut add = String::new();
    if !mx6_message::has_field(data, "Date") {
        add.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    }
    if !mx6_message::has_field(data, "Message-ID") {
        add.push_str(&format!("Message-ID: <{queue_id}@{hostname}>\r\n"));
    }
    add
}

/// What mx6 knows about the client's IPv6 position, for content filters and
/// their rules (`deploy/spamassassin/mx6.cf`): family, prefix and aggregate,
/// reverse DNS, reputation and greylisting.
pub fn client_header(ctx: &Ctx, s: &Services) -> String {
    let (agg, prefix) = s.rate_limits.escalation.prefixes(ctx.client);
    let (iprev, ptr) = match &ctx.client_check {
        ClientCheck::Ready(f) => {
            (f.iprev.as_str(), f.confirmed_name.as_deref().or(f.ptr_names.first().map(|s| s.as_str())).unwrap_or("none"))
        }
        _ => ("none", "none"),
    };
    client_field(&ClientField {
        family: ctx.family.as_str(),
        prefix,
        agg,
        iprev,
        ptr,
        scores: &ctx.rep_scores,
        standing: ctx.reputation.as_str(),
        greylist: ctx.greylist,
    })
}

/// The facts of an `X-Mx6-Client` field.
pub struct ClientField<'a> {
    pub family: &'a str,
    pub prefix: ipnet::IpNet,
    pub agg: ipnet::IpNet,
    pub iprev: &'a str,
    pub ptr: &'a str,
    /// Reputation scores, finest prefix first.
    pub scores: &'a [f64],
    pub standing: &'a str,
    pub greylist: &'a str,
}

/// The `X-Mx6-Client` field (CRLF-terminated, folded once), as `mx6 serve`
/// and `mx6 milter` write it.
pub fn client_field(c: &ClientField<'_>) -> String {
    let score = c.scores.first().copied().unwrap_or(0.0);
    let history = if c.scores.iter().all(|s| s.abs() < 0.01) { "none" } else { "known" };
    format!(
        "X-Mx6-Client: family={}; prefix={}; agg={}; iprev={}; ptr={};\r\n\treputation={score:.2}; standing={}; history={history}; greylist={}\r\n",
        c.family, c.prefix, c.agg, c.iprev, c.ptr, c.standing, c.greylist,
    )
}

/// Our headers on top of the client's message (`env.data`, taken), forged
/// copies removed. The client's octets stay in the buffer the DATA decoder
/// filled: our headers are inserted in front of them, no second copy.
pub fn message(ctx: &Ctx, s: &Services, env: &mut Envelope, checked: &Checked, queue_id: &str) -> Vec<u8> {
    let single = (env.rcpts.len() == 1).then(|| env.rcpts[0].to_string());
    let mut head = Received {
        hide_client: env.auth.is_some() && s.submission.hide_client,
        helo: &env.helo,
        rdns: ctx.confirmed_name(),
        client: ctx.client,
        hostname: &s.hostname,
        protocol: env.protocol,
        queue_id,
        tls: ctx.tls.as_deref(),
        single_rcpt: single.as_deref(),
        date: chrono::Utc::now(),
    }
    .render();
    head.push_str(&checked.results);
    if let Some(reason) = checked.junk {
        head.push_str(&format!("X-Mx6-Quarantine: {reason}\r\n"));
    }
    if ctx.tracked {
        head.push_str(&client_header(ctx, s));
    }
    if env.auth.is_some() {
        head.push_str(&submission_headers(&env.data, queue_id, &s.hostname));
    }
    let mut data = std::mem::take(&mut env.data);
    if let Some(d) = mx6_auth::strip_forged(&data, &s.hostname) {
        data = d;
    }
    if let Some(d) = mx6_message::remove_named(&data, "X-Mx6-Client") {
        data = d;
    }
    data.splice(0..0, head.into_bytes());
    data
}

/// DKIM: mail from our users and networks, signed for its From domain with
/// every key of that domain (the signatures go on top).
pub fn sign(ctx: &Ctx, s: &Services, authenticated: bool, data: &mut Vec<u8>) {
    if !(authenticated || ctx.mynetworks) {
        return;
    }
    let (sigs, failed) = mx6_auth::sign::signatures(&s.dkim, data);
    for (key, e) in failed {
        slog!(error, ctx, domain = %key.domain, error = %e, "DKIM signing failed; sent unsigned");
    }
    data.splice(0..0, sigs.into_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_get_date_and_message_id() {
        let add = submission_headers(b"Subject: x\r\n\r\nDate: in the body\r\n", "q1", "mx.test");
        assert!(add.starts_with("Date: ") && add.ends_with("Message-ID: <q1@mx.test>\r\n"), "{add}");
        assert_eq!(submission_headers(b"date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMESSAGE-ID: <a@b>\r\n\r\n", "q", "h"), "");
    }
}
