//! mx6-server: the running server. Owns the tokio runtime side: configuration,
//! listeners, the session driver, the spool committer and the queue manager.
//!
//! - [`config`]: the TOML configuration and its checks;
//! - [`listener`]: sockets, ACLs, session cap;
//! - [`proxy`]: PROXY protocol v1/v2;
//! - [`tls`]: certificates and the rustls configuration;
//! - [`session_driver`]: one SMTP session over a socket;
//! - [`inbound`]: reverse DNS, DNSBL, SPF, DKIM and DMARC checks per stage;
//! - [`queue_manager`]: local delivery and retries;
//! - [`queue_registry`], [`control`]: what `mx6 queue` shows and does, over `data_dir/control.sock`;
//! - [`outbound`]: delivery to other domains, bounces;
//! - [`metrics`], [`admin_http`]: Prometheus metrics on `metrics.listen`;
//! - [`check`]: `mx6 check DOMAIN`, the deployment audit;
//! - [`firewall`]: the `mx6 firewall` ruleset;
//! - [`policyd`]: `mx6 policyd`, the Postfix policy delegation server;
//! - [`privileges`]: dropping root after binding;
//! - [`users`]: the users file (mailboxes, AUTH passwords, allowed senders);
//! - [`state`]: the greylist/counter/reputation store and its failure mode;
//! - [`greylisting`], [`rate_limits`], [`reputation`]: the prefix-aware abuse defenses;
//! - [`pregreet`]: the early-talker test;
//! - [`content_filter`]: milters and spamd at end of data.
#![forbid(unsafe_code)]

pub mod admin_http;
pub mod check;
pub mod config;
pub mod content_filter;
pub mod control;
pub mod firewall;
pub mod greylisting;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod policyd;
pub mod pregreet;
pub mod privileges;
pub mod proxy;
pub mod queue_manager;
pub mod queue_registry;
pub mod rate_limits;
pub mod reputation;
pub mod session_driver;
pub mod state;
pub mod tls;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use mx6_policy::Routing;
use queue_manager::QueueManager;
use tokio::sync::{watch, Semaphore};

/// State shared by every session.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub routing: Routing,
    pub users: users::UserDb,
    pub metrics: Arc<metrics::Metrics>,
    pub state: Arc<state::State>,
    pub limits: rate_limits::RateLimits,
    pub greylisting: greylisting::Greylisting,
    pub reputation: reputation::Reputation,
    pub filters: content_filter::Filters,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub spool: mx6_queue::SpoolHandle,
    pub queue: QueueManager,
    pub inbound: Arc<inbound::Inbound>,
    /// DKIM keys by domain.
    pub dkim: Vec<mx6_auth::sign::DkimKey>,
    pub sessions: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    session_seq: AtomicU64,
}

