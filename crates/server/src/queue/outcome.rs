//! What one delivery attempt means for each recipient, decided without I/O:
//! delivered (done), failed for good or expired after `queue.max_age` (done,
//! and a bounce; RFC 5321 §4.5.4.1, RFC 3463 `4.4.7`), or deferred (tried
//! again later). A [`Tally`] collects the spool records and the bounce list
//! of one message, for local (Maildir) and remote (SMTP, LMTP) attempts alike.

use mx6_queue::dsn::Failure;
use mx6_queue::{DoneEntry, DoneStatus};
use mx6_smtp::client::RcptResult;

use crate::queue::context::Job;

/// The fate of one recipient after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    Delivered,
    Bounced(Failure),
    /// With the reason, for the registry's last error.
    Deferred(String),
}

impl Fate {
    /// The `status` of the log line and the `result` of the metric.
    pub fn labels(&self, expired: bool) -> (&'static str, &'static str) {
        match self {
            Fate::Delivered => ("sent", "delivered"),
            Fate::Bounced(_) if expired => ("expired", "bounced"),
            Fate::Bounced(_) => ("bounced", "bounced"),
            Fate::Deferred(_) => ("deferred", "deferred"),
        }
    }
}

/// A remote (SMTP or LMTP) answer for `to`; `remote_mta` is the host that gave it.
pub fn remote(r: &RcptResult, expired: bool, to: &str, remote_mta: Option<&str>) -> Fate {
    let reply = r.reply().text();
    match r {
        RcptResult::Delivered(_) => Fate::Delivered,
        RcptResult::Failed(_) => Fate::Bounced(Failure {
            recipient: to.to_string(),
            status: r.reply().status(),
            remote_mta: remote_mta.map(str::to_string),
            diagnostic: reply,
        }),
        RcptResult::Deferred(_) if expired => Fate::Bounced(Failure {
            recipient: to.to_string(),
            status: "4.4.7".into(),
            remote_mta: remote_mta.map(str::to_string),
            diagnostic: format!("delivery time expired; last error: {reply}"),
        }),
        RcptResult::Deferred(_) => Fate::Deferred(reply),
    }
}

/// A local (Maildir) delivery that failed with `error`.
pub fn local_failure(expired: bool, to: &str, error: &str) -> Fate {
    if expired {
        Fate::Bounced(Failure {
            recipient: to.to_string(),
            status: "4.4.7".into(),
            remote_mta: None,
            diagnostic: format!("delivery time expired; local delivery failed: {error}"),
        })
    } else {
        Fate::Deferred(error.to_string())
    }
}

/// The records and bounces of one message's attempt.
#[derive(Debug, Default)]
pub struct Tally {
    /// Outcomes to append to the done-log.
    pub entries: Vec<DoneEntry>,
    /// Recipients to bounce.
    pub failures: Vec<Failure>,
    /// The last temporary error, when any recipient stays open.
    pub deferred: Option<String>,
}

impl Tally {
    /// Record recipient `i`'s fate on `job`.
    pub fn record(&mut self, job: &mut Job, i: usize, fate: Fate) {
        let status = match fate {
            Fate::Delivered => DoneStatus::Delivered,
            Fate::Bounced(f) => {
                self.failures.push(f);
                DoneStatus::Bounced
            }
            Fate::Deferred(e) => {
                self.deferred = Some(e);
                return;
            }
        };
        job.done[i] = true;
        self.entries.push(DoneEntry { id: job.msg.id.clone(), rcpt: i, status, release: None });
    }

    /// The bounce of `failures` could not be queued: those recipients stay
    /// open (and are tried again) instead of being recorded as bounced.
    pub fn unbounce(&mut self, job: &mut Job, failures: &[Failure]) {
        for f in failures {
            let pos = self
                .entries
                .iter()
                .position(|e| e.status == DoneStatus::Bounced && job.msg.rcpts.get(e.rcpt).is_some_and(|r| r.address == f.recipient));
            if let Some(p) = pos {
                let e = self.entries.remove(p);
                job.done[e.rcpt] = false;
            }
        }
        self.deferred = Some("the bounce could not be queued; will try again".into());
    }

