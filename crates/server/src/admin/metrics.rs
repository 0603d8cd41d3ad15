//! Prometheus metrics (text exposition format 0.0.4), every client- or
//! peer-related one labelled by `family` (`ipv4`/`ipv6`). Label values are
//! bounded: families, listener addresses from the config, stages and reason
//! tokens — never a client address.
//!
//! Local deliveries are labelled with the family of the client that sent the
//! message (a Maildir has no peer). `mx6_delivery_duration_seconds` carries
//! `family` besides the contract's `result`, for latency by family.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    registry: Registry,
    pub connections: IntCounterVec,
    pub sessions_active: IntGaugeVec,
    pub messages_accepted: IntCounterVec,
    pub rejections: IntCounterVec,
    pub greylist: IntCounterVec,
    pub ratelimit_hits: IntCounterVec,
    pub store_failures: IntCounterVec,
    pub content_filter: IntCounterVec,
    pub queue_messages: IntGaugeVec,
    pub delivery_attempts: IntCounterVec,
    pub delivery_tls: IntCounterVec,
    pub delivery_duration: HistogramVec,
    pub spool_corrupt: IntCounter,
    pub spool_write_failures: IntCounterVec,
    pub spool_free_bytes: IntGauge,
    pub dsn: IntCounterVec,
    pub tls_expiry: IntGaugeVec,
    pub reports: IntCounterVec,
    pub store_requests: IntCounterVec,
    /// Live request counts of remote stores, read into `store_requests`
    /// when scraped.
    store_request_sources: std::sync::Mutex<Vec<(&'static str, std::sync::Arc<std::sync::atomic::AtomicU64>)>>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let connections = counter(&r, "mx6_connections_total", "TCP connections accepted.", &["family", "listener"]);
        let sessions_active = gauge(&r, "mx6_sessions_active", "SMTP sessions in progress.", &["family", "listener"]);
        let messages_accepted =
            counter(&r, "mx6_messages_accepted_total", "Messages accepted (250 after end of data).", &["family", "listener"]);
        let rejections = counter(&r, "mx6_rejections_total", "Refusals by stage and reason.", &["family", "stage", "reason"]);
        let greylist = counter(&r, "mx6_greylist_total", "Greylisting decisions.", &["family", "result"]);
        let ratelimit_hits = counter(&r, "mx6_ratelimit_hits_total", "Rate limit hits.", &["family", "limit", "prefix_len"]);
        let store_failures = counter(
            &r,
            "mx6_store_failures_total",
            "State store (greylist, counters, reputation) operations that failed, by backend and on_failure mode.",
            &["backend", "mode"],
        );
        let content_filter = counter(
            &r,
            "mx6_content_filter_total",
            "Content-filter verdicts: spamd (clean, marked, rejected, skipped_size, failed) and milters (continue, accept, reject, tempfail, discard, quarantine, failed).",
            &["family", "filter", "verdict"],
        );
        let queue_messages = gauge(&r, "mx6_queue_messages", "Messages in the queue by state.", &["state"]);
        let delivery_tls = counter(
            &r,
            "mx6_delivery_tls_total",
            "Outbound sessions by the TLS policy that applied and how TLS went (success, plaintext, or an RFC 8460 result type).",
            &["family", "policy", "result"],
        );
        let reports = counter(
            &r,
            "mx6_reports_total",
            "DMARC aggregate and TLS-RPT reports (kind dmarc, tls): generated, sent, failed, skipped (no usable destination); received reports about our domains: received, invalid.",
            &["kind", "result"],
        );
        let store_requests = counter(
            &r,
            "mx6_store_requests_total",
            "Requests sent to a remote state store (Redis); each is one round trip, however many operations it carries.",
            &["backend"],
        );
        let delivery_attempts =
            counter(&r, "mx6_delivery_attempts_total", "Delivery attempts per recipient by result.", &["family", "result"]);
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new("mx6_delivery_duration_seconds", "Time from arrival to the delivery outcome.").buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
            ]),
            &["family", "result"],
        )
        .expect("valid metric");
        r.register(Box::new(delivery_duration.clone())).expect("unique metric");
        let spool_corrupt = IntCounter::new(
            "mx6_spool_corrupt_records_total",
            "Spool records found corrupt (at recovery, or when a body is read); their octets are copied to data_dir/quarantine.",
        )
        .expect("valid metric");
        r.register(Box::new(spool_corrupt.clone())).expect("unique metric");
        let tls_expiry = gauge(
            &r,
            "mx6_tls_certificate_expiry_seconds",
            "When each server certificate in use expires (Unix seconds), by the name it serves; alert when it nears time().",
            &["name"],
        );
        let dsn = counter(
            &r,
            "mx6_dsn_total",
            "Delivery status notices queued to senders, by action (failed, delayed, delivered, relayed; RFC 3464).",
            &["action"],
        );
        let spool_write_failures = counter(
            &r,
            "mx6_spool_write_failures_total",
            "Spool writes (or fsyncs) that failed, by kind: full (no space, 452 4.3.1) or io (451 4.3.0).",
            &["kind"],
        );
        for kind in ["full", "io"] {
            spool_write_failures.with_label_values(&[kind]).inc_by(0);
        }
        let spool_free_bytes = IntGauge::new(
            "mx6_spool_free_bytes",
            "Free octets on the spool's filesystem at the last check (MAIL checks it against queue.min_free).",
        )
        .expect("valid metric");
        r.register(Box::new(spool_free_bytes.clone())).expect("unique metric");
        for state in ["active", "deferred", "hold"] {
            queue_messages.with_label_values(&[state]).set(0);
        }
        // Known outcomes start at zero, so dashboards and alerts see the series
        // before the first event.
        for family in ["ipv4", "ipv6"] {
            for result in ["new", "early", "passed", "allowlisted"] {
                greylist.with_label_values(&[family, result]).inc_by(0);
            }
            for result in ["delivered", "deferred", "bounced"] {
                delivery_attempts.with_label_values(&[family, result]).inc_by(0);
            }
            for verdict in ["clean", "marked", "rejected", "skipped_size", "failed"] {
                content_filter.with_label_values(&[family, "spamd", verdict]).inc_by(0);
            }
            for verdict in ["continue", "accept", "reject", "tempfail", "discard", "quarantine", "failed"] {
                content_filter.with_label_values(&[family, "milter", verdict]).inc_by(0);
            }
        }
        Metrics {
            registry: r,
            connections,
            sessions_active,
            messages_accepted,
            rejections,
            greylist,
            ratelimit_hits,
            store_failures,
            content_filter,
            queue_messages,
            delivery_attempts,
            delivery_tls,
            delivery_duration,
            spool_corrupt,
            spool_write_failures,
            spool_free_bytes,
            dsn,
            tls_expiry,
            reports,
            store_requests,
            store_request_sources: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Report `count`, a remote store's live request count, as
    /// `mx6_store_requests_total{backend}`.
    pub fn watch_store_requests(&self, backend: &'static str, count: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        self.store_requests.with_label_values(&[backend]).inc_by(0);
        self.store_request_sources.lock().unwrap_or_else(|p| p.into_inner()).push((backend, count));
    }

    pub fn reject(&self, family: &str, stage: &str, reason: &str) {
        self.rejections.with_label_values(&[family, stage, reason]).inc();
    }

    /// One recipient's delivery outcome (`delivered`, `deferred`, `bounced`),
    /// `age` seconds after arrival.
    pub fn delivery(&self, family: &str, result: &str, age: f64) {
        self.delivery_attempts.with_label_values(&[family, result]).inc();
        self.delivery_duration.with_label_values(&[family, result]).observe(age);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        for (backend, count) in self.store_request_sources.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let c = self.store_requests.with_label_values(&[backend]);
            c.inc_by(count.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(c.get()));
        }
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_with_family_labels() {
        let m = super::Metrics::new();
        m.connections.with_label_values(&["ipv6", "[::]:25"]).inc();
        m.reject("ipv4", "rcpt", "relay_denied");
        let text = m.render();
        assert!(text.contains("mx6_connections_total{family=\"ipv6\",listener=\"[::]:25\"} 1"), "{text}");
        assert!(text.contains("mx6_rejections_total{family=\"ipv4\",reason=\"relay_denied\",stage=\"rcpt\"} 1"), "{text}");
        assert!(text.contains("mx6_queue_messages{state=\"hold\"} 0"), "{text}");
    }
}
