//! The decisions of `mx6 milter`, with the engine of `mx6 serve`
//! ([`crate::checks::inbound`], [`mx6_policy::inbound`]): the MAIL-stage
//! verdict (reverse DNS, DNSBLs, SPF — a Postfix that already asks
//! `mx6 policyd` gets the same answer twice, at no cost but the lookups),
//! and at end of message DKIM, DMARC with enforcement and "SPF or DKIM" per
//! family (RFC 6376, RFC 7208, RFC 7489), then the header changes: forged
//! Authentication-Results with our authserv-id deleted (RFC 8601 §5), ours
//! added, the `X-Mx6-Client` facts, and DKIM signatures for authenticated
//! senders (`{auth_authen}`) and mynetworks.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mx6_auth::sign::DkimKey;
use mx6_filter::milter::Reply as MReply;
use mx6_policy::inbound::{AuthResult, Client, ClientFacts, Verdict};
use mx6_policy::ratelimit::Escalation;
use mx6_policy::reputation::Event as RepEvent;
use mx6_smtp::reply::Reply;

use crate::admin::metrics::Metrics;
use crate::checks::inbound::{check_mail, Inbound, Transaction};
use crate::checks::reputation::Reputation;
use crate::checks::state::State;
use crate::session::assemble::{client_field, ClientField};

/// What `mx6 milter` judges with.
pub struct Judge {
    pub inbound: Arc<Inbound>,
    /// The authserv-id of Authentication-Results.
    pub hostname: String,
    pub mynetworks: Vec<IpNet>,
    pub dkim: Vec<DkimKey>,
    pub state: Arc<State>,
    pub reputation: Reputation,
    /// For the prefix and aggregate of `X-Mx6-Client`.
    pub escalation: Escalation,
    pub metrics: Arc<Metrics>,
    /// Messages larger than this are passed unjudged (`limits.message_size`).
    pub max_size: usize,
}

/// Who sent the message, from the MTA's commands and macros.
#[derive(Debug, Clone)]
pub struct Sender {
    pub ip: IpAddr,
    pub helo: String,
    /// The envelope sender, without angle brackets (empty: the null sender).
    pub address: String,
    /// `{auth_authen}`.
    pub auth_user: Option<String>,
    pub mynetworks: bool,
}

impl Sender {
    pub fn client(&self) -> Client<'_> {
        Client {
            ip: self.ip,
            authenticated: self.auth_user.is_some(),
            mynetworks: self.mynetworks,
            sender_domain: self.address.rsplit_once('@').map(|(_, d)| d),
        }
    }

    pub fn family(&self) -> &'static str {
        mx6_policy::Family::of(self.ip).as_str()
    }
}

/// A refusal as the milter reply carrying mx6's code and text.
pub fn reply_code(r: &Reply) -> MReply {
    let text: Vec<&str> = r.text().lines().collect();
    MReply::ReplyCode(format!("{} {} {}", r.code, r.status, text.join(" ")))
}

impl Judge {
    /// At MAIL: the reverse-DNS, DNSBL and SPF verdict. `Err` refuses the
    /// transaction; `Ok(None)` for an exempt client (nothing to check later).
    pub async fn mail(&self, who: &Sender, facts: &ClientFacts) -> Result<Option<Transaction>, Reply> {
        let (verdict, txn) = check_mail(&self.inbound, &who.client(), facts, &who.helo, &who.address).await;
        match verdict {
            Verdict::Refuse { reason, reply } => {
                self.refused(who, "mail", reason, &reply);
                Err(reply)
            }
            _ => Ok(txn),
        }
    }

    fn refused(&self, who: &Sender, stage: &str, reason: &str, reply: &Reply) {
        self.metrics.reject(who.family(), stage, reason);
        tracing::info!(
            client = %who.ip, family = who.family(), stage, reason, from = %format!("<{}>", who.address),
            "milter: refused: {} {} {}", reply.code, reply.status, reply.text()
        );
    }

