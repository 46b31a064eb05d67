//! The metrics aggregator: an EventBridge-scheduled Lambda (every minute) that turns
//! `observability_events` rows into CloudWatch and Datadog metrics, each closed window exactly
//! once per sink.
//!
//! A run has three phases (state in `migrations/V5__metrics.sql`, operations in
//! `docs/runbooks/metrics.md`):
//! 1. **Close** — under the `metrics_cursor` row lock (`FOR UPDATE SKIP LOCKED`; a run that
//!    finds it taken closes nothing) and in one REPEATABLE READ snapshot: list the closed windows
//!    (`closed_windows`, grace from `metrics.lateEventGraceSeconds`), read the rows committed
//!    after their window was closed (late: `created_at < next_window_start AND id >
//!    last_seen_id`, restamped into the first window closed now), stream the windows' rows in
//!    index order, `aggregate_window` each, and commit the frozen datums, one pending
//!    publication per enabled sink and the advanced cursor together.
//! 2. **Gauges** — once per minute: DLQ depth, outbox pending/lag, effective strict rollout,
//!    frozen and queued the same way (kind `gauges`).
//! 3. **Publish** — per sink, a queue: lock the oldest pending publication `FOR UPDATE SKIP
//!    LOCKED`, send its next part, record it, commit. A failing sink is left pending (retried
//!    next run) and does not touch the other sink's rows.

pub mod gauges;
pub mod payload;
pub mod sinks;

use aws_config::SdkConfig;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use futures::StreamExt;
use holdfast_adapters::config::Config;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::flags::FlagLoader;
use holdfast_shared::flags::FlagSet;
use holdfast_shared::metrics::{aggregate_window, closed_windows, restamp_late_rows, window_start_of, EventRow};
use serde::Serialize;
use sinks::{CloudWatchSink, DatadogSink, Sink};
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

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
    let flags = Arc::new(FlagLoader::new(ssm.clone(), cfg.environment, cfg.ssm_prefix.clone(), FLAG_TTL));
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

const CURSOR_SQL: &str = "SELECT next_window_start, last_seen_id FROM metrics_cursor WHERE id FOR UPDATE SKIP LOCKED";
/// Rows per fetch from the windows' portal.
const FETCH_ROWS: i32 = 20_000;
/// The start of the oldest other transaction open in this database, and the database clock.
/// Needs `pg_read_all_stats` (or one role for every writer) to see other roles' sessions.
const OLDEST_OPEN_TX_SQL: &str = "SELECT (SELECT min(xact_start) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend' AND xact_start IS NOT NULL), now()";
const EVENT_COLUMNS: &str = "id, created_at, source, event_type, context";

fn event_row(r: &Row) -> EventRow {
    EventRow { id: r.get(0), created_at: r.get(1), source: r.get(2), event_type: r.get(3), context: r.get(4) }
}

/// A window's aggregation result, before it is stored.
struct Closed {
    start: DateTime<Utc>,
    data: Vec<holdfast_shared::metrics::MetricDatum>,
    events: u64,
    late: u64,
}

