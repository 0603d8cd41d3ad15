//! mx6-dns: the resolver and the DNS facts about a client.
//!
//! - [`Resolver`] ([`resolver`]): hickory over `[dns] nameservers` (or the system resolver),
//!   with bounded timeouts; every lookup says whether it failed for good
//!   (NXDOMAIN / no data) or only for now (timeout, SERVFAIL).
//! - [`Resolver::iprev`]: RFC 8601 §3 `iprev` (forward-confirmed reverse DNS),
//!   following at most [`MAX_PTR_NAMES`] PTR names.
//! - [`Resolver::dnsbl`]: RFC 5782 queries; IPv4 as reversed octets, IPv6 as 32
//!   reversed nibbles (§2.4).
//!
//! - [`secure`]: DNSSEC-aware lookups (the AD bit of a validating resolver)
//!   and TLSA records, for DANE.
//!
//! Defends against: slow or hostile DNS (timeouts, bounded names followed,
//! answers outside 127.0.0.0/8 not counted as listings).
#![forbid(unsafe_code)]

pub mod resolver;
pub mod secure;

pub use resolver::*;
