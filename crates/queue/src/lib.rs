//! mx6-queue: the durable spool and the retry schedule.
//!
//! - [`id`]: unique, time-sortable queue ids;
//! - [`spool`]: append-only segment files with group commit (one fdatasync for
//!   every message that arrived while the previous one ran), recovery on start;
//! - [`schedule`]: retry delays and expiry (RFC 5321 §4.5.4.1);
//! - [`dsn`]: bounce messages (RFC 3464 delivery status notifications);
//! - [`holds`]: messages kept from delivery until released;
//! - [`listing`]: a queued message as `mx6 queue` shows it;
//! - [`ops`]: queue operations, one copy for the running server and a stopped spool.
#![forbid(unsafe_code)]

pub mod dsn;
pub mod holds;
pub mod id;
pub mod listing;
pub mod ops;
pub mod schedule;
pub mod spool;

pub use spool::{DoneEntry, DoneStatus, Location, QueuedMessage, Recipient, Recovered, SpoolError, SpoolHandle};
