//! The metrics aggregator: an EventBridge-scheduled Lambda (every minute) that turns
//! `observability_events` rows into CloudWatch and Datadog metrics, each closed window exactly
//! once per sink.
//!
//! A run has three phases (state in `migrations/V5__metrics.sql`, operations in
//! `docs/runbooks/metrics.md`):
//! 1. **Close** — under the `metrics_cursor` row lock (`FOR UPDATE SKIP LOCKED`; a run that
//!    finds it taken closes nothing) and in one REPEATABLE READ snapshot: list the closed windows
//!    (`select_windows`, grace from `metrics.lateEventGraceSeconds`), read the rows committed
//!    after their window was closed (late: `created_at < next_window_start AND id >
//!    last_seen_id`, restamped into the first window closed now), stream the windows' rows in
//!    index order, `aggregate_window` each, and commit the frozen datums, one pending
//!    publication per enabled sink and the advanced cursor together.
//! 2. **Gauges** — once per minute: DLQ depth, outbox pending/lag, effective strict rollout,
//!    frozen and queued the same way (kind `gauges`).
//! 3. **Publish** — per sink, a queue: lock the oldest pending publication `FOR UPDATE SKIP
//!    LOCKED`, send its next part, record it, commit. A failing sink is left pending (retried
//!    next run) and does not touch the other sink's rows.
//!
//! This file is the orchestration. Phase 1 is in `window`, the gauges' measurements in
//! [`gauges`], phase 3 in `publish`; every SQL statement is in `store`, the sinks' requests in
//! [`sinks`], the pure window and aggregation rules in `holdfast_shared::metrics`.

pub mod gauges;
/// Scheduled retention (its own binary, `src/bin/maintenance.rs`; issue 15).
pub mod maintenance;
pub mod payload;
mod publish;
mod report;
pub mod sinks;
mod store;
mod window;

pub use report::{RunReport, SinkReport};

use aws_config::SdkConfig;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use holdfast_adapters::config::Config;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::flags::FlagLoader;
use holdfast_shared::flags::FlagSet;
use holdfast_shared::metrics::window_start_of;
use sinks::{CloudWatchSink, DatadogSink, Sink};
use std::sync::Arc;

/// Where Datadog's API lives unless `DATADOG_API_URL` says otherwise (e.g. `api.datadoghq.eu`).
pub const DEFAULT_DATADOG_API_URL: &str = "https://api.datadoghq.com";
/// How long flags are cached between SSM reads.
pub const FLAG_TTL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Options {
    /// Window width (1 minute: alarms and dashboards assume it).
    pub window: Duration,
    /// At most this many windows are closed per run (catch-up after an outage is gradual).
    pub max_windows_per_run: usize,
    /// On the very first run, start at the oldest event no older than this.
    pub initial_backfill: Duration,
    /// Publishing stops starting new parts after this long (the rest waits for the next run).
    pub publish_budget: std::time::Duration,
    /// Fully published batches older than this are deleted.
    pub retention: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            window: Duration::minutes(1),
            max_windows_per_run: 60,
            initial_backfill: Duration::hours(1),
            publish_budget: std::time::Duration::from_secs(30),
            retention: Duration::days(14),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AggError {
    #[error(transparent)]
    Db(#[from] DbFault),
    #[error("aggregation task failed: {0}")]
    Task(String),
}

impl From<tokio_postgres::Error> for AggError {
    fn from(e: tokio_postgres::Error) -> Self {
        AggError::Db(DbFault::from(e))
    }
}

impl From<deadpool_postgres::PoolError> for AggError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AggError::Db(DbFault::from(e))
    }
}

pub struct Aggregator {
    pool: Pool,
    env: String,
    flags: Arc<FlagLoader>,
    sinks: Vec<Box<dyn Sink>>,
    dlq: Option<(aws_sdk_sqs::Client, String)>,
    options: Options,
}

/// Build from configuration once per container (cold start): SDK config, pool, flag loader,
/// sinks. Nothing here connects: the pool and the Datadog key are lazy.
pub async fn build(cfg: &Config) -> Result<Aggregator, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &ssm).await?;
    Ok(build_with(cfg, &sdk, pool, Options::default()))
}

/// [`build`] with the SDK config and pool supplied (tests, the CLI).
pub fn build_with(cfg: &Config, sdk: &SdkConfig, pool: Pool, options: Options) -> Aggregator {
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let recorder = holdfast_adapters::events::EventRecorder::new(pool.clone());
    let flags = Arc::new(FlagLoader::new(
        ssm.clone(),
        cfg.environment,
        cfg.ssm_prefix.clone(),
        FLAG_TTL,
        recorder,
        holdfast_shared::events::Source::MetricsAggregator,
    ));
    let mut sinks: Vec<Box<dyn Sink>> =
        vec![Box::new(CloudWatchSink::new(aws_sdk_cloudwatch::Client::new(sdk), cfg.metrics_namespace.clone()))];
    match &cfg.datadog_api_key_param {
        Some(param) => {
            let url = cfg.datadog_api_url.as_deref().unwrap_or(DEFAULT_DATADOG_API_URL);
            sinks.push(Box::new(DatadogSink::from_ssm(DatadogSink::http_client(), url, ssm, param.clone())));
        }
        None => tracing::info!("DATADOG_API_KEY_PARAM not set: Datadog sink disabled"),
    }
    let dlq = cfg.email_dlq_url.clone().map(|u| (aws_sdk_sqs::Client::new(sdk), u));
    Aggregator::new(pool, cfg.environment.as_str(), flags, sinks, dlq, options)
}

