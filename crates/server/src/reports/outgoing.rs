//! Sending reports. Once a minute, every DMARC period that has ended and
//! every TLS-RPT day before today is closed: its counts are read from the
//! state store, the report built ([`mx6_reports::dmarc_report`],
//! [`mx6_reports::tls_report`]), its destinations found in DNS (the DMARC
//! record's `rua`, with external destinations verified, RFC 7489 §7.1, and
//! `!size` honoured; the `_smtp._tls` record's `rua`, RFC 8460 §3), the
//! report queued as a message from the null sender (DKIM-signed when a key
//! matches `[reports] from`) or POSTed to an `https:` destination, and its
//! counts deleted. `mx6 report flush` closes the open periods too.
//!
//! On Redis several nodes count into the same keys; the first node to take
//! a report's lock (`report-lock|<id>`, 10 minutes) sends it, so each
//! domain gets one report per period. A DNS failure while finding
//! destinations leaves the counts for the next run (for a week).

use std::sync::Arc;
use std::time::Duration;

use mail_auth::report::tlsrpt::TlsReport;
use mail_auth::report::Report;
use mx6_config::ReportsConfig;
use mx6_dns::Lookup;
use mx6_reports::destination::{self, Destination, Uri};
use mx6_reports::evaluation::{self, Period};
use mx6_reports::tls_report::{self, Day};
use mx6_reports::{dmarc_report, period};
use mx6_store::StateStore;
use serde::{Deserialize, Serialize};

use crate::admin::metrics::Metrics;
use crate::checks::state::State;
use crate::queue::manager::QueueManager;

/// A report waiting to be sent, as `mx6 report list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// `dmarc` or `tls`.
    pub kind: String,
    pub id: String,
    pub domain: String,
    /// Unix seconds.
    pub begin: i64,
    pub end: i64,
    /// Rows (DMARC) or counted tuples (TLS-RPT).
    pub rows: usize,
    /// Messages (DMARC) or sessions (TLS-RPT).
    pub count: u64,
    /// Where it goes (`mailto:…`, `https://…`); empty when the domain
    /// publishes none (it is then dropped, not sent).
    pub destinations: Vec<String>,
    /// Why a destination is left out (unverified, too large).
    #[serde(default)]
    pub skipped: Vec<String>,
}

enum Document {
    Dmarc { period: Period, report: Box<Report>, pct: u8 },
    Tls { day: Day, report: TlsReport },
}

impl Document {
    fn text(&self) -> String {
        match self {
            Document::Dmarc { report, pct, .. } => dmarc_report::xml(report, *pct),
            Document::Tls { report, .. } => report.to_json(),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Document::Dmarc { period, .. } => period.rows.iter().map(|r| r.0.clone()).collect(),
            Document::Tls { day, .. } => day.counts.iter().map(|c| c.key.clone()).collect(),
        }
    }
}

/// Where the reports come from and go.
pub struct Reports {
    pub cfg: ReportsConfig,
    pub hostname: String,
    pub state: Arc<State>,
    pub resolver: mx6_dns::Resolver,
    pub queue: QueueManager,
    pub metrics: Arc<Metrics>,
    /// Verifies `https:` destinations (system roots plus `[delivery] ca_file`).
    pub https: Option<Arc<rustls::ClientConfig>>,
}

/// Why reports could not be read or sent.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("state store: {0}")]
    Store(#[from] mx6_store::StoreError),
    #[error("no report {0} is pending")]
    Unknown(String),
}

const LOCK_MS: u64 = 600_000;
const POST_TIMEOUT: Duration = Duration::from_secs(30);

impl Reports {
    fn dmarc_reporter(&self) -> dmarc_report::Reporter {
        dmarc_report::Reporter {
            org_name: self.cfg.organization(&self.hostname),
            email: self.cfg.sender(&self.hostname),
            submitter: self.hostname.clone(),
        }
    }

