//! One queued message as `mx6 queue list` and `mx6 queue show` print it, the
//! same for a running server (over its control socket) and a stopped one.

use serde::{Deserialize, Serialize};

use mx6_smtp::dsn::{Notify, Ret};

use crate::envelope::QueuedMessage;

/// One message as `mx6 queue list --json` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    pub from: String,
    pub recipients: Vec<ListedRcpt>,
    pub age_secs: u64,
    pub attempts: u32,
    /// RFC 3339, or null while being delivered.
    pub next_attempt: Option<String>,
    pub last_error: String,
    /// active | deferred | hold
    pub state: String,
    /// DSN `RET` (FULL or HDRS), when the sender gave it.
    #[serde(default)]
    pub ret: Option<Ret>,
    /// DSN `ENVID`, decoded.
    #[serde(default)]
    pub envid: Option<String>,
    /// The delay warning has been sent.
    #[serde(default)]
    pub warned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListedRcpt {
    pub address: String,
    pub done: bool,
    /// DSN `NOTIFY` (`NEVER` or a list such as `SUCCESS,FAILURE`), when given.
    #[serde(default)]
    pub notify: Option<Notify>,
    /// DSN `ORCPT` as `type;address`, decoded.
    #[serde(default)]
    pub orcpt: Option<String>,
}

impl Listed {
    /// The DSN parameters of the message as the sender gave them (`RET=HDRS
    /// ENVID=…`), empty when none.
    pub fn dsn_params(&self) -> String {
        mx6_smtp::dsn::MailDsn { ret: self.ret, envid: self.envid.clone() }.params().trim_start().to_string()
    }
}

impl ListedRcpt {
    /// `NOTIFY=… ORCPT=…`, empty when none.
    pub fn dsn_params(&self) -> String {
        let mut v = Vec::new();
        if let Some(n) = self.notify {
            v.push(format!("NOTIFY={}", n.to_param()));
        }
        if let Some(o) = &self.orcpt {
            v.push(format!("ORCPT={o}"));
        }
        v.join(" ")
    }
}

/// `next` is the next attempt (unix seconds), `None` while being delivered.
pub fn listed(msg: &QueuedMessage, done: &[bool], attempts: u32, next: Option<i64>, last_error: &str, held: bool, warned: bool) -> Listed {
    let state = if held {
        "hold"
    } else if next.is_some() {
        "deferred"
    } else {
        "active"
    };
    Listed {
        id: msg.id.clone(),
        from: msg.from.clone(),
        recipients: msg
            .rcpts
            .iter()
            .zip(done)
            .map(|(r, d)| ListedRcpt {
                address: r.address.clone(),
                done: *d,
                notify: r.notify,
                orcpt: r.orcpt.as_ref().map(|o| format!("{};{}", o.addr_type, o.addr)),
            })
            .collect(),
        age_secs: crate::id::age(&msg.id).as_secs(),
        attempts,
        next_attempt: next.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|d| d.to_rfc3339()),
        last_error: last_error.to_string(),
        state: state.into(),
        ret: msg.ret,
        envid: msg.envid.clone(),
        warned,
    }
}
