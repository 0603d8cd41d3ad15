//! mx6-reports: the reports receivers send domain owners, both ways.
//!
//! - [`period`]: reporting periods aligned to UTC midnight (RFC 7489 §7.2 `ri`);
//! - [`evaluation`]: one DMARC evaluation, counted per (domain, period, row)
//!   in the state store, so several nodes on Redis add up into one report;
//! - [`dmarc_report`]: the aggregate report (RFC 7489 §7.2, Appendix C) and
//!   the message that carries it;
//! - [`tls_report`]: the TLS-RPT report (RFC 8460 §4) from the counts outbound
//!   delivery keeps, and the message that carries it (§5.3);
//! - [`destination`]: `rua` URIs, their size limits and the external
//!   destination check (RFC 7489 §7.1);
//! - [`received`]: reports others send about our domains, parsed and kept;
//! - [`summary`]: what those reports say, per reporter and per source network.
#![forbid(unsafe_code)]

pub mod destination;
pub mod dmarc_report;
pub mod evaluation;
pub mod period;
pub mod received;
pub mod summary;
pub mod tls_report;
