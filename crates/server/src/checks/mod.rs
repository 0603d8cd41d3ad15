//! The checks that judge a client, shared by `mx6 serve` and `mx6 policyd`
//! (and the milter server): the facts are gathered here, the decisions are
//! `mx6_policy`'s.
//!
//! - [`connect`]: the connect-time questions in one store request;
//! - [`inbound`]: reverse DNS, DNSBL, SPF, DKIM and DMARC per stage;
//! - [`greylisting`]: triplets in the state store;
//! - [`rate_limits`]: counters, concurrency and escalation;
//! - [`reputation`]: decaying scores per prefix level;
//! - [`state`]: the configured store and its failure mode.

pub mod connect;
pub mod greylisting;
pub mod inbound;
pub mod rate_limits;
pub mod reputation;
pub mod state;
