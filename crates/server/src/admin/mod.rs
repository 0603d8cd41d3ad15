//! What operators and their monitoring see of a running server.
//!
//! - [`metrics`]: the Prometheus registry, every client metric labelled by family;
//! - [`http`]: `metrics.listen`, serving `/metrics` and `/healthz`.

pub mod http;
pub mod metrics;
