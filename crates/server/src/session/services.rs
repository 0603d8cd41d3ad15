//! What every SMTP session uses, built once by [`crate::runtime`] and shared
//! by all sessions: the relevant config sections, routing and users, the
//! checks and their state, content filters, TLS, the spool and the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mx6_auth::sign::DkimKey;
use mx6_config::{LimitsConfig, PregreetConfig, SubmissionConfig};
use mx6_policy::Routing;
use mx6_queue::SpoolHandle;
use tokio::sync::watch;

use crate::admin::metrics::Metrics;
use crate::checks::greylisting::Greylisting;
use crate::checks::inbound::Inbound;
use crate::checks::rate_limits::RateLimits;
use crate::checks::reputation::Reputation;
use crate::checks::state::State;
use crate::content_filter::chain::Filters;
use crate::queue::manager::QueueManager;
use crate::users::UserDb;

pub struct Services {
    /// Banner, EHLO, Received, authserv-id.
    pub hostname: String,
    pub limits: LimitsConfig,
    pub submission: SubmissionConfig,
    pub pregreet: PregreetConfig,
    pub routing: Routing,
    pub users: Arc<UserDb>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<State>,
    pub rate_limits: RateLimits,
    pub greylisting: Greylisting,
    pub reputation: Reputation,
    pub filters: Filters,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub spool: SpoolHandle,
    /// Free space the spool's filesystem keeps (`queue.min_free`).
    pub min_free: u64,
    pub queue: QueueManager,
    pub inbound: Arc<Inbound>,
    /// SMTP AUTH password checks, on their own bounded pool.
    pub passwords: crate::session::passwords::Passwords,
    /// DKIM signing keys, for mail from users and mynetworks.
    pub dkim: Arc<Vec<DkimKey>>,
    /// Becomes true when the server stops.
    pub shutdown: watch::Receiver<bool>,
    pub(crate) session_seq: AtomicU64,
    /// `[reports] dmarc`: DMARC evaluations are counted for aggregate
    /// reports, in periods of this many seconds.
    pub dmarc_reports: Option<u64>,
}

impl Services {
    /// A new session id (hex in logs).
    pub fn next_session(&self) -> u64 {
        self.session_seq.fetch_add(1, Ordering::Relaxed)
    }
}
