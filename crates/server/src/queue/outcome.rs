//! What one delivery attempt means for each recipient, decided without I/O:
//! delivered (done), failed for good or expired after `queue.max_age` (done,
//! and a bounce; RFC 5321 §4.5.4.1, RFC 3463 `4.4.7`), or deferred (tried
//! again later). A [`Tally`] collects the spool records and the notices due
//! (failures, delays, successes) of one message, for local (Maildir) and
//! remote (SMTP, LMTP) attempts alike.

use mx6_queue::dsn::{Entry, Failure};
use mx6_queue::{DoneEntry, DoneStatus};
use mx6_smtp::client::RcptResult;

use crate::queue::context::Job;

/// The fate of one recipient after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    Delivered,
    Bounced(Failure),
    /// With the reason, for the registry's last error and a delay warning.
    Deferred(Failure),
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

/// A remote (SMTP or LMTP) answer for recipient `rcpt` (`to`); `remote_mta`
/// is the host that gave it.
pub fn remote(r: &RcptResult, expired: bool, rcpt: usize, to: &str, remote_mta: Option<&str>) -> Fate {
    let reply = r.reply().text();
    let problem = |status: String, diagnostic: String, smtp_reply: bool| Failure {
        rcpt,
        recipient: to.to_string(),
        status,
        remote_mta: remote_mta.map(str::to_string),
        diagnostic,
        smtp_reply,
    };
    match r {
        RcptResult::Delivered(_) => Fate::Delivered,
        // Every answer here has the form of an SMTP reply (ours too: "451 4.4.1
        // connect to …"), so its Diagnostic-Code type is `smtp`.
        RcptResult::Failed(_) => Fate::Bounced(problem(r.reply().status(), reply, true)),
        RcptResult::Deferred(_) if expired => {
            Fate::Bounced(problem("4.4.7".into(), format!("delivery time expired; last error: {reply}"), false))
        }
        RcptResult::Deferred(_) => Fate::Deferred(problem(r.reply().status(), reply, true)),
    }
}

/// A local (Maildir) delivery of recipient `rcpt` (`to`) that failed with `error`.
pub fn local_failure(expired: bool, rcpt: usize, to: &str, error: &str) -> Fate {
    let problem = |status: &str, diagnostic: String| Failure {
        rcpt,
        recipient: to.to_string(),
        status: status.into(),
        remote_mta: None,
        diagnostic,
        smtp_reply: false,
    };
    if expired {
        Fate::Bounced(problem("4.4.7", format!("delivery time expired; local delivery failed: {error}")))
    } else {
        Fate::Deferred(problem("4.3.0", error.to_string()))
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
    /// Recipients that stay open, with why (for a delay warning).
    pub delays: Vec<Failure>,
    /// Success notices due, by recipient index.
    pub successes: Vec<(usize, Entry)>,
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
            Fate::Deferred(f) => {
                self.deferred = Some(f.diagnostic.clone());
                self.delays.push(f);
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
            let pos = self.entries.iter().position(|e| e.status == DoneStatus::Bounced && e.rcpt == f.rcpt);
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
            rcpts: (0..n).map(|i| Recipient { address: format!("r{i}@y.test"), local: None, ..Default::default() }).collect(),
            received: 0,
            client: "2001:db8::1".into(),
            helo: "h".into(),
            smtputf8: false,
            junk: false,
            ..Default::default()
        };
        Job::new(msg, Location { segment: 3, offset: 0, env_len: 0, body_len: 0, v1: false }, Arc::new(Vec::new()))
    }

    fn reply(code: u16, text: &str) -> ServerReply {
        ServerReply { code, lines: vec![text.to_string()] }
    }

    #[test]
    fn remote_answers() {
        assert_eq!(remote(&RcptResult::Delivered(reply(250, "2.0.0 ok")), false, 0, "r@y", None), Fate::Delivered);
        let Fate::Bounced(f) = remote(&RcptResult::Failed(reply(550, "5.1.1 no such user")), false, 2, "r@y", Some("mx.y")) else {
            panic!()
        };
        assert_eq!((f.status.as_str(), f.remote_mta.as_deref(), f.diagnostic.as_str()), ("5.1.1", Some("mx.y"), "550 5.1.1 no such user"));
        assert_eq!((f.rcpt, f.smtp_reply), (2, true));
        let Fate::Deferred(d) = remote(&RcptResult::Deferred(reply(451, "4.3.0 later")), false, 0, "r@y", Some("mx.y")) else { panic!() };
        assert_eq!((d.status.as_str(), d.diagnostic.as_str()), ("4.3.0", "451 4.3.0 later"));
        let Fate::Bounced(f) = remote(&RcptResult::Deferred(reply(451, "4.3.0 later")), true, 0, "r@y", None) else { panic!() };
        assert_eq!(f.status, "4.4.7");
        assert!(f.diagnostic.starts_with("delivery time expired; last error: 451 4.3.0 later"));
        assert_eq!(local_failure(true, 0, "r@y", "disk full").labels(true), ("expired", "bounced"));
        assert!(matches!(local_failure(false, 0, "r@y", "disk full"), Fate::Deferred(f) if f.diagnostic == "disk full"));
    }

    #[test]
    fn tally_records_and_releases_the_segment_once_finished() {
        let mut j = job(3);
        let mut t = Tally::default();
        t.record(&mut j, 0, Fate::Delivered);
        t.record(&mut j, 1, local_failure(false, 1, "r1@y.test", "451 later"));
        t.release_if_finished(&j);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.entries[0].release, None);
        assert_eq!(t.deferred.as_deref(), Some("451 later"));
        let mut t = Tally::default();
        t.record(&mut j, 1, Fate::Delivered);
        t.record(&mut j, 2, local_failure(true, 2, "r2@y.test", "gone"));
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
        let f = remote(&RcptResult::Failed(reply(550, "5.1.1 no")), false, 1, "r1@y.test", None);
        t.record(&mut j, 1, f);
        let failures = std::mem::take(&mut t.failures);
        t.unbounce(&mut j, &failures);
        assert_eq!(t.entries.len(), 1);
        assert_eq!(j.done, [true, false]);
        assert!(t.deferred.is_some());
    }
}
