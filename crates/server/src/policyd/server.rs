//! `mx6 policyd`: the policy delegation server on `policyd.listen` (TCP or a
//! unix socket), composed from the same checks, rate limits, reputation and
//! store as `mx6 serve`; `/metrics` on `metrics.listen` unless `mx6 serve`
//! has it.
//!
//! Defends against: clients that stall (a 300 s read timeout), oversized
//! requests ([`crate::policyd::protocol`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::{Config, FilterAddress};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::admin::metrics::Metrics;
use crate::checks::greylisting::Greylisting;
use crate::checks::inbound::Inbound;
use crate::checks::rate_limits::RateLimits;
use crate::checks::reputation::Reputation;
use crate::checks::state::{self, State};
use crate::policyd::judge::{decide, Judge};
use crate::policyd::protocol::{answer, Reader, MAX_LINE};

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

/// Serve one client connection: requests until it closes.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, judge: Arc<Judge>) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut last = None;
    let mut reader = Reader::default();
    loop {
        let mut line = String::new();
        let n = match tokio::time::timeout(READ_TIMEOUT, (&mut r).take(MAX_LINE as u64 + 1).read_line(&mut line)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        let req = match reader.line(&line) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(e) => {
                tracing::info!(error = %e, "policyd: connection closed");
                return;
            }
        };
        let action = decide(&judge, &req, &mut last).await;
        if w.write_all(answer(&action).as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Run until `stop` resolves.
pub async fn serve(cfg: Config, stop: impl Future<Output = ()>) -> Result<(), PolicydError> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(State::open(&cfg.store, &cfg.data_dir, metrics.clone())?);
    let (stop_saver, saver_stop) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.metrics.listen {
        crate::admin::http::serve_unless_taken(addr, crate::net::listener::bind(addr), metrics.clone(), saver_stop.clone());
    }
    let saver = tokio::spawn(state.clone().saver(Duration::from_secs(10), saver_stop));
    let (rules, escalation) = (cfg.ratelimit_rules(), cfg.ratelimit_escalation.escalation());
    let levels = state::levels(&rules, &cfg.greylist, &escalation);
    let judge = Arc::new(Judge {
        rate_limits: RateLimits::new(rules, escalation, cfg.reputation.bad_limit_factor, metrics.clone()),
        metrics,
        inbound: Inbound::new(&cfg.dns, &cfg.policy, &cfg.dnsbl, &cfg.hostname)?,
        hostname: cfg.hostname.clone(),
        mynetworks: cfg.relay.mynetworks.clone(),
        greylisting: Greylisting::new(&cfg.greylist),
        reputation: Reputation::new(&cfg.reputation, levels),
        state,
    });
    let listen = cfg.policyd.listen.clone();
    let addr = match listen.strip_prefix("unix:") {
        Some(path) => FilterAddress::Unix(path.into()),
        None => FilterAddress::Tcp(
            listen
                .parse()
                .map_err(|_| PolicydError::Listen(listen.clone(), std::io::Error::other("expected [v6]:port, v4:port or unix:/path")))?,
        ),
    };
    let j = judge.clone();
    crate::net::stream::serve(&addr, "policyd", move |s| connection(s, j.clone()), stop)
        .await
        .map_err(|e| PolicydError::Listen(listen.clone(), e))?;
    let _ = stop_saver.send(true);
    let _ = saver.await;
    judge.state.save();
    tracing::info!("policyd stopped");
    Ok(())
}
