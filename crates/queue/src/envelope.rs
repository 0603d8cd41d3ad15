//! The envelope of a queued message, as stored (JSON) in its spool record,
//! with the sender's DSN parameters (RFC 3461: RET and ENVID for the message,
//! NOTIFY and ORCPT per recipient), so a restart keeps what was asked.

use mx6_smtp::dsn::{Notify, Orcpt, Ret};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    /// Reverse path without brackets; empty for the null sender.
    pub from: String,
    pub rcpts: Vec<Recipient>,
    /// Arrival, unix seconds.
    pub received: i64,
    pub client: String,
    pub helo: String,
    #[serde(default)]
    pub smtputf8: bool,
    /// Deliver into the Junk folder (DMARC quarantine, spam).
    #[serde(default)]
    pub junk: bool,
    /// DSN `RET`: what a failure notice returns of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// DSN `ENVID`, decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// RFC 8689 `REQUIRETLS`: relayed only over verified TLS to servers
    /// that offer REQUIRETLS, else returned with `5.7.10`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// RFC 8689 §5 `TLS-Required: No`: the recipient domains' TLS policies
    /// (MTA-STS, DANE) are not applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_optional: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// `Some((user, domain))` for local delivery, `None` for onward relay.
    pub local: Option<(String, String)>,
    /// DSN `NOTIFY`; `None` = not given (failures and delays are reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// DSN `ORCPT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    /// The DSN parameters to pass on with this recipient.
    pub fn dsn(&self) -> mx6_smtp::dsn::RcptDsn {
        mx6_smtp::dsn::RcptDsn { notify: self.notify, orcpt: self.orcpt.clone() }
    }
}

impl QueuedMessage {
    /// The DSN parameters to pass on with this message.
    pub fn dsn(&self) -> mx6_smtp::dsn::MailDsn {
        mx6_smtp::dsn::MailDsn { ret: self.ret, envid: self.envid.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_parameters_survive_the_record_and_old_records_still_read() {
        let m = QueuedMessage {
            id: "q".into(),
            from: "a@b.test".into(),
            rcpts: vec![Recipient {
                address: "c@d.test".into(),
                notify: Some(Notify { success: true, failure: false, delay: false }),
                orcpt: Some(Orcpt { addr_type: "rfc822".into(), addr: "C@d.test".into() }),
                ..Default::default()
            }],
            ret: Some(Ret::Hdrs),
            envid: Some("E 1".into()),
            ..Default::default()
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains(r#""notify":"SUCCESS""#) && j.contains(r#""ret":"HDRS""#), "{j}");
        assert_eq!(serde_json::from_str::<QueuedMessage>(&j).unwrap(), m);
        let old = r#"{"id":"q","from":"","rcpts":[{"address":"x@y","local":null}],"received":0,"client":"::1","helo":"h"}"#;
        let o: QueuedMessage = serde_json::from_str(old).unwrap();
        assert_eq!((o.ret, o.rcpts[0].notify), (None, None));
        let plain = QueuedMessage { rcpts: vec![Recipient { address: "x@y".into(), ..Default::default() }], ..Default::default() };
        assert!(!serde_json::to_string(&plain).unwrap().contains("notify"), "no DSN, no extra bytes in the record");
    }
}

/// What recovery needs of an envelope: its id and how many recipients it has.
#[derive(Debug, Deserialize)]
pub struct Head {
    pub id: String,
    pub rcpts: Vec<serde::de::IgnoredAny>,
}
