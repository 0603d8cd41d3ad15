//! `mx6 milter` on `[milter_server] listen` (TCP or a unix socket): one task
//! per MTA connection (Postfix opens one per SMTP session), composed from the
//! engine, store, reputation and DKIM keys of `mx6 serve`; `/metrics` on
//! `metrics.listen` unless `mx6 serve` has it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::Config;

use crate::admin::metrics::Metrics;
use crate::checks::inbound::Inbound;
use crate::checks::reputation::Reputation;
use crate::checks::state::{self, State};
use crate::milter_server::conversation;
use crate::milter_server::judge::Judge;

#[derive(Debug, thiserror::Error)]
pub enum MilterServerError {
    #[error("{key} {address}: {source}")]
    Listen { key: &'static str, address: String, source: std::io::Error },
    #[error("DNS resolver: {0}")]
    Dns(#[from] mx6_dns::Error),
    #[error("state store: {0}")]
    Store(#[from] mx6_store::StoreError),
    #[error("{0}")]
    Dkim(#[from] mx6_auth::sign::SignError),
}

/// Run until `stop` resolves.
pub async fn serve(cfg: Config, stop: impl Future<Output = ()>) -> Result<(), MilterServerError> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(State::open(&cfg.store, &cfg.data_dir, metrics.clone())?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let saver = tokio::spawn(state.clone().saver(Duration::from_secs(10), stop_rx.clone()));
    let levels = state::levels(&cfg.ratelimit_rules(), &cfg.greylist, &cfg.ratelimit_escalation.escalation());
    let mut dkim = Vec::new();
    for d in &cfg.dkim {
        dkim.push(mx6_auth::sign::DkimKey::load(&d.domain, &d.selector, &d.key_path(&cfg.data_dir))?);
    }
    let judge = Arc::new(Judge {
        inbound: Arc::new(Inbound::new(&cfg.dns, &cfg.policy, &cfg.dnsbl, &cfg.hostname)?),
        hostname: cfg.hostname.clone(),
        mynetworks: cfg.relay.mynetworks.clone(),
        dkim,
        reputation: Reputation::new(&cfg.reputation, levels),
        escalation: cfg.ratelimit_escalation.escalation(),
        metrics: metrics.clone(),
        max_size: cfg.limits.message_size,
        state,
    });
    if let Some(addr) = cfg.metrics.listen {
        crate::admin::http::serve_unless_taken(addr, crate::net::listener::bind(addr), metrics.clone(), stop_rx.clone());
    }
    let listen = &cfg.milter_server.listen;
    let j = judge.clone();
    crate::net::stream::serve(listen, "milter server", move |s| conversation::run(s, j.clone()), stop)
        .await
        .map_err(|source| MilterServerError::Listen { key: "milter_server.listen", address: listen.to_string(), source })?;
    let _ = stop_tx.send(true);
    let _ = saver.await;
    judge.state.save();
    tracing::info!("milter server stopped");
    Ok(())
}
