//! Retention with bounded cost (issue 15): the scheduled maintenance step. EventBridge runs the
//! `maintenance` binary hourly; `holdfast maintenance run` runs the same code by hand.
//!
//! Every statement is one of the SECURITY DEFINER functions of `migrations/V12__event_partitions.sql`
//! (why: `docs/decisions/0008-maintenance-through-security-definer-functions.md`), so this runs as
//! the runtime role, like every function, and can do exactly those steps. A run:
//! 1. creates the event partitions missing from today to `partitions_ahead_days` ahead (and for
//!    days whose rows wait in the default partition, which moves them);
//! 2. drops event partitions wholly older than `event_retention_days`;
//! 3. deactivates expired hold claims, purges idempotency keys, published outbox rows, settled
//!    email ledger rows and stale metric batches, each in batches of its own transaction;
//! 4. checks the result (partitions ahead, default partition empty, nothing past retention),
//!    records a `maintenance.completed` / `maintenance.failed` event and returns a report.
//!
//! Bounded: every batch is its own short transaction, a step stops after `max_batches_per_step`
//! or when the run's time budget is spent (the rest waits for the next run). Idempotent: each
//! step deletes or creates only what is due, so a second run finds nothing. Concurrent runs:
//! each batch takes the maintenance advisory lock for its transaction (try-lock: a run that
//! finds it held stops and reports `concurrent_run`). Failures: a failed step is reported, the
//! others still run, and the next run retries it; DDL that cannot get its lock quickly (it
//! would make event writes queue behind it) is retried a few times, then left to the next run.
//! Policy and operations: `docs/metrics.md#retention`, `docs/runbooks/metrics.md#retention`.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Object, Pool};
use holdfast_adapters::config::Config;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::events::{Code, EventContext, EventType, ObservabilityEvent, Outcome, Source};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// The advisory lock (two-int key space) every V12 maintenance function takes for its
/// transaction; a run try-locks it first.
pub const LOCK_KEY: (i32, i32) = (1_752_132_708, 15);

/// One tunable: its environment variable, bounds (the SQL functions refuse below the same
/// floors) and default.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub env: &'static str,
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

pub const PARTITIONS_AHEAD_DAYS: Setting =
    Setting { env: "HOLDFAST_EVENT_PARTITIONS_AHEAD_DAYS", min: 2, max: 60, default: 7 };
pub const EVENT_RETENTION_DAYS: Setting =
    Setting { env: "HOLDFAST_EVENT_RETENTION_DAYS", min: 30, max: 3650, default: 90 };
pub const IDEMPOTENCY_KEEP_HOURS: Setting =
    Setting { env: "HOLDFAST_IDEMPOTENCY_KEEP_HOURS", min: 24, max: 24 * 90, default: 24 };
pub const OUTBOX_KEEP_DAYS: Setting = Setting { env: "HOLDFAST_OUTBOX_KEEP_DAYS", min: 15, max: 3650, default: 30 };
pub const EMAIL_SENDS_KEEP_DAYS: Setting =
    Setting { env: "HOLDFAST_EMAIL_SENDS_KEEP_DAYS", min: 30, max: 3650, default: 90 };
pub const METRICS_BATCHES_KEEP_DAYS: Setting =
    Setting { env: "HOLDFAST_METRICS_BATCHES_KEEP_DAYS", min: 15, max: 3650, default: 30 };
/// Rows per batch (one transaction) for the purges.
pub const BATCH_SIZE: Setting =
    Setting { env: "HOLDFAST_MAINTENANCE_BATCH_SIZE", min: 1, max: 100_000, default: 5_000 };
/// Claims per batch: smaller, because a hold write's own prune may wait for the batch.
pub const CLAIMS_BATCH_SIZE: Setting =
    Setting { env: "HOLDFAST_MAINTENANCE_CLAIMS_BATCH_SIZE", min: 1, max: 100_000, default: 1_000 };
pub const MAX_BATCHES_PER_STEP: Setting =
    Setting { env: "HOLDFAST_MAINTENANCE_MAX_BATCHES", min: 1, max: 100_000, default: 200 };
/// The whole run stops starting new batches after this long (the Lambda's timeout is 300 s).
pub const BUDGET_SECONDS: Setting =
    Setting { env: "HOLDFAST_MAINTENANCE_BUDGET_SECONDS", min: 1, max: 3_600, default: 240 };

