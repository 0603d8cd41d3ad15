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

/// `KEY=value` for each parameter given, values decoded, for people to read.
fn params(given: &[(&str, Option<String>)]) -> String {
    given.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
}

impl Listed {
    /// The message's DSN parameters (`RET=HDRS ENVID=…`), empty when none.
    pub fn dsn_params(&self) -> String {
        params(&[("RET", self.ret.map(|r| r.as_str().to_string())), ("ENVID", self.envid.clone())])
    }
}

impl ListedRcpt {
    /// `NOTIFY=… ORCPT=…`, empty when none.
    pub fn dsn_params(&self) -> String {
        params(&[("NOTIFY", self.notify.map(|n| n.to_param())), ("ORCPT", self.orcpt.clone())])
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
