//! The control socket through which `mx6 queue` and `mx6 state` act on a
//! running server.
//!
//! - [`protocol`]: the typed requests and responses;
//! - [`server`]: the socket in `mx6 serve`;
//! - [`client`]: the CLI's side.

pub mod client;
pub mod protocol;
pub mod server;
