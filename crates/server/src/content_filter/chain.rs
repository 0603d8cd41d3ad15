//! The content-filter chain at end of data, before the 250: the session's
//! `[[milter]]`s in order (their end-of-message steps,
//! [`crate::content_filter::milter`]), then SpamAssassin's spamd
//! (`[content_filter]`). They see the message as it will be stored — with our
//! Received, Authentication-Results and `X-Mx6-Client` headers — and their
//! verdicts decide whether it is refused, discarded, held, marked as spam, or
//! delivered with their changes.

use mx6_config::{ContentFilterConfig, MilterConfig};

use crate::admin::metrics::Metrics;
use crate::content_filter::message::{Message, Origin, Verdict};
use crate::content_filter::milter::{Milters, Outcome};

pub struct Filters {
    spamd: ContentFilterConfig,
    pub milters: Vec<MilterConfig>,
}

impl Filters {
    pub fn new(spamd: &ContentFilterConfig, milters: &[MilterConfig]) -> Filters {
        Filters { spamd: spamd.clone(), milters: milters.to_vec() }
    }

    pub fn active(&self) -> bool {
        self.spamd.spamd.is_some() || !self.milters.is_empty()
    }

    pub async fn run(&self, o: &Origin<'_>, milters: Option<&mut Milters>, mut m: Message, metrics: &Metrics) -> Verdict {
        if let Some(milters) = milters {
            match milters.message(&mut m).await {
                Outcome::Continue => {}
                Outcome::Refuse { reply, reason, by } => return Verdict::Refuse { reply, reason, by },
                Outcome::Discard { by } => return Verdict::Discard { by },
            }
        }
        if let Some(addr) = &self.spamd.spamd {
            return crate::content_filter::spamd::filter(&self.spamd, addr, o, m, metrics).await;
        }
        Verdict::Deliver(m)
    }
}
