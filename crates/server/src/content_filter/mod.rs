//! Content filters: milters (at every stage of the session) and SpamAssassin's
//! spamd (at end of data).
//!
//! - [`chain`]: the filters in order and what their verdicts do;
//! - [`milter`]: the session's milters at every stage (Sendmail milter protocol v6);
//! - [`spamd`]: one spamd scan (SPAMC/1.5);
//! - [`reroute`]: routing the recipients a milter added;
//! - [`message`]: the origin, envelope and verdict they share;

pub mod chain;
pub mod message;
pub mod milter;
pub mod reroute;
pub mod spamd;
