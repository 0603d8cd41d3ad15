//! Certificates from an ACME server (RFC 8555): the order and its
//! challenges, the HTTP-01 responder, and the renewal schedule.

pub mod http_challenge;
pub mod order;
pub mod renewal;
