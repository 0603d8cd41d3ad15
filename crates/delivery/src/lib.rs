//! mx6-delivery: getting a queued message to its recipient.
//!
//! - [`maildir`]: local delivery into Maildir folders;
//! - [`remote`]: delivery to other domains (MX, Happy Eyeballs, STARTTLS, relayhost).
#![forbid(unsafe_code)]

pub mod maildir;
pub mod remote;