    /// When this attempt finished the message, its last record releases the
    /// spool segment.
    pub fn release_if_finished(&mut self, job: &Job) {
        if job.finished() {
            if let Some(last) = self.entries.last_mut() {
                last.release = Some(job.loc.segment);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx6_queue::{Location, QueuedMessage, Recipient};
    use mx6_smtp::client::ServerReply;
    use std::sync::Arc;

    fn job(n: usize) -> Job {
        let msg = QueuedMessage {
            id: "q1".into(),
            from: "a@x.test".into(),
            rcpts: (0..n).map(|i| Recipient { address: format!("r{i}@y.test"), local: None }).collect(),
            received: 0,
            client: "2001:db8::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
        };
        Job::new(msg, Location { segment: 3, offset: 0, env_len: 0, body_len: 0, v1: false }, Arc::new(Vec::new()))
    }

    fn reply(code: u16, text: &str) -> ServerReply {
        ServerReply { code, lines: vec![text.to_string()] }
    }

    #[test]
    fn remote_answers() {
        assert_eq!(remote(&RcptResult::Delivered(reply(250, "2.0.0 ok")), false, "r@y", None), Fate::Delivered);
        let Fate::Bounced(f) = remote(&RcptResult::Failed(reply(550, "5.1.1 no such user")), false, "r@y", Some("mx.y")) else { panic!() };
        assert_eq!((f.status.as_str(), f.remote_mta.as_deref(), f.diagnostic.as_str()), ("5.1.1", Some("mx.y"), "550 5.1.1 no such user"));
        assert!(matches!(remote(&RcptResult::Deferred(reply(451, "4.3.0 later")), false, "r@y", None), Fate::Deferred(_)));
        let Fate::Bounced(f) = remote(&RcptResult::Deferred(reply(451, "4.3.0 later")), true, "r@y", None) else { panic!() };
        assert_eq!(f.status, "4.4.7");
        assert!(f.diagnostic.starts_with("delivery time expired; last error: 451 4.3.0 later"));
        assert_eq!(local_failure(true, "r@y", "disk full").labels(true), ("expired", "bounced"));
        assert_eq!(local_failure(false, "r@y", "disk full"), Fate::Deferred("disk full".into()));
    }

    #[test]
    fn tally_records_and_releases_the_segment_once_finished() {
        let mut j = job(3);
        let mut t = Tally::default();
        t.record(&mut j, 0, Fate::Delivered);
        t.record(&mut j, 1, Fate::Deferred("451 later".into()));
        t.release_if_finished(&j);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.entries[0].release, None);
        assert_eq!(t.deferred.as_deref(), Some("451 later"));
        let mut t = Tally::default();
        t.record(&mut j, 1, Fate::Delivered);
        t.record(&mut j, 2, local_failure(true, "r2@y.test", "gone"));
        t.release_if_finished(&j);
        assert_eq!(
            t.entries.iter().map(|e| (e.rcpt, e.status, e.release)).collect::<Vec<_>>(),
            [(1, DoneStatus::Delivered, None), (2, DoneStatus::Bounced, Some(3))]
        );
        assert_eq!(t.failures.len(), 1);
        assert!(j.finished());
    }

    #[test]
    fn a_bounce_that_cannot_be_queued_leaves_the_recipient_open() {
        let mut j = job(2);
        let mut t = Tally::default();
        t.record(&mut j, 0, Fate::Delivered);
        let f = remote(&RcptResult::Failed(reply(550, "5.1.1 no")), false, "r1@y.test", None);
        t.record(&mut j, 1, f);
        let failures = std::mem::take(&mut t.failures);
        t.unbounce(&mut j, &failures);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(j.done, [true, false]);
        assert!(t.deferred.is_some());
    }
}
