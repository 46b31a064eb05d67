//! What a run did, for the Lambda's log line and for the CLI and tests.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SinkReport {
    pub sink: &'static str,
    pub parts_sent: usize,
    pub batches_published: usize,
    pub batches_expired: usize,
    pub failures: usize,
    pub last_error: Option<String>,
    /// Pending publications left behind by the time budget (they go out next run).
    pub out_of_time: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunReport {
    /// Another run held the cursor: this one closed nothing (it still measured and published).
    pub cursor_busy: bool,
    pub windows_closed: usize,
    pub first_window: Option<DateTime<Utc>>,
    pub last_window: Option<DateTime<Utc>>,
    pub events: u64,
    /// Rows committed after their window had been published, counted in the first window now.
    pub late_events: u64,
    pub datums: usize,
    pub gauges_measured: bool,
    pub gauge_failures: Vec<String>,
    pub sinks: Vec<SinkReport>,
}

impl RunReport {
    /// Whether anything needs attention (a sink failed, a gauge could not be measured).
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.gauge_failures.iter().map(|g| format!("gauge {g} not measured")).collect();
        for s in &self.sinks {
            if s.failures > 0 {
                out.push(format!("{}: {}", s.sink, s.last_error.as_deref().unwrap_or("failed")));
            }
            if s.batches_expired > 0 {
                out.push(format!("{}: {} batches expired unsent", s.sink, s.batches_expired));
            }
        }
        out
    }

    pub fn sink(&self, name: &str) -> Option<&SinkReport> {
        self.sinks.iter().find(|s| s.sink == name)
    }
}
