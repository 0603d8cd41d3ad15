//! The content-filter chain at end of data, before the 250: the `[[milter]]`s
//! in order, then SpamAssassin's spamd (`[content_filter]`). They see the
//! message as it will be stored — with our Received, Authentication-Results
//! and `X-Mx6-Client` headers — and their verdicts decide whether it is
//! refused, discarded, held, marked as spam, or delivered with their changes.

use mx6_config::{ContentFilterConfig, MilterConfig, MilterFailure};
use mx6_policy::Family;
use mx6_smtp::reply;

use crate::admin::metrics::Metrics;
use crate::content_filter::message::{Message, Origin, Verdict};
use crate::content_filter::milter::{converse, Done, MilterError};

pub struct Filters {
    spamd: ContentFilterConfig,
    milters: Vec<MilterConfig>,
}

impl Filters {
    pub fn new(spamd: &ContentFilterConfig, milters: &[MilterConfig]) -> Filters {
        Filters { spamd: spamd.clone(), milters: milters.to_vec() }
    }

    pub fn active(&self) -> bool {
        self.spamd.spamd.is_some() || !self.milters.is_empty()
    }

    pub async fn run(&self, o: &Origin<'_>, mut m: Message, metrics: &Metrics) -> Verdict {
        let family = Family::of(o.client).as_str();
        let count = |filter: &str, verdict: &str| metrics.content_filter.with_label_values(&[family, filter, verdict]).inc();
        for cfg in &self.milters {
            let by = format!("milter {}", cfg.address);
            let r = tokio::time::timeout(cfg.timeout, converse(cfg, o, &m)).await.unwrap_or(Err(MilterError::Timeout(cfg.timeout)));
            match r {
                Ok(Done { verdict, mods, log }) => {
                    count("milter", verdict);
                    tracing::info!(queue_id = o.queue_id, client = %o.client, family, milter = %cfg.address, verdict, changes = %log, "milter");
                    match verdict {
                        "reject" | "tempfail" => {
                            let reply = mods.reply.unwrap_or_else(|| {
                                if verdict == "reject" {
                                    reply::milter_reject()
                                } else {
                                    reply::milter_tempfail()
                                }
                            });
                            let reason = if reply.code >= 500 { "milter_reject" } else { "milter_tempfail" };
                            return Verdict::Refuse { reply, reason, by };
                        }
                        "discard" => return Verdict::Discard { by },
                        _ => {}
                    }
                    mods.apply(&mut m);
                }
                Err(e) => {
                    count("milter", "failed");
                    tracing::warn!(queue_id = o.queue_id, client = %o.client, family, milter = %cfg.address, error = %e, on_failure = ?cfg.on_failure, "milter failed");
                    match cfg.on_failure {
                        MilterFailure::Accept => {}
                        MilterFailure::Tempfail => {
                            return Verdict::Refuse { reply: reply::filter_unavailable(), reason: "content_filter_unavailable", by };
                        }
                        MilterFailure::Reject => return Verdict::Refuse { reply: reply::milter_reject(), reason: "milter_reject", by },
                    }
                }
            }
        }
        if let Some(addr) = &self.spamd.spamd {
            return crate::content_filter::spamd::filter(&self.spamd, addr, o, m, metrics).await;
        }
        Verdict::Deliver(m)
    }
}
