//! mx6-filter: the wire protocols of the content filters operators already
//! run, without I/O (the server's `content_filter` module moves the bytes):
//!
//! - [`spamd`]: SpamAssassin's SPAMC/SPAMD protocol (spamd(1), "PROTOCOL" in
//!   the SpamAssassin distribution), the `SYMBOLS` request;
//! - [`milter`]: the Sendmail milter protocol, version 6, as libmilter speaks
//!   it (commands, macros, replies and message modifications).
#![forbid(unsafe_code)]

pub mod milter;
pub mod spamd;
