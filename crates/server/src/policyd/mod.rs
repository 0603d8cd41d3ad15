//! `mx6 policyd`: Postfix's policy delegation (`check_policy_service`) over
//! the checks of `mx6 serve`.
//!
//! - [`protocol`]: the request/answer format (pure);
//! - [`judge`]: the decision per request;
//! - [`server`]: the listener and its connections.

pub mod judge;
pub mod protocol;
pub mod server;
