//! Alert rules (pure data, mirrored by the CloudWatch alarms in `infra/` and the Datadog
//! monitors in `dashboards/datadog/monitors.json`) and a backtest that replays a recorded
//! per-minute series through a rule to count fires and flaps before the rule goes live.
//!
//! Every rule has hysteresis: it fires when `M` of the last `N` minutes are above
//! `fire_above`, and clears only after `minutes_to_clear` consecutive minutes at or below
//! `clear_at_or_below` (≤ `fire_above`). Burn-rate rules additionally need both a long and a short
//! window above the burn factor, so a short blip cannot page and a recovered outage clears fast.

use crate::metrics::{dims, distribution_percentile, names, DatumValue, MetricDatum};
use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Keys of a [`MinuteSample`]'s `metrics` map. Each value is the per-minute figure for the
/// whole environment, exactly as described below; see [`minute_sample_from_data`].
pub mod keys {
    /// `Requests` summed over `Operation=hold` and `Operation=confirm`.
    pub const REQUESTS_HOLD_CONFIRM: &str = "Requests:hold+confirm";
    /// `Errors` (server faults) summed over `Operation=hold` and `Operation=confirm`.
    pub const ERRORS_HOLD_CONFIRM: &str = "Errors:hold+confirm";
    /// `Requests` with `Operation=hold`.
    pub const REQUESTS_HOLD: &str = "Requests:hold";
    /// p95 of `Latency` with `Operation=hold`, in milliseconds.
    pub const LATENCY_P95_HOLD: &str = "Latency.p95:hold";
    /// `DlqDepth` gauge.
    pub const DLQ_DEPTH: &str = "DlqDepth";
    /// `OutboxLagSeconds` gauge.
    pub const OUTBOX_LAG_SECONDS: &str = "OutboxLagSeconds";
    /// `OutboxDeadRows` gauge.
    pub const OUTBOX_DEAD_ROWS: &str = "OutboxDeadRows";
    /// `MetadataRejects` counter.
    pub const METADATA_REJECTS: &str = "MetadataRejects";
    /// `PolicyDriftFailed` counter.
    pub const POLICY_DRIFT_FAILED: &str = "PolicyDriftFailed";
    /// `FlagContradictions` counter.
    pub const FLAG_CONTRADICTIONS: &str = "FlagContradictions";
    /// `EmailsSuppressed` counter.
    pub const EMAILS_SUPPRESSED: &str = "EmailsSuppressed";
    /// `ErrorsByCode` with `ErrorCode=strict_constraint_missing`.
    pub const STRICT_CONSTRAINT_MISSING: &str = "ErrorsByCode:strict_constraint_missing";
}

/// Every key a recorded series may contain.
pub const SERIES_KEYS: &[&str] = &[
    keys::REQUESTS_HOLD_CONFIRM,
    keys::ERRORS_HOLD_CONFIRM,
    keys::REQUESTS_HOLD,
    keys::LATENCY_P95_HOLD,
    keys::DLQ_DEPTH,
    keys::OUTBOX_LAG_SECONDS,
    keys::OUTBOX_DEAD_ROWS,
    keys::METADATA_REJECTS,
    keys::POLICY_DRIFT_FAILED,
    keys::FLAG_CONTRADICTIONS,
    keys::EMAILS_SUPPRESSED,
    keys::STRICT_CONSTRAINT_MISSING,
];

/// Runbook files an alert may link to (written by the lead).
pub const RUNBOOK_FILES: &[&str] =
    &["docs/runbooks/holds.md", "docs/runbooks/email.md", "docs/runbooks/metrics.md", "docs/runbooks/feature-flags.md"];

/// The hold/confirm availability SLO: 99.5 % of requests without a server fault over 30 days.
/// Conflicts and rejections are correct answers and do not count against it.
pub const SLO_TARGET: f64 = 0.995;
pub const SLO_PERIOD_DAYS: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Wake someone up.
    Page,
    /// Next business day.
    Ticket,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Page => "page",
            AlertSeverity::Ticket => "ticket",
        }
    }
}

