//! `mx6 policyd`: Postfix's policy delegation protocol (SMTPD_POLICY_README)
//! over TCP or a unix socket, answered by the same facts and decisions as the
//! SMTP server (reverse DNS, DNSBL, SPF; [`crate::inbound`]).
//!
//! A request is `name=value` lines ended by an empty line; the answer is
//! `action=...` and an empty line. Answers: `DUNNO`, `REJECT 5.7.x text`,
//! `DEFER_IF_PERMIT 4.7.x text` (lookup failures: a later reject still wins,
//! a permit becomes a deferral), and `PREPEND Authentication-Results: ...` for
//! the first recipient of each message (`instance`). What the protocol does not
//! carry (the message body) is not checked here: DKIM, DMARC and
//! `require_spf_or_dkim` need the message and are left to the MTA.
//!
//! Greylisting (`[greylist]`, on the `[store]` shared with `mx6 serve` when
//! it is Redis) runs per recipient at RCPT, with the same triplet identity as
//! the SMTP server (SPF pass, FCrDNS domain, else prefix): a greylisted
//! recipient gets `DEFER_IF_PERMIT 4.7.1 Greylisted, …`, so mx6 policyd
//! replaces postgrey too.
//!
//! Defends against: oversized requests (lines and attribute counts bounded),
//! clients that stall (read timeout).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mx6_policy::inbound::{Client, Verdict};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::config::Config;
use crate::inbound::{check_mail, Inbound};

const MAX_LINE: usize = 4096;
const MAX_ATTRIBUTES: usize = 100;
const READ_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum PolicydError {
    #[error("policyd.listen {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("DNS resolver: {0}")]
    Dns(#[from] mx6_dns::Error),
    #[error("state store: {0}")]
    Store(#[from] mx6_store::StoreError),
}

/// Parsed request attributes.
pub type Request = HashMap<String, String>;

/// What policyd judges with.
pub struct Judge {
    pub inbound: Inbound,
    pub cfg: Config,
    pub state: Arc<crate::state::State>,
    pub greylisting: crate::greylisting::Greylisting,
}

/// The verdict on one message (`instance`), reused for its later recipients.
#[derive(Debug, Clone, Default)]
pub struct Message {
    instance: String,
    action: String,
    /// The Authentication-Results PREPEND was given.
    prepended: bool,
    /// Exempt from greylisting (authenticated, mynetworks, allowlists, DNSWL).
    exempt: bool,
    spf_pass_domain: Option<String>,
    confirmed_name: Option<String>,
}

/// The answer to one request (without `action=`).
pub async fn decide(judge: &Judge, req: &Request, last: &mut Option<Message>) -> String {
    let get = |k: &str| req.get(k).map(String::as_str).unwrap_or("");
    let Some(m) = judge_message(&judge.inbound, &judge.cfg, req, last).await else { return "DUNNO".into() };
    let refusing = !(m.action.starts_with("PREPEND") || m.action == "DUNNO");
    if refusing {
        return m.action.clone();
    }
    if get("protocol_state").eq_ignore_ascii_case("RCPT") && judge.greylisting.enabled && !m.exempt {
        let ip = mx6_policy::prefix::canonical(get("client_address").parse::<IpAddr>().expect("checked by judge_message"));
        let p = crate::greylisting::Presented {
            ip,
            spf_pass_domain: m.spf_pass_domain.as_deref(),
            confirmed_name: m.confirmed_name.as_deref(),
            sender: get("sender"),
            rcpt: get("recipient"),
        };
        let family = mx6_policy::Family::of(ip).as_str();
        match judge.greylisting.check(&judge.state, &p).await {
            Ok((outcome, identity)) => {
                tracing::info!(client = %ip, family, result = outcome.as_str(), identity = %identity, sender = get("sender"), recipient = get("recipient"), "policyd greylist");
                if let Some(r) = crate::greylisting::Greylisting::refusal(outcome) {
                    return format!("DEFER_IF_PERMIT {} {}", r.status, r.text());
                }
            }
            Err(_) => {
                let r = mx6_smtp::reply::state_unavailable();
                return format!("DEFER_IF_PERMIT {} {}", r.status, r.text());
            }
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

/// The inbound verdict for the message of this request, evaluated once per
/// `instance`; `None` when the request is not one policyd judges.
async fn judge_message<'a>(inbound: &Inbound, cfg: &Config, req: &Request, last: &'a mut Option<Message>) -> Option<&'a mut Message> {
    let get = |k: &str| req.get(k).map(String::as_str).unwrap_or("");
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
        mynetworks: mx6_policy::prefix::contains_any(&cfg.relay.mynetworks, ip),
        sender_domain: domain.as_deref(),
    };
    let mut m = Message { instance, ..Default::default() };
    m.action = if inbound.policy.exempt(&client) {
        m.exempt = true;
        "DUNNO".to_string()
    } else {
        let facts = inbound.resolver.client_facts(ip, &inbound.sites).await;
        m.exempt = facts.dnsbl.allowlisted;
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
                    authserv_id: &cfg.hostname,
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

/// Serve one client connection: requests until it closes.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, judge: Arc<Judge>) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut last = None;
    loop {
        let mut req = Request::new();
        loop {
            let mut line = String::new();
            let n = match tokio::time::timeout(READ_TIMEOUT, (&mut r).take(MAX_LINE as u64 + 1).read_line(&mut line)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            if n == 0 || line.len() > MAX_LINE || req.len() > MAX_ATTRIBUTES {
                return;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                req.insert(k.to_string(), v.to_string());
            }
        }
        let action = decide(&judge, &req, &mut last).await;
        if w.write_all(format!("action={action}\n\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Serve connections from `accept` until `stop` resolves.
async fn accept_loop<S, F, Fut>(mut accept: F, judge: &Arc<Judge>, mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    loop {
        tokio::select! {
            a = accept() => if let Ok(s) = a {
                tokio::spawn(connection(s, judge.clone()));
            },
            _ = &mut stop => break,
        }
    }
}

/// Run until `stop` resolves.
pub async fn serve(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), PolicydError> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let state = Arc::new(crate::state::State::open(&cfg, metrics)?);
    let (stop_saver, saver_stop) = tokio::sync::watch::channel(false);
    let saver = tokio::spawn(state.clone().saver(Duration::from_secs(10), saver_stop));
    let judge = Arc::new(Judge { inbound: Inbound::new(&cfg)?, greylisting: crate::greylisting::Greylisting::new(&cfg), state, cfg });
    let listen = judge.cfg.policyd.listen.clone();
    tokio::pin!(stop);
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path).map_err(|e| PolicydError::Listen(listen.clone(), e))?;
        tracing::info!(listen = %listen, "policyd ready");
        accept_loop(|| async { l.accept().await.map(|(s, _)| s) }, &judge, stop).await;
        let _ = std::fs::remove_file(path);
    } else {
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| PolicydError::Listen(listen.clone(), std::io::Error::other("expected [v6]:port, v4:port or unix:/path")))?;
        let l = crate::listener::bind(addr).map_err(|e| PolicydError::Listen(listen.clone(), e))?;
        tracing::info!(listen = %listen, "policyd ready");
        accept_loop(|| async { l.accept().await.map(|(s, _)| s) }, &judge, stop).await;
    }
    let _ = stop_saver.send(true);
    let _ = saver.await;
    judge.state.save();
    tracing::info!("policyd stopped");
    Ok(())
}
