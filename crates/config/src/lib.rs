//! mx6-config: the TOML configuration of CONTRACT.md, one module per section,
//! its built-in defaults, and findings that name the key and the line.
//!
//! - [`file`]: the whole [`Config`], loading and parsing;
//! - [`listener`], [`tls`]: how clients reach mx6 (`[[listener]]`, `[limits]`,
//!   `[submission]`, `[tls]`);
//! - [`inbound`]: `[local]`, `[relay]`, `[dns]`, `[policy]`, `[dnsbl]`;
//! - [`abuse`]: `[store]`, `[greylist]`, `[[ratelimit]]`,
//!   `[ratelimit_escalation]`, `[reputation]`, `[pregreet]`;
//! - [`delivery`]: `[delivery]`, `[queue]`, `[[dkim]]`;
//! - [`filters`]: `[content_filter]`, `[[milter]]`;
//! - [`admin`]: `[metrics]`, `[policyd]`;
//! - [`mta_sts`]: `[mta_sts]`, the policy served for our domains;
//! - [`reports`]: `[reports]`, DMARC and TLS-RPT reports sent and received;
//! - [`acme`]: `[acme]`, certificates obtained and renewed by mx6;
//! - [`units`]: durations, sizes and the other value forms;
//! - [`check`], [`error`], [`source`]: whole-file checks in one error style.
//!
//! Every value is checked while it is read, so one pass reports the first bad
//! key with its line; unknown keys are errors, never ignored.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod acme;
pub mod admin;
pub mod check;
pub mod delivery;
pub mod error;
pub mod file;
pub mod filters;
pub mod inbound;
pub mod listener;
pub mod mta_sts;
pub mod reports;
pub mod source;
pub mod tls;
pub mod units;

pub use abuse::*;
pub use acme::{AcmeConfig, Challenge};
pub use admin::*;
pub use delivery::*;
pub use error::{ConfigError, Severity};
pub use file::{system_hostname, Config};
pub use filters::*;
pub use inbound::*;
pub use listener::*;
pub use mta_sts::{MtaStsConfig, StsMode};
pub use reports::ReportsConfig;
pub use tls::TlsConfig;
pub use units::{parse_duration, parse_size};
