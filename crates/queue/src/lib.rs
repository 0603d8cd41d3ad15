//! mx6-queue: the durable spool and what the queue knows without a runtime.
//!
//! - [`spool`]: append-only segments with group commit (one fdatasync for
//!   every message that arrived while the previous one ran), fault handling,
//!   background recovery;
//! - [`record`]: the record format and its checksums;
//! - [`recovery`]: reading segments back, resynchronising past bad octets;
//! - [`donelog`]: per-recipient outcomes and deferral marks;
//! - [`disk`]: the committer's file operations (and injected faults for tests);
//! - [`envelope`]: the stored envelope;
//! - [`lock`]: one owner per data_dir;
//! - [`index`]: the compact index of queued messages and their schedule;
//! - [`id`]: unique, time-sortable queue ids;
//! - [`schedule`]: retry delays and expiry (RFC 5321 §4.5.4.1);
//! - [`dsn`]: bounce messages (RFC 3464 delivery status notifications);
//! - [`holds`]: messages kept from delivery until released;
//! - [`listing`]: a queued message as `mx6 queue` shows it;
//! - [`ops`]: queue operations, one copy for the running server and a stopped spool.
#![forbid(unsafe_code)]

pub mod disk;
pub mod donelog;
pub mod dsn;
pub mod envelope;
pub mod holds;
pub mod id;
pub mod index;
pub mod listing;
pub mod lock;
pub mod ops;
pub mod record;
pub mod recovery;
pub mod schedule;
pub mod spool;

pub use donelog::{DoneEntry, DoneStatus};
pub use envelope::{QueuedMessage, Recipient};
pub use record::Location;
pub use spool::{Recovered, SpoolError, SpoolHandle};