/// What a rule evaluates each minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Signal {
    /// The minute's value of `key` (gauges, per-minute percentiles). Missing → no data.
    Value { key: &'static str },
    /// Sum of `key` over the trailing `minutes` (current minute included).
    WindowSum { key: &'static str, minutes: u32 },
    /// Multi-window burn rate: `min(burn(long), burn(short))` where
    /// `burn(w) = (Σerrors / Σrequests over w) / (1 - slo)`. Exceeds a factor only when both
    /// windows do. No data while the long window has fewer than `min_requests` requests, so a
    /// quiet night with one failure out of three requests does not page.
    BurnRate {
        errors: &'static str,
        requests: &'static str,
        slo: f64,
        long_minutes: u32,
        short_minutes: u32,
        min_requests: f64,
    },
}

impl Signal {
    /// The series keys the signal reads.
    pub fn keys(&self) -> Vec<&'static str> {
        match *self {
            Signal::Value { key } | Signal::WindowSum { key, .. } => vec![key],
            Signal::BurnRate { errors, requests, .. } => vec![errors, requests],
        }
    }
}

/// A per-minute volume gate: minutes where `key` is below `min` count as "no data" (a p95 of
/// two requests is noise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VolumeGate {
    pub key: &'static str,
    pub min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AlertRule {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: AlertSeverity,
    /// `docs/runbooks/<file>.md#<anchor>`, one of [`RUNBOOK_FILES`].
    pub runbook: &'static str,
    pub signal: Signal,
    /// A minute breaches when the signal is strictly above this.
    pub fire_above: f64,
    /// While firing, a minute recovers when the signal is at or below this (or has no data).
    pub clear_at_or_below: f64,
    /// Fire when at least `datapoints_to_fire` of the last `evaluation_minutes` breach.
    pub datapoints_to_fire: u32,
    pub evaluation_minutes: u32,
    /// Clear after this many consecutive recovering minutes.
    pub minutes_to_clear: u32,
    pub volume_gate: Option<VolumeGate>,
}

const fn burn(long_minutes: u32, short_minutes: u32, min_requests: f64) -> Signal {
    Signal::BurnRate {
        errors: keys::ERRORS_HOLD_CONFIRM,
        requests: keys::REQUESTS_HOLD_CONFIRM,
        slo: SLO_TARGET,
        long_minutes,
        short_minutes,
        min_requests,
    }
}

