//! Local delivery into Maildirs, in batches: one blocking pass writes every
//! file of the batch with group commit ([`mx6_delivery::maildir`]), then one
//! spool write records every outcome. A failure (permissions, disk full) is
//! never a loss: the recipient stays open and is retried on the `[queue]`
//! schedule, and bounces with `4.4.7` once `queue.max_age` has passed.
//! Recipients that go out over SMTP or LMTP move on to [`crate::queue::remote`].

use std::sync::Arc;

use mx6_delivery::maildir;

use mx6_queue::dsn::Action;

use crate::queue::context::{Ctx, Job};
use crate::queue::notice;
use crate::queue::outcome::{local_failure, Fate, Tally};

/// What happened to one job's local recipients in a batch.
struct JobResult {
    job: Job,
    read_error: Option<mx6_queue::SpoolError>,
    outcomes: Vec<(usize, Result<maildir::Outcome, maildir::MaildirError>)>,
}

/// Deliver a batch of jobs.
pub async fn deliver_batch(ctx: &Arc<Ctx>, jobs: Vec<Job>) {
    // Held or deleted while they waited: not delivered now.
    let (parked, jobs): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| ctx.registry.parked(&j.msg.id));
    for job in parked {
        ctx.park(job);
    }
    let ctx2 = ctx.clone();
    let results = match tokio::task::spawn_blocking(move || write_batch(&ctx2, jobs)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "delivery worker failed; messages stay queued until restart");
            return;
        }
    };
    let now = chrono::Utc::now().timestamp();
    let mut entries = Vec::new();
    let mut retries = Vec::new();
    let mut remote = Vec::new();
    let mut corrupt = Vec::new();
    let mut inbox = Vec::new();
    let m = &ctx.metrics;
    for JobResult { mut job, read_error, outcomes } in results {
        let family = job.client_family();
        let age = mx6_queue::id::age(&job.msg.id);
        let expired = ctx.schedule.expired(age);
        let age = age.as_secs_f64();
        if let Some(err) = read_error {
            if matches!(err, mx6_queue::SpoolError::Corrupt { .. }) {
                corrupt.push((job, err));
                continue;
            }
            tracing::error!(queue_id = %job.msg.id, error = %err, "can not read message from the spool; will retry");
            retries.push((job, format!("spool read: {err}"), Vec::new()));
            continue;
        }
        let mut tally = Tally::default();
        for (i, r) in outcomes {
            let to = job.msg.rcpts[i].address.clone();
            let fate = match r {
                Ok(outcome) => {
                    let (path, note) = match &outcome {
                        maildir::Outcome::Delivered(p) => (p, "delivered to maildir"),
                        maildir::Outcome::AlreadyDelivered(p) => (p, "already delivered to maildir before a restart"),
                    };
                    tracing::info!(
                        queue_id = %job.msg.id, from = %format!("<{}>", job.msg.from), to = %to, relay = "local", family,
                        delay = format!("{age:.3}"), status = "sent", file = %path.display(), "{note}"
                    );
                    if matches!(outcome, maildir::Outcome::Delivered(_)) && ctx.report_inboxes.iter().any(|a| a.eq_ignore_ascii_case(&to)) {
                        inbox.push((job.msg.id.clone(), path.clone()));
                    }
                    if notice::wants_success(&job.msg, i) {
                        tally.successes.push(notice::succeeded(&job.msg, i, Action::Delivered, None, None, now));
                    }
                    Fate::Delivered
                }
                Err(e) => {
                    let fate = local_failure(expired, i, &to, &e.to_string());
                    tracing::warn!(
                        queue_id = %job.msg.id, from = %format!("<{}>", job.msg.from), to = %to, relay = "local", family,
                        delay = format!("{age:.3}"), status = fate.labels(expired).0, error = %e, "local delivery failed"
                    );
                    fate
                }
            };
            m.delivery(family, fate.labels(expired).1, age);
            tally.record(&mut job, i, fate);
        }
        let relay_open = (0..job.msg.rcpts.len()).any(|i| !job.done[i] && ctx.destinations.outbound(&job.msg.rcpts[i]));
        if relay_open && tally.deferred.is_none() {
            // Its other recipients go out over SMTP or LMTP in this same pass:
            // their success notice and these are one.
            job.successes.append(&mut tally.successes);
        }
        notice::settle(ctx, &mut job, &mut tally, now).await;
        tally.release_if_finished(&job);
        entries.append(&mut tally.entries);
        match tally.deferred.take() {
            Some(e) => retries.push((job, e, std::mem::take(&mut tally.delays))),
            None if relay_open => remote.push(job),
            None if job.finished() => ctx.registry.finished(&job.msg.id),
            None => {}
        }
    }
    if !entries.is_empty() {
        if let Err(e) = ctx.spool.done(entries).await {
            // The deliveries happened; the record of them did not. After a
            // restart the Maildir file names show they are done.
            tracing::error!(error = %e, "could not record delivery outcomes");
        }
    }
    if !inbox.is_empty() {
        let (dir, metrics) = (ctx.data_dir.clone(), ctx.metrics.clone());
        tokio::task::spawn_blocking(move || crate::queue::report_inbox::read(&dir, &inbox, &metrics));
    }
    for (mut job, error, delays) in retries {
        notice::warn_if_delayed(ctx, &mut job, &delays).await;
        ctx.retry(job, &error);
    }
    for (job, err) in corrupt {
        ctx.corrupt(job, &err).await;
    }
    for job in remote {
        tokio::spawn(crate::queue::remote::attempt(ctx.clone(), job));
    }
}

fn write_batch(ctx: &Ctx, jobs: Vec<Job>) -> Vec<JobResult> {
    let mut bodies: Vec<Result<Arc<Vec<u8>>, mx6_queue::SpoolError>> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        bodies.push(match &job.body {
            Some(b) => Ok(b.clone()),
            None => ctx.spool.read_body(&job.loc).map(Arc::new),
        });
    }
    let mut items = Vec::new();
    let mut owners = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let Ok(body) = &bodies[j] else { continue };
        let arrival = mx6_queue::id::micros(&job.msg.id).unwrap_or(0);
        let check = job.recovered || job.failures > 0;
        for (i, r) in job.msg.rcpts.iter().enumerate() {
            let Some((user, domain)) = &r.local else { continue };
            if job.done[i] || ctx.destinations.outbound(r) {
                continue;
            }
            let mut dir = maildir::mailbox_dir(&ctx.data_dir, &ctx.maildir, user, domain);
            if job.msg.junk {
                // Maildir++ subfolder, as Dovecot and Courier name it.
                dir.push(".Junk");
            }
            items.push(maildir::Item {
                dir,
                name: maildir::file_name(arrival, &job.msg.id, i, &ctx.hostname),
                header: format!("Return-Path: <{}>\r\nDelivered-To: {}\r\n", job.msg.from, r.address).into_bytes(),
                body: body.as_slice(),
                check_existing: check,
            });
            owners.push((j, i));
        }
    }
    let outcomes = maildir::deliver_batch(&items);
    drop(items);
    let mut results: Vec<JobResult> = Vec::with_capacity(jobs.len());
    for (job, body) in jobs.into_iter().zip(bodies) {
        results.push(JobResult { job, read_error: body.err(), outcomes: Vec::new() });
    }
    for ((j, i), o) in owners.into_iter().zip(outcomes) {
        results[j].outcomes.push((i, o));
    }
    results
}
