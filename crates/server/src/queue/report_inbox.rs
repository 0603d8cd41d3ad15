//! Reports about our domains, read as they are delivered: a message to one
//! of the `[reports] receive` addresses is delivered to its Maildir like any
//! other, and then parsed ([`mx6_reports::received`]) and kept for
//! `mx6 report summary`. A message that holds no report is only delivered.

use std::path::{Path, PathBuf};

use crate::admin::metrics::Metrics;

/// Read the delivered files (off the runtime: parsing and decompressing).
pub fn read(data_dir: &Path, files: &[(String, PathBuf)], metrics: &Metrics) {
    for (queue_id, file) in files {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(queue_id = %queue_id, file = %file.display(), error = %e, "a delivered report could not be read back");
                continue;
            }
        };
        match mx6_reports::received::parse(&data) {
            Ok(reports) => {
                for r in reports {
                    match mx6_reports::received::store(data_dir, &r) {
                        Ok(path) => {
                            metrics.reports.with_label_values(&[&r.kind, "received"]).inc();
                            tracing::info!(
                                queue_id = %queue_id, kind = %r.kind, reporter = %r.reporter, domain = %r.domain,
                                report_id = %r.report_id, rows = r.rows.len(), file = %path.display(), "report received"
                            );
                        }
                        Err(e) => tracing::error!(queue_id = %queue_id, error = %e, "a received report could not be kept"),
                    }
                }
            }
            Err(e) => {
                metrics.reports.with_label_values(&["unknown", "invalid"]).inc();
                tracing::info!(queue_id = %queue_id, error = %e, "mail to a report address holds no report");
            }
        }
    }
}