/// All alert rules. Infra alarms and Datadog monitors mirror these ids and thresholds.
pub static ALERT_RULES: &[AlertRule] = &[
    AlertRule {
        id: "holds-slo-fast-burn",
        title: "Hold/confirm SLO burning 14.4x (1h and 5m)",
        severity: AlertSeverity::Page,
        runbook: "docs/runbooks/holds.md#slo-burn-rate",
        signal: burn(60, 5, 50.0),
        fire_above: 14.4,
        clear_at_or_below: 10.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 5,
        volume_gate: None,
    },
    AlertRule {
        id: "holds-slo-slow-burn",
        title: "Hold/confirm SLO burning 6x (6h and 30m)",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/holds.md#slo-burn-rate",
        signal: burn(360, 30, 100.0),
        fire_above: 6.0,
        clear_at_or_below: 4.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 15,
        volume_gate: None,
    },
    AlertRule {
        id: "hold-latency-p95",
        title: "Hold latency p95 above 800 ms (3 of 5 minutes)",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/holds.md#latency",
        signal: Signal::Value { key: keys::LATENCY_P95_HOLD },
        fire_above: 800.0,
        clear_at_or_below: 600.0,
        datapoints_to_fire: 3,
        evaluation_minutes: 5,
        minutes_to_clear: 5,
        volume_gate: Some(VolumeGate { key: keys::REQUESTS_HOLD, min: 5.0 }),
    },
    AlertRule {
        id: "email-dlq-not-empty",
        title: "Email dead-letter queue not empty (2 of 2 minutes)",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/email.md#dlq-not-empty",
        signal: Signal::Value { key: keys::DLQ_DEPTH },
        fire_above: 0.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 2,
        evaluation_minutes: 2,
        minutes_to_clear: 5,
        volume_gate: None,
    },
    AlertRule {
        id: "outbox-lag",
        title: "Outbox lag above 5 minutes (3 of 5 minutes)",
        severity: AlertSeverity::Page,
        runbook: "docs/runbooks/email.md#outbox-lag",
        signal: Signal::Value { key: keys::OUTBOX_LAG_SECONDS },
        fire_above: 300.0,
        clear_at_or_below: 120.0,
        datapoints_to_fire: 3,
        evaluation_minutes: 5,
        minutes_to_clear: 5,
        volume_gate: None,
    },
    // A dead row is a level, not a blip: it stays until someone revives or discards it, so
    // the first minute that sees one is enough, and it clears once none is left.
    AlertRule {
        id: "outbox-dead-rows",
        title: "Outbox rows the relay gave up on (emails that will not leave)",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/email.md#outbox-dead-rows",
        signal: Signal::Value { key: keys::OUTBOX_DEAD_ROWS },
        fire_above: 0.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 5,
        volume_gate: None,
    },
    AlertRule {
        id: "metadata-rejects-spike",
        title: "More than 10 metadata rejects in 15 minutes",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/holds.md#metadata-rejects",
        signal: Signal::WindowSum { key: keys::METADATA_REJECTS, minutes: 15 },
        fire_above: 10.0,
        clear_at_or_below: 3.0,
        datapoints_to_fire: 2,
        evaluation_minutes: 3,
        minutes_to_clear: 10,
        volume_gate: None,
    },
    AlertRule {
        id: "policy-drift-failures",
        title: "More than 3 policy-drift failures in 15 minutes",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/holds.md#policy-drift",
        signal: Signal::WindowSum { key: keys::POLICY_DRIFT_FAILED, minutes: 15 },
        fire_above: 3.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 15,
        volume_gate: None,
    },
    AlertRule {
        id: "strict-constraint-missing",
        title: "Cold-start check found the no-double-booking constraint missing",
        severity: AlertSeverity::Page,
        runbook: "docs/runbooks/holds.md#strict-verify-failed",
        signal: Signal::WindowSum { key: keys::STRICT_CONSTRAINT_MISSING, minutes: 5 },
        fire_above: 0.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 30,
        volume_gate: None,
    },
    AlertRule {
        id: "flag-contradictions",
        title: "Contradictory feature-flag combination detected",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/feature-flags.md#contradictions",
        signal: Signal::WindowSum { key: keys::FLAG_CONTRADICTIONS, minutes: 5 },
        fire_above: 0.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 30,
        volume_gate: None,
    },
    // Every suppressed send is a guest who may have no email until someone checks SES: a
    // person must look, so the first one opens a ticket (no page: nothing is getting worse).
    AlertRule {
        id: "email-suppressed",
        title: "Emails suppressed after an ambiguous provider outcome",
        severity: AlertSeverity::Ticket,
        runbook: "docs/runbooks/email.md#suppressed-outcome-unknown",
        signal: Signal::WindowSum { key: keys::EMAILS_SUPPRESSED, minutes: 5 },
        fire_above: 0.0,
        clear_at_or_below: 0.0,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 30,
        volume_gate: None,
    },
];

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static AlertRule> {
    ALERT_RULES.iter().find(|r| r.id == id)
}

/// One minute of a recorded series: per-minute sums/gauges keyed by [`keys`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteSample {
    pub minute: DateTime<Utc>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// A state change seen during a backtest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub minute: DateTime<Utc>,
    pub firing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BacktestReport {
    /// Number of times the rule went from OK to firing.
    pub fired: usize,
    /// Fires that came within [`FLAP_WINDOW_MINUTES`] of the previous clear.
    pub flaps: usize,
    pub minutes_firing: usize,
    pub transitions: Vec<Transition>,
}

/// A re-fire this soon after a clear counts as a flap.
pub const FLAP_WINDOW_MINUTES: i64 = 30;

/// Sorts by minute and fills gaps with empty minutes, so windows are counted in real minutes.
fn dense(series: &[MinuteSample]) -> Vec<BTreeMap<String, f64>> {
    let mut sorted: Vec<&MinuteSample> = series.iter().collect();
    sorted.sort_by_key(|s| s.minute);
    let mut out: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut prev: Option<DateTime<Utc>> = None;
    for s in sorted {
        if let Some(p) = prev {
            let gap = (s.minute - p).num_minutes();
            if gap == 0 {
                // Duplicate minute: merge (the loader rejects these; callers may not).
                if let Some(last) = out.last_mut() {
                    last.extend(s.metrics.iter().map(|(k, v)| (k.clone(), *v)));
                }
                continue;
            }
            for _ in 1..gap {
                out.push(BTreeMap::new());
            }
        }
        out.push(s.metrics.clone());
        prev = Some(s.minute);
    }
    out
}

fn window_sum(series: &[BTreeMap<String, f64>], i: usize, key: &str, minutes: u32) -> f64 {
    let from = (i + 1).saturating_sub(minutes.max(1) as usize);
    series[from..=i].iter().filter_map(|m| m.get(key)).sum()
}

