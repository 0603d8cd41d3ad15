//! mx6-policy: pure decisions, no I/O. Facts go in, a verdict with a stable
//! reason token comes out; the same token is used in the reply, the log line and
//! the metric label.
//!
//! - [`prefix`]: address family and prefix keys;
//! - [`recipient`]: where a recipient goes (local, relay) or why it is refused;
//! - [`inbound`]: reverse DNS, SPF, DKIM, DMARC and DNSBL decisions per stage;
//! - [`dnsbl`]: DNS blocklist and allowlist scoring;
//! - [`greylist`]: triplets, sender normalisation, the greylist state machine;
//! - [`ratelimit`]: rate-limit rules, scopes and escalation;
//! - [`reputation`]: decaying prefix scores;
//! - [`mta_sts`]: the MTA-STS policy we serve for our domains.
#![forbid(unsafe_code)]

pub mod dnsbl;
pub mod greylist;
pub mod inbound;
pub mod mta_sts;
pub mod prefix;
pub mod ratelimit;
pub mod recipient;
pub mod reputation;

pub use prefix::Family;
pub use recipient::{decide_recipient, normalize_domain, LocalUsers, RecipientVerdict, Route, Routing};
