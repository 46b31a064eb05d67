//! The metric catalogue and the pure aggregation of `observability_events` rows into metric
//! datums for CloudWatch (`PutMetricData`) and Datadog.
//!
//! Rules that keep the metrics safe and cheap (see `docs/metrics.md`):
//! - no restaurant, booking, hold or guest dimension, ever — [`EventRow`] does not even carry
//!   the row's restaurant/booking ids;
//! - every dimension value comes from a fixed list ([`dimension_values`]); anything else is
//!   bucketed to `"other"`;
//! - every row's context is read through the allow-list parser [`EventContext::from_raw`] (the
//!   same one [`crate::events::sanitize_context`] uses), so unknown keys and free text never count.

pub mod references;

use crate::events::{EventContext, EventType, Operation, Outcome};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// CloudWatch namespace of every holdfast metric.
pub const NAMESPACE: &str = "Holdfast";
/// Prefix of every Datadog metric name (`holdfast.<snake_case>`).
pub const DATADOG_PREFIX: &str = "holdfast";

/// Metric names, so code never spells them twice.
pub mod names {
    pub const REQUESTS: &str = "Requests";
    pub const SUCCESSES: &str = "Successes";
    pub const ERRORS: &str = "Errors";
    pub const REJECTIONS: &str = "Rejections";
    pub const CONFLICTS: &str = "Conflicts";
    pub const ERRORS_BY_CODE: &str = "ErrorsByCode";
    pub const LATENCY: &str = "Latency";
    pub const RETRIES: &str = "Retries";
    pub const CUTOFFS: &str = "Cutoffs";
    pub const ASSIGNMENT_SUCCESS_RATE: &str = "AssignmentSuccessRate";
    pub const STRICT_ROLLOUT_PERCENT: &str = "StrictRolloutPercent";
    pub const POLICY_DRIFT_RECOVERED: &str = "PolicyDriftRecovered";
    pub const POLICY_DRIFT_FAILED: &str = "PolicyDriftFailed";
    pub const METADATA_REJECTS: &str = "MetadataRejects";
    pub const EMAILS_SENT: &str = "EmailsSent";
    pub const EMAILS_RETRIED: &str = "EmailsRetried";
    pub const EMAILS_FAILED: &str = "EmailsFailed";
    pub const EMAILS_DEAD_LETTERED: &str = "EmailsDeadLettered";
    pub const EMAILS_SUPPRESSED: &str = "EmailsSuppressed";
    pub const DLQ_DEPTH: &str = "DlqDepth";
    pub const OUTBOX_PENDING: &str = "OutboxPending";
    pub const OUTBOX_LAG_SECONDS: &str = "OutboxLagSeconds";
    pub const OUTBOX_DEAD_ROWS: &str = "OutboxDeadRows";
    pub const FLAG_CONTRADICTIONS: &str = "FlagContradictions";
    pub const FLAG_BREAK_GLASS: &str = "FlagBreakGlass";
    pub const FLAG_REVIEWS_OVERDUE: &str = "FlagReviewsOverdue";
    pub const FLAG_AUTO_REVERTS: &str = "FlagAutoReverts";
    pub const FLAG_AUTO_REVERTS_REFUSED: &str = "FlagAutoRevertsRefused";
}

/// Dimension names.
pub mod dims {
    pub const ENVIRONMENT: &str = "Environment";
    pub const OPERATION: &str = "Operation";
    pub const MODE: &str = "Mode";
    pub const ERROR_CODE: &str = "ErrorCode";
    pub const EMAIL_TYPE: &str = "EmailType";
}

/// CloudWatch standard units used by the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    Percent,
    None,
}

impl Unit {
    /// The CloudWatch `StandardUnit` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Percent => "Percent",
            Unit::None => "None",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MetricKind {
    /// Summed per window; published only when non-zero.
    Counter,
    /// Value/count pairs; percentiles are computed by CloudWatch/Datadog.
    Distribution,
    /// A level measured at publish time.
    Gauge,
}

impl MetricKind {
    /// The Datadog metric type to submit this kind as.
    pub fn datadog_type(self) -> &'static str {
        match self {
            MetricKind::Counter => "count",
            MetricKind::Distribution => "distribution",
            MetricKind::Gauge => "gauge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: Unit,
    pub kind: MetricKind,
    pub dimensions: &'static [&'static str],
    pub description: &'static str,
}

const ENV: &[&str] = &[dims::ENVIRONMENT];
const ENV_OP: &[&str] = &[dims::ENVIRONMENT, dims::OPERATION];
const ENV_EMAIL: &[&str] = &[dims::ENVIRONMENT, dims::EMAIL_TYPE];

const fn def(
    name: &'static str,
    unit: Unit,
    kind: MetricKind,
    dimensions: &'static [&'static str],
    description: &'static str,
) -> MetricDef {
    MetricDef { name, unit, kind, dimensions, description }
}

