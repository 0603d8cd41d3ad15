//! The network edge, before any SMTP: sockets, the PROXY protocol, TLS and
//! the process's privileges.
//!
//! - [`listener`]: binding (IPv6-only sockets), the allow list, the session
//!   cap, implicit TLS;
//! - [`conn`]: the client connection, plain or TLS;
//! - [`proxy`]: PROXY protocol v1/v2 (HAProxy);
//! - [`stream`]: TCP or unix-socket streams: to content filters, and the
//!   servers of `mx6 policyd` and `mx6 milter`;
//! - [`tls`]: the rustls server configuration and its certificate;
//! - [`privileges`]: dropping root after binding.

pub mod conn;
pub mod listener;
pub mod privileges;
pub mod proxy;
pub mod stream;
pub mod tls;