    fn tls_reporter(&self) -> tls_report::Reporter {
        tls_report::Reporter {
            org_name: self.cfg.organization(&self.hostname),
            contact: self.cfg.sender(&self.hostname),
            submitter: self.hostname.clone(),
        }
    }

    /// The reports due (`open`: also those of the periods still open).
    async fn documents(&self, open: bool) -> Result<Vec<(Pending, Document)>, ReportError> {
        let store = self.state.store();
        let now = mx6_store::now_ms();
        let mut out = Vec::new();
        if self.cfg.dmarc {
            for p in evaluation::periods(store, now, open).await? {
                let closed = store.get(&format!("dmarc-closed|{}|{}|{}", p.domain, p.begin, p.end), now).await?;
                let begin = closed.and_then(|c| c.parse::<u64>().ok()).unwrap_or(p.begin).max(p.begin);
                let mut report = dmarc_report::build(&p, &self.dmarc_reporter(), begin);
                let mut id = dmarc_report::report_id(&p);
                if begin != p.begin {
                    id = format!("{}.{}.{}", p.domain, begin, p.end);
                    report = report.with_report_id(id.clone());
                }
                let pct = p.published.as_ref().map(dmarc_report::pct).unwrap_or(100);
                let pending = Pending {
                    kind: "dmarc".into(),
                    id,
                    domain: p.domain.clone(),
                    begin: begin as i64,
                    end: p.end.min(now / 1000) as i64,
                    rows: p.rows.len(),
                    count: p.rows.iter().map(|r| r.2 as u64).sum(),
                    destinations: Vec::new(),
                    skipped: Vec::new(),
                };
                out.push((pending, Document::Dmarc { period: p, report: Box::new(report), pct }));
            }
        }
        if self.cfg.tls {
            let today = mx6_delivery::tls_record::day(now);
            for d in tls_report::days(store, now, &today, open).await? {
                let sts = match store.get(&format!("sts|{}", d.domain), now).await? {
                    Some(json) => serde_json::from_str::<mx6_delivery::mta_sts::Cached>(&json).ok().map(|c| c.text),
                    None => None,
                };
                let (day_start, end) = d.range();
                let closed = store.get(&format!("tlsrpt-closed|{}|{}", d.domain, d.day), now).await?;
                let start = closed.and_then(|c| c.parse::<i64>().ok()).unwrap_or(day_start).max(day_start);
                let mut report = tls_report::build(&d, &self.tls_reporter(), sts.as_deref());
                let id = if start == day_start { d.report_id() } else { format!("{}.{start}", d.report_id()) };
                report.report_id = id.clone();
                let end = end.min((now / 1000) as i64);
                report.date_range = mail_auth::report::tlsrpt::DateRange::from_timestamps(start, end);
                let pending = Pending {
                    kind: "tls".into(),
                    id,
                    domain: d.domain.clone(),
                    begin: start,
                    end,
                    rows: d.counts.len(),
                    count: d.counts.iter().map(|c| c.sessions as u64).sum(),
                    destinations: Vec::new(),
                    skipped: Vec::new(),
                };
                out.push((pending, Document::Tls { day: d, report }));
            }
        }
        Ok(out)
    }

    /// A TXT lookup: the records, or `None` on a temporary failure.
    async fn txt(&self, name: &str) -> Option<Vec<String>> {
        match self.resolver.txt(name).await {
            Lookup::Found(v) => Some(v),
            Lookup::NotFound => Some(Vec::new()),
            Lookup::TempFail(e) => {
                tracing::warn!(name, error = %e, "a report destination could not be looked up; trying again later");
                None
            }
        }
    }

