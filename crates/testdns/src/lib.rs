//! A small authoritative DNS server for tests, on loopback UDP and TCP.
//!
//! Zones are text, one record per line: `owner TYPE data`, with types A, AAAA,
//! MX (`10 host`), TXT (one or more `"strings"`, or bare text), PTR, CNAME, and
//! two behaviours: `owner TIMEOUT` (the query is never answered) and
//! `owner SERVFAIL`. An owner that is an IP address stands for its reverse name,
//! so `2001:db8::1 PTR mail.example.` works. Names compare without case.
//! Unknown names get NXDOMAIN; known names without the asked type get an empty
//! NOERROR answer (also for empty non-terminals, RFC 8020).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

#[derive(Debug, Clone)]
enum Entry {
    Data(RData),
    Timeout,
    ServFail,
}

/// Records by lower-cased owner name without the trailing dot.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    records: Vec<(String, Entry)>,
}

fn key(name: &str) -> String {
    let n = name.trim().trim_end_matches('.');
    match IpAddr::from_str(n) {
        Ok(ip) => reverse(ip),
        Err(_) => n.to_ascii_lowercase(),
    }
}

fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

fn name(n: &str) -> Name {
    try_name(n).unwrap_or_else(|| panic!("bad name {n}"))
}

fn try_name(n: &str) -> Option<Name> {
    let n = n.trim_end_matches('.');
    Name::from_str(&format!("{n}.")).ok()
}

/// Split TXT data into its quoted strings (bare text is one string).
fn txt_strings(data: &str) -> Vec<Vec<u8>> {
    let data = data.trim();
    if !data.starts_with('"') {
        return vec![data.as_bytes().to_vec()];
    }
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut inq = false;
    let mut esc = false;
    for b in data.bytes() {
        match (inq, esc, b) {
            (true, true, _) => {
                cur.push(b);
                esc = false;
            }
            (true, false, b'\\') => esc = true,
            (true, false, b'"') => {
                out.push(std::mem::take(&mut cur));
                inq = false;
            }
            (true, false, _) => cur.push(b),
            (false, _, b'"') => inq = true,
            _ => {}
        }
    }
    out
}

impl Zone {
    pub fn parse(text: &str) -> Zone {
        let mut z = Zone::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(';') && !l.starts_with('#')) {
            let mut parts = line.splitn(3, char::is_whitespace);
            let owner = parts.next().unwrap_or_default();
            let rtype = parts.next().unwrap_or_default().to_ascii_uppercase();
            let data = parts.next().unwrap_or_default().trim();
            z.add(owner, &rtype, data);
        }
        z
    }

    /// Add one record (`rtype` as in the text form).
    pub fn add(&mut self, owner: &str, rtype: &str, data: &str) {
        assert!(self.try_add(owner, rtype, data), "test zone: bad record {owner} {rtype} {data}");
    }

    /// Add one record; false when a name in it is not a valid DNS name.
    pub fn try_add(&mut self, owner: &str, rtype: &str, data: &str) -> bool {
        if try_name(&key(owner)).is_none() {
            return false;
        }
        let target = |d: &str| try_name(d.trim());
        let e = match rtype {
            "A" => match data.parse() {
                Ok(a) => Entry::Data(RData::A(A(a))),
                Err(_) => return false,
            },
            "AAAA" => match data.parse() {
                Ok(a) => Entry::Data(RData::AAAA(AAAA(a))),
                Err(_) => return false,
            },
            "MX" => {
                let (p, h) = data.split_once(char::is_whitespace).unwrap_or(("10", data));
                let Some(h) = target(h) else { return false };
                Entry::Data(RData::MX(MX::new(p.parse().unwrap_or(10), h)))
            }
            "TXT" => {
                let s = txt_strings(data);
                Entry::Data(RData::TXT(TXT::from_bytes(s.iter().map(|v| v.as_slice()).collect())))
            }
            "PTR" => match target(data) {
                Some(t) => Entry::Data(RData::PTR(PTR(t))),
                None => return false,
            },
            "CNAME" => match target(data) {
                Some(t) => Entry::Data(RData::CNAME(CNAME(t))),
                None => return false,
            },
            "TIMEOUT" => Entry::Timeout,
            "SERVFAIL" => Entry::ServFail,
            _ => return false,
        };
        self.records.push((key(owner), e));
        true
    }

    /// Answer one query: records, or an rcode, or `None` to stay silent.
    fn answer(&self, qname: &str, qtype: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let mut answers = Vec::new();
        let mut current = qname.to_string();
        for _ in 0..8 {
            let here: Vec<&Entry> = self.records.iter().filter(|(k, _)| *k == current).map(|(_, e)| e).collect();
            // TIMEOUT stands for the types the owner has no data of (the
            // convention of the RFC 7208 suite's zone data).
            let has_type = here.iter().any(|e| matches!(e, Entry::Data(d) if d.record_type() == qtype));
            if !has_type && here.iter().any(|e| matches!(e, Entry::Timeout)) {
                return None;
            }
            if here.iter().any(|e| matches!(e, Entry::ServFail)) {
                return Some((ResponseCode::ServFail, answers));
            }
            let cname = here.iter().find_map(|e| match e {
                Entry::Data(RData::CNAME(c)) if qtype != RecordType::CNAME => Some(c.0.clone()),
                _ => None,
            });
            if let Some(target) = cname {
                answers.push(Record::from_rdata(name(&current), 60, RData::CNAME(CNAME(target.clone()))));
                current = key(&target.to_ascii());
                continue;
            }
            for e in &here {
                if let Entry::Data(d) = e {
                    if d.record_type() == qtype {
                        answers.push(Record::from_rdata(name(&current), 60, d.clone()));
                    }
                }
            }
            let exists = !here.is_empty() || self.records.iter().any(|(k, _)| k.ends_with(&format!(".{current}")));
            return Some((if exists || !answers.is_empty() { ResponseCode::NoError } else { ResponseCode::NXDomain }, answers));
        }
        Some((ResponseCode::ServFail, answers))
    }
}