/// Every metric holdfast publishes. Dashboards, alarms and monitors may reference only these
/// (enforced by a test over `dashboards/` and `infra/template.yaml`).
#[rustfmt::skip]
pub static METRICS: &[MetricDef] = &[
    def(names::REQUESTS, Unit::Count, MetricKind::Counter, ENV_OP,
        "Operations answered (one per request outcome event)."),
    def(names::SUCCESSES, Unit::Count, MetricKind::Counter, ENV_OP,
        "Operations that succeeded."),
    def(names::ERRORS, Unit::Count, MetricKind::Counter, ENV_OP,
        "Server faults (count against the SLO)."),
    def(names::REJECTIONS, Unit::Count, MetricKind::Counter, ENV_OP,
        "Refused requests (4xx other than conflicts)."),
    def(names::CONFLICTS, Unit::Count, MetricKind::Counter, &[dims::ENVIRONMENT, dims::MODE],
        "Hold conflicts: Mode=enforced answered 409, Mode=shadow would have."),
    def(names::ERRORS_BY_CODE, Unit::Count, MetricKind::Counter,
        &[dims::ENVIRONMENT, dims::ERROR_CODE],
        "Non-success outcomes by error code (bucketed to KNOWN_ERROR_CODES)."),
    def(names::LATENCY, Unit::Milliseconds, MetricKind::Distribution, ENV_OP,
        "Operation duration; published as value/count pairs for percentiles."),
    def(names::RETRIES, Unit::Count, MetricKind::Counter, ENV_OP,
        "Executions with attempt > 1."),
    def(names::CUTOFFS, Unit::Count, MetricKind::Counter, ENV_OP,
        "Gave up at the attempt cap (failure with attempt >= max_attempts; dead letters)."),
    def(names::ASSIGNMENT_SUCCESS_RATE, Unit::Percent, MetricKind::Gauge, ENV,
        "hold+confirm: successes / (requests - rejections) * 100."),
    def(names::STRICT_ROLLOUT_PERCENT, Unit::Percent, MetricKind::Gauge, ENV,
        "Current holds.strictConflicts rollout percentage."),
    def(names::POLICY_DRIFT_RECOVERED, Unit::Count, MetricKind::Counter, ENV,
        "Confirms that hit policy drift and recovered by re-quoting."),
    def(names::POLICY_DRIFT_FAILED, Unit::Count, MetricKind::Counter, ENV,
        "Confirms that hit policy drift and gave up after the retry cap."),
    def(names::METADATA_REJECTS, Unit::Count, MetricKind::Counter, ENV,
        "Confirms refused because the hold's metadata was incomplete."),
    def(names::EMAILS_SENT, Unit::Count, MetricKind::Counter, ENV_EMAIL, "Emails sent."),
    def(names::EMAILS_RETRIED, Unit::Count, MetricKind::Counter, ENV_EMAIL,
        "Email attempts that failed transiently and will be retried."),
    def(names::EMAILS_FAILED, Unit::Count, MetricKind::Counter, ENV_EMAIL,
        "Email attempts that failed permanently."),
    def(names::EMAILS_DEAD_LETTERED, Unit::Count, MetricKind::Counter, ENV_EMAIL,
        "Email jobs moved to the dead-letter queue."),
    // Environment only: an alarm watches the total (any suppression needs a person).
    def(names::EMAILS_SUPPRESSED, Unit::Count, MetricKind::Counter, ENV,
        "Email jobs not (re)sent because an attempt may have been delivered (SES outcome unknown); each needs an operator's check."),
    def(names::DLQ_DEPTH, Unit::Count, MetricKind::Gauge, ENV,
        "Messages in the email dead-letter queue."),
    def(names::OUTBOX_PENDING, Unit::Count, MetricKind::Gauge, ENV,
        "Outbox rows not yet published to SQS."),
    def(names::OUTBOX_LAG_SECONDS, Unit::Seconds, MetricKind::Gauge, ENV,
        "Age of the oldest unpublished outbox row."),
    def(names::OUTBOX_DEAD_ROWS, Unit::Count, MetricKind::Gauge, ENV,
        "Outbox rows the relay gave up on (dead_at set): emails that will not leave until revived or discarded."),
    def(names::FLAG_CONTRADICTIONS, Unit::Count, MetricKind::Counter, ENV,
        "Contradictory flag combinations detected."),
    def(names::FLAG_BREAK_GLASS, Unit::Count, MetricKind::Counter, ENV,
        "Kill switches applied by one person alone (break-glass)."),
    def(names::FLAG_REVIEWS_OVERDUE, Unit::Count, MetricKind::Counter, ENV,
        "Break-glass reviews past 24 h unacknowledged, counted by every review sweep (non-zero while any is overdue)."),
    def(names::FLAG_AUTO_REVERTS, Unit::Count, MetricKind::Counter, ENV,
        "Prod flag changes reverted automatically: a burn-rate alarm entered ALARM in their bake window."),
    def(names::FLAG_AUTO_REVERTS_REFUSED, Unit::Count, MetricKind::Counter, ENV,
        "Automatic reverts not written (flag changed again since, or a contradiction): an operator decides."),
];

