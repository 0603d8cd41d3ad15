//! The judgement of `mx6 policyd`: the same facts and decisions as the SMTP
//! server (reverse DNS, DNSBL, SPF; [`crate::checks::inbound`]) for each
//! Postfix policy request. Answers: `DUNNO`, `REJECT 5.7.x text`,
//! `DEFER_IF_PERMIT 4.7.x text` (lookup failures: a later reject still wins,
//! a permit becomes a deferral), and `PREPEND Authentication-Results: ...` for
//! the first recipient of each message (`instance`). What the protocol does not
//! carry (the message body) is not checked here: DKIM, DMARC and
//! `require_spf_or_dkim` need the message and are left to the MTA.
//!
//! Greylisting (`[greylist]`, on the `[store]` shared with `mx6 serve` when
//! it is Redis) runs per recipient at RCPT, with the same triplet identity and
//! the same exemptions as the SMTP server ([`mx6_policy::greylist::exemption`]):
//! a greylisted recipient gets `DEFER_IF_PERMIT 4.7.1 Greylisted, …`, so mx6
//! policyd replaces postgrey too.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mx6_policy::greylist;
use mx6_policy::inbound::{Client, Verdict};

use crate::checks::greylisting::Greylisting;
use crate::checks::inbound::{check_mail, Inbound};
use crate::checks::reputation::Reputation;
use crate::checks::state::State;
use crate::policyd::protocol::{get, Request};

/// What policyd judges with.
pub struct Judge {
    pub inbound: Inbound,
    /// The authserv-id of Authentication-Results.
    pub hostname: String,
    pub mynetworks: Vec<IpNet>,
    pub state: Arc<State>,
    pub greylisting: Greylisting,
    pub reputation: Reputation,
}

/// The verdict on one message (`instance`), reused for its later recipients.
#[derive(Debug, Clone, Default)]
pub struct Message {
    instance: String,
    action: String,
    /// The Authentication-Results PREPEND was given.
    prepended: bool,
    /// Who the client is, for the greylisting exemption.
    authenticated: bool,
    mynetworks: bool,
    dnswl: bool,
    spf_pass_domain: Option<String>,
    confirmed_name: Option<String>,
}

/// The answer to one request (without `action=`).
pub async fn decide(judge: &Judge, req: &Request, last: &mut Option<Message>) -> String {
    let get = |k: &str| get(req, k);
    let Some(m) = judge_message(judge, req, last).await else { return "DUNNO".into() };
    let refusing = !(m.action.starts_with("PREPEND") || m.action == "DUNNO");
    if refusing {
        return m.action.clone();
    }
    if get("protocol_state").eq_ignore_ascii_case("RCPT") && judge.greylisting.enabled {
        if let Some(r) = greylist(judge, req, m).await {
            return r;
        }
    }
    if m.action.starts_with("PREPEND") {
        if m.prepended {
            return "DUNNO".into();
        }
        m.prepended = true;
    }
    m.action.clone()
}

/// Greylisting of one recipient; `Some(answer)` defers it.
async fn greylist(judge: &Judge, req: &Request, m: &Message) -> Option<String> {
    let get = |k: &str| get(req, k);
    let ip = mx6_policy::prefix::canonical(get("client_address").parse::<IpAddr>().ok()?);
    let sender = get("sender");
    let domain = sender.rsplit_once('@').map(|(_, d)| d);
    let client = Client { ip, authenticated: m.authenticated, mynetworks: m.mynetworks, sender_domain: domain };
    if !greylist::applies(&client) {
        return None;
    }
    let family = mx6_policy::Family::of(ip).as_str();
    let (standing, _) = judge.reputation.standing(&judge.state, ip).await;
    if let Some(why) = greylist::exemption(&judge.inbound.policy, &client, m.dnswl, standing) {
        tracing::info!(client = %ip, family, result = "allowlisted", why, sender, recipient = get("recipient"), "policyd greylist");
        return None;
    }
    let p = crate::checks::greylisting::Presented {
        ip,
        spf_pass_domain: m.spf_pass_domain.as_deref(),
        confirmed_name: m.confirmed_name.as_deref(),
        sender,
        rcpt: get("recipient"),
    };
    match judge.greylisting.check(&judge.state, &p).await {
        Ok((outcome, identity)) => {
            tracing::info!(client = %ip, family, result = outcome.as_str(), identity = %identity, sender, recipient = get("recipient"), "policyd greylist");
            Greylisting::refusal(outcome).map(|r| format!("DEFER_IF_PERMIT {} {}", r.status, r.text()))
        }
        Err(_) => {
            let r = mx6_smtp::reply::state_unavailable();
            Some(format!("DEFER_IF_PERMIT {} {}", r.status, r.text()))
        }
    }
}

/// The inbound verdict for the message of this request, evaluated once per
/// `instance`; `None` when the request is not one policyd judges.
async fn judge_message<'a>(judge: &Judge, req: &Request, last: &'a mut Option<Message>) -> Option<&'a mut Message> {
    let get = |k: &str| get(req, k);
    let inbound = &judge.inbound;
    if get("request") != "smtpd_access_policy" {
        return None;
    }
    let state = get("protocol_state").to_ascii_uppercase();
    if state != "RCPT" && state != "MAIL" {
        return None;
    }
    let ip = mx6_policy::prefix::canonical(get("client_address").parse::<IpAddr>().ok()?);
    // One evaluation per message: later recipients reuse it.
    let instance = get("instance").to_string();
    if last.as_ref().is_some_and(|m| !instance.is_empty() && m.instance == instance) {
        return last.as_mut();
    }
    let sender = get("sender");
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_string());
    let client = Client {
        ip,
        authenticated: !get("sasl_username").is_empty(),
        mynetworks: mx6_policy::prefix::contains_any(&judge.mynetworks, ip),
        sender_domain: domain.as_deref(),
    };
    let mut m = Message { instance, authenticated: client.authenticated, mynetworks: client.mynetworks, ..Default::default() };
    m.action = if inbound.policy.exempt(&client) {
        "DUNNO".to_string()
    } else {
        let facts = inbound.resolver.client_facts(ip, &inbound.sites).await;
        m.dnswl = facts.dnsbl.allowlisted;
        m.confirmed_name = facts.confirmed_name.clone();
        let helo = get("helo_name");
        let (verdict, txn) = check_mail(inbound, &client, &facts, helo, sender).await;
        match verdict {
            Verdict::Refuse { reason, reply } => {
                tracing::info!(client = %ip, family = mx6_policy::Family::of(ip).as_str(), reason, sender, "policyd: {}", reply.text());
                let verb = if reply.is_permanent() { "REJECT" } else { "DEFER_IF_PERMIT" };
                format!("{verb} {} {}", reply.status, reply.text())
            }
            _ => {
                m.spf_pass_domain = txn
                    .as_ref()
                    .filter(|t| t.spf.facts.result == mx6_policy::inbound::AuthResult::Pass)
                    .map(|t| t.spf.facts.domain.clone());
                let spf = txn.as_ref().map(|t| (&t.spf.facts, sender, helo));
                let h = mx6_auth::results(&mx6_auth::ResultsInput {
                    authserv_id: &judge.hostname,
                    ip: Some(ip),
                    client: Some(&facts),
                    spf,
                    message: None,
                    auth_user: None,
                });
                // One line for the protocol: unfold.
                format!("PREPEND {}", h.trim_end().replace("\r\n\t", " "))
            }
        }
    };
    *last = Some(m);
    last.as_mut()
}
