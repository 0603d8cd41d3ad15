//! Operator endpoints: `[metrics]` (Prometheus `/metrics`, `/healthz`) and
//! `[policyd]` (`mx6 policyd`).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::units::optional_address;

/// `mx6 policyd`: Postfix policy delegation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicydConfig {
    /// `[v6]:port`, `v4:port` or `unix:/path`.
    pub listen: String,
}

impl Default for PolicydConfig {
    fn default() -> Self {
        PolicydConfig { listen: "[::1]:10040".into() }
    }
}

/// The admin HTTP endpoint: `/metrics` and `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `[v6]:port` or `v4:port`; `""` in the file = off.
    #[serde(deserialize_with = "optional_address")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: Some(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9325))) }
    }
}
