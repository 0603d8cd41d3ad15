//! Milters (the Sendmail milter protocol v6, [`mx6_filter::milter`]) at
//! every stage of an SMTP session, as Postfix and Sendmail run them.
//!
//! - [`session`]: the session's milters in order, stage by stage, and what
//!   their verdicts do;
//! - [`conn`]: one connection to one milter: negotiation, one step at a time,
//!   timeouts;
//! - [`error`]: how a conversation fails (then `on_failure` applies);
//! - [`mods`]: the modifications a milter asked for at end of message, and
//!   how they are applied (spliced into the raw header section).

pub mod conn;
pub mod error;
pub mod mods;
pub mod session;

pub use session::{Milters, Outcome};