fn respond(zone: &RwLock<Zone>, packet: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(packet).ok()?;
    let query = q.queries.first()?.clone();
    let qname = key(&query.name.to_ascii());
    let (rcode, answers) = zone.read().ok()?.answer(&qname, query.query_type)?;
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.add_query(query);
    m.insert_answers(answers);
    m.to_vec().ok()
}

/// A running server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<RwLock<Zone>>,
    stop: Arc<AtomicBool>,
}

impl TestDns {
    /// Serve `zone` on 127.0.0.1, UDP and TCP on the same port.
    pub fn start(zone: Zone) -> TestDns {
        TestDns::start_on(zone, 0)
    }

    /// Serve on 127.0.0.1:`port` (0 = any free port).
    pub fn start_on(zone: Zone, port: u16) -> TestDns {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(("127.0.0.1", port)).expect("bind udp");
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().expect("addr")) {
                break (udp, tcp);
            }
            assert_eq!(port, 0, "TCP port {port} is taken");
        };
        let addr = udp.local_addr().expect("addr");
        let zone = Arc::new(RwLock::new(zone));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100))).ok();
        tcp.set_nonblocking(true).ok();
        {
            let (zone, stop) = (zone.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        if let Some(r) = respond(&zone, &buf[..n]) {
                            let _ = udp.send_to(&r, peer);
                        }
                    }
                }
            });
        }
        {
            let (zone, stop) = (zone.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut s, _)) => {
                            let zone = zone.clone();
                            std::thread::spawn(move || {
                                s.set_nonblocking(false).ok();
                                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                                let mut len = [0u8; 2];
                                while s.read_exact(&mut len).is_ok() {
                                    let mut p = vec![0u8; u16::from_be_bytes(len) as usize];
                                    if s.read_exact(&mut p).is_err() {
                                        return;
                                    }
                                    if let Some(r) = respond(&zone, &p) {
                                        let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                        out.extend_from_slice(&r);
                                        if s.write_all(&out).is_err() {
                                            return;
                                        }
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        TestDns { addr, zone, stop }
    }

    /// Replace the zone.
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.write().expect("zone lock") = zone;
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_behaviours() {
        let z = Zone::parse(
            "example.test A 192.0.2.1\nwww.example.test CNAME example.test.\n2001:db8::1 PTR mail.example.test.\n\
             slow.example.test TIMEOUT\nbroken.example.test SERVFAIL\nt.example.test TXT \"v=spf1 \" \"-all\"",
        );
        let (rc, a) = z.answer("www.example.test", RecordType::A).unwrap();
        assert_eq!((rc, a.len()), (ResponseCode::NoError, 2));
        assert_eq!(z.answer("nope.example.test", RecordType::A).unwrap().0, ResponseCode::NXDomain);
        assert_eq!(z.answer("example.test", RecordType::MX).unwrap(), (ResponseCode::NoError, vec![]));
        assert!(z.answer("slow.example.test", RecordType::A).is_none());
        assert_eq!(z.answer("broken.example.test", RecordType::A).unwrap().0, ResponseCode::ServFail);
        assert_eq!(z.answer(&key("2001:db8::1"), RecordType::PTR).unwrap().1.len(), 1);
        let (_, t) = z.answer("t.example.test", RecordType::TXT).unwrap();
        let RData::TXT(txt) = &t[0].data else { panic!() };
        assert_eq!(txt.txt_data.len(), 2);
    }
}