/// The signal's value at minute `i`, `None` when there is no data.
fn signal_value(signal: &Signal, series: &[BTreeMap<String, f64>], i: usize) -> Option<f64> {
    match *signal {
        Signal::Value { key } => series[i].get(key).copied(),
        Signal::WindowSum { key, minutes } => Some(window_sum(series, i, key, minutes)),
        Signal::BurnRate { errors, requests, slo, long_minutes, short_minutes, min_requests } => {
            let budget = 1.0 - slo;
            let burn = |minutes| {
                let r = window_sum(series, i, requests, minutes);
                let e = window_sum(series, i, errors, minutes);
                (r, if r > 0.0 { (e / r) / budget } else { 0.0 })
            };
            let (long_requests, long_burn) = burn(long_minutes);
            if long_requests < min_requests || budget <= 0.0 {
                return None;
            }
            let (_, short_burn) = burn(short_minutes);
            Some(long_burn.min(short_burn))
        }
    }
}

/// Per-minute signal values of `rule` over the (gap-filled) series, after the volume gate.
pub fn signal_values(rule: &AlertRule, series: &[MinuteSample]) -> Vec<Option<f64>> {
    let d = dense(series);
    (0..d.len())
        .map(|i| {
            let gated = rule.volume_gate.is_some_and(|g| d[i].get(g.key).copied().unwrap_or(0.0) < g.min);
            if gated {
                None
            } else {
                signal_value(&rule.signal, &d, i)
            }
        })
        .collect()
}

/// Replays `series` through `rule` (see the module docs for the state machine). Gaps between
/// minutes count as minutes without data: not breaching, and recovering.
pub fn backtest(rule: &AlertRule, series: &[MinuteSample]) -> BacktestReport {
    let values = signal_values(rule, series);
    let start = series.iter().map(|s| s.minute).min();
    let mut report = BacktestReport::default();
    let (Some(start), n) = (start, rule.evaluation_minutes.max(1) as usize) else {
        return report;
    };
    let m = (rule.datapoints_to_fire.max(1) as usize).min(n);
    let mut recent: VecDeque<bool> = VecDeque::with_capacity(n);
    let mut firing = false;
    let mut recovering_run = 0u32;
    let mut last_clear: Option<DateTime<Utc>> = None;

    for (i, v) in values.iter().enumerate() {
        let minute = start + Duration::minutes(i as i64);
        recent.push_back(v.is_some_and(|v| v > rule.fire_above));
        if recent.len() > n {
            recent.pop_front();
        }
        if !firing {
            if recent.iter().filter(|b| **b).count() >= m {
                firing = true;
                recovering_run = 0;
                report.fired += 1;
                if last_clear.is_some_and(|c| minute - c <= Duration::minutes(FLAP_WINDOW_MINUTES)) {
                    report.flaps += 1;
                }
                report.transitions.push(Transition { minute, firing: true });
            }
        } else {
            let recovering = v.is_none_or(|v| v <= rule.clear_at_or_below);
            recovering_run = if recovering { recovering_run + 1 } else { 0 };
            if recovering_run >= rule.minutes_to_clear.max(1) {
                firing = false;
                // Start the next M-of-N evaluation from scratch: old breaches are spent.
                recent.clear();
                last_clear = Some(minute);
                report.transitions.push(Transition { minute, firing: false });
            }
        }
        if firing {
            report.minutes_firing += 1;
        }
    }
    report
}

/// Backtests every rule in [`ALERT_RULES`].
pub fn backtest_all(series: &[MinuteSample]) -> Vec<(&'static str, BacktestReport)> {
    ALERT_RULES.iter().map(|r| (r.id, backtest(r, series))).collect()
}

