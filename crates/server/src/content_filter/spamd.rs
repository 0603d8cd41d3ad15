//! SpamAssassin's spamd at end of data (`[content_filter]`): the message is
//! scanned with SPAMC/1.5 `SYMBOLS` ([`mx6_filter::spamd`]); at or above
//! `reject_score` it is refused (550 5.7.1), at or above `mark_score` it is
//! delivered marked into the Junk folder, below it is delivered with the
//! `X-Spam-Status` and `X-Spam-Score` headers. Messages over `max_size` are
//! not scanned; spamd down or too slow follows `on_failure`.

use mx6_config::{ContentFilterConfig, FilterAddress, SpamdFailure};
use mx6_filter::spamd;
use mx6_policy::Family;
use mx6_smtp::reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::metrics::Metrics;
use crate::content_filter::message::{Message, Origin, Verdict};
use crate::net::stream::open;

/// Scan `m` with spamd at `addr` and decide.
pub async fn filter(c: &ContentFilterConfig, addr: &FilterAddress, o: &Origin<'_>, mut m: Message, metrics: &Metrics) -> Verdict {
    let family = Family::of(o.client).as_str();
    let count = |verdict: &str| metrics.content_filter.with_label_values(&[family, "spamd", verdict]).inc();
    if m.data.len() > c.max_size {
        count("skipped_size");
        tracing::info!(queue_id = o.queue_id, client = %o.client, family, size = m.data.len(), max_size = c.max_size, "spamd: not scanned (larger than content_filter.max_size)");
        return Verdict::Deliver(m);
    }
    match tokio::time::timeout(c.timeout, scan(addr, &m.data)).await.unwrap_or_else(|_| Err(format!("no answer within {:?}", c.timeout))) {
        Ok(v) => {
            let tests = v.tests.join(",");
            let verdict = if v.score >= c.reject_score {
                "rejected"
            } else if v.score >= c.mark_score {
                "marked"
            } else {
                "clean"
            };
            count(verdict);
            tracing::info!(queue_id = o.queue_id, client = %o.client, family, score = v.score, tests = %tests, verdict, "spamd");
            if verdict == "rejected" {
                return Verdict::Refuse { reply: reply::spam(v.score), reason: "spam", by: format!("spamd {addr}") };
            }
            let spam = verdict == "marked";
            let mut h = format!(
                "X-Spam-Status: {}, score={:.1} required={:.1} tests={}\r\nX-Spam-Score: {:.1}\r\n",
                if spam { "Yes" } else { "No" },
                v.score,
                c.mark_score,
                fold_tests(&tests),
                v.score
            );
            if spam {
                h.push_str("X-Spam-Flag: YES\r\n");
                m.junk = true;
            }
            m.data.splice(0..0, h.into_bytes());
        }
        Err(e) => {
            count("failed");
            tracing::warn!(queue_id = o.queue_id, client = %o.client, family, spamd = %addr, error = %e, on_failure = ?c.on_failure, "spamd failed");
            if c.on_failure == SpamdFailure::Tempfail {
                return Verdict::Refuse {
                    reply: reply::filter_unavailable(),
                    reason: "content_filter_unavailable",
                    by: format!("spamd {addr}"),
                };
            }
        }
    }
    Verdict::Deliver(m)
}

/// `tests=` wrapped so no header line exceeds 78 characters.
fn fold_tests(tests: &str) -> String {
    let mut out = String::new();
    let mut col = 40;
    for (i, t) in tests.split(',').filter(|t| !t.is_empty()).enumerate() {
        if i > 0 {
            out.push(',');
            col += 1;
        }
        if col + t.len() > 76 {
            out.push_str("\r\n\t");
            col = 8;
        }
        out.push_str(t);
        col += t.len();
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

async fn scan(addr: &FilterAddress, data: &[u8]) -> Result<spamd::Verdict, String> {
    let mut s = open(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(&spamd::request(data)).await.map_err(|e| e.to_string())?;
    s.shutdown().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.take(1 << 20).read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
    spamd::parse(&answer).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_are_folded() {
        let t = (0..20).map(|i| format!("RULE_NUMBER_{i}")).collect::<Vec<_>>().join(",");
        assert!(fold_tests(&t).split("\r\n").all(|l| l.len() < 78));
        assert_eq!(fold_tests(""), "none");
    }
}