    /// The destinations of a report, and the ones left out with why; `None`
    /// when DNS failed (try again later).
    async fn destinations(&self, p: &Pending, doc: &Document, size: usize) -> Option<(Vec<Destination>, Vec<String>)> {
        let mut skipped = Vec::new();
        let mut ok = Vec::new();
        match doc {
            Document::Dmarc { period, .. } => {
                let record = period.published.as_ref().map(|p| p.record.clone()).unwrap_or_default();
                for d in destination::parse(destination::tag(&record, "rua").unwrap_or_default()) {
                    let Some(dest_domain) = d.mail_domain().map(str::to_string) else {
                        skipped.push(format!("{}: DMARC reports go by mailto: only", d.as_string()));
                        continue;
                    };
                    if let Some(name) = destination::verification_name(&p.domain, &dest_domain) {
                        if !destination::verified(&self.txt(&name).await?) {
                            skipped.push(format!("{}: {name} does not accept reports for {} (RFC 7489 §7.1)", d.as_string(), p.domain));
                            continue;
                        }
                    }
                    if d.max_size.is_some_and(|m| (size as u64) > m) {
                        skipped.push(format!("{}: the report ({size} bytes) is over its size limit", d.as_string()));
                        continue;
                    }
                    ok.push(d);
                }
            }
            Document::Tls { .. } => {
                let records = self.txt(&format!("_smtp._tls.{}", p.domain)).await?;
                let record = records.iter().find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=tlsrptv1"));
                if let Some(r) = record {
                    ok = destination::parse(destination::tag(r, "rua").unwrap_or_default());
                }
            }
        }
        Some((ok, skipped))
    }

    /// The compressed document and the message that carries it to `to`.
    fn message(&self, doc: &Document, gz: &[u8], to: &[String]) -> Vec<u8> {
        match doc {
            Document::Dmarc { report, .. } => {
                let mid = format!("{}@{}", mx6_queue::id::next(), self.hostname);
                dmarc_report::message(report, &self.dmarc_reporter(), gz.to_vec(), to, &mid)
            }
            Document::Tls { report, day } => tls_report::message(report, &day.domain, &self.tls_reporter(), gz, to),
        }
    }

    /// `mx6 report list`: the reports of this period and any still unsent.
    pub async fn list(&self) -> Result<Vec<Pending>, ReportError> {
        let mut out = Vec::new();
        for (mut p, doc) in self.documents(true).await? {
            let gz = dmarc_report::gzip(doc.text().as_bytes());
            if let Some((dest, skipped)) = self.destinations(&p, &doc, gz.len()).await {
                p.destinations = dest.iter().map(Destination::as_string).collect();
                p.skipped = skipped;
            }
            out.push(p);
        }
        Ok(out)
    }