/// Builds a minute's sample from the aggregator's output for that minute (plus gauges), so a
/// series can be recorded from what is actually published.
pub fn minute_sample_from_data(minute: DateTime<Utc>, data: &[MetricDatum]) -> MinuteSample {
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    let mut add = |k: &str, v: f64| *metrics.entry(k.to_owned()).or_default() += v;
    let (mut lat_values, mut lat_counts) = (Vec::new(), Vec::new());
    for d in data {
        let op = d.dimension(dims::OPERATION);
        let hold_confirm = matches!(op, Some("hold" | "confirm"));
        match (&d.value, d.name) {
            (DatumValue::Sum(v), names::REQUESTS) => {
                if hold_confirm {
                    add(keys::REQUESTS_HOLD_CONFIRM, *v);
                }
                if op == Some("hold") {
                    add(keys::REQUESTS_HOLD, *v);
                }
            }
            (DatumValue::Sum(v), names::ERRORS) if hold_confirm => add(keys::ERRORS_HOLD_CONFIRM, *v),
            (DatumValue::Sum(v), names::DLQ_DEPTH) => add(keys::DLQ_DEPTH, *v),
            (DatumValue::Sum(v), names::OUTBOX_LAG_SECONDS) => add(keys::OUTBOX_LAG_SECONDS, *v),
            (DatumValue::Sum(v), names::OUTBOX_DEAD_ROWS) => add(keys::OUTBOX_DEAD_ROWS, *v),
            (DatumValue::Sum(v), names::METADATA_REJECTS) => add(keys::METADATA_REJECTS, *v),
            (DatumValue::Sum(v), names::POLICY_DRIFT_FAILED) => add(keys::POLICY_DRIFT_FAILED, *v),
            (DatumValue::Sum(v), names::FLAG_CONTRADICTIONS) => add(keys::FLAG_CONTRADICTIONS, *v),
            (DatumValue::Sum(v), names::EMAILS_SUPPRESSED) => add(keys::EMAILS_SUPPRESSED, *v),
            (DatumValue::Sum(v), names::ERRORS_BY_CODE)
                if d.dimension(dims::ERROR_CODE) == Some("strict_constraint_missing") =>
            {
                add(keys::STRICT_CONSTRAINT_MISSING, *v)
            }
            (DatumValue::Distribution { values, counts }, names::LATENCY) if op == Some("hold") => {
                lat_values.extend_from_slice(values);
                lat_counts.extend_from_slice(counts);
            }
            _ => {}
        }
    }
    if let Some(p95) = distribution_percentile(&lat_values, &lat_counts, 95.0) {
        metrics.insert(keys::LATENCY_P95_HOLD.to_owned(), p95);
    }
    MinuteSample { minute, metrics }
}

/// Version of the recorded-series file format.
pub const SERIES_FORMAT_VERSION: u32 = 1;

/// The recorded-series file:
/// `{"version": 1, "samples": [{"minute": "2025-11-05T10:00:00Z", "metrics": {"Requests:hold+confirm": 120, …}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesFile {
    pub version: u32,
    pub samples: Vec<MinuteSample>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("invalid series JSON: {0}")]
    Json(String),
    #[error("unsupported series version {0} (expected {SERIES_FORMAT_VERSION})")]
    Version(u32),
    #[error("minute {0} is not aligned to a whole minute")]
    NotAligned(DateTime<Utc>),
    #[error("minute {0} appears twice")]
    Duplicate(DateTime<Utc>),
    #[error("unknown metric key {key:?} at {minute} (known: {known})", known = SERIES_KEYS.join(", "))]
    UnknownKey { minute: DateTime<Utc>, key: String },
    #[error("negative value for {key:?} at {minute}")]
    Negative { minute: DateTime<Utc>, key: String },
}

/// Parses and validates a recorded series; returns the samples sorted by minute. Unknown keys
/// are errors, not ignored: a typo would otherwise make a rule look silent.
pub fn load_series(json: &str) -> Result<Vec<MinuteSample>, SeriesError> {
    let file: SeriesFile = serde_json::from_str(json).map_err(|e| SeriesError::Json(e.to_string()))?;
    if file.version != SERIES_FORMAT_VERSION {
        return Err(SeriesError::Version(file.version));
    }
    let mut samples = file.samples;
    samples.sort_by_key(|s| s.minute);
    for (i, s) in samples.iter().enumerate() {
        if s.minute.second() != 0 || s.minute.nanosecond() != 0 {
            return Err(SeriesError::NotAligned(s.minute));
        }
        if i > 0 && samples[i - 1].minute == s.minute {
            return Err(SeriesError::Duplicate(s.minute));
        }
        for (k, v) in &s.metrics {
            if !SERIES_KEYS.contains(&k.as_str()) {
                return Err(SeriesError::UnknownKey { minute: s.minute, key: k.clone() });
            }
            if *v < 0.0 {
                return Err(SeriesError::Negative { minute: s.minute, key: k.clone() });
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests;
