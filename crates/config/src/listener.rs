//! How clients reach mx6: `[[listener]]`, `[limits]` and `[submission]`
//! (RFC 6409, RFC 4954 AUTH, RFC 8314 implicit TLS).

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::units::{duration, size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default)]
    pub kind: ListenerKind,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 25: receives mail; STARTTLS offered; no AUTH.
    #[default]
    Smtp,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH, then MAIL.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS, then AUTH, then MAIL.
    Submissions,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

/// Mail submission (RFC 6409) and SMTP AUTH (RFC 4954).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Leave the client's address and HELO name out of the Received header of
    /// authenticated submissions (privacy).
    pub hide_client: bool,
    /// Pause before answering a failed AUTH.
    #[serde(deserialize_with = "duration")]
    pub auth_failure_delay: Duration,
    /// Failed AUTHs from one prefix (IPv6 /64, IPv4 /32) within `auth_failure_window`
    /// before further attempts from it are refused with 454 4.7.0.
    pub auth_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub auth_failure_window: Duration,
}

impl Default for SubmissionConfig {
    fn default() -> Self {
        SubmissionConfig {
            hide_client: false,
            auth_failure_delay: Duration::from_secs(1),
            auth_failures: 5,
            auth_failure_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub sessions: usize,
    #[serde(deserialize_with = "size")]
    pub message_size: usize,
    pub recipients: usize,
    /// Error replies in one session before it is closed with 421.
    pub errors: u32,
    /// A whole command line must arrive within this (RFC 5321 §4.5.3.2.7): a
    /// deadline, not an idle timer.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Each 64 KiB of message content must arrive within this (§4.5.3.2.5),
    /// a minimum rate like Postfix's `smtpd_per_record_deadline`.
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// The whole content of one message must arrive within this.
    #[serde(deserialize_with = "duration")]
    pub data_total_timeout: Duration,
    /// The most one session may last.
    #[serde(deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// Text lines over 998 octets: accepted (up to 64 KiB, broken for onward
    /// SMTP as Postfix's `smtp_line_length_limit` does) or refused (550 5.6.0).
    pub long_lines: LongLines,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongLines {
    #[default]
    Accept,
    Refuse,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            sessions: 10000,
            message_size: 25 << 20,
            recipients: 100,
            errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            data_total_timeout: Duration::from_secs(1800),
            session_timeout: Duration::from_secs(3600),
            long_lines: LongLines::Accept,
        }
    }
}
