//! The judgement of `mx6 policyd`: the same facts and decisions as the SMTP
//! server (reverse DNS, DNSBL, SPF; [`crate::checks::inbound`]) for each
//! Postfix policy request. Answers: `DUNNO`, `REJECT 5.7.x text`,
//! `DEFER_IF_PERMIT 4.7.x text` (lookup failures: a later reject still wins,
//! a permit becomes a deferral), and `PREPEND Authentication-Results: ...` for
//! the first recipient of each message (`instance`). What the protocol does not
//! carry (the message body) is not checked here: DKIM, DMARC and
//! `require_spf_or_dkim` need the message and are left to the MTA.
//!
//! Rate limits (`[[ratelimit]]`, `[ratelimit_escalation]`) count on the
//! same prefix levels and store as `mx6 serve`, by Postfix protocol state:
//! at CONNECT (`smtpd_client_restrictions`) an escalated aggregate and the
//! connection rate (`421 4.7.0`; concurrent connections are Postfix's own
//! `smtpd_client_connection_count_limit`, as policyd never hears a
//! connection end), at RCPT the recipients, at END-OF-MESSAGE
//! (`smtpd_end_of_data_restrictions`) the messages (`451 4.7.1`). Every hit
//! counts toward escalation to the /48 and moves the prefix's reputation,
//! as do refusals and accepted messages; a bad standing tightens the limits.
//! AUTH failures are not seen: Postfix asks no policy about them (its
//! `smtpd_client_auth_rate_limit` is anvil's).
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

use mx6_policy::ratelimit::{Kind, Standing};
use mx6_policy::reputation::{Event as RepEvent, Standing as RepStanding};

use crate::admin::metrics::Metrics;
use crate::checks::greylisting::Greylisting;
use crate::checks::inbound::{check_mail, Inbound};
use crate::checks::rate_limits::{Asker, RateLimits, Stop};
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
    pub rate_limits: RateLimits,
    pub metrics: Arc<Metrics>,
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
    let state = get("protocol_state").to_ascii_uppercase();
    if state == "CONNECT" || state == "END-OF-MESSAGE" {
        return match limits(judge, req, &state).await {
            Some(r) => r,
            None => {
                if state == "END-OF-MESSAGE" {
                    if let Some(ip) = client_ip(req) {
                        if tracked(judge, req, ip) {
                            judge.reputation.record(&judge.state, ip, RepEvent::Accepted);
                        }
                    }
                }
                "DUNNO".into()
            }
        };
    }
    let Some(m) = judge_message(judge, req, last).await else { return "DUNNO".into() };
    let refusing = !(m.action.starts_with("PREPEND") || m.action == "DUNNO");
    if refusing {
        return m.action.clone();
    }
    if state == "RCPT" {
        if let Some(r) = limits(judge, req, &state).await {
            return r;
        }
    }
    if state == "RCPT" && judge.greylisting.enabled {
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

fn client_ip(req: &Request) -> Option<IpAddr> {
    get(req, "client_address").parse::<IpAddr>().ok().map(mx6_policy::prefix::canonical)
}

/// A client whose outcomes count for its prefix: not ours, not authenticated.
fn tracked(judge: &Judge, req: &Request, ip: IpAddr) -> bool {
    get(req, "sasl_username").is_empty() && !mx6_policy::prefix::contains_any(&judge.mynetworks, ip)
}

/// The rate limits of this protocol state; `Some(answer)` refuses.
async fn limits(judge: &Judge, req: &Request, state: &str) -> Option<String> {
    let ip = client_ip(req)?;
    let (stage, kind) = match state {
        "CONNECT" => ("connect", None),
        "RCPT" => ("rcpt", Some(Kind::Recipients)),
        "END-OF-MESSAGE" => ("data", Some(Kind::Messages)),
        _ => return None,
    };
    let mynetworks = mx6_policy::prefix::contains_any(&judge.mynetworks, ip);
    let standing = Standing { mynetworks, authenticated: !get(req, "sasl_username").is_empty() };
    let mut asker = Asker { ip, standing, bad: false };
    if kind.is_none_or(|k| judge.rate_limits.any(k, &asker)) && tracked(judge, req, ip) {
        asker.bad = judge.reputation.lookup(&judge.state, ip).await.0 == RepStanding::Bad;
    }
    let r = match kind {
        None => judge.rate_limits.connect_rate(&judge.state, &asker).await,
        Some(k) => judge.rate_limits.count(&judge.state, k, &asker).await,
    };
    let family = mx6_policy::Family::of(ip).as_str();
    match r {
        Ok(()) => None,
        Err(Stop::Limited(hit)) => {
            let prefix = hit.prefix.to_string();
            let reply = if stage == "connect" {
                mx6_smtp::reply::rate_limited_connect(&judge.hostname, &prefix)
            } else {
                mx6_smtp::reply::rate_limited(&prefix)
            };
            judge.metrics.reject(family, stage, "rate_limited");
            tracing::info!(
                client = %ip, family, stage, reason = "rate_limited", limit = hit.limit, prefix = %hit.prefix, count = hit.count, max = hit.max,
                "policyd: {}", reply.text()
            );
            if tracked(judge, req, ip) {
                judge.reputation.record(&judge.state, ip, RepEvent::RateLimited);
            }
            if !hit.tarpit.is_zero() {
                tokio::time::sleep(hit.tarpit).await;
            }
            Some(format!("{} {} {}", reply.code, reply.status, reply.text()))
        }
        Err(Stop::Unavailable) => {
            judge.metrics.reject(family, stage, "state_unavailable");
            let r = mx6_smtp::reply::state_unavailable();
            Some(format!("DEFER_IF_PERMIT {} {}", r.status, r.text()))
        }
    }
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
    let (standing, _) = judge.reputation.lookup(&judge.state, ip).await;
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
            judge.metrics.greylist.with_label_values(&[family, outcome.as_str()]).inc();
            if outcome == (mx6_store::Outcome::Passed { first: true }) {
                judge.reputation.record(&judge.state, ip, RepEvent::GreylistPassed);
            }
            let refusal = Greylisting::refusal(outcome);
            if refusal.is_some() {
                judge.metrics.reject(family, "rcpt", "greylisted");
            }
            refusal.map(|r| format!("DEFER_IF_PERMIT {} {}", r.status, r.text()))
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
                let family = mx6_policy::Family::of(ip).as_str();
                tracing::info!(client = %ip, family, reason, sender, "policyd: {}", reply.text());
                judge.metrics.reject(family, &state.to_ascii_lowercase(), reason);
                if !client.authenticated && !client.mynetworks {
                    judge.reputation.record(&judge.state, ip, RepEvent::Refused);
                }
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
