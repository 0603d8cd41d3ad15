//! The queue of a running server: everything between "250 queued" and the
//! last recipient's outcome.
//!
//! - [`manager`]: takes committed messages and runs delivery batches;
//! - [`local`]: Maildir delivery with group commit;
//! - [`remote`]: SMTP and LMTP delivery, grouped by destination;
//! - [`outcome`]: what an attempt means per recipient (pure);
//! - [`notice`]: RFC 3464 delivery status notices to the sender (failures,
//!   delay warnings, the successes asked for with DSN);
//! - [`generated`]: messages mx6 writes itself (notices, reports), queued;
//! - [`report_inbox`]: mail to `[reports] receive` read for the reports it holds;
//! - [`context`]: what they share, the job, the retry wait;
//! - [`destinations`]: remote settings and session limits;
//! - [`registry`]: what `mx6 queue` sees and does on the running queue.

pub mod context;
pub mod destinations;
pub mod generated;
pub mod local;
pub mod manager;
pub mod notice;
pub mod outcome;
pub mod registry;
pub mod remote;
pub mod report_inbox;