impl Shared {
    pub fn next_session(&self) -> u64 {
        self.session_seq.fetch_add(1, Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data_dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("users file: {0}")]
    Users(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("spool: {0}")]
    Spool(#[from] mx6_queue::SpoolError),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("DKIM key: {0}")]
    Dkim(#[from] mx6_auth::sign::SignError),
    #[error("DNS resolver: {0}")]
    Dns(#[from] mx6_dns::Error),
    #[error("state store: {0}")]
    Store(#[from] mx6_store::StoreError),
    #[error("listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
}

/// Run the server until `stop` resolves, then shut down gracefully: stop
/// accepting, let sessions finish the message they are sending (then 421),
/// and let deliveries in progress complete.
pub async fn serve(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    raise_fd_limit(cfg.limits.sessions);
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServeError::DataDir { path: cfg.data_dir.display().to_string(), source })?;
    let mut bound = Vec::new();
    for l in &cfg.listener {
        let sock = listener::bind(l.address).map_err(|source| ServeError::Bind { address: l.address.to_string(), source })?;
        tracing::info!(listener = %l.address, kind = l.kind.as_str(), proxy_protocol = l.proxy_protocol, "listening");
        bound.push((sock, l.clone()));
    }
    let admin = match cfg.metrics.listen {
        None => None,
        Some(addr) => {
            let l = listener::bind(addr).map_err(|source| ServeError::Bind { address: format!("{addr} (metrics.listen)"), source })?;
            tracing::info!(listen = %addr, "metrics on /metrics, health on /healthz");
            Some(l)
        }
    };
    if !cfg.user.is_empty() {
        privileges::drop_to(&cfg.user, &cfg.data_dir)?;
    }
    let users = users::UserDb::open(cfg.path_in_data(&cfg.local.users_file)).map_err(ServeError::Users)?;
    let routing = Routing::new(&cfg.local.domains, &cfg.relay.domains, cfg.relay.mynetworks.clone());
    let tls = Some(tls::server_config(&cfg)?);
    let inbound = Arc::new(inbound::Inbound::new(&cfg)?);
    let mut dkim = Vec::new();
    for d in &cfg.dkim {
        let key = mx6_auth::sign::DkimKey::load(&d.domain, &d.selector, &d.key_path(&cfg.data_dir))?;
        tracing::info!(domain = %key.domain, selector = %key.selector, algorithm = key.algorithm(), "DKIM signing key loaded");
        dkim.push(key);
    }
    let (spool, recovered) = mx6_queue::spool::open(&cfg.path_in_data("spool"))?;
    if !recovered.is_empty() {
        tracing::info!(messages = recovered.len(), "recovered queued messages from the spool");
    }
    let metrics = Arc::new(metrics::Metrics::new());
    let state = Arc::new(state::State::open(&cfg, metrics.clone())?);
    let greylisting = greylisting::Greylisting::new(&cfg);
    let rules = cfg.ratelimit_rules();
    let escalation = cfg.escalation();
    let reputation = reputation::Reputation::new(&cfg, state::levels(&cfg));
    tracing::info!(backend = state.backend(), greylist = cfg.greylist.enabled, rules = rules.len(), "abuse-defense state ready");
    let queue = QueueManager::start(
        &cfg,
        spool.clone(),
        recovered,
        metrics.clone(),
        outbound::Outbound::new(
            inbound.resolver.clone(),
            cfg.delivery.remote(&cfg.hostname),
            cfg.delivery.concurrency,
            cfg.delivery.destination_concurrency,
            routing.local_domains.clone(),
            match &cfg.local.delivery {
                config::LocalDelivery::Lmtp(t) => Some(t.clone()),
                config::LocalDelivery::Maildir => None,
            },
        ),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        routing,
        users,
        metrics: metrics.clone(),
        state: state.clone(),
        limits: rate_limits::RateLimits::new(rules, escalation, cfg.reputation.bad_limit_factor, metrics.clone()),
        greylisting,
        reputation,
        filters: content_filter::Filters::new(&cfg),
        tls,
        spool,
        queue: queue.clone(),
        inbound,
        dkim,
        sessions: Arc::new(Semaphore::new(cfg.limits.sessions)),
        shutdown: stop_rx,
        session_seq: AtomicU64::new(1),
    });
    let mut tasks = Vec::new();
    if let Some(l) = admin {
        tasks.push(tokio::spawn(admin_http::serve(l, metrics.clone(), shared.shutdown.clone())));
    }
    tasks.push(tokio::spawn(control::serve(control::socket_path(&cfg.data_dir), queue.clone(), shared.clone())));
    tasks.push(tokio::spawn(state.clone().saver(Duration::from_secs(10), shared.shutdown.clone())));
    for (sock, l) in bound {
        tasks.push(tokio::spawn(listener::serve(sock, l, shared.clone())));
    }
    tracing::info!(hostname = %cfg.hostname, data_dir = %cfg.data_dir.display(), "mx6 ready");
    stop.await;
    tracing::info!("shutting down: no new connections; finishing sessions");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Sessions finish their message, then get 421.
    let all = cfg.limits.sessions as u32;
    let _ = tokio::time::timeout(Duration::from_secs(30), shared.sessions.acquire_many(all)).await;
    queue.drain(Duration::from_secs(30)).await;
    let st = shared.state.clone();
    let _ = tokio::task::spawn_blocking(move || st.save()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Each session needs a descriptor (two during delivery): raise the soft limit
/// to the hard one, and say so when it is still below what `limits.sessions` asks.
fn raise_fd_limit(sessions: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: lim.maximum, maximum: lim.maximum });
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let want = sessions as u64 + 256;
    if now < want {
        tracing::warn!(
            open_files = now,
            wanted = want,
            "the open-files limit is below limits.sessions; raise it (LimitNOFILE=) or lower limits.sessions"
        );
    }
}
