//! One SMTP session, from the greeting to the last reply.
//!
//! - [`driver`]: the I/O loop around the sans-IO [`mx6_smtp::Session`],
//!   STARTTLS, deadlines;
//! - [`admission`], [`pregreet`]: before the greeting (limits, early talkers);
//! - [`stages`]: HELO, STARTTLS, MAIL, RCPT;
//! - [`auth`], [`passwords`]: SMTP AUTH credentials, checked on a bounded pool;
//! - [`end_of_data`]: the message checks, filters and the spool append;
//! - [`milters`]: the `[[milter]]`s at each stage, and what their refusals do;
//! - [`assemble`]: our trace headers and DKIM signing;
//! - [`context`]: the session's facts and how it logs and refuses;
//! - [`services`]: what every session shares.

pub mod admission;
pub mod assemble;
pub mod auth;
pub mod context;
pub mod driver;
pub mod end_of_data;
pub mod milters;
pub mod passwords;
pub mod pregreet;
pub mod services;
pub mod stages;
#[cfg(test)]
mod tests;
