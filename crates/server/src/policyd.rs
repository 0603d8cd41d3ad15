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
}

/// Parsed request attributes.
pub type Request = HashMap<String, String>;

/// The answer to one request (without `action=`).
pub async fn decide(inbound: &Inbound, cfg: &Config, req: &Request, last: &mut Option<(String, String)>) -> String {
    let get = |k: &str| req.get(k).map(String::as_str).unwrap_or("");
    if get("request") != "smtpd_access_policy" {
        return "DUNNO".into();
    }
    let state = get("protocol_state").to_ascii_uppercase();
    if state != "RCPT" && state != "MAIL" {
        return "DUNNO".into();
    }
    let Ok(ip) = get("client_address").parse::<IpAddr>() else { return "DUNNO".into() };
    let ip = mx6_policy::prefix::canonical(ip);
    // One evaluation per message: later recipients reuse it without a second PREPEND.
    let instance = get("instance").to_string();
    if let Some((inst, action)) = last.as_ref() {
        if !instance.is_empty() && *inst == instance {
            return if action.starts_with("PREPEND") { "DUNNO".into() } else { action.clone() };
        }
    }
    let sender = get("sender");
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_string());
    let client = Client {
        ip,
        authenticated: !get("sasl_username").is_empty(),
        mynetworks: mx6_policy::prefix::contains_any(&cfg.relay.mynetworks, ip),
        sender_domain: domain.as_deref(),
    };
    let action = if inbound.policy.exempt(&client) {
        "DUNNO".to_string()
    } else {
        let facts = inbound.resolver.client_facts(ip, &inbound.sites).await;
        let helo = get("helo_name");
        let (verdict, txn) = check_mail(inbound, &client, &facts, helo, sender).await;
        match verdict {
            Verdict::Refuse { reason, reply } => {
                tracing::info!(client = %ip, family = mx6_policy::Family::of(ip).as_str(), reason, sender, "policyd: {}", reply.text());
                let verb = if reply.is_permanent() { "REJECT" } else { "DEFER_IF_PERMIT" };
                format!("{verb} {} {}", reply.status, reply.text())
            }
            _ => {
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
    *last = Some((instance, action.clone()));
    action
}

/// Serve one client connection: requests until it closes.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, inbound: Arc<Inbound>, cfg: Arc<Config>) {
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
        let action = decide(&inbound, &cfg, &req, &mut last).await;
        if w.write_all(format!("action={action}\n\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Serve connections from `accept` until `stop` resolves.
async fn accept_loop<S, F, Fut>(
    mut accept: F,
    inbound: &Arc<Inbound>,
    cfg: &Arc<Config>,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    loop {
        tokio::select! {
            a = accept() => if let Ok(s) = a {
                tokio::spawn(connection(s, inbound.clone(), cfg.clone()));
            },
            _ = &mut stop => break,
        }
    }
}

/// Run until `stop` resolves.
pub async fn serve(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), PolicydError> {
    let cfg = Arc::new(cfg);
    let inbound = Arc::new(Inbound::new(&cfg)?);
    let listen = cfg.policyd.listen.clone();
    tokio::pin!(stop);
    if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path).map_err(|e| PolicydError::Listen(listen.clone(), e))?;
        tracing::info!(listen = %listen, "policyd ready");
        accept_loop(|| async { l.accept().await.map(|(s, _)| s) }, &inbound, &cfg, stop).await;
        let _ = std::fs::remove_file(path);
    } else {
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| PolicydError::Listen(listen.clone(), std::io::Error::other("expected [v6]:port, v4:port or unix:/path")))?;
        let l = crate::listener::bind(addr).map_err(|e| PolicydError::Listen(listen.clone(), e))?;
        tracing::info!(listen = %listen, "policyd ready");
        accept_loop(|| async { l.accept().await.map(|(s, _)| s) }, &inbound, &cfg, stop).await;
    }
    tracing::info!("policyd stopped");
    Ok(())
}
