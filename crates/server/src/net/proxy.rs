//! PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): when a listener sets
//! `proxy_protocol = true`, the connection must start with a header that names
//! the real client; that address is used everywhere instead of the peer's.
//!
//! Defends against: a missing, malformed or oversized header (the connection is
//! dropped without a reply), a header that never completes (10 s limit).

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// v1 headers are at most 107 octets; v2 with TLVs can be longer.
const MAX_HEADER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no valid PROXY header")]
    Invalid,
    #[error("PROXY header timed out")]
    Timeout,
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the header and nothing after it (it is peeked first, then exactly its
/// length is consumed), so a TLS ClientHello behind it stays in the socket.
/// Returns the client address it carries, or the peer's for `LOCAL`/`UNKNOWN`
/// as the spec says.
pub async fn read_header(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let fut = async {
        let mut buf = vec![0u8; MAX_HEADER];
        let mut last = 0;
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(ProxyError::Closed);
            }
            if let Some((addr, len)) = parse(&buf[..n], peer)? {
                stream.read_exact(&mut buf[..len]).await?;
                return Ok(addr);
            }
            if n >= MAX_HEADER {
                return Err(ProxyError::Invalid);
            }
            if n == last {
                // Nothing new yet: peek would return at once; wait a little.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last = n;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.map_err(|_| ProxyError::Timeout)?
}

/// The client address and the header's length; `Ok(None)`: need more bytes.
pub fn parse(buf: &[u8], peer: SocketAddr) -> Result<Option<(SocketAddr, usize)>, ProxyError> {
    let header = HeaderResult::parse(buf);
    if header.is_incomplete() {
        return Ok(None);
    }
    let (addr, len) = match header {
        HeaderResult::V1(Ok(h)) => {
            let a = match h.addresses {
                v1::Addresses::Tcp4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                v1::Addresses::Tcp6(a) => SocketAddr::new(a.source_address.into(), a.source_port),
                v1::Addresses::Unknown => peer,
            };
            (a, h.header.len())
        }
        HeaderResult::V2(Ok(h)) => {
            let a = match (h.command, h.addresses) {
                (v2::Command::Local, _) => peer,
                (_, v2::Addresses::IPv4(a)) => SocketAddr::new(a.source_address.into(), a.source_port),
                (_, v2::Addresses::IPv6(a)) => SocketAddr::new(a.source_address.into(), a.source_port),
                _ => return Err(ProxyError::Invalid),
            };
            (a, h.len())
        }
        _ => return Err(ProxyError::Invalid),
    };
    Ok(Some((addr, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        let peer: SocketAddr = "[::1]:9".parse().unwrap();
        let buf = b"PROXY TCP6 2001:db8::7 ::1 40000 25\r\nEHLO x\r\n";
        let (a, len) = parse(buf, peer).unwrap().unwrap();
        assert_eq!(a, "[2001:db8::7]:40000".parse().unwrap());
        assert_eq!(&buf[len..], b"EHLO x\r\n");
        assert!(parse(b"PROXY TCP4 192.0.2.1 127.0", peer).unwrap().is_none());
        assert!(parse(b"EHLO x\r\n", peer).is_err());
        let mut v2h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2h.extend_from_slice(&[192, 0, 2, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 25]);
        let (a, len) = parse(&v2h, peer).unwrap().unwrap();
        assert_eq!(a, "192.0.2.9:40000".parse().unwrap());
        assert!(v2h[len..].is_empty());
    }
}
