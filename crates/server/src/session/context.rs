//! One session's facts — who the client is, what it has said, what the
//! checks found — and the helpers every stage uses to log, count and refuse
//! in one way: [`slog!`] writes a log line with the session id, client
//! address and family (CONTRACT: every line about a session carries them).

use std::net::IpAddr;

use mx6_policy::inbound::Client;
use mx6_policy::reputation::{Event as RepEvent, Standing as RepStanding};
use mx6_policy::{Family, Route};
use mx6_smtp::reply;

use crate::checks::inbound::{ClientCheck, Transaction};
use crate::checks::rate_limits::{Asker, Stop};
use crate::session::services::Services;

/// A log line about the session: `slog!(info, ctx, key = value, "message")`.
macro_rules! slog {
    ($level:ident, $ctx:expr, $($rest:tt)*) => {
        tracing::$level!(session = %$ctx.id, client = %$ctx.client, family = $ctx.family.as_str(), $($rest)*)
    };
}
pub(crate) use slog;

/// Per-session facts used for answers and logs.
pub struct Ctx {
    pub id: String,
    pub client: IpAddr,
    pub port: u16,
    pub family: Family,
    pub listener: String,
    /// "TLSv1.3 with cipher …" once TLS is up.
    pub tls: Option<String>,
    /// The route of each accepted recipient of the transaction, in order.
    pub routes: Vec<Route>,
    /// The authenticated user, normalised.
    pub auth: Option<String>,
    /// HELO/EHLO argument as given.
    pub helo: String,
    /// Client in relay.mynetworks.
    pub mynetworks: bool,
    /// A submission listener (AUTH required).
    pub submission: bool,
    /// Connect-time facts (reverse DNS, DNSBL).
    pub client_check: ClientCheck,
    /// SPF of the transaction in progress, when the inbound checks apply.
    pub txn: Option<Transaction>,
    /// The client as rate limits see it.
    pub asker: Asker,
    /// Reputation is kept for this client (port 25, outside mynetworks).
    pub tracked: bool,
    pub reputation: RepStanding,
    /// Reputation scores at connect, finest level first.
    pub rep_scores: Vec<f64>,
    /// Greylisting of the transaction: passed, allowlisted, or off.
    pub greylist: &'static str,
    /// Messages accepted in this session.
    pub messages: u32,
    /// Our address on this connection (`{daemon_addr}`, `{if_addr}`).
    pub local: std::net::SocketAddr,
    /// The SASL mechanism the user authenticated with (`{auth_type}`).
    pub auth_mechanism: Option<&'static str>,
    /// The transaction's queue id, given at MAIL when milters need it (`i`).
    pub queue_id: Option<String>,
    /// The session's `[[milter]]`s (`None` when none are configured).
    pub milters: Option<crate::content_filter::milter::Milters>,
}

impl Ctx {
    /// The client as the inbound policy sees it, with the sender's domain.
    pub fn policy_client<'a>(&self, sender_domain: Option<&'a str>) -> Client<'a> {
        Client { ip: self.client, authenticated: self.auth.is_some(), mynetworks: self.mynetworks, sender_domain }
    }

    /// The forward-confirmed PTR name, once the connect-time lookups are in.
    pub fn confirmed_name(&self) -> Option<&str> {
        match &self.client_check {
            ClientCheck::Ready(f) => f.confirmed_name.as_deref(),
            _ => None,
        }
    }

    /// A refusal: one log line and one metric count, with the same stage and
    /// reason token.
    pub fn rejected(&self, s: &Services, stage: &'static str, reason: &'static str, detail: std::fmt::Arguments<'_>) {
        s.metrics.reject(self.family.as_str(), stage, reason);
        slog!(info, self, stage, reason, "reject: {detail}");
    }

    /// Count an outcome against the client's reputation (port-25 strangers only).
    pub fn record(&self, s: &Services, ev: RepEvent) {
        if self.tracked {
            s.reputation.record(&s.state, self.client, ev);
        }
    }

    /// A rate limit or a state failure stopped this step: log, count, hold a
    /// tarpitted client, and give the reply (`limited` makes it from the prefix).
    pub async fn stopped(&self, s: &Services, stage: &'static str, stop: Stop, limited: impl Fn(&str) -> reply::Reply) -> reply::Reply {
        match stop {
            Stop::Limited(hit) => {
                let r = limited(&hit.prefix.to_string());
                self.rejected(
                    s,
                    stage,
                    "rate_limited",
                    format_args!("{} limit={} prefix={} count={} max={}", r.text(), hit.limit, hit.prefix, hit.count, hit.max),
                );
                self.record(s, RepEvent::RateLimited);
                if !hit.tarpit.is_zero() {
                    tokio::time::sleep(hit.tarpit).await;
                }
                r
            }
            Stop::Unavailable => {
                self.rejected(
                    s,
                    stage,
                    "state_unavailable",
                    format_args!("the state store did not answer (store.on_failure = \"tempfail\")"),
                );
                if stage == "connect" {
                    reply::state_unavailable_connect(&s.hostname)
                } else {
                    reply::state_unavailable()
                }
            }
        }
    }
}
