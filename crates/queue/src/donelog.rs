//! The done-log: one line per fact about a queued message, appended with
//! group commit next to the segments.
//!
//! - `<queue id> <recipient index> <status>`: the recipient's final outcome
//!   (`delivered`, `bounced`, `deleted`, `corrupt`);
//! - `<queue id> * deferred`: the message has had a delivery attempt that left
//!   recipients open. A restart then schedules it by its age
//!   ([`crate::schedule::Schedule::after_restart`]) instead of trying it at
//!   once, so a restart does not hammer destinations that are down;
//! - `<queue id> * warned`: its delay warning (RFC 3464 `Action: delayed`)
//!   has been sent, so a restart does not send it again.
//!
//! Only whole lines count: a torn last line was never acknowledged. Lines
//! this version does not understand are skipped, so a flipped bit costs at
//! most one fact (a recipient then gets the message again, never loses it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

/// A recipient's final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneStatus {
    Delivered,
    Bounced,
    Deleted,
    /// The message's record was found corrupt; it cannot be delivered.
    Corrupt,
}

impl DoneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneStatus::Delivered => "delivered",
            DoneStatus::Bounced => "bounced",
            DoneStatus::Deleted => "deleted",
            DoneStatus::Corrupt => "corrupt",
        }
    }

    fn parse(s: &str) -> Option<DoneStatus> {
        Some(match s {
            "delivered" => DoneStatus::Delivered,
            "bounced" => DoneStatus::Bounced,
            "deleted" => DoneStatus::Deleted,
            "corrupt" => DoneStatus::Corrupt,
            _ => return None,
        })
    }
}

/// One recipient's final outcome. `release` names the segment when this was the
/// message's last open recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneEntry {
    pub id: String,
    pub rcpt: usize,
    pub status: DoneStatus,
    pub release: Option<u64>,
}

/// What the done-logs say, compactly (a million deferred messages cost a
/// few MB here, not a few hundred): outcomes by queue id, and the ids that
/// had an attempt that left recipients open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub done: HashMap<u64, BTreeMap<usize, DoneStatus>>,
    pub deferred: HashSet<u64>,
    pub warned: HashSet<u64>,
}

impl Facts {
    /// The recipients of `id` that are done.
    pub fn done_of(&self, id: u64) -> Option<&BTreeMap<usize, DoneStatus>> {
        self.done.get(&id)
    }

    pub fn was_deferred(&self, id: u64) -> bool {
        self.deferred.contains(&id)
    }

    pub fn was_warned(&self, id: u64) -> bool {
        self.warned.contains(&id)
    }
}

/// Append the line of `e` to `out`.
pub fn entry_line(out: &mut String, e: &DoneEntry) {
    let _ = writeln!(out, "{} {} {}", e.id, e.rcpt, e.status.as_str());
}

/// Append the "deferred" mark of `id` to `out`.
pub fn deferred_line(out: &mut String, id: &str) {
    let _ = writeln!(out, "{id} * deferred");
}

/// Append the "warned" mark of `id` to `out`.
pub fn warned_line(out: &mut String, id: &str) {
    let _ = writeln!(out, "{id} * warned");
}

/// Read the whole lines of `text` into `facts`.
pub fn parse(text: &[u8], facts: &mut Facts) {
    let whole = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..=i],
        None => &text[..0],
    };
    for line in String::from_utf8_lossy(whole).lines() {
        let mut p = line.split(' ');
        let (Some(id), Some(i), Some(s), None) = (p.next(), p.next(), p.next(), p.next()) else { continue };
        let Some(id) = crate::id::parse_id(id) else { continue };
        match (i, s) {
            ("*", "deferred") => {
                facts.deferred.insert(id);
            }
            ("*", "warned") => {
                facts.warned.insert(id);
            }
            (i, s) => {
                if let (Ok(i), Some(s)) = (i.parse::<usize>(), DoneStatus::parse(s)) {
                    facts.done.entry(id).or_default().insert(i, s);
                }
            }
        }
    }
}

/// Read a done-log file into `facts` (nothing when it does not exist).
pub fn read(path: &Path, facts: &mut Facts) -> std::io::Result<()> {
    match std::fs::read(path) {
        Ok(t) => {
            parse(&t, facts);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_damage_costs_one_fact() {
        let mut s = String::new();
        entry_line(&mut s, &DoneEntry { id: "0000000000000001".into(), rcpt: 2, status: DoneStatus::Bounced, release: None });
        deferred_line(&mut s, "0000000000000001");
        s.push_str("00000000000000x1 0 delivered\n0000000000000002 0 dXlivered\n0000000000000002 1 deleted\n0000000000000003 0 deliv");
        let mut f = Facts::default();
        parse(s.as_bytes(), &mut f);
        assert_eq!((f.done_of(1).and_then(|d| d.get(&2)), f.was_deferred(1)), (Some(&DoneStatus::Bounced), true));
        assert_eq!(f.done_of(2).unwrap().len(), 1);
        assert!(f.done_of(3).is_none(), "a torn last line was never acknowledged");
        assert_eq!(f.done.len(), 2);
    }
}
