//! mx6-delivery: getting a queued message to its recipient.
//!
//! - [`maildir`]: local delivery into Maildir folders;
//! - [`remote`]: delivery to other domains (MX, Happy Eyeballs, STARTTLS, relayhost);
//! - [`tls_policy`]: how much TLS a destination gets (none, may, encrypt,
//!   verify; or what its MTA-STS policy asks);
//! - [`dane`]: DANE for SMTP (TLSA records of DNSSEC-secure MX hosts);
//! - [`mta_sts`]: discovering and caching a domain's MTA-STS policy;
//! - [`tls_record`]: every TLS outcome counted for TLS-RPT;
//! - [`trust`]: the trust anchors of verified outbound TLS;
//! - [`mta_sts_fetch`]: fetching a domain's MTA-STS policy file;
//! - [`report_post`]: TLS-RPT reports posted to an https: `rua`;
//! - [`https_client`]: the HTTPS connection those two open.
#![forbid(unsafe_code)]

pub mod dane;
pub mod https_client;
pub mod maildir;
pub mod mta_sts;
pub mod mta_sts_fetch;
pub mod remote;
pub mod report_post;
pub mod tls_policy;
pub mod tls_record;
pub mod trust;
