//! Phase 1, **close**: under the cursor lock and in one REPEATABLE READ snapshot, aggregate the
//! closed windows and commit their frozen datums, their pending publications and the advanced
//! cursor together. Which windows close is decided by `holdfast_shared::metrics`.

use crate::report::RunReport;
use crate::{store, AggError, Aggregator};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use holdfast_shared::flags::FlagSet;
use holdfast_shared::metrics::{
    aggregate_window, restamp_late_rows, select_windows, window_start_of, EventRow, MetricDatum,
};
use std::collections::VecDeque;
use tokio::task::JoinHandle;
use tokio_postgres::{Row, Transaction};

/// At most this many windows are aggregating while the next is read: bounds memory to a few
/// windows of rows when the reader outpaces the aggregation (catch-up runs).
const IN_FLIGHT: usize = 3;

/// A window's aggregation result, before it is stored.
struct Closed {
    start: DateTime<Utc>,
    data: Vec<MetricDatum>,
    events: u64,
    late: u64,
}

impl Aggregator {
    pub(crate) async fn close_windows(
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
        let (oldest_open, db_now) = store::oldest_open_transaction(&client).await?;
        let tx =
            client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let Some(cursor) = store::lock_cursor(&tx).await? else {
            report.cursor_busy = true;
            tracing::info!("another run holds the metrics cursor; closing nothing");
            return Ok(());
        };
        // High-water mark of this snapshot: every row we can see now has id <= max_id.
        let max_id = store::max_event_id(&tx).await?;
        let (next_open, last_seen) = match cursor.next_window_start {
            Some(t) => (t, cursor.last_seen_id),
            None => (self.start_cursor(&tx, now, max_id).await?, max_id),
        };

        let limit = self.options.max_windows_per_run;
        let selection = select_windows(next_open, now, window, grace, limit, oldest_open, db_now);
        if let Some(open) = selection.ignored_open {
            tracing::warn!(open_since = %open, "a transaction open for over the wait limit is not waited for");
        }
        if selection.waiting > 0 {
            tracing::info!(
                waiting = selection.waiting,
                open_since = ?oldest_open,
                "windows wait for a transaction that began inside them"
            );
        }
        let windows = selection.windows;
        let (Some(first), Some(last)) = (windows.first().copied(), windows.last().copied()) else {
            tx.commit().await?;
            return Ok(());
        };
        let close_end = last + window;

        // Late rows: committed after their window was closed (absent from that snapshot).
        let mut late = store::late_rows(&tx, next_open, last_seen).await?;
        let late_count = restamp_late_rows(&mut late, first) as u64;
        if late_count > 0 {
            tracing::warn!(late_events = late_count, window = %first, "late events counted in the window closed now");
        }

        let closed = self.stream_windows(&tx, &windows, close_end, late, late_count).await?;
        self.store_closed(&tx, &closed, enabled, now, report).await?;
        store::set_cursor(&tx, close_end, last_seen.max(max_id), now).await?;
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

    /// First run: begin at the oldest event within the backfill horizon (or now), and treat
    /// everything older as history, never as late (the cursor's last seen id becomes `max_id`).
    async fn start_cursor(
        &self,
        tx: &Transaction<'_>,
        now: DateTime<Utc>,
        max_id: i64,
    ) -> Result<DateTime<Utc>, AggError> {
        let horizon = now - self.options.initial_backfill;
        let oldest = store::oldest_event_since(tx, horizon).await?;
        let start = window_start_of(oldest.unwrap_or(now), self.options.window);
        store::set_cursor(tx, start, max_id, now).await?;
        Ok(start)
    }

    /// Freezes each closed window and queues it for every enabled sink that still accepts it.
    async fn store_closed(
        &self,
        tx: &Transaction<'_>,
        closed: &[Closed],
        enabled: &[&'static str],
        now: DateTime<Utc>,
        report: &mut RunReport,
    ) -> Result<(), AggError> {
        for c in closed {
            report.events += c.events;
            report.datums += c.data.len();
            let stored = crate::payload::encode(&c.data);
            let n = store::insert_events_batch(tx, c.start, &stored, c.data.len(), c.events, c.late, now).await?;
            if n == 1 && !c.data.is_empty() {
                for sink in self.sinks.iter().filter(|s| enabled.contains(&s.name())) {
                    if now - c.start > sink.max_age() {
                        // Catching up after a long outage: this sink would drop the points.
                        tracing::warn!(sink = sink.name(), window = %c.start, "window too old for the sink; not queued");
                        continue;
                    }
                    store::queue_publication(tx, "events", c.start, sink.name(), now).await?;
                }
            } else if n == 0 {
                tracing::error!(window = %c.start, "window was already closed; not publishing it again");
            }
        }
        Ok(())
    }

    /// Streams the rows of `windows` in index order and aggregates each window on a blocking
    /// thread while the next one is still being read (the scan and the aggregation overlap).
    async fn stream_windows(
        &self,
        tx: &Transaction<'_>,
        windows: &[DateTime<Utc>],
        close_end: DateTime<Utc>,
        late: Vec<EventRow>,
        late_count: u64,
    ) -> Result<Vec<Closed>, AggError> {
        let window = self.options.window;
        let portal = store::open_window_rows(tx, windows[0], close_end).await?;
        let mut running = Running::new(&self.env, window, late, late_count, windows.len());
        let mut idx = 0usize;
        let mut buf: Vec<Row> = Vec::new();
        loop {
            let stream = store::fetch_window_rows(tx, &portal).await?;
            let mut stream = std::pin::pin!(stream);
            let mut fetched = 0;
            while let Some(row) = stream.next().await {
                let row = row?;
                fetched += 1;
                let created = store::created_at(&row);
                while created >= windows[idx] + window && idx + 1 < windows.len() {
                    running.make_room().await?;
                    running.spawn(windows[idx], std::mem::take(&mut buf));
                    idx += 1;
                }
                buf.push(row);
            }
            if store::last_fetch(fetched) {
                break;
            }
        }
        while idx < windows.len() {
            running.spawn(windows[idx], std::mem::take(&mut buf));
            idx += 1;
        }
        running.finish().await
    }
}

/// Windows aggregating on blocking threads, oldest first, and those already done.
struct Running {
    env: String,
    window: Duration,
    /// The restamped late rows and their count, for the first window spawned.
    late: Option<(Vec<EventRow>, u64)>,
    tasks: VecDeque<JoinHandle<Closed>>,
    done: Vec<Closed>,
}

impl Running {
    fn new(env: &str, window: Duration, late: Vec<EventRow>, late_count: u64, windows: usize) -> Self {
        Self {
            env: env.to_owned(),
            window,
            late: Some((late, late_count)),
            tasks: VecDeque::with_capacity(IN_FLIGHT + 1),
            done: Vec::with_capacity(windows),
        }
    }

    /// Waits for the oldest window when [`IN_FLIGHT`] are aggregating.
    async fn make_room(&mut self) -> Result<(), AggError> {
        if self.tasks.len() >= IN_FLIGHT {
            if let Some(t) = self.tasks.pop_front() {
                self.done.push(t.await.map_err(|e| AggError::Task(e.to_string()))?);
            }
        }
        Ok(())
    }

    /// Aggregates window `start` from its `rows` (plus the late rows, for the first window).
    fn spawn(&mut self, start: DateTime<Utc>, rows: Vec<Row>) {
        let (late, late_n) = self.late.take().unwrap_or_default();
        let env = self.env.clone();
        let window = self.window;
        self.tasks.push_back(tokio::task::spawn_blocking(move || aggregate(&env, start, window, rows, late, late_n)));
    }

    async fn finish(mut self) -> Result<Vec<Closed>, AggError> {
        for t in self.tasks {
            self.done.push(t.await.map_err(|e| AggError::Task(e.to_string()))?);
        }
        Ok(self.done)
    }
}

fn aggregate(
    env: &str,
    start: DateTime<Utc>,
    window: Duration,
    rows: Vec<Row>,
    late: Vec<EventRow>,
    late_n: u64,
) -> Closed {
    let mut all = late;
    all.reserve(rows.len());
    all.extend(rows.iter().map(store::event_row));
    drop(rows);
    let events = all.len() as u64;
    let data = aggregate_window(env, start, window, &all);
    Closed { start, data, events, late: late_n }
}