/// The catalogue entry for `name`, if any.
pub fn metric_def(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// `CamelCase` → `camel_case` (the catalogue has no all-caps acronyms).
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Datadog name of a catalogue metric: `Requests` → `holdfast.requests`,
/// `ErrorsByCode` → `holdfast.errors_by_code`.
pub fn datadog_name(metric: &str) -> String {
    format!("{DATADOG_PREFIX}.{}", snake_case(metric))
}

/// The Datadog tag key of a dimension: `Environment` → `env`, others snake_case.
pub fn datadog_tag_key(dimension: &str) -> String {
    if dimension == dims::ENVIRONMENT {
        "env".to_owned()
    } else {
        snake_case(dimension)
    }
}

/// Value used for anything outside a dimension's fixed list.
pub const OTHER: &str = "other";

/// Conflict modes (dimension `Mode`).
pub const MODES: &[&str] = &["enforced", "shadow"];

/// Email types (dimension `EmailType`); anything else is `other`.
/// Exactly `crate::email::EmailType::ALL` (a test keeps them in step).
pub const EMAIL_TYPES: &[&str] = &[
    "request_received",
    "booking_confirmed",
    "booking_updated",
    "booking_cancelled",
    "reminder",
    "ops_policy_drift",
    "ops_pending_attention",
];

#[cfg(test)]
#[test]
fn email_types_match_the_job_types() {
    let jobs: Vec<&str> = crate::email::EmailType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(EMAIL_TYPES, jobs.as_slice());
}

/// Error codes published as `ErrorCode` values; anything else is `other`.
pub const KNOWN_ERROR_CODES: &[&str] = &[
    "hold_conflict",
    "no_table_available",
    "outside_service_hours",
    "party_too_large",
    "validation_failed",
    "not_found",
    "hold_expired",
    "hold_not_live",
    "metadata_incomplete",
    "policy_drift_exhausted",
    "policy_drift_no_table",
    "idempotency_key_reused",
    "strict_constraint_missing",
    "database_unavailable",
    "serialization_failure",
    "provider_transient",
    "provider_permanent",
    "internal",
];

/// Maps any error code to a bounded `ErrorCode` dimension value.
pub fn bucket_error_code(code: Option<&str>) -> &'static str {
    code.and_then(|c| KNOWN_ERROR_CODES.iter().copied().find(|k| *k == c)).unwrap_or(OTHER)
}

/// Maps any email type to a bounded `EmailType` dimension value.
pub fn bucket_email_type(t: Option<&str>) -> &'static str {
    t.and_then(|c| EMAIL_TYPES.iter().copied().find(|k| *k == c)).unwrap_or(OTHER)
}

fn operation_value(op: Option<Operation>) -> &'static str {
    op.map(Operation::as_str).unwrap_or(OTHER)
}