    /// At end of message: the verdict on `message` (header section as the
    /// MTA sent it, then the body), and the header changes to ask for.
    pub async fn message(
        &self,
        who: &Sender,
        facts: Option<&ClientFacts>,
        txn: Option<&Transaction>,
        message: &[u8],
        queue_id: &str,
    ) -> Result<Vec<MReply>, Reply> {
        let tracked = !(who.auth_user.is_some() || who.mynetworks);
        let mut junk = None;
        let none = ClientFacts::default();
        let results = match txn {
            Some(txn) => {
                let facts = facts.unwrap_or(&none);
                let m = self.inbound.auth.message(message, &txn.spf).await;
                let verdict = self.inbound.policy.decide_data(&who.client(), facts, &txn.spf.facts, &m.facts);
                if m.facts.dmarc == AuthResult::Fail {
                    self.record(who, RepEvent::DmarcFail);
                } else if matches!(verdict, Verdict::Refuse { .. }) {
                    self.record(who, RepEvent::Refused);
                }
                match verdict {
                    Verdict::Refuse { reason, reply } => {
                        self.refused(who, "data", reason, &reply);
                        return Err(reply);
                    }
                    Verdict::Quarantine { reason } => junk = Some(reason),
                    Verdict::Pass => {}
                }
                mx6_auth::results(&mx6_auth::ResultsInput {
                    authserv_id: &self.hostname,
                    ip: Some(who.ip),
                    client: Some(facts),
                    spf: Some((&txn.spf.facts, &txn.sender, &who.helo)),
                    message: Some((&m.facts, &m.dkim)),
                    auth_user: None,
                })
            }
            None => mx6_auth::results(&mx6_auth::ResultsInput {
                authserv_id: &self.hostname,
                auth_user: who.auth_user.as_deref(),
                ..Default::default()
            }),
        };
        let mut mods = Vec::new();
        // Deletions first, last occurrence first, so the indexes hold.
        for i in mx6_auth::results::forged_occurrences(message, &self.hostname).into_iter().rev() {
            mods.push(MReply::ChangeHeader { index: i, name: b"Authentication-Results".to_vec(), value: Vec::new() });
        }
        let theirs = mx6_message::fields(message).filter(|f| f.is("x-mx6-client")).count() as u32;
        for i in (1..=theirs).rev() {
            mods.push(MReply::ChangeHeader { index: i, name: b"X-Mx6-Client".to_vec(), value: Vec::new() });
        }
        // Inserted at the top one after another: the last ends up first.
        if tracked {
            mods.push(insert(&self.client_field(who, facts).await));
        }
        if let Some(reason) = junk {
            mods.push(insert(&format!("X-Mx6-Quarantine: {reason}\r\n")));
        }
        mods.push(insert(&results));
        if !tracked {
            let (sigs, failed) = mx6_auth::sign::signatures(&self.dkim, message);
            for (key, e) in failed {
                tracing::error!(domain = %key.domain, error = %e, queue_id, "milter: DKIM signing failed; sent unsigned");
            }
            // `signatures` puts the newest on top; inserting reverses that again.
            for sig in split_fields(&sigs).into_iter().rev() {
                mods.push(insert(sig));
            }
        }
        if tracked {
            self.record(who, RepEvent::Accepted);
        }
        self.metrics.messages_accepted.with_label_values(&[who.family(), "milter"]).inc();
        tracing::info!(
            client = %who.ip, family = who.family(), queue_id, from = %format!("<{}>", who.address), size = message.len(),
            user = who.auth_user.as_deref().unwrap_or(""), "milter: passed"
        );
        Ok(mods)
    }

    fn record(&self, who: &Sender, ev: RepEvent) {
        if !(who.auth_user.is_some() || who.mynetworks) {
            self.reputation.record(&self.state, who.ip, ev);
        }
    }

    async fn client_field(&self, who: &Sender, facts: Option<&ClientFacts>) -> String {
        let (agg, prefix) = self.escalation.prefixes(who.ip);
        let (standing, scores) = self.reputation.lookup(&self.state, who.ip).await;
        let (iprev, ptr) = match facts {
            Some(f) => (f.iprev.as_str(), f.confirmed_name.as_deref().or(f.ptr_names.first().map(|s| s.as_str())).unwrap_or("none")),
            None => ("none", "none"),
        };
        client_field(&ClientField {
            family: who.family(),
            prefix,
            agg,
            iprev,
            ptr,
            scores: &scores,
            standing: standing.as_str(),
            greylist: "off",
        })
    }
}

/// `Name: value\r\n\tfolded\r\n` as a milter insertion at the top: the value
/// after the colon as it is (mx6 negotiates `SMFIP_HDR_LEADSPC` when the MTA
/// offers it; without it the MTA adds the space and we drop ours), folds
/// joined by LF as the protocol carries them.
fn insert(field: &str) -> MReply {
    let (name, value) = field.split_once(':').unwrap_or((field, ""));
    let value = value.trim_end_matches(['\r', '\n']).replace("\r\n", "\n");
    MReply::InsertHeader { index: 0, name: name.as_bytes().to_vec(), value: value.into_bytes() }
}

/// Split CRLF-terminated fields (continuation lines start with white space).
fn split_fields(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' && (i + 1 == b.len() || !matches!(b[i + 1], b' ' | b'\t')) {
            out.push(&s[start..=i]);
            start = i + 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_insertions() {
        let MReply::InsertHeader { index, name, value } = insert("Authentication-Results: mx.test;\r\n\tspf=pass\r\n") else { panic!() };
        assert_eq!((index, name.as_slice(), value.as_slice()), (0, &b"Authentication-Results"[..], &b" mx.test;\n\tspf=pass"[..]));
        assert_eq!(split_fields("A: 1\r\n\tb\r\nB: 2\r\n"), ["A: 1\r\n\tb\r\n", "B: 2\r\n"]);
        assert!(split_fields("").is_empty());
    }

    #[test]
    fn refusals_keep_code_and_status() {
        let r = Reply::new(550, "5.7.26", "Unauthenticated mail");
        assert_eq!(reply_code(&r), MReply::ReplyCode("550 5.7.26 Unauthenticated mail".into()));
    }
}
