//! mx6-smtp: the SMTP protocol core, free of I/O (RFC 5321).
//!
//! - [`command`]: command line parser and ESMTP parameters;
//! - [`dsn`]: the DSN extension's parameters and xtext (RFC 3461);
//! - [`address`]: envelope address grammar and address literals;
//! - [`data`]: DATA/BDAT content decoding with the smuggling defense;
//! - [`reply`]: every reply code and text, in one place;
//! - [`session`]: the server state machine (bytes and time in, events out);
//! - [`client`]: the SMTP/LMTP client state machine (replies in, commands out);
//! - [`received`]: the Received trace header (RFC 5321 §4.4).
#![forbid(unsafe_code)]

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod dsn;
pub mod received;
pub mod reply;
pub mod session;

pub use session::{Answer, Ask, Envelope, Event, Session, SessionConfig, Timeouts};
