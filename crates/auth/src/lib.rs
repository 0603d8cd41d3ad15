//! mx6-auth: message authentication facts and the Authentication-Results header.
//!
//! - [`verify`]: [`Authenticator::spf`]: SPF (RFC 7208) of the HELO and MAIL FROM
//!   identities, with mail-auth's check_host (10 DNS-mechanism and 2 void
//!   lookup limits, §4.6.4); IPv4-mapped clients are checked as IPv4.
//! - [`Authenticator::message`]: DKIM (RFC 6376) of every signature and DMARC
//!   (RFC 7489) with alignment, `p`/`sp`, and `pct` (§6.6.4) applied here
//!   because mail-auth follows DMARCbis, which dropped it.
//! - [`sign`]: DKIM signing and key files;
//! - [`results`]: the RFC 8601 header; [`strip_forged`] removes incoming
//!   Authentication-Results that claim our authserv-id (RFC 8601 §5).
//!
//! Gathering only: what to do with the facts is `mx6_policy::inbound`.
#![forbid(unsafe_code)]

pub mod results;
pub mod sign;
pub mod verify;

pub use results::{results, strip_forged, DkimSummary, ResultsInput};
pub use verify::{record_tag, Authenticator, Message, Spf};
