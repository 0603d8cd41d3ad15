//! DMARC aggregate and TLS-RPT reports in the running server:
//!
//! - [`evaluations`]: each end-of-data DMARC evaluation counted for the
//!   aggregate reports;
//! - [`outgoing`]: closing periods, building the reports, finding their
//!   destinations and sending them (through the queue, or HTTPS POST);
//! - [`inbox`]: reports about our domains, read as they are delivered.

pub mod evaluations;
pub mod inbox;
pub mod outgoing;
