//! mx6-server: the running server, the tokio side of mx6.
//!
//! - [`runtime`]: `mx6 serve`, the composition root;
//! - [`net`]: listeners, PROXY protocol, TLS, privileges;
//! - [`session`]: one SMTP session, stage by stage;
//! - [`checks`]: inbound checks, greylisting, rate limits, reputation, state;
//! - [`content_filter`]: milters and spamd at end of data;
//! - [`queue`]: the queue manager, local and remote delivery, delivery status notices;
//! - [`control`]: the control socket of `mx6 queue` and `mx6 state`;
//! - [`policyd`]: `mx6 policyd`, the Postfix policy delegation server;
//! - [`milter_server`]: `mx6 milter`, the content-stage checks as a milter for Postfix;
//! - [`admin`]: metrics and the admin HTTP endpoint;
//! - [`mta_sts_host`]: our MTA-STS policy over HTTPS (RFC 8461 §3.3);
//! - [`acme`]: certificates ordered and renewed from an ACME server (RFC 8555);
//! - [`reports`]: DMARC aggregate and TLS-RPT reports, sent and received;
//! - [`users`]: the users file.
//!
//! `docs/architecture.md` has the layers and what each may depend on.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod checks;
pub mod content_filter;
pub mod control;
pub mod milter_server;
pub mod mta_sts_host;
pub mod net;
pub mod policyd;
pub mod queue;
pub mod reports;
pub mod runtime;
pub mod session;
pub mod users;

pub use runtime::{serve, ServeError};