/// The complete list of values a bounded dimension can take (`None` for `Environment`, which
/// is deployment configuration, not data).
pub fn dimension_values(dimension: &str) -> Option<Vec<&'static str>> {
    let with_other = |xs: &[&'static str]| {
        let mut v = xs.to_vec();
        v.push(OTHER);
        v
    };
    match dimension {
        dims::OPERATION => {
            let ops: Vec<&'static str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
            Some(with_other(&ops))
        }
        dims::MODE => Some(MODES.to_vec()),
        dims::EMAIL_TYPE => Some(with_other(EMAIL_TYPES)),
        dims::ERROR_CODE => Some(with_other(KNOWN_ERROR_CODES)),
        _ => None,
    }
}

/// One `observability_events` row as the aggregator reads it. Restaurant and booking ids are
/// deliberately absent: they must never become dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub source: String,
    pub event_type: String,
    pub context: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DatumValue {
    /// A counter's window sum or a gauge's level.
    Sum(f64),
    /// CloudWatch `Values`/`Counts` (≤ [`MAX_VALUES_PER_DATUM`] pairs).
    Distribution { values: Vec<f64>, counts: Vec<f64> },
}

impl DatumValue {
    /// Number of values this datum carries in a `PutMetricData` call.
    pub fn value_count(&self) -> usize {
        match self {
            DatumValue::Sum(_) => 1,
            DatumValue::Distribution { values, .. } => values.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDatum {
    pub name: &'static str,
    /// Always starts with `Environment`, in catalogue order.
    pub dimensions: Vec<(&'static str, String)>,
    pub unit: Unit,
    /// The window start.
    pub timestamp: DateTime<Utc>,
    pub value: DatumValue,
}

impl MetricDatum {
    /// `key:value` Datadog tags of this datum (`env:prod`, `operation:hold`, …).
    pub fn datadog_tags(&self) -> Vec<String> {
        self.dimensions.iter().map(|(k, v)| format!("{}:{v}", datadog_tag_key(k))).collect()
    }

    /// The dimension value for `name`, if present.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// CloudWatch's cap on distinct values in one datum.
pub const MAX_VALUES_PER_DATUM: usize = 150;
/// Relative width of a latency bucket once values are bucketed (2 % wide, ≤ 1 % error).
const BUCKET_RATIO: f64 = 1.02;

/// Turns raw latencies (ms) into CloudWatch value/count chunks of at most
/// [`MAX_VALUES_PER_DATUM`] pairs each. Exact values are kept while there are at most 150
/// distinct ones; beyond that, values are grouped in log-spaced buckets of ratio 1.02 whose
/// representative `2·lo·hi/(lo+hi)` is within 1 % of every value in the bucket. Still more
/// than 150 buckets → several datums (CloudWatch and Datadog merge them).
pub fn latency_distribution(values_ms: &[u64]) -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut exact: BTreeMap<u64, u64> = BTreeMap::new();
    for v in values_ms {
        *exact.entry(*v).or_default() += 1;
    }
    let pairs: Vec<(f64, f64)> = if exact.len() <= MAX_VALUES_PER_DATUM {
        exact.iter().map(|(v, c)| (*v as f64, *c as f64)).collect()
    } else {
        // Bucket index → count; 0 ms gets its own bucket (log undefined).
        let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
        for (v, c) in &exact {
            let idx = if *v == 0 { -1 } else { ((*v as f64).ln() / BUCKET_RATIO.ln()).floor() as i64 };
            *buckets.entry(idx).or_default() += c;
        }
        buckets
            .iter()
            .map(|(idx, c)| {
                let rep = if *idx < 0 {
                    0.0
                } else {
                    let lo = BUCKET_RATIO.powi(*idx as i32);
                    let hi = lo * BUCKET_RATIO;
                    2.0 * lo * hi / (lo + hi)
                };
                (rep, *c as f64)
            })
            .collect()
    };
    pairs.chunks(MAX_VALUES_PER_DATUM).map(|chunk| chunk.iter().copied().unzip()).collect()
}

/// Nearest-rank percentile (`p` in 0..=100) of value/count pairs; `None` when empty.
pub fn distribution_percentile(values: &[f64], counts: &[f64], p: f64) -> Option<f64> {
    let mut pairs: Vec<(f64, f64)> =
        values.iter().copied().zip(counts.iter().copied()).filter(|(_, c)| *c > 0.0).collect();
    let total: f64 = pairs.iter().map(|(_, c)| c).sum();
    if total <= 0.0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * total).ceil().max(1.0);
    let mut seen = 0.0;
    for (v, c) in &pairs {
        seen += c;
        if seen >= rank {
            return Some(*v);
        }
    }
    pairs.last().map(|(v, _)| *v)
}

type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// Accumulates one window's counters and latencies.
struct Acc<'a> {
    env: &'a str,
    counters: BTreeMap<SeriesKey, f64>,
    latencies: BTreeMap<&'static str, Vec<u64>>,
    assign_requests: u64,
    assign_successes: u64,
    assign_rejections: u64,
}

impl<'a> Acc<'a> {
    fn add(&mut self, name: &'static str, extra: Option<(&'static str, &'static str)>) {
        let mut d = vec![(dims::ENVIRONMENT, self.env.to_owned())];
        if let Some((k, v)) = extra {
            d.push((k, v.to_owned()));
        }
        *self.counters.entry((name, d)).or_default() += 1.0;
    }

    fn add_op(&mut self, name: &'static str, op: &'static str) {
        self.add(name, Some((dims::OPERATION, op)));
    }
}

/// What a request outcome event says about its request, or `None` for other event types.
/// Exactly one of these events is emitted per answered request (see docs/metrics.md).
fn request_outcome(et: EventType, ctx: &EventContext) -> Option<(Option<Operation>, Outcome)> {
    use EventType::*;
    let (default_op, outcome) = match et {
        QuoteCompleted => (Some(Operation::Quote), ctx.outcome.unwrap_or(Outcome::Success)),
        HoldCreated => (Some(Operation::Hold), Outcome::Success),
        HoldConfirmed => (Some(Operation::Confirm), Outcome::Success),
        HoldReleased => (Some(Operation::Release), Outcome::Success),
        HoldConflict => (Some(Operation::Hold), Outcome::Conflict),
        HoldMetadataRejected => (Some(Operation::Confirm), Outcome::Rejected),
        // "Any other non-success outcome": a rejection if it says so, else a server fault,
        // so an under-specified failure is never hidden from the SLO.
        HoldFailed => match ctx.outcome {
            Some(Outcome::Rejected) => (None, Outcome::Rejected),
            _ => (None, Outcome::Error),
        },
        _ => return None,
    };
    Some((ctx.operation.or(default_op), outcome))
}

fn is_cutoff(ctx: &EventContext) -> bool {
    matches!((ctx.attempt, ctx.max_attempts), (Some(a), Some(m)) if a >= m)
}

/// Aggregates the rows whose `created_at` is in `[window_start, window_start + window)` into
/// metric datums stamped `window_start`. Rows outside the window, unknown event types and
/// unknown context keys are ignored. Counters are emitted only when non-zero;
/// `AssignmentSuccessRate` only when hold/confirm had a non-zero denominator. Output order is
/// deterministic (by name, then dimensions).
pub fn aggregate_window(
    env: &str,
    window_start: DateTime<Utc>,
    window: Duration,
    rows: &[EventRow],
) -> Vec<MetricDatum> {
    if window <= Duration::zero() {
        return Vec::new();
    }
    let window_end = window_start + window;
    let mut acc = Acc {
        env,
        counters: BTreeMap::new(),
        latencies: BTreeMap::new(),
        assign_requests: 0,
        assign_successes: 0,
        assign_rejections: 0,
    };

    for row in rows {
        if row.created_at < window_start || row.created_at >= window_end {
            continue;
        }
        let Some(et) = EventType::parse(&row.event_type) else {
            continue;
        };
        // Old rows may carry PII: only the sanitised context is looked at.
        // from_raw *is* the allow-list: parsing once is enough (sanitize_context wraps it).
        let ctx = EventContext::from_raw(&row.context);
        accumulate(&mut acc, et, &ctx);
    }

    let mut out: Vec<MetricDatum> = Vec::new();
    for ((name, dimensions), v) in acc.counters {
        if v != 0.0 {
            out.push(MetricDatum {
                name,
                dimensions,
                unit: Unit::Count,
                timestamp: window_start,
                value: DatumValue::Sum(v),
            });
        }
    }
    for (op, values) in &acc.latencies {
        for (values, counts) in latency_distribution(values) {
            out.push(MetricDatum {
                name: names::LATENCY,
                dimensions: vec![(dims::ENVIRONMENT, env.to_owned()), (dims::OPERATION, (*op).to_owned())],
                unit: Unit::Milliseconds,
                timestamp: window_start,
                value: DatumValue::Distribution { values, counts },
            });
        }
    }
    let denominator = acc.assign_requests.saturating_sub(acc.assign_rejections);
    if acc.assign_requests > 0 && denominator > 0 {
        out.push(MetricDatum {
            name: names::ASSIGNMENT_SUCCESS_RATE,
            dimensions: vec![(dims::ENVIRONMENT, env.to_owned())],
            unit: Unit::Percent,
            timestamp: window_start,
            value: DatumValue::Sum(100.0 * acc.assign_successes as f64 / denominator as f64),
        });
    }
    out.sort_by(|a, b| (a.name, &a.dimensions).cmp(&(b.name, &b.dimensions)));
    out
}

fn accumulate(acc: &mut Acc<'_>, et: EventType, ctx: &EventContext) {
    use EventType::*;
    if let Some((op, outcome)) = request_outcome(et, ctx) {
        let opv = operation_value(op);
        acc.add_op(names::REQUESTS, opv);
        match outcome {
            Outcome::Success => acc.add_op(names::SUCCESSES, opv),
            Outcome::Error => acc.add_op(names::ERRORS, opv),
            Outcome::Rejected => acc.add_op(names::REJECTIONS, opv),
            Outcome::Conflict => acc.add(names::CONFLICTS, Some((dims::MODE, "enforced"))),
        }
        if outcome != Outcome::Success {
            let default_code = match (et, outcome) {
                (_, Outcome::Conflict) => Some("hold_conflict"),
                (HoldMetadataRejected, _) => Some("metadata_incomplete"),
                _ => None,
            };
            let code = ctx.error_code.as_ref().map(|c| c.as_str()).or(default_code);
            acc.add(names::ERRORS_BY_CODE, Some((dims::ERROR_CODE, bucket_error_code(code))));
            if is_cutoff(ctx) {
                acc.add_op(names::CUTOFFS, opv);
            }
        }
        if ctx.attempt.is_some_and(|a| a > 1) {
            acc.add_op(names::RETRIES, opv);
        }
        if let Some(ms) = ctx.duration_ms {
            acc.latencies.entry(opv).or_default().push(ms);
        }
        if et == HoldMetadataRejected {
            acc.add(names::METADATA_REJECTS, None);
        }
        if matches!(op, Some(Operation::Hold | Operation::Confirm)) {
            acc.assign_requests += 1;
            match outcome {
                Outcome::Success => acc.assign_successes += 1,
                Outcome::Rejected => acc.assign_rejections += 1,
                Outcome::Conflict | Outcome::Error => {}
            }
        }
        return;
    }

    let send = Operation::Send.as_str();
    let email_type = || Some((dims::EMAIL_TYPE, bucket_email_type(ctx.email_type.as_ref().map(|c| c.as_str()))));
    match et {
        HoldConflictShadow => acc.add(names::CONFLICTS, Some((dims::MODE, "shadow"))),
        PolicyDriftRecovered => acc.add(names::POLICY_DRIFT_RECOVERED, None),
        PolicyDriftFailed => acc.add(names::POLICY_DRIFT_FAILED, None),
        FlagsContradiction => acc.add(names::FLAG_CONTRADICTIONS, None),
        FlagsBreakGlass => acc.add(names::FLAG_BREAK_GLASS, None),
        FlagsReviewOverdue => acc.add(names::FLAG_REVIEWS_OVERDUE, None),
        FlagsAutoReverted => acc.add(names::FLAG_AUTO_REVERTS, None),
        FlagsAutoRevertRefused => acc.add(names::FLAG_AUTO_REVERTS_REFUSED, None),
        StrictVerifyFailed => acc.add(names::ERRORS_BY_CODE, Some((dims::ERROR_CODE, "strict_constraint_missing"))),
        EmailSent | EmailRetried | EmailFailed => {
            let name = match et {
                EmailSent => names::EMAILS_SENT,
                EmailRetried => names::EMAILS_RETRIED,
                _ => names::EMAILS_FAILED,
            };
            acc.add(name, email_type());
            if et != EmailSent {
                let code = ctx.error_code.as_ref().map(|c| c.as_str());
                acc.add(names::ERRORS_BY_CODE, Some((dims::ERROR_CODE, bucket_error_code(code))));
            }
            if ctx.attempt.is_some_and(|a| a > 1) {
                acc.add_op(names::RETRIES, send);
            }
            if let Some(ms) = ctx.duration_ms {
                acc.latencies.entry(send).or_default().push(ms);
            }
        }
        EmailDeadLettered => {
            acc.add(names::EMAILS_DEAD_LETTERED, email_type());
            acc.add_op(names::CUTOFFS, send);
        }
        EmailSuppressed => acc.add(names::EMAILS_SUPPRESSED, None),
        // Not metrics: intentional skips and flag changes are audit information; a publish is
        // a booking's trail (its correlation id), the outbox gauges measure the relay.
        EmailSkipped | FlagsChanged | EmailPublished => {}
        // Not metrics either: the maintenance function's own AWS/Lambda Errors are alarmed on
        // (infra/template.yaml, maintenance-failing); the events date its runs for the runbook.
        MaintenanceCompleted | MaintenanceFailed => {}
        // Request outcome events were handled above.
        QuoteCompleted | HoldCreated | HoldConflict | HoldReleased | HoldConfirmed | HoldFailed
        | HoldMetadataRejected => {}
    }
}

/// Gauges measured by the aggregator itself (not derived from events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gauge {
    DlqDepth,
    OutboxPending,
    OutboxLagSeconds,
    OutboxDeadRows,
    StrictRolloutPercent,
}

impl Gauge {
    pub fn name(self) -> &'static str {
        match self {
            Gauge::DlqDepth => names::DLQ_DEPTH,
            Gauge::OutboxPending => names::OUTBOX_PENDING,
            Gauge::OutboxLagSeconds => names::OUTBOX_LAG_SECONDS,
            Gauge::OutboxDeadRows => names::OUTBOX_DEAD_ROWS,
            Gauge::StrictRolloutPercent => names::STRICT_ROLLOUT_PERCENT,
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Gauge::DlqDepth | Gauge::OutboxPending | Gauge::OutboxDeadRows => Unit::Count,
            Gauge::OutboxLagSeconds => Unit::Seconds,
            Gauge::StrictRolloutPercent => Unit::Percent,
        }
    }
}