pub const SETTINGS: [Setting; 10] = [
    PARTITIONS_AHEAD_DAYS,
    EVENT_RETENTION_DAYS,
    IDEMPOTENCY_KEEP_HOURS,
    OUTBOX_KEEP_DAYS,
    EMAIL_SENDS_KEEP_DAYS,
    METRICS_BATCHES_KEEP_DAYS,
    BATCH_SIZE,
    CLAIMS_BATCH_SIZE,
    MAX_BATCHES_PER_STEP,
    BUDGET_SECONDS,
];

/// A DDL statement that did not get its lock within the function's `lock_timeout` is tried
/// this many times, this far apart, before the step is left to the next run.
const DDL_ATTEMPTS: u32 = 5;
const DDL_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct OptionsError {
    pub name: &'static str,
    pub reason: String,
}

/// The validated settings of a run: only [`Options::from_lookup`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    partitions_ahead_days: u32,
    event_retention_days: u32,
    idempotency_keep_hours: u32,
    outbox_keep_days: u32,
    email_sends_keep_days: u32,
    metrics_batches_keep_days: u32,
    batch_size: u32,
    claims_batch_size: u32,
    max_batches_per_step: u32,
    budget: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            partitions_ahead_days: PARTITIONS_AHEAD_DAYS.default,
            event_retention_days: EVENT_RETENTION_DAYS.default,
            idempotency_keep_hours: IDEMPOTENCY_KEEP_HOURS.default,
            outbox_keep_days: OUTBOX_KEEP_DAYS.default,
            email_sends_keep_days: EMAIL_SENDS_KEEP_DAYS.default,
            metrics_batches_keep_days: METRICS_BATCHES_KEEP_DAYS.default,
            batch_size: BATCH_SIZE.default,
            claims_batch_size: CLAIMS_BATCH_SIZE.default,
            max_batches_per_step: MAX_BATCHES_PER_STEP.default,
            budget: Duration::from_secs(u64::from(BUDGET_SECONDS.default)),
        }
    }
}

impl Options {
    /// Reads every [`SETTINGS`] entry through `get` (unset or empty: the default); a value that
    /// is not a whole number within the setting's bounds is an error naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        let read = |s: Setting| -> Result<u32, OptionsError> {
            let Some(raw) = get(s.env).filter(|v| !v.trim().is_empty()) else {
                return Ok(s.default);
            };
            match raw.trim().parse::<u32>() {
                Ok(v) if (s.min..=s.max).contains(&v) => Ok(v),
                _ => Err(OptionsError {
                    name: s.env,
                    reason: format!("expected a whole number in {}..={}, got {raw:?}", s.min, s.max),
                }),
            }
        };
        Ok(Self {
            partitions_ahead_days: read(PARTITIONS_AHEAD_DAYS)?,
            event_retention_days: read(EVENT_RETENTION_DAYS)?,
            idempotency_keep_hours: read(IDEMPOTENCY_KEEP_HOURS)?,
            outbox_keep_days: read(OUTBOX_KEEP_DAYS)?,
            email_sends_keep_days: read(EMAIL_SENDS_KEEP_DAYS)?,
            metrics_batches_keep_days: read(METRICS_BATCHES_KEEP_DAYS)?,
            batch_size: read(BATCH_SIZE)?,
            claims_batch_size: read(CLAIMS_BATCH_SIZE)?,
            max_batches_per_step: read(MAX_BATCHES_PER_STEP)?,
            budget: Duration::from_secs(u64::from(read(BUDGET_SECONDS)?)),
        })
    }

    pub fn from_env() -> Result<Self, OptionsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn event_retention_days(&self) -> u32 {
        self.event_retention_days
    }

    pub fn partitions_ahead_days(&self) -> u32 {
        self.partitions_ahead_days
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The same settings with a shorter budget (the Lambda's remaining time).
    pub fn with_budget_at_most(mut self, budget: Duration) -> Self {
        self.budget = self.budget.min(budget);
        self
    }
}

/// The steps, in run order. Their names are the report's keys and the failure event's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    EventPartitionsCreate,
    EventPartitionsDrop,
    HoldClaims,
    IdempotencyKeys,
    EmailOutbox,
    EmailSends,
    MetricsBatches,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::EventPartitionsCreate,
        Step::EventPartitionsDrop,
        Step::HoldClaims,
        Step::IdempotencyKeys,
        Step::EmailOutbox,
        Step::EmailSends,
        Step::MetricsBatches,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::EventPartitionsCreate => "event_partitions_create",
            Step::EventPartitionsDrop => "event_partitions_drop",
            Step::HoldClaims => "hold_claims",
            Step::IdempotencyKeys => "idempotency_keys",
            Step::EmailOutbox => "email_outbox",
            Step::EmailSends => "email_sends",
            Step::MetricsBatches => "metrics_batches",
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEnd {
    /// Nothing more is due.
    Done,
    /// The batch cap or the run's budget was reached; the next run continues.
    MoreLeft,
    /// A lock was not granted in time (DDL retried [`DDL_ATTEMPTS`] times); the next run retries.
    LockBusy,
    /// Another run holds the maintenance lock; this run stopped.
    ConcurrentRun,
    /// Not run: an earlier step found another run, or the budget was spent.
    Skipped,
    /// A database error (class only, never row data); the next run retries.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: Step,
    /// Rows (or partitions) this step changed.
    pub rows: u64,
    pub end: StepEnd,
}

/// The event partitions as the health check sees them after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionHealth {
    /// Whole days after today that have a partition (0: only today's).
    pub days_ahead: i64,
    /// Rows waiting in the default partition (their day had no partition).
    pub default_rows: i64,
    /// The start of the oldest partition's range (`None`: the legacy one, from the beginning).
    pub oldest_from: Option<DateTime<Utc>>,
    /// The end of the oldest partition's range: it is dropped once this is past retention.
    pub oldest_to: Option<DateTime<Utc>>,
    pub partitions: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Another run held the lock: this one did nothing.
    pub concurrent_run: bool,
    pub partitions_created: Vec<String>,
    pub partitions_dropped: Vec<String>,
    pub steps: Vec<StepReport>,
    pub health: PartitionHealth,
    /// Settings the health check judged by.
    pub event_retention_days: u32,
    pub partitions_ahead_days: u32,
    pub duration_ms: u64,
}

