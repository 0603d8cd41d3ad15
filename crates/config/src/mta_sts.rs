//! `[mta_sts]`: the MTA-STS policy mx6 serves for its own domains
//! (RFC 8461 §3.3) on `https://mta-sts.<domain>/.well-known/mta-sts.txt`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::units::duration;

/// RFC 8461 §5: how senders treat a policy failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsMode {
    Enforce,
    Testing,
    None,
}

impl StsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<StsMode, D::Error> {
    let s = String::deserialize(d)?;
    Ok(match s.as_str() {
        "enforce" => StsMode::Enforce,
        "testing" => StsMode::Testing,
        "none" => StsMode::None,
        _ => return Err(de::Error::custom(format!("unknown `{s}`; expected enforce, testing or none"))),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// HTTPS listeners; empty = no policy served.
    pub listen: Vec<SocketAddr>,
    /// Domains whose policy is served; empty = the `[local] domains`.
    pub domains: Vec<String>,
    #[serde(deserialize_with = "mode")]
    pub mode: StsMode,
    /// MX patterns of the policy; empty = the hostname.
    pub mx: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            listen: Vec::new(),
            domains: Vec::new(),
            mode: StsMode::Enforce,
            mx: Vec::new(),
            max_age: Duration::from_secs(7 * 86400),
        }
    }
}
