//! mx6-ops: operator tools that read the world or the config and never run
//! inside `mx6 serve`.
//!
//! - [`check`]: `mx6 check DOMAIN`, the deployment audit (MX, AAAA/A, PTR,
//!   SPF, DKIM, DMARC, MTA-STS, TLS-RPT, STARTTLS on every MX address);
//! - [`firewall`]: `mx6 firewall`, an nftables or iptables ruleset derived
//!   from the listeners, their allow lists and mynetworks.
#![forbid(unsafe_code)]

pub mod check;
pub mod firewall;