impl Aggregator {
    pub fn new(
        pool: Pool,
        env: &str,
        flags: Arc<FlagLoader>,
        sinks: Vec<Box<dyn Sink>>,
        dlq: Option<(aws_sdk_sqs::Client, String)>,
        options: Options,
    ) -> Self {
        Self { pool, env: env.to_owned(), flags, sinks, dlq, options }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The database clock: `created_at` is stamped by it, so windows close by it too (a skewed
    /// Lambda clock cannot close a window early).
    pub async fn db_now(&self) -> Result<DateTime<Utc>, AggError> {
        let c = self.pool.get().await?;
        Ok(store::clock_timestamp(&c).await?)
    }

    fn sink_enabled(&self, sink: &dyn Sink, flags: &FlagSet) -> bool {
        sink.name() != "datadog" || flags.datadog_enabled()
    }

    /// One run at `now` (injected: tests pass a fixed clock, the Lambda the database clock).
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<RunReport, AggError> {
        self.run_once_with_budget(now, self.options.publish_budget).await
    }

    pub async fn run_once_with_budget(
        &self,
        now: DateTime<Utc>,
        budget: std::time::Duration,
    ) -> Result<RunReport, AggError> {
        let started = tokio::time::Instant::now();
        let flags = self.flags.get().await.set;
        let mut report = RunReport::default();
        let enabled: Vec<&'static str> =
            self.sinks.iter().filter(|s| self.sink_enabled(s.as_ref(), &flags)).map(|s| s.name()).collect();

        self.close_windows(now, &flags, &enabled, &mut report).await?;
        self.measure_gauges(now, &flags, &enabled, &mut report).await?;

        let deadline = started + budget;
        let runs =
            self.sinks.iter().filter(|s| enabled.contains(&s.name())).map(|s| self.publish(s.as_ref(), now, deadline));
        for r in futures::future::join_all(runs).await {
            report.sinks.push(r?);
        }
        self.cleanup(now).await?;
        Ok(report)
    }

    /// Phase 2, **gauges**: measured once per minute, frozen and queued like a window.
    async fn measure_gauges(
        &self,
        now: DateTime<Utc>,
        flags: &FlagSet,
        enabled: &[&'static str],
        report: &mut RunReport,
    ) -> Result<(), AggError> {
        let minute = window_start_of(now, self.options.window);
        let mut client = self.pool.get().await?;
        if store::gauges_batch_exists(&client, minute).await? {
            return Ok(());
        }
        let sqs = self.dlq.as_ref().map(|(c, u)| (c, u.as_str()));
        let m = gauges::measure(&self.env, minute, now, &client, sqs, flags).await;
        report.gauge_failures = m.failures;
        let tx = client.transaction().await?;
        let n = store::insert_gauges_batch(&tx, minute, &m.data, now).await?;
        if n == 1 && !m.data.is_empty() {
            for sink in enabled {
                store::queue_publication(&tx, "gauges", minute, sink, now).await?;
            }
        }
        tx.commit().await?;
        report.gauges_measured = n == 1;
        Ok(())
    }

    /// Fully published batches older than the retention are deleted.
    async fn cleanup(&self, now: DateTime<Utc>) -> Result<(), AggError> {
        let c = self.pool.get().await?;
        store::delete_published_before(&c, now - self.options.retention).await?;
        Ok(())
    }
}

/// The Lambda handler: one run at the database clock, publishing within the invocation's
/// remaining time. State is committed as the run goes; an error return (a sink or gauge
/// problem) only makes the failure visible in the function's Errors metric.
pub async fn handle(
    agg: &Aggregator,
    event: lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value>>,
) -> Result<RunReport, lambda_runtime::Error> {
    let now = agg.db_now().await?;
    let remaining = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    // Leave room to record the last part and return.
    let budget = remaining.saturating_sub(std::time::Duration::from_secs(10)).min(agg.options.publish_budget);
    let report = agg.run_once_with_budget(now, budget).await?;
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "metrics run");
    let problems = report.problems();
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems.join("; ").into())
    }
}

/// The local runner's stand-in for the EventBridge schedule (moto never fires schedules):
/// builds an aggregator from `cfg` and runs it every `every` until the process ends.
pub fn spawn_local_ticker(cfg: Config, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let agg = match build(&cfg).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "metrics aggregator not started");
                return;
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = match agg.db_now().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics tick skipped: database unavailable");
                    continue;
                }
            };
            match agg.run_once(now).await {
                Ok(r) if r.problems().is_empty() => tracing::debug!(windows = r.windows_closed, "metrics tick"),
                Ok(r) => tracing::warn!(problems = ?r.problems(), "metrics tick with problems"),
                Err(e) => tracing::warn!(error = %e, "metrics tick failed"),
            }
        }
    })
}
