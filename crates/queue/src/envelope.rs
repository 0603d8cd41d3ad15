//! The envelope of a queued message, as stored (JSON) in its spool record.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// `Some((user, domain))` for local delivery, `None` for onward relay.
    pub local: Option<(String, String)>,
}

/// What recovery needs of an envelope: its id and how many recipients it has.
#[derive(Debug, Deserialize)]
pub struct Head {
    pub id: String,
    pub rcpts: Vec<serde::de::IgnoredAny>,
}
