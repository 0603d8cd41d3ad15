//! One queued message as `mx6 queue list` and `mx6 queue show` print it, the
//! same for a running server (over its control socket) and a stopped one.

use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListedRcpt {
    pub address: String,
    pub done: bool,
}

/// `next` is the next attempt (unix seconds), `None` while being delivered.
pub fn listed(msg: &QueuedMessage, done: &[bool], attempts: u32, next: Option<i64>, last_error: &str, held: bool) -> Listed {
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
        recipients: msg.rcpts.iter().zip(done).map(|(r, d)| ListedRcpt { address: r.address.clone(), done: *d }).collect(),
        age_secs: crate::id::age(&msg.id).as_secs(),
        attempts,
        next_attempt: next.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|d| d.to_rfc3339()),
        last_error: last_error.to_string(),
        state: state.into(),
    }
}
