//! Queue operations written once, for the running queue manager and for
//! `mx6 queue` on a stopped server: which outcomes a deletion records, the
//! done flags of a recovered message, and list/show/hold/release/delete on a
//! spool no server is running on.

use std::path::{Path, PathBuf};

use crate::donelog::{DoneEntry, DoneStatus};
use crate::listing::{listed, Listed};
use crate::spool::{self, Recovered, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}: no such message in the queue")]
    NotFound(String),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What an operator does to queued messages (`mx6 queue hold|release|delete|flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Hold,
    Release,
    /// Remove without a bounce.
    Delete,
    /// Try now what is waiting for its next attempt.
    Flush,
}

/// The outcomes that remove every open recipient of a message (`mx6 queue
/// delete`, no bounce); the last one releases its segment.
pub fn deletion(id: &str, done: &[bool], segment: u64) -> Vec<DoneEntry> {
    let open: Vec<usize> = (0..done.len()).filter(|&i| !done[i]).collect();
    let n = open.len();
    open.into_iter()
        .enumerate()
        .map(|(k, i)| DoneEntry { id: id.to_string(), rcpt: i, status: DoneStatus::Deleted, release: (k + 1 == n).then_some(segment) })
        .collect()
}

/// Per recipient: already done?
pub fn done_flags(r: &Recovered) -> Vec<bool> {
    let mut done = vec![false; r.nrcpt];
    for &i in &r.done {
        if let Some(d) = done.get_mut(i) {
            *d = true;
        }
    }
    done
}

/// The spool of a server that is not running.
pub struct Stopped {
    dir: PathBuf,
}

/// What a stopped server cannot know.
const NOT_RECORDED: &str = "(not recorded while the server is stopped)";

impl Stopped {
    pub fn new(spool_dir: &Path) -> Stopped {
        Stopped { dir: spool_dir.to_path_buf() }
    }

    fn find(&self, id: &str) -> Result<Recovered, OpsError> {
        spool::inspect(&self.dir)?.into_iter().find(|r| r.id == id).ok_or_else(|| OpsError::NotFound(id.to_string()))
    }

    fn listed(&self, r: &Recovered, holds: &std::collections::HashSet<String>) -> Result<Listed, OpsError> {
        let msg = spool::read_envelope(&self.dir, &r.location)?;
        Ok(listed(&msg, &done_flags(r), 0, None, NOT_RECORDED, holds.contains(&r.id), r.warned))
    }

    pub fn list(&self) -> Result<Vec<Listed>, OpsError> {
        let holds = crate::holds::read(&self.dir);
        let mut v: Vec<Listed> = spool::inspect(&self.dir)?.iter().map(|r| self.listed(r, &holds)).collect::<Result<_, _>>()?;
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// The message and its header section.
    pub fn show(&self, id: &str) -> Result<(Listed, String), OpsError> {
        let r = self.find(id)?;
        let body = spool::read_body(&self.dir, &r.location)?;
        let headers = String::from_utf8_lossy(mx6_message::header_section(&body)).into_owned();
        Ok((self.listed(&r, &crate::holds::read(&self.dir))?, headers))
    }

    /// Hold (`true`) or release (`false`) a message.
    pub fn hold(&self, id: &str, on: bool) -> Result<(), OpsError> {
        self.find(id)?;
        let mut h = crate::holds::read(&self.dir);
        if on {
            h.insert(id.to_string());
        } else {
            h.remove(id);
        }
        Ok(crate::holds::write(&self.dir, &h)?)
    }

    /// Remove a message without a bounce: its open recipients are recorded
    /// as deleted in the done-log (the caller holds the data_dir lock).
    pub fn delete(&self, id: &str) -> Result<(), OpsError> {
        let r = self.find(id)?;
        let entries = deletion(id, &done_flags(&r), r.location.segment);
        Ok(spool::append_done(&self.dir, &entries)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{QueuedMessage, Recipient};

    fn msg(id: &str) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            from: "a@example.org".into(),
            rcpts: (0..3).map(|i| Recipient { address: format!("u{i}@x.test"), local: None, ..Default::default() }).collect(),
            received: 0,
            client: "::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
            ..Default::default()
        }
    }

    #[test]
    fn deletion_covers_open_recipients_and_releases_once() {
        let e = deletion("q", &[false, true, false], 7);
        assert_eq!(e.iter().map(|e| (e.rcpt, e.release)).collect::<Vec<_>>(), [(0, None), (2, Some(7))]);
        assert!(e.iter().all(|e| e.status == DoneStatus::Deleted));
        assert!(deletion("q", &[true], 7).is_empty());
    }

    #[test]
    fn stopped_spool_list_show_hold_delete() {
        let dir = std::env::temp_dir().join(format!("mx6-ops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        {
            let (h, _) = spool::open(&dir, spool::Options::for_dir(&dir)).unwrap();
            for id in ["00000000000000a1", "00000000000000b2"] {
                let body = std::sync::Arc::new(format!("Subject: {id}\r\n\r\nbody\r\n").into_bytes());
                rt.block_on(h.append(&msg(id), body)).unwrap();
            }
        }
        let s = Stopped::new(&dir);
        assert_eq!(s.list().unwrap().len(), 2);
        let (m, headers) = s.show("00000000000000b2").unwrap();
        assert_eq!((m.id.as_str(), m.state.as_str(), headers.as_str()), ("00000000000000b2", "active", "Subject: 00000000000000b2\r\n"));
        s.hold("00000000000000a1", true).unwrap();
        assert_eq!(s.list().unwrap().iter().find(|m| m.id == "00000000000000a1").unwrap().state, "hold");
        assert!(matches!(s.hold("zz", true), Err(OpsError::NotFound(_))));
        s.delete("00000000000000b2").unwrap();
        let left: Vec<String> = s.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(left, ["00000000000000a1"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