impl Report {
    /// Rows changed by `step` in this run.
    pub fn rows(&self, step: Step) -> u64 {
        self.steps.iter().filter(|s| s.step == step).map(|s| s.rows).sum()
    }

    /// What makes the run a failure (the Lambda returns an error, so the function's Errors
    /// metric and the maintenance-failing alarm see it). An unfinished step is not one: the
    /// next run goes on with it; a lock not granted is not one either, unless the partitions
    /// it was for are now short.
    pub fn problems(&self) -> Vec<String> {
        if self.concurrent_run {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match &s.end {
                StepEnd::Failed(e) => Some(format!("{}: {e}", s.step.as_str())),
                _ => None,
            })
            .collect();
        let h = &self.health;
        // Two days of slack at least, whatever the setting: a day's failures are then harmless.
        let want_ahead = i64::from(self.partitions_ahead_days.min(2));
        if h.days_ahead < want_ahead {
            out.push(format!("event partitions cover only {} day(s) after today", h.days_ahead));
        }
        if h.default_rows > 0 {
            out.push(format!("{} event row(s) wait in the default partition", h.default_rows));
        }
        if let Some(to) = h.oldest_to {
            let overdue = Utc::now() - chrono::Duration::days(i64::from(self.event_retention_days) + 2);
            if to < overdue {
                out.push(format!("event partition ending {to} is past retention and was not dropped"));
            }
        }
        out
    }
}

/// Why a statement did not run to the end.
enum CallError {
    /// Another run holds the maintenance lock.
    Concurrent,
    /// `lock_timeout`: a table lock was not granted in time.
    LockTimeout,
    Db(DbFault),
}

impl From<tokio_postgres::Error> for CallError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            CallError::LockTimeout
        } else {
            CallError::Db(holdfast_adapters::db::classify(&e))
        }
    }
}

/// Runs `sql` (one V12 function call returning one row) in its own transaction, after
/// try-locking the maintenance lock for that transaction.
async fn call_locked(client: &mut Object, sql: &str, params: &[&dyn Param]) -> Result<tokio_postgres::Row, CallError> {
    let tx = client.transaction().await?;
    let locked: bool =
        tx.fetch_one("SELECT pg_try_advisory_xact_lock($1, $2)", &[&LOCK_KEY.0, &LOCK_KEY.1]).await?.get(0);
    if !locked {
        tx.rollback().await?;
        return Err(CallError::Concurrent);
    }
    let row = tx.fetch_one(sql, params).await?;
    tx.commit().await?;
    Ok(row)
}

