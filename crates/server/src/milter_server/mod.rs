//! `mx6 milter`: a milter server (Sendmail milter protocol v6, as Postfix's
//! `smtpd_milters` speaks it) that gives a Postfix in front mx6's
//! content-stage judgement — SPF, DKIM, DMARC with enforcement,
//! `require_spf_or_dkim`, Authentication-Results, the `X-Mx6-Client` facts
//! and DKIM signing — with the engine, store and signer `mx6 serve` uses.
//!
//! - [`server`]: `[milter_server] listen`, one task per MTA connection;
//! - [`conversation`]: one MTA connection: commands in, replies out;
//! - [`judge`]: the decisions at MAIL and at end of message.

pub mod conversation;
pub mod judge;
pub mod server;
