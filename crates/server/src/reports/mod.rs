//! DMARC aggregate and TLS-RPT reports in the running server:
//!
//! - [`evaluations`]: each end-of-data DMARC evaluation counted for the
//!   aggregate reports;
//! - [`outgoing`]: closing periods, building the reports, finding their
//!   destinations and sending them (through the queue, or HTTPS POST).
//!
//! Reports about our own domains are read as they are delivered, by
//! [`crate::queue::report_inbox`].

pub mod evaluations;
pub mod outgoing;
