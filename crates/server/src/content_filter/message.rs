//! What the content filters work on: the message's origin as the session
//! knows it, the envelope and message they may change, and their verdict.

use std::net::IpAddr;

use mx6_smtp::reply::Reply;

/// What the session knows about the message's origin.
pub struct Origin<'a> {
    pub queue_id: &'a str,
    pub hostname: &'a str,
    pub client: IpAddr,
    pub client_port: u16,
    /// The forward-confirmed PTR name.
    pub client_name: Option<&'a str>,
    pub helo: &'a str,
    pub auth: Option<&'a str>,
    pub tls: Option<&'a str>,
}

/// The envelope and message the filters work on; they may change all three.
#[derive(Debug, Clone)]
pub struct Message {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    /// Deliver into the Junk folder (spam at or above `mark_score`).
    pub junk: bool,
    /// A milter quarantined it: keep it on hold with this reason.
    pub hold: Option<String>,
}

pub enum Verdict {
    Deliver(Message),
    Refuse { reply: Reply, reason: &'static str, by: String },
    Discard { by: String },
}
