//! Lookups that say whether their answer is DNSSEC-secure, for DANE (RFC
//! 7672 §2.1), in the `trust-ad` model Postfix uses: the question goes to
//! the configured resolvers with the AD and DO bits set (RFC 6840 §5.7), and
//! the AD bit of a validating resolver (unbound on loopback, say) is
//! believed. A SERVFAIL is what a validating resolver answers for a bogus
//! (tampered or expired) signature, so it is reported as [`Secure::Bogus`],
//! never as an insecure answer.
//!
//! Defends against: a spoofed reply (the id and question must match), a
//! truncated one (retried over TCP), a hanging resolver (a timeout per server).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::TLSA;
pub use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The outcome of one DNSSEC-aware lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secure<T> {
    Found {
        records: Vec<T>,
        secure: bool,
    },
    /// NXDOMAIN or no data; `secure`: the denial was validated.
    NotFound {
        secure: bool,
    },
    /// SERVFAIL: a validating resolver saw a bogus answer (or failed).
    Bogus(String),
    /// Timeout, network error, other codes.
    TempFail(String),
}

impl<T> Secure<T> {
    /// Whether the answer (records or denial) was validated.
    pub fn secure(&self) -> bool {
        matches!(self, Secure::Found { secure: true, .. } | Secure::NotFound { secure: true })
    }
}

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// Asks the resolvers `servers` in turn.
#[derive(Debug, Clone)]
pub struct SecureResolver {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl SecureResolver {
    /// The records of `rtype` at `name`, with whether they are secure.
    pub async fn query(&self, name: &str, rtype: RecordType) -> Secure<RData> {
        let Ok(qname) = Name::from_str_relaxed(fqdn(name).as_str()) else { return Secure::NotFound { secure: false } };
        let mut last = Secure::TempFail("no resolver configured".into());
        for server in &self.servers {
            match tokio::time::timeout(self.timeout, ask(*server, &qname, rtype)).await {
                Ok(Ok(m)) => return answer(&m, rtype),
                Ok(Err(e)) => last = Secure::TempFail(format!("{server}: {e}")),
                Err(_) => last = Secure::TempFail(format!("{server}: timed out")),
            }
        }
        last
    }

    /// `_<port>._tcp.<host>` TLSA (RFC 7672 §2.2).
    pub async fn tlsa(&self, host: &str, port: u16) -> Secure<Tlsa> {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        match self.query(&name, RecordType::TLSA).await {
            Secure::Found { records, secure } => {
                let records: Vec<Tlsa> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::TLSA(TLSA { cert_usage, selector, matching, cert_data, .. }) => {
                            Some(Tlsa { usage: cert_usage.into(), selector: selector.into(), matching: matching.into(), data: cert_data })
                        }
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    Secure::NotFound { secure }
                } else {
                    Secure::Found { records, secure }
                }
            }
            Secure::NotFound { secure } => Secure::NotFound { secure },
            Secure::Bogus(e) => Secure::Bogus(e),
            Secure::TempFail(e) => Secure::TempFail(e),
        }
    }
}

fn answer(m: &Message, rtype: RecordType) -> Secure<RData> {
    let secure = m.metadata.authentic_data;
    match m.metadata.response_code {
        ResponseCode::NoError => {
            let records: Vec<RData> = m.answers.iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
            if records.is_empty() {
                Secure::NotFound { secure }
            } else {
                Secure::Found { records, secure }
            }
        }
        ResponseCode::NXDomain => Secure::NotFound { secure },
        ResponseCode::ServFail => Secure::Bogus("SERVFAIL".into()),
        c => Secure::TempFail(format!("{c}")),
    }
}

async fn ask(server: SocketAddr, name: &Name, rtype: RecordType) -> std::io::Result<Message> {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(1232);
    q.set_edns(edns);
    q.add_query(Query::query(name.clone(), rtype));
    let bytes = q.to_vec().map_err(std::io::Error::other)?;
    let bind: SocketAddr = if server.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let r = loop {
        let n = sock.recv(&mut buf).await?;
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if matches(&q, &m) {
                break m;
            }
        }
    };
    if !r.metadata.truncation {
        return Ok(r);
    }
    // Truncated: the same question over TCP (RFC 7766).
    let mut tcp = tokio::net::TcpStream::connect(server).await?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    tcp.write_all(&framed).await?;
    let len = tcp.read_u16().await? as usize;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    let m = Message::from_vec(&body).map_err(std::io::Error::other)?;
    if !matches(&q, &m) {
        return Err(std::io::Error::other("the answer does not match the question"));
    }
    Ok(m)
}

fn matches(q: &Message, r: &Message) -> bool {
    r.metadata.id == q.metadata.id && r.queries == q.queries
}

/// `name` with its trailing dot.
pub(crate) fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}
