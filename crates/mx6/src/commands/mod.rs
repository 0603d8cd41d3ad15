//! One module per subcommand; each is thin and calls the library that does the work.

pub mod check;
pub mod config;
pub mod dkim;
pub mod firewall;
pub mod queue;
pub mod report;
pub mod serve;
pub mod state;
pub mod support;
pub mod user;
