//! `mx6 serve`: the composition root. Builds every service from its config
//! section, binds the listeners, drops root, starts the queue manager, the
//! control socket, the admin endpoint and the state saver, then serves until
//! told to stop and shuts down gracefully: stop accepting, let sessions finish
//! the message they are sending (then 421), let deliveries in progress
//! complete, save the state. Nothing imports this module but the binary.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use mx6_config::{Config, LocalDelivery};
use mx6_policy::Routing;
use tokio::sync::{watch, Semaphore};

use crate::admin::metrics::Metrics;
use crate::checks::greylisting::Greylisting;
use crate::checks::inbound::Inbound;
use crate::checks::rate_limits::RateLimits;
use crate::checks::reputation::Reputation;
use crate::checks::state::{self, State};
use crate::content_filter::chain::Filters;
use crate::control::server::Control;
use crate::net::listener::{self, Accepted, Gate};
use crate::net::{privileges, tls};
use crate::queue::destinations::Destinations;
use crate::queue::manager::{QueueManager, Start};
use crate::reports::outgoing::Reports;
use crate::session::services::Services;
use crate::users::UserDb;

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
    #[error("{0}")]
    Lock(#[from] mx6_queue::lock::LockError),
    #[error("{0}")]
    Control(String),
}

/// Run the server until `stop` resolves, then shut down gracefully.
pub async fn serve(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
    raise_fd_limit(cfg.limits.sessions);
    // Private by default: everything mx6 creates is its own (0600 / 0700).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    mx6_queue::disk::private_dir(&cfg.data_dir)
        .map_err(|source| ServeError::DataDir { path: cfg.data_dir.display().to_string(), source })?;
    for sub in ["spool", "state", "dkim", "tls", "quarantine", "acme"] {
        let p = cfg.data_dir.join(sub);
        if p.is_dir() {
            mx6_queue::disk::set_mode(&p, 0o700);
        }
    }
    // One owner per data_dir, before anything else is touched or bound.
    let _lock = mx6_queue::lock::acquire(&cfg.data_dir)?;
    let mut bound = Vec::new();
    for l in &cfg.listener {
        let sock = listener::bind(l.address).map_err(|source| ServeError::Bind { address: l.address.to_string(), source })?;
        tracing::info!(listener = %l.address, kind = l.kind.as_str(), proxy_protocol = l.proxy_protocol, "listening");
        bound.push((sock, l.clone()));
    }
    let mut sts = Vec::new();
    for &addr in &cfg.mta_sts.listen {
        let l = listener::bind(addr).map_err(|source| ServeError::Bind { address: format!("{addr} (mta_sts.listen)"), source })?;
        tracing::info!(listen = %addr, "MTA-STS policy over HTTPS");
        sts.push(l);
    }
    let mut acme_http = Vec::new();
    if cfg.acme.enabled() && cfg.acme.challenge == mx6_config::Challenge::Http01 {
        for &addr in &cfg.acme.http_listen {
            let l = listener::bind(addr).map_err(|source| ServeError::Bind { address: format!("{addr} (acme.http_listen)"), source })?;
            tracing::info!(listen = %addr, "ACME HTTP-01 challenges");
            acme_http.push(l);
        }
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
    let socket = crate::control::protocol::socket_path(&cfg.data_dir);
    let control_listener = crate::control::server::bind(&socket).map_err(ServeError::Control)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let Assembled { services, control, queue, state, metrics, tls, certificates, sessions, recovery, reports } =
        assemble(&cfg, stop_rx.clone())?;
    let mut tasks = Vec::new();
    if let Some(l) = admin {
        tasks.push(tokio::spawn(crate::admin::http::serve(l, metrics.clone(), stop_rx.clone())));
    }
    tasks.push(tokio::spawn(crate::control::server::serve(control_listener, socket, control, stop_rx.clone())));
    tasks.push(tokio::spawn(state.clone().saver(Duration::from_secs(10), stop_rx.clone())));
    tasks.push(tokio::spawn(certificates.clone().watch(stop_rx.clone())));
    tasks.push(tokio::spawn(reports.run(stop_rx.clone())));
    if cfg.acme.enabled() {
        let tokens = Arc::new(crate::acme::http_challenge::Tokens::default());
        for l in acme_http {
            tasks.push(tokio::spawn(crate::acme::http_challenge::serve(l, tokens.clone(), stop_rx.clone())));
        }
        let a = &cfg.acme;
        let client = crate::acme::order::Client {
            directory: a.directory.clone(),
            contact: a.contact.clone(),
            names: cfg.acme_names(),
            challenge: a.challenge,
            ca_file: a.ca_file.clone(),
            dir: cfg.data_dir.join("acme"),
            tokens,
            certificates: certificates.clone(),
        };
        let renewal = crate::acme::renewal::Renewal { client, renew_before: a.renew_before, data_dir: cfg.data_dir.clone() };
        tasks.push(tokio::spawn(renewal.run(stop_rx.clone())));
    }
    if !sts.is_empty() {
        let site = Arc::new(crate::mta_sts_host::Site::new(&cfg));
        for d in &site.domains {
            tracing::info!(
                domain = %d,
                txt = %format!("_mta-sts.{d}. IN TXT \"v=STSv1; id={}\"", mx6_policy::mta_sts::policy_id(&site.policy)),
                "serving https://mta-sts.{d}/.well-known/mta-sts.txt; publish this record"
            );
        }
        let https = tls::https_config(tls.as_deref().expect("TLS is always configured"));
        for l in sts {
            let tls = https.clone();
            tasks.push(tokio::spawn(crate::mta_sts_host::serve(l, tls, site.clone(), stop_rx.clone())));
        }
    }
    let gate =
        Arc::new(Gate { tls, sessions: sessions.clone(), metrics: metrics.clone(), hostname: cfg.hostname.clone(), shutdown: stop_rx });
    for (sock, l) in bound {
        let services = services.clone();
        let handler = move |a: Accepted| {
            let services = services.clone();
            async move { crate::session::driver::run(a.conn, a.client, a.local, &a.listener, services).await }
        };
        tasks.push(tokio::spawn(listener::serve(sock, l, gate.clone(), handler)));
    }
    // The old segments are read while the server already serves.
    let recovering = queue.recover(recovery);
    tracing::info!(hostname = %cfg.hostname, data_dir = %cfg.data_dir.display(), "mx6 ready");
    stop.await;
    tracing::info!("shutting down: no new connections; finishing sessions");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Sessions finish their message, then get 421.
    let all = cfg.limits.sessions as u32;
    let _ = tokio::time::timeout(Duration::from_secs(30), sessions.acquire_many(all)).await;
    let _ = recovering.await;
    queue.drain(Duration::from_secs(30)).await;
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.save()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Everything a running server is made of, built from the config (inside a
/// tokio runtime: the queue manager starts here).
pub struct Assembled {
    pub services: Arc<Services>,
    pub control: Arc<Control>,
    pub queue: QueueManager,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificates behind `tls`, reloaded on SIGHUP or a changed file.
    pub certificates: Arc<tls::Certificates>,
    /// One permit per session (`limits.sessions`).
    pub sessions: Arc<Semaphore>,
    /// The spool's old segments, for [`QueueManager::recover`].
    pub recovery: mx6_queue::spool::Recovery,
    /// DMARC and TLS-RPT reports to send.
    pub reports: Arc<Reports>,
}

/// Build the services of `mx6 serve` from their config sections; `shutdown`
/// becomes true when the server stops.
pub fn assemble(cfg: &Config, shutdown: watch::Receiver<bool>) -> Result<Assembled, ServeError> {
    let users = Arc::new(UserDb::open(cfg.path_in_data(&cfg.local.users_file)).map_err(ServeError::Users)?);
    let routing = Routing::new(&cfg.local.domains, &cfg.relay.domains, cfg.relay.mynetworks.clone());
    let (server_tls, certificates) = tls::server_config(&cfg.tls, &cfg.data_dir, &cfg.hostname, &cfg.acme_names())?;
    let tls = Some(server_tls);
    let inbound = Arc::new(Inbound::new(&cfg.dns, &cfg.policy, &cfg.dnsbl, &cfg.hostname)?);
    let mut keys = Vec::new();
    for d in &cfg.dkim {
        let key = mx6_auth::sign::DkimKey::load(&d.domain, &d.selector, &d.key_path(&cfg.data_dir))?;
        tracing::info!(domain = %key.domain, selector = %key.selector, algorithm = key.algorithm(), "DKIM signing key loaded");
        keys.push(key);
    }
    let dkim = Arc::new(keys);
    let spool_dir = cfg.path_in_data("spool");
    let opts = mx6_queue::spool::Options { segment_size: cfg.queue.segment_size as u64, quarantine: cfg.path_in_data("quarantine") };
    let (spool, recovery) = mx6_queue::spool::open(&spool_dir, opts)?;
    let metrics = Arc::new(Metrics::new());
    certificates.report_to(metrics.tls_expiry.clone());
    let state = Arc::new(State::open(&cfg.store, &cfg.data_dir, metrics.clone())?);
    let rules = cfg.ratelimit_rules();
    let escalation = cfg.ratelimit_escalation.escalation();
    let reputation = Reputation::new(&cfg.reputation, state::levels(&rules, &cfg.greylist, &escalation));
    tracing::info!(backend = state.backend(), greylist = cfg.greylist.enabled, rules = rules.len(), "abuse-defense state ready");
    let d = &cfg.delivery;
    let lmtp = match &cfg.local.delivery {
        LocalDelivery::Lmtp(t) => Some(t.clone()),
        LocalDelivery::Maildir => None,
    };
    let mut remote = d.remote(&cfg.hostname);
    // DANE needs answers known to be secure.
    remote.dane &= cfg.dns.dnssec == "trust-ad";
    let destinations =
        Destinations::new(inbound.resolver.clone(), remote, d.concurrency, d.destination_concurrency, routing.local_domains.clone(), lmtp)
            .with_state(d.mta_sts_fetcher(), state.clone());
    let queue = QueueManager::start(Start {
        queue: &cfg.queue,
        local: &cfg.local,
        data_dir: &cfg.data_dir,
        hostname: &cfg.hostname,
        spool: spool.clone(),
        metrics: metrics.clone(),
        destinations,
        dkim: dkim.clone(),
        report_inboxes: cfg.reports.receive.clone(),
    });
    let reports = Arc::new(Reports {
        cfg: cfg.reports.clone(),
        hostname: cfg.hostname.clone(),
        state: state.clone(),
        resolver: inbound.resolver.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        https: mx6_delivery::trust::verifying_client(&cfg.delivery.ca_file, &[b"http/1.1"]).ok(),
    });

    let sessions = Arc::new(Semaphore::new(cfg.limits.sessions));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let passwords = crate::session::passwords::Passwords::start(users.clone(), cores);
    let services = Arc::new(Services {
        hostname: cfg.hostname.clone(),
        limits: cfg.limits.clone(),
        submission: cfg.submission.clone(),
        pregreet: cfg.pregreet.clone(),
        routing,
        users,
        metrics: metrics.clone(),
        state: state.clone(),
        rate_limits: RateLimits::new(rules, escalation, cfg.reputation.bad_limit_factor, metrics.clone()),
        greylisting: Greylisting::new(&cfg.greylist),
        filters: Filters::new(&cfg.content_filter, &cfg.milter),
        tls: tls.clone(),
        spool: spool.clone(),
        min_free: cfg.queue.min_free(cfg.limits.message_size),
        queue: queue.clone(),
        inbound,
        dkim,
        passwords,
        shutdown,
        session_seq: AtomicU64::new(1),
        reputation,
        dmarc_reports: cfg.reports.dmarc.then(|| crate::reports::outgoing::interval(&cfg.reports)),
    });
    let control = Arc::new(Control {
        queue: queue.clone(),
        spool,
        state: state.clone(),
        half_life: services.reputation.half_life(),
        reports: reports.clone(),
    });
    Ok(Assembled { services, control, queue, state, metrics, tls, certificates, sessions, recovery, reports })
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