fn params<'a>(p: &'a [&'a (dyn ToSql + Sync)]) -> impl ExactSizeIterator<Item = &'a (dyn ToSql + Sync)> {
    p.iter().copied()
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
        Ok(c.query_one("SELECT clock_timestamp()", &[]).await?.get(0))
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

    async fn close_windows(
        &self,
        now: DateTime<Utc>,
        flags: &FlagSet,
        enabled: &[&'static str],
        report: &mut RunReport,
    ) -> Result<(), AggError> {
        let window = self.options.window;
        let grace = Duration::seconds(i64::from(flags.late_event_grace_seconds()));
        let mut client = self.pool.get().await?;
        // Read BEFORE the snapshot: any transaction open at snapshot time either shows here or
        // began after this read, when every window we may close had already ended.
        let open = client.query_one(OLDEST_OPEN_TX_SQL, &[]).await?;
        let (oldest_open, db_now): (Option<DateTime<Utc>>, DateTime<Utc>) = (open.get(0), open.get(1));
        let tx =
            client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let cursor = match tx.query_opt(CURSOR_SQL, &[]).await {
            Ok(c) => c,
            // Under REPEATABLE READ a cursor updated since our snapshot is a serialization
            // failure: another run just closed windows. Same as finding it locked.
            Err(e) if holdfast_adapters::db::classify(&e) == DbFault::Serialization => None,
            Err(e) => return Err(e.into()),
        };
        let Some(cursor) = cursor else {
            report.cursor_busy = true;
            tracing::info!("another run holds the metrics cursor; closing nothing");
            return Ok(());
        };
        let stored_next: Option<DateTime<Utc>> = cursor.get(0);
        let mut last_seen: i64 = cursor.get(1);
        // High-water mark of this snapshot: every row we can see now has id <= max_id.
        let max_id: i64 =
            tx.query_one("SELECT COALESCE(max(id), 0)::bigint FROM observability_events", &[]).await?.get(0);

        let next_open = match stored_next {
            Some(t) => t,
            None => {
                // First run: begin at the oldest event within the backfill horizon (or now), and
                // treat everything older as history, never as late.
                let horizon = now - self.options.initial_backfill;
                let oldest: Option<DateTime<Utc>> = tx
                    .query_one("SELECT min(created_at) FROM observability_events WHERE created_at >= $1", &[&horizon])
                    .await?
                    .get(0);
                last_seen = max_id;
                let start = window_start_of(oldest.unwrap_or(now), window);
                tx.execute(
                    "UPDATE metrics_cursor SET next_window_start = $1, last_seen_id = $2, updated_at = $3 WHERE id",
                    &[&start, &last_seen, &now],
                )
                .await?;
                start
            }
        };

        let closable = closed_windows(next_open, now, window, grace, self.options.max_windows_per_run);
        let max_wait = Duration::minutes(holdfast_shared::metrics::MAX_OPEN_TRANSACTION_WAIT_MINUTES);
        if let Some(open) = oldest_open.filter(|o| db_now - *o > max_wait) {
            tracing::warn!(open_since = %open, "a transaction open for over the wait limit is not waited for");
        }
        let windows =
            holdfast_shared::metrics::cap_at_open_transactions(closable.clone(), window, oldest_open, db_now, max_wait);
        if windows.len() < closable.len() {
            tracing::info!(
                waiting = closable.len() - windows.len(),
                open_since = ?oldest_open,
                "windows wait for a transaction that began inside them"
            );
        }
        let (Some(first), Some(last)) = (windows.first().copied(), windows.last().copied()) else {
            tx.commit().await?;
            return Ok(());
        };
        let close_end = last + window;

        // Late rows: committed after their window was closed (absent from that snapshot).
        let mut late: Vec<EventRow> = tx
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM observability_events
                      WHERE created_at < $1 AND id > $2 ORDER BY id"
                ),
                &[&next_open, &last_seen],
            )
            .await?
            .iter()
            .map(event_row)
            .collect();
        let late_count = restamp_late_rows(&mut late, first) as u64;
        if late_count > 0 {
            tracing::warn!(late_events = late_count, window = %first, "late events counted in the window closed now");
        }

        let closed = self.stream_windows(&tx, &windows, close_end, late, late_count).await?;

        for c in &closed {
            report.events += c.events;
            report.datums += c.data.len();
            let stored = payload::encode(&c.data);
            let n = tx
                .execute(
                    "INSERT INTO metrics_batches (kind, window_start, datums, datum_count, event_count, late_events, closed_at)
                     VALUES ('events', $1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&c.start, &stored, &(c.data.len() as i32), &(c.events as i64), &(c.late as i64), &now],
                )
                .await?;
            if n == 1 && !c.data.is_empty() {
                for sink in self.sinks.iter().filter(|s| enabled.contains(&s.name())) {
                    if now - c.start > sink.max_age() {
                        // Catching up after a long outage: this sink would drop the points.
                        tracing::warn!(sink = sink.name(), window = %c.start, "window too old for the sink; not queued");
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO metrics_publications (kind, window_start, sink, updated_at) VALUES ('events', $1, $2, $3)",
                        &[&c.start, &sink.name(), &now],
                    )
                    .await?;
                }
            } else if n == 0 {
                tracing::error!(window = %c.start, "window was already closed; not publishing it again");
            }
        }
        tx.execute(
            "UPDATE metrics_cursor SET next_window_start = $1, last_seen_id = $2, updated_at = $3 WHERE id",
            &[&close_end, &last_seen.max(max_id), &now],
        )
        .await?;
        tx.commit().await?;

        report.windows_closed = closed.len();
        report.first_window = Some(first);
        report.last_window = Some(last);
        report.late_events = late_count;
        tracing::info!(
            windows = closed.len(), first = %first, last = %last, events = report.events,
            late_events = late_count, datums = report.datums, "windows closed"
        );
        Ok(())
    }

    /// Streams the rows of `windows` in index order and aggregates each window on a blocking
    /// thread while the next one is still being read (the scan and the aggregation overlap).
    async fn stream_windows(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        windows: &[DateTime<Utc>],
        close_end: DateTime<Utc>,
        late: Vec<EventRow>,
        late_count: u64,
    ) -> Result<Vec<Closed>, AggError> {
        let window = self.options.window;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM observability_events
              WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id"
        );
        let first = windows[0];
        // A portal fetched in batches: tokio-postgres buffers a plain result set without bound
        // when the reader is slower than the server, so batches keep memory flat.
        let portal = tx.bind_raw(&sql, params(&[&first, &close_end])).await?;

        // At most this many windows are aggregating while the next is read: bounds memory to a
        // few windows of rows when the reader outpaces the aggregation (catch-up runs).
        const IN_FLIGHT: usize = 3;
        let mut tasks: std::collections::VecDeque<tokio::task::JoinHandle<Closed>> =
            std::collections::VecDeque::with_capacity(IN_FLIGHT + 1);
        let mut out = Vec::with_capacity(windows.len());
        let mut idx = 0usize;
        let mut buf: Vec<Row> = Vec::new();
        let mut pending_late = Some(late);
        let spawn = |start: DateTime<Utc>, rows: Vec<Row>, late: Vec<EventRow>, late_n: u64| {
            let env = self.env.clone();
            tokio::task::spawn_blocking(move || {
                let mut all = late;
                all.reserve(rows.len());
                all.extend(rows.iter().map(event_row));
                drop(rows);
                let events = all.len() as u64;
                let data = aggregate_window(&env, start, window, &all);
                Closed { start, data, events, late: late_n }
            })
        };
        loop {
            let stream = tx.query_portal_raw(&portal, FETCH_ROWS).await?;
            let mut stream = std::pin::pin!(stream);
            let mut fetched = 0;
            while let Some(row) = stream.next().await {
                let row = row?;
                fetched += 1;
                let created: DateTime<Utc> = row.get(1);
                while created >= windows[idx] + window && idx + 1 < windows.len() {
                    let late = pending_late.take().unwrap_or_default();
                    let late_n = if idx == 0 { late_count } else { 0 };
                    if tasks.len() >= IN_FLIGHT {
                        if let Some(t) = tasks.pop_front() {
                            out.push(t.await.map_err(|e| AggError::Task(e.to_string()))?);
                        }
                    }
                    tasks.push_back(spawn(windows[idx], std::mem::take(&mut buf), late, late_n));
                    idx += 1;
                }
                buf.push(row);
            }
            if fetched < FETCH_ROWS {
                break;
            }
        }
        while idx < windows.len() {
            let late = pending_late.take().unwrap_or_default();
            let late_n = if idx == 0 { late_count } else { 0 };
            tasks.push_back(spawn(windows[idx], std::mem::take(&mut buf), late, late_n));
            idx += 1;
        }
        for t in tasks {
            out.push(t.await.map_err(|e| AggError::Task(e.to_string()))?);
        }
        Ok(out)
    }

    async fn measure_gauges(
        &self,
        now: DateTime<Utc>,
        flags: &FlagSet,
        enabled: &[&'static str],
        report: &mut RunReport,
    ) -> Result<(), AggError> {
        let minute = window_start_of(now, self.options.window);
        let mut client = self.pool.get().await?;
        let exists = client
            .query_opt("SELECT 1 FROM metrics_batches WHERE kind = 'gauges' AND window_start = $1", &[&minute])
            .await?
            .is_some();
        if exists {
            return Ok(());
        }
        let sqs = self.dlq.as_ref().map(|(c, u)| (c, u.as_str()));
        let m = gauges::measure(&self.env, minute, now, &client, sqs, flags).await;
        report.gauge_failures = m.failures;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "INSERT INTO metrics_batches (kind, window_start, datums, datum_count, closed_at)
                 VALUES ('gauges', $1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&minute, &payload::encode(&m.data), &(m.data.len() as i32), &now],
            )
            .await?;
        if n == 1 && !m.data.is_empty() {
            for sink in enabled {
                tx.execute(
                    "INSERT INTO metrics_publications (kind, window_start, sink, updated_at) VALUES ('gauges', $1, $2, $3)",
                    &[&minute, sink, &now],
                )
                .await?;
            }
        }
        tx.commit().await?;
        report.gauges_measured = n == 1;
        Ok(())
    }

    /// Publishes pending batches to one sink, one part per transaction, oldest first. Stops at
    /// the first failure (the sink is likely down; the rest waits for the next run) or when the
    /// time budget is spent.
    async fn publish(
        &self,
        sink: &dyn Sink,
        now: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> Result<SinkReport, AggError> {
        let mut rep = SinkReport { sink: sink.name(), ..SinkReport::default() };
        let mut client = self.pool.get().await?;
        loop {
            if tokio::time::Instant::now() >= deadline {
                rep.out_of_time = true;
                break;
            }
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT p.kind, p.window_start, p.parts_done, b.datums
                       FROM metrics_publications p
                       JOIN metrics_batches b USING (kind, window_start)
                      WHERE p.sink = $1 AND p.status = 'pending'
                      ORDER BY p.window_start, p.kind
                      LIMIT 1
                      FOR UPDATE OF p SKIP LOCKED",
                    &[&sink.name()],
                )
                .await?
            else {
                break;
            };
            let kind: String = row.get(0);
            let start: DateTime<Utc> = row.get(1);
            let parts_done: i32 = row.get(2);
            let key: [&(dyn ToSql + Sync); 3] = [&kind, &start, &sink.name()];

            let data = match payload::decode(row.get(3)) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(sink = sink.name(), window = %start, kind, error = %e, "stored batch unreadable; expiring it");
                    self.finish(&tx, &key, "expired", Some("payload invalid"), now).await?;
                    tx.commit().await?;
                    rep.batches_expired += 1;
                    continue;
                }
            };
            if now - start > sink.max_age() {
                tracing::error!(sink = sink.name(), window = %start, kind, "batch too old for the sink; expired unsent");
                self.finish(&tx, &key, "expired", Some("too old for the sink"), now).await?;
                tx.commit().await?;
                rep.batches_expired += 1;
                continue;
            }
            let parts = sink.part_count(&data);
            let part = usize::try_from(parts_done).unwrap_or(0);
            if part >= parts {
                self.finish(&tx, &key, "published", None, now).await?;
                tx.commit().await?;
                rep.batches_published += 1;
                continue;
            }
            match sink.send_part(&data, part).await {
                Ok(()) => {
                    rep.parts_sent += 1;
                    if part + 1 >= parts {
                        tx.execute(
                            "UPDATE metrics_publications
                                SET parts_done = parts_done + 1, attempts = attempts + 1, status = 'published',
                                    published_at = $4, updated_at = $4, last_error = NULL
                              WHERE kind = $1 AND window_start = $2 AND sink = $3",
                            &[&kind, &start, &sink.name(), &now],
                        )
                        .await?;
                        rep.batches_published += 1;
                    } else {
                        tx.execute(
                            "UPDATE metrics_publications SET parts_done = parts_done + 1, attempts = attempts + 1,
                                    updated_at = $4, last_error = NULL
                              WHERE kind = $1 AND window_start = $2 AND sink = $3",
                            &[&kind, &start, &sink.name(), &now],
                        )
                        .await?;
                    }
                    tx.commit().await?;
                }
                Err(e) => {
                    tx.execute(
                        "UPDATE metrics_publications SET attempts = attempts + 1, last_error = $4, updated_at = $5
                          WHERE kind = $1 AND window_start = $2 AND sink = $3",
                        &[&kind, &start, &sink.name(), &e.0, &now],
                    )
                    .await?;
                    tx.commit().await?;
                    tracing::warn!(sink = sink.name(), window = %start, kind, part, error = %e, "sink refused a part; retried next run");
                    rep.failures += 1;
                    rep.last_error = Some(e.0);
                    break;
                }
            }
        }
        Ok(rep)
    }

    async fn finish(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        key: &[&(dyn ToSql + Sync); 3],
        status: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), AggError> {
        tx.execute(
            "UPDATE metrics_publications
                SET status = $4, last_error = $5, updated_at = $6,
                    published_at = CASE WHEN $4 = 'published' THEN $6 ELSE published_at END
              WHERE kind = $1 AND window_start = $2 AND sink = $3",
            &[key[0], key[1], key[2], &status, &error, &now],
        )
        .await?;
        Ok(())
    }

    async fn cleanup(&self, now: DateTime<Utc>) -> Result<(), AggError> {
        let c = self.pool.get().await?;
        let before = now - self.options.retention;
        c.execute(
            "DELETE FROM metrics_batches b
              WHERE window_start < $1
                AND NOT EXISTS (SELECT 1 FROM metrics_publications p
                                 WHERE p.kind = b.kind AND p.window_start = b.window_start AND p.status = 'pending')",
            &[&before],
        )
        .await?;
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