/// A gauge datum. Non-finite or negative values become 0 because CloudWatch rejects the whole
/// `PutMetricData` call on NaN/Infinity, and none of these levels can be negative.
pub fn gauge(env: &str, gauge: Gauge, value: f64, ts: DateTime<Utc>) -> MetricDatum {
    let value = if value.is_finite() && value > 0.0 { value } else { 0.0 };
    MetricDatum {
        name: gauge.name(),
        dimensions: vec![(dims::ENVIRONMENT, env.to_owned())],
        unit: gauge.unit(),
        timestamp: ts,
        value: DatumValue::Sum(value),
    }
}

/// `PutMetricData` limits assumed by [`chunk_for_cloudwatch`]: 1000 datums per call (AWS
/// limit), 150 values per datum (AWS limit, guaranteed by [`latency_distribution`]) and, to
/// stay well under the 1 MB request payload, at most 5000 values in a call (a value/count
/// pair costs ~100 bytes in the query protocol; a plain datum counts as one value).
pub const MAX_DATUMS_PER_CALL: usize = 1000;
pub const MAX_VALUES_PER_CALL: usize = 5000;

/// Splits datums into `PutMetricData` calls respecting the limits above, preserving order.
pub fn chunk_for_cloudwatch(data: &[MetricDatum]) -> Vec<Vec<&MetricDatum>> {
    let mut calls: Vec<Vec<&MetricDatum>> = Vec::new();
    let mut current: Vec<&MetricDatum> = Vec::new();
    let mut values = 0usize;
    for d in data {
        let weight = d.value.value_count().max(1);
        if !current.is_empty() && (current.len() >= MAX_DATUMS_PER_CALL || values + weight > MAX_VALUES_PER_CALL) {
            calls.push(std::mem::take(&mut current));
            values = 0;
        }
        current.push(d);
        values += weight;
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

/// Flag holding the late-event grace in seconds.
pub const LATE_EVENT_GRACE_FLAG: &str = "metrics.lateEventGraceSeconds";
/// Default late-event grace: a window is closed only once `now - window_end > 120 s`.
pub const DEFAULT_LATE_EVENT_GRACE_SECONDS: i64 = 120;

/// The start of the (epoch-aligned) window containing `ts`. `window` under 1 s counts as 1 s.
pub fn window_start_of(ts: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let w = window.num_seconds().max(1);
    let secs = ts.timestamp().div_euclid(w) * w;
    DateTime::from_timestamp(secs, 0).unwrap_or(ts)
}

/// Windows from `next_open` (the first not yet published) that may be closed at `now`:
/// those with `now - window_end > grace`, oldest first, at most `limit` of them.
pub fn closed_windows(
    next_open: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Duration,
    grace: Duration,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    if window <= Duration::zero() {
        return out;
    }
    let mut start = next_open;
    while out.len() < limit && now - (start + window) > grace {
        out.push(start);
        start += window;
    }
    out
}

/// How long an open transaction may hold windows back before it is ignored (with a warning):
/// an idle-in-transaction session must not stall every metric.
pub const MAX_OPEN_TRANSACTION_WAIT_MINUTES: i64 = 15;

/// Keeps only the windows that end no later than the start of the oldest transaction still open
/// in the database. An event's `created_at` is its transaction's start, and its id is taken
/// before that transaction commits: a window closed while such a transaction is open could
/// miss its rows for good (their ids are below the high-water mark this run records). Windows
/// ending before every open transaction began cannot gain rows from them. A transaction open
/// longer than `max_wait` is ignored, so one forgotten session cannot stall metrics.
pub fn cap_at_open_transactions(
    windows: Vec<DateTime<Utc>>,
    window: Duration,
    oldest_open: Option<DateTime<Utc>>,
    db_now: DateTime<Utc>,
    max_wait: Duration,
) -> Vec<DateTime<Utc>> {
    match oldest_open {
        Some(open) if db_now - open <= max_wait => windows.into_iter().take_while(|w| *w + window <= open).collect(),
        _ => windows,
    }
}

/// What one run closes: [`closed_windows`] capped by [`cap_at_open_transactions`] with the
/// [`MAX_OPEN_TRANSACTION_WAIT_MINUTES`] limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSelection {
    /// The windows to close now, oldest first.
    pub windows: Vec<DateTime<Utc>>,
    /// Closable windows held back by a transaction that began inside them.
    pub waiting: usize,
    /// The oldest open transaction, when it has been open too long to be waited for.
    pub ignored_open: Option<DateTime<Utc>>,
}

/// The windows from `next_open` a run at `now` closes (at most `limit`), given the start of the
/// oldest transaction still open (`oldest_open`) by the database clock `db_now`.
pub fn select_windows(
    next_open: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Duration,
    grace: Duration,
    limit: usize,
    oldest_open: Option<DateTime<Utc>>,
    db_now: DateTime<Utc>,
) -> WindowSelection {
    let closable = closed_windows(next_open, now, window, grace, limit);
    let max_wait = Duration::minutes(MAX_OPEN_TRANSACTION_WAIT_MINUTES);
    let ignored_open = oldest_open.filter(|o| db_now - *o > max_wait);
    let closable_count = closable.len();
    let windows = cap_at_open_transactions(closable, window, oldest_open, db_now, max_wait);
    WindowSelection { waiting: closable_count - windows.len(), windows, ignored_open }
}

/// Moves rows that arrived after their own window was published into the window being
/// closed (`window_start`), so a late event is counted once, in the window of its arrival,
/// instead of being dropped or re-publishing a closed window. Returns how many were moved.
pub fn restamp_late_rows(rows: &mut [EventRow], window_start: DateTime<Utc>) -> usize {
    let mut moved = 0;
    for row in rows.iter_mut() {
        if row.created_at < window_start {
            row.created_at = window_start;
            moved += 1;
        }
    }
    moved
}

#[cfg(test)]
mod tests;
