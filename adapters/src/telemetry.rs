//! Structured logs for CloudWatch: JSON lines, level from `RUST_LOG` (default info).
//! Logs carry ids and codes only; guest PII never reaches a log line by construction
//! (handlers log domain ids and error codes, never request bodies).

use tracing_subscriber::EnvFilter;

pub fn init_json_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .with_target(false)
        .without_time() // CloudWatch stamps every line already
        .try_init();
}

/// Human-readable logs for local runs.
pub fn init_pretty_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .try_init();
}
