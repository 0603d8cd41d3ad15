//! mx6-delivery: getting a queued message to its recipient.
//!
//! - [`maildir`]: local delivery into Maildir folders.
#![forbid(unsafe_code)]

pub mod maildir;