pub struct Maintenance {
    pool: Pool,
    recorder: EventRecorder,
    options: Options,
}

/// Build from configuration once per container: the runtime role's pool (nothing connects
/// yet) and the settings from the environment.
pub async fn build(cfg: &Config) -> Result<Maintenance, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &ssm).await?;
    Ok(Maintenance::new(pool, Options::from_env()?))
}

/// A batch step: the V12 function and its arguments (the keep interval in whole units).
struct Purge {
    step: Step,
    sql: &'static str,
    keep: Option<String>,
    batch: i32,
}

impl Maintenance {
    pub fn new(pool: Pool, options: Options) -> Self {
        let recorder = EventRecorder::new(pool.clone());
        Self { pool, recorder, options }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One run with the configured budget.
    pub async fn run(&self) -> Result<Report, DbFault> {
        self.run_with(&self.options).await
    }

    /// One run with `options` (the Lambda shortens the budget to its remaining time).
    pub async fn run_with(&self, options: &Options) -> Result<Report, DbFault> {
        let started = Instant::now();
        let deadline = started + options.budget;
        let mut client = self.pool.get().await.map_err(DbFault::from)?;
        let mut report = Report {
            event_retention_days: options.event_retention_days,
            partitions_ahead_days: options.partitions_ahead_days,
            ..Report::default()
        };
        for step in Step::ALL {
            let stop = report.concurrent_run || Instant::now() >= deadline;
            let result = if stop {
                StepReport { step, rows: 0, end: StepEnd::Skipped }
            } else {
                match (step, purge_of(step, options)) {
                    (Step::EventPartitionsCreate, _) => self.create_partitions(&mut client, options, &mut report).await,
                    (Step::EventPartitionsDrop, _) => self.drop_partitions(&mut client, options, &mut report).await,
                    (_, Some(p)) => self.purge(&mut client, &p, options, deadline).await,
                    (_, None) => StepReport { step, rows: 0, end: StepEnd::Skipped },
                }
            };
            if result.end == StepEnd::ConcurrentRun {
                report.concurrent_run = true;
            }
            report.steps.push(result);
        }
        if report.concurrent_run {
            tracing::info!("another maintenance run holds the lock; this one stopped");
        }
        report.health = partition_health(&client).await.map_err(|e| holdfast_adapters::db::classify(&e))?;
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !report.concurrent_run {
            self.record(&report).await;
        }
        Ok(report)
    }

    /// Step 1: a partition for every day that lacks one (today .. today + ahead, and days with
    /// rows in the default partition), one transaction per day.
    async fn create_partitions(&self, client: &mut Object, options: &Options, report: &mut Report) -> StepReport {
        let step = Step::EventPartitionsCreate;
        let ahead = options.partitions_ahead_days as i32;
        let days: Vec<NaiveDate> =
            match client.fetch("SELECT d FROM holdfast_missing_event_partitions($1) AS d", &[&ahead]).await {
                Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
                Err(e) => return failed(step, 0, CallError::from(e)),
            };
        let mut created = 0;
        // A day that fails does not hold back the others (they are independent); the step
        // reports the first failure.
        let mut first_failure: Option<StepReport> = None;
        for day in days {
            match ddl(client, "SELECT holdfast_create_event_partition($1)", &[&day]).await {
                Ok(row) => {
                    if row.get::<_, bool>(0) {
                        created += 1;
                        report.partitions_created.push(format!("observability_events_p{}", day.format("%Y%m%d")));
                    }
                }
                Err(CallError::Concurrent) => return failed(step, created, CallError::Concurrent),
                Err(e) => {
                    let f = failed(step, created, e);
                    first_failure.get_or_insert(f);
                }
            }
        }
        match first_failure {
            Some(f) => StepReport { rows: created, ..f },
            None => StepReport { step, rows: created, end: StepEnd::Done },
        }
    }

    /// Step 2: drop partitions past retention, oldest first, one per transaction.
    async fn drop_partitions(&self, client: &mut Object, options: &Options, report: &mut Report) -> StepReport {
        let step = Step::EventPartitionsDrop;
        let days = options.event_retention_days as i32;
        let mut dropped = 0;
        for _ in 0..options.max_batches_per_step {
            match ddl(client, "SELECT holdfast_drop_expired_event_partition($1)", &[&days]).await {
                Ok(row) => match row.get::<_, Option<String>>(0) {
                    Some(name) => {
                        tracing::info!(partition = %name, "event partition past retention dropped");
                        report.partitions_dropped.push(name);
                        dropped += 1;
                    }
                    None => return StepReport { step, rows: dropped, end: StepEnd::Done },
                },
                Err(e) => return failed(step, dropped, e),
            }
        }
        StepReport { step, rows: dropped, end: StepEnd::MoreLeft }
    }

    /// The batch steps: call until a batch changes nothing, the batch cap, or the deadline.
    async fn purge(&self, client: &mut Object, p: &Purge, options: &Options, deadline: Instant) -> StepReport {
        let mut total = 0u64;
        for _ in 0..options.max_batches_per_step {
            if Instant::now() >= deadline {
                return StepReport { step: p.step, rows: total, end: StepEnd::MoreLeft };
            }
            let result = match &p.keep {
                Some(keep) => {
                    let sql = format!("SELECT {}($1::text::interval, $2)", p.sql);
                    call_locked(client, &sql, &[keep, &p.batch]).await
                }
                None => call_locked(client, &format!("SELECT {}($1)", p.sql), &[&p.batch]).await,
            };
            match result {
                Ok(row) => {
                    let n: i64 = row.get(0);
                    total += n.max(0) as u64;
                    if n == 0 {
                        return StepReport { step: p.step, rows: total, end: StepEnd::Done };
                    }
                }
                Err(e) => return failed(p.step, total, e),
            }
        }
        StepReport { step: p.step, rows: total, end: StepEnd::MoreLeft }
    }

    /// The run's event: what it did is in the report (logged and returned); the event says it
    /// ran, how long it took and, when it failed, the first failing step.
    async fn record(&self, report: &Report) {
        let problems = report.problems();
        let failed_step = report.steps.iter().find(|s| matches!(s.end, StepEnd::Failed(_))).map(|s| s.step.as_str());
        let mut ctx = EventContext::new().duration_ms(report.duration_ms);
        let event_type = if problems.is_empty() {
            ctx = ctx.outcome(Outcome::Success);
            EventType::MaintenanceCompleted
        } else {
            ctx = ctx.outcome(Outcome::Error);
            if let Ok(code) = Code::parse(failed_step.unwrap_or("health")) {
                ctx = ctx.error_code(code);
            }
            EventType::MaintenanceFailed
        };
        self.recorder.record(&ObservabilityEvent::new(Source::Maintenance, event_type).context(ctx)).await;
    }

    /// Read-only: the partitions, what waits for the next run, and the last run's event.
    pub async fn status(&self) -> Result<Status, DbFault> {
        let client = self.pool.get().await.map_err(DbFault::from)?;
        status(&client, &self.options).await.map_err(|e| holdfast_adapters::db::classify(&e))
    }
}

/// The batch steps' calls (`None` for the partition steps).
fn purge_of(step: Step, o: &Options) -> Option<Purge> {
    let days = |d: u32| Some(format!("{d} days"));
    let batch = o.batch_size as i32;
    Some(match step {
        Step::HoldClaims => Purge {
            step,
            sql: "holdfast_deactivate_expired_hold_claims",
            keep: None,
            batch: o.claims_batch_size as i32,
        },
        Step::IdempotencyKeys => Purge {
            step,
            sql: "holdfast_purge_idempotency_keys",
            keep: Some(format!("{} hours", o.idempotency_keep_hours)),
            batch,
        },
        Step::EmailOutbox => {
            Purge { step, sql: "holdfast_purge_published_outbox", keep: days(o.outbox_keep_days), batch }
        }
        Step::EmailSends => {
            Purge { step, sql: "holdfast_purge_email_sends", keep: days(o.email_sends_keep_days), batch }
        }
        Step::MetricsBatches => {
            Purge { step, sql: "holdfast_purge_metrics_batches", keep: days(o.metrics_batches_keep_days), batch }
        }
        Step::EventPartitionsCreate | Step::EventPartitionsDrop => return None,
    })
}

/// A DDL call: a lock timeout is retried [`DDL_ATTEMPTS`] times, [`DDL_PAUSE`] apart.
async fn ddl(client: &mut Object, sql: &str, params: &[&dyn Param]) -> Result<tokio_postgres::Row, CallError> {
    let mut attempt = 1;
    loop {
        match call_locked(client, sql, params).await {
            Err(CallError::LockTimeout) if attempt < DDL_ATTEMPTS => {
                tracing::info!(attempt, "maintenance DDL waited too long for its lock; retrying");
                tokio::time::sleep(DDL_PAUSE).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn failed(step: Step, rows: u64, e: CallError) -> StepReport {
    let end = match e {
        CallError::Concurrent => StepEnd::ConcurrentRun,
        CallError::LockTimeout => {
            tracing::warn!(step = step.as_str(), "maintenance step left to the next run: lock not granted");
            StepEnd::LockBusy
        }
        CallError::Db(fault) => {
            tracing::error!(step = step.as_str(), error = %fault, "maintenance step failed");
            StepEnd::Failed(fault.to_string())
        }
    };
    StepReport { step, rows, end }
}

const HEALTH_SQL: &str = "
SELECT COALESCE((SELECT (max(upper_bound) AT TIME ZONE 'UTC')::date - (now() AT TIME ZONE 'UTC')::date - 1
                   FROM holdfast_event_partitions() WHERE NOT is_default), -1)::bigint,
       (SELECT count(*) FROM observability_events_default)::bigint,
       (SELECT count(*) FROM holdfast_event_partitions() WHERE NOT is_default)::bigint";

const OLDEST_SQL: &str = "
SELECT lower_bound, upper_bound FROM holdfast_event_partitions()
 WHERE NOT is_default ORDER BY upper_bound LIMIT 1";

async fn partition_health(c: &Object) -> Result<PartitionHealth, tokio_postgres::Error> {
    let row = c.fetch_one(HEALTH_SQL, &[]).await?;
    let oldest = c.fetch_opt(OLDEST_SQL, &[]).await?;
    Ok(PartitionHealth {
        days_ahead: row.get(0),
        default_rows: row.get(1),
        partitions: usize::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        oldest_from: oldest.as_ref().and_then(|r| r.get(0)),
        oldest_to: oldest.as_ref().and_then(|r| r.get(1)),
    })
}

/// One event partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionInfo {
    pub name: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The planner's estimate (pg_class.reltuples after ANALYZE; -1: never analysed).
    pub rows_estimate: i64,
}

/// What `holdfast maintenance status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub health: PartitionHealth,
    pub partitions: Vec<PartitionInfo>,
    /// Rows the next run would purge or deactivate, per step (counted now).
    pub due: Vec<(Step, i64)>,
    /// The last `maintenance.completed` / `maintenance.failed` event: when and which.
    pub last_run: Option<(DateTime<Utc>, String)>,
}

async fn status(c: &Object, o: &Options) -> Result<Status, tokio_postgres::Error> {
    let health = partition_health(c).await?;
    let partitions = c
        .fetch(
            "SELECT p.name, p.lower_bound, p.upper_bound, c.reltuples::bigint
               FROM holdfast_event_partitions() p JOIN pg_class c ON c.relname = p.name
              ORDER BY p.is_default, p.upper_bound NULLS LAST",
            &[],
        )
        .await?
        .iter()
        .map(|r| PartitionInfo { name: r.get(0), from: r.get(1), to: r.get(2), rows_estimate: r.get(3) })
        .collect();
    let keep = |d: u32| format!("{d} days");
    let (idem, outbox, sends, batches) = (
        format!("{} hours", o.idempotency_keep_hours),
        keep(o.outbox_keep_days),
        keep(o.email_sends_keep_days),
        keep(o.metrics_batches_keep_days),
    );
    // The same predicates as the V12 functions (counted, not changed).
    let due_sql = "SELECT
        (SELECT count(*) FROM table_claims WHERE active AND kind = 'hold' AND expires_at <= now()),
        (SELECT count(*) FROM idempotency_keys WHERE created_at < now() - $1::text::interval),
        (SELECT count(*) FROM email_outbox x WHERE x.published_at < now() - $2::text::interval AND x.dead_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM email_sends s WHERE s.dedupe_key = x.dedupe_key
                            AND s.state IN ('in_progress', 'suppressed_ambiguous'))),
        (SELECT count(*) FROM email_sends WHERE state IN ('sent', 'failed_permanent') AND updated_at < now() - $3::text::interval),
        (SELECT count(*) FROM metrics_batches WHERE window_start < now() - $4::text::interval)";
    let r = c.fetch_one(due_sql, &[&idem, &outbox, &sends, &batches]).await?;
    let due = vec![
        (Step::HoldClaims, r.get(0)),
        (Step::IdempotencyKeys, r.get(1)),
        (Step::EmailOutbox, r.get(2)),
        (Step::EmailSends, r.get(3)),
        (Step::MetricsBatches, r.get(4)),
    ];
    let last_run = c
        .fetch_opt(
            "SELECT created_at, event_type FROM observability_events
              WHERE event_type IN ('maintenance.completed', 'maintenance.failed')
              ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| (r.get(0), r.get(1)));
    Ok(Status { health, partitions, due, last_run })
}

/// The Lambda handler: one run within the invocation's remaining time (less a margin to
/// record and return). A failed step or an unhealthy result returns an error, so the
/// function's Errors metric (and the maintenance-failing alarm) counts it.
pub async fn handle(
    m: &Maintenance,
    event: lambda_runtime::LambdaEvent<serde_json::Value>,
) -> Result<Report, lambda_runtime::Error> {
    let remaining = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    let options = m.options.clone().with_budget_at_most(remaining.saturating_sub(Duration::from_secs(30)));
    let report = m.run_with(&options).await?;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "maintenance run");
    let problems = report.problems();
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems.join("; ").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_the_stated_policy() {
        let o = Options::default();
        assert_eq!((o.event_retention_days, o.partitions_ahead_days, o.idempotency_keep_hours), (90, 7, 24));
        assert_eq!((o.outbox_keep_days, o.email_sends_keep_days, o.metrics_batches_keep_days), (30, 90, 30));
    }

    #[test]
    fn settings_below_their_floor_are_refused_by_name() {
        let e = Options::from_lookup(lookup(&[("HOLDFAST_EVENT_RETENTION_DAYS", "7")])).expect_err("below 30");
        assert_eq!(e.name, "HOLDFAST_EVENT_RETENTION_DAYS");
        let e = Options::from_lookup(lookup(&[("HOLDFAST_IDEMPOTENCY_KEEP_HOURS", "1")])).expect_err("below 24");
        assert_eq!(e.name, "HOLDFAST_IDEMPOTENCY_KEEP_HOURS");
        assert!(Options::from_lookup(lookup(&[("HOLDFAST_MAINTENANCE_BATCH_SIZE", "many")])).is_err());
        let o = Options::from_lookup(lookup(&[
            ("HOLDFAST_EVENT_RETENTION_DAYS", " 120 "),
            ("HOLDFAST_OUTBOX_KEEP_DAYS", ""),
        ]))
        .expect("valid");
        assert_eq!((o.event_retention_days, o.outbox_keep_days), (120, 30));
    }

    #[test]
    fn step_names_are_event_codes() {
        for s in Step::ALL {
            assert!(Code::parse(s.as_str()).is_ok(), "{}", s.as_str());
        }
    }

    #[test]
    fn an_unfinished_step_is_not_a_failure_but_short_partitions_are() {
        let healthy =
            PartitionHealth { days_ahead: 7, default_rows: 0, oldest_from: None, oldest_to: None, partitions: 8 };
        let mut r = Report {
            steps: vec![StepReport { step: Step::HoldClaims, rows: 200_000, end: StepEnd::MoreLeft }],
            health: healthy.clone(),
            event_retention_days: 90,
            partitions_ahead_days: 7,
            ..Report::default()
        };
        assert!(r.problems().is_empty());
        r.health.days_ahead = 1;
        assert_eq!(r.problems().len(), 1);
        r.health = PartitionHealth { default_rows: 3, ..healthy.clone() };
        assert_eq!(r.problems().len(), 1);
        r.health = PartitionHealth { oldest_to: Some(Utc::now() - chrono::Duration::days(100)), ..healthy };
        assert_eq!(r.problems().len(), 1);
        r.concurrent_run = true;
        assert!(r.problems().is_empty(), "a run that found another one running did nothing wrong");
    }
}