    /// `mx6 report show ID`: the document as it would be sent.
    pub async fn show(&self, id: &str) -> Result<String, ReportError> {
        let docs = self.documents(true).await?;
        let (_, doc) = docs.into_iter().find(|(p, _)| p.id == id).ok_or_else(|| ReportError::Unknown(id.to_string()))?;
        Ok(match &doc {
            Document::Tls { report, .. } => {
                serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&report.to_json()).unwrap_or_default())
                    .unwrap_or_default()
            }
            Document::Dmarc { .. } => doc.text(),
        })
    }

    /// Send every report due (`open`: close the open periods now); how many
    /// reports were sent to at least one destination.
    pub async fn send(&self, open: bool) -> Result<usize, ReportError> {
        let store = self.state.store();
        let mut sent = 0;
        for (p, doc) in self.documents(open).await? {
            let now = mx6_store::now_ms();
            if store.hit(&format!("report-lock|{}|{}", p.kind, p.id), LOCK_MS, now).await? > 1 {
                continue; // another node has it
            }
            let text = doc.text();
            let gz = dmarc_report::gzip(text.as_bytes());
            let Some((dests, skipped)) = self.destinations(&p, &doc, gz.len()).await else {
                let _ = store.delete(&[format!("report-lock|{}|{}", p.kind, p.id)]).await;
                continue;
            };
            self.metrics.reports.with_label_values(&[&p.kind, "generated"]).inc();
            for s in &skipped {
                tracing::warn!(kind = %p.kind, report_id = %p.id, domain = %p.domain, "report destination left out: {s}");
            }
            let mut delivered = 0;
            let mailto: Vec<String> = dests.iter().filter_map(|d| if let Uri::Mail(a) = &d.uri { Some(a.clone()) } else { None }).collect();
            if !mailto.is_empty() {
                let msg = self.message(&doc, &gz, &mailto);
                match self.queue.queue_generated(&mailto, msg).await {
                    Ok(qid) => {
                        delivered += 1;
                        self.metrics.reports.with_label_values(&[&p.kind, "sent"]).inc_by(mailto.len() as u64);
                        tracing::info!(kind = %p.kind, report_id = %p.id, domain = %p.domain, queue_id = %qid, to = %mailto.join(","), rows = p.rows, "report queued");
                    }
                    Err(e) => {
                        self.metrics.reports.with_label_values(&[&p.kind, "failed"]).inc();
                        tracing::error!(kind = %p.kind, report_id = %p.id, domain = %p.domain, error = %e, "report could not be queued; trying again later");
                        let _ = store.delete(&[format!("report-lock|{}|{}", p.kind, p.id)]).await;
                        continue;
                    }
                }
            }
            for d in dests.iter().filter(|d| matches!(d.uri, Uri::Https(_))) {
                let Some(tls) = self.https.clone() else { continue };
                let url = d.as_string();
                match mx6_delivery::report_post::post(&url, gz.clone(), &self.resolver, tls, POST_TIMEOUT).await {
                    Ok(()) => {
                        delivered += 1;
                        self.metrics.reports.with_label_values(&[&p.kind, "sent"]).inc();
                        tracing::info!(kind = %p.kind, report_id = %p.id, domain = %p.domain, to = %url, "report posted");
                    }
                    Err(e) => {
                        self.metrics.reports.with_label_values(&[&p.kind, "failed"]).inc();
                        tracing::warn!(kind = %p.kind, report_id = %p.id, domain = %p.domain, to = %url, error = %e, "report could not be posted; dropped (RFC 8460 §5.2 leaves retries to the sender's discretion)");
                    }
                }
            }
            if dests.is_empty() {
                self.metrics.reports.with_label_values(&[&p.kind, "skipped"]).inc();
                tracing::info!(kind = %p.kind, report_id = %p.id, domain = %p.domain, "no usable report destination; the report is dropped");
            }
            sent += usize::from(delivered > 0);
            // The period is done: its counts go, and a flushed open period
            // starts again from now.
            store.delete(&doc.keys()).await?;
            let keep = evaluation::KEEP_MS;
            match &doc {
                Document::Dmarc { period, .. } if period.end * 1000 > now => {
                    let key = format!("dmarc-closed|{}|{}|{}", period.domain, period.begin, period.end);
                    store.put(&key, &(now / 1000).to_string(), now, keep).await?;
                }
                Document::Tls { day, .. } if day.range().1 * 1000 > now as i64 => {
                    store.put(&format!("tlsrpt-closed|{}|{}", day.domain, day.day), &(now / 1000).to_string(), now, keep).await?;
                }
                _ => {}
            }
        }
        Ok(sent)
    }

    /// Send the reports of closed periods once a minute until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if !self.cfg.dmarc && !self.cfg.tls {
            return;
        }
        tracing::info!(interval = ?self.cfg.interval, dmarc = self.cfg.dmarc, tls = self.cfg.tls, "reports on");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.send(false).await {
                tracing::warn!(error = %e, "reports could not be sent; trying again in a minute");
            }
        }
    }
}

/// The reporting interval in seconds, for [`evaluation::record`].
pub fn interval(cfg: &ReportsConfig) -> u64 {
    let s = cfg.interval.as_secs();
    if period::valid(s) {
        s
    } else {
        period::DAY
    }
}
