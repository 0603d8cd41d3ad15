//! The early-talker test (Postfix postscreen's pregreet, `[pregreet]`): the
//! greeting starts with a `220-` line and its last line follows only after
//! `wait`. An SMTP client must wait for the whole greeting (RFC 5321
//! §4.3.1); spamware that talks first gives itself away.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::conn::Conn;

pub enum Pregreet {
    /// Waited quietly.
    Quiet,
    /// Sent these bytes before the greeting ended.
    Talked(Vec<u8>),
    /// Went away.
    Gone,
}

/// Send the first greeting line and listen for `wait`.
pub async fn listen<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, hostname: &str, wait: Duration) -> Pregreet {
    if conn.write_all(format!("220-{hostname} ESMTP mx6\r\n").as_bytes()).await.is_err() {
        return Pregreet::Gone;
    }
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(wait, conn.read(&mut buf)).await {
        Err(_) => Pregreet::Quiet,
        Ok(Ok(0)) | Ok(Err(_)) => Pregreet::Gone,
        Ok(Ok(n)) => Pregreet::Talked(buf[..n].to_vec()),
    }
}
