//! `holdfast metrics …`: alert backtest, one aggregator run, and the aggregation benchmark.

use crate::Res;
use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use holdfast_adapters::config::Config;
use holdfast_adapters::sql::Sql;
use holdfast_shared::alerts::{backtest_all, load_series, rule};
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum MetricsCmd {
    /// Replay a recorded per-minute series through every alert rule; print fires and flaps.
    Backtest {
        /// Series file (`{"version": 1, "samples": [...]}`), e.g. tests/fixtures/backtest/sample-series.json.
        file: std::path::PathBuf,
        /// Print the full report (with transitions) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the aggregator once, as the EventBridge schedule would (database clock).
    RunOnce,
    /// Aggregation cost vs a bare indexed scan of the same rows, in a dedicated database.
    Bench {
        /// Numbers of events per run to measure (the last one is the headline).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<i64>,
        /// Rounds per size (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Minutes the events are spread over (one window per minute).
        #[arg(long, default_value_t = 60)]
        minutes: i64,
        /// Dedicated database (dropped and re-created).
        #[arg(long, default_value = "holdfast_metrics_bench")]
        database: String,
    },
}

pub async fn run(cmd: MetricsCmd) -> Res {
    match cmd {
        MetricsCmd::Backtest { file, json } => backtest(&file, json),
        MetricsCmd::RunOnce => {
            let cfg = Config::from_env()?;
            let agg = metrics_aggregator::build(&cfg).await?;
            let now = agg.db_now().await?;
            let report = agg.run_once(now).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            let problems = report.problems();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; ").into())
            }
        }
        MetricsCmd::Bench { sizes, rounds, minutes, database } => {
            bench(&sizes, rounds.max(1), minutes.max(1), &database).await
        }
    }
}

fn backtest(file: &std::path::Path, as_json: bool) -> Res {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let series = load_series(&text)?;
    let reports = backtest_all(&series);
    if as_json {
        let v: Vec<serde_json::Value> =
            reports.iter().map(|(id, r)| serde_json::json!({ "rule": id, "report": r })).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (first, last) = (series.first().map(|s| s.minute), series.last().map(|s| s.minute));
    println!("{} minutes of samples ({} .. {})", series.len(), fmt_opt(first), fmt_opt(last));
    println!("{:<28} {:<7} {:>6} {:>6} {:>15}  runbook", "rule", "sev", "fired", "flaps", "minutes firing");
    for (id, r) in &reports {
        let def = rule(id);
        println!(
            "{:<28} {:<7} {:>6} {:>6} {:>15}  {}",
            id,
            def.map(|d| d.severity.as_str()).unwrap_or("?"),
            r.fired,
            r.flaps,
            r.minutes_firing,
            def.map(|d| d.runbook).unwrap_or("?")
        );
    }
    let flapping: Vec<&str> = reports.iter().filter(|(_, r)| r.flaps > 0).map(|(id, _)| *id).collect();
    if !flapping.is_empty() {
        println!("flapping rules (re-fired within 30 min of clearing): {}", flapping.join(", "));
    }
    Ok(())
}

fn fmt_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string()).unwrap_or_else(|| "-".into())
}

// ------------------------------------------------------------------------------ bench

/// A realistic mix: mostly quotes and holds, some confirms, conflicts, failures and emails,
/// each with a duration; contexts as the recorder writes them.
const GENERATE: &str = "
INSERT INTO observability_events (created_at, source, event_type, severity, restaurant_id, context)
SELECT $1::timestamptz + (i * $2::float8 / $3::float8) * interval '1 millisecond',
       'holds-api',
       (ARRAY['quote.completed','quote.completed','quote.completed','hold.created','hold.created',
              'hold.confirmed','hold.conflict','hold.failed','email.sent','hold.conflict.shadow'])[1 + i % 10],
       'info',
       '5d2c1f3e-0000-4000-8000-00000000d3e0'::uuid,
       jsonb_build_object('duration_ms', (i * 7919) % 1500, 'attempt', 1 + (i % 7 = 0)::int,
                          'max_attempts', 3, 'error_code', 'database_unavailable',
                          'email_type', 'booking_confirmed', 'request_id', gen_random_uuid())
  FROM generate_series(0, $4::bigint - 1) AS i";

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

async fn bench(sizes: &[i64], rounds: usize, minutes: i64, database: &str) -> Res {
    let cfg = Config::from_env()?;
    if !database.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err("--database must be [a-z0-9_]".into());
    }
    // The aggregator runs as the runtime role; generating and resetting the events (TRUNCATE,
    // VACUUM) is the owner's.
    let crate::local::Scratch { pool, owner, .. } = crate::local::scratch_database(database, 4).await?;

    let sdk = holdfast_adapters::aws::sdk_config().await;
    let flags = Arc::new(holdfast_adapters::flags::FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&sdk),
        cfg.environment,
        cfg.ssm_prefix.clone(),
        metrics_aggregator::FLAG_TTL,
    ));
    // No sinks: this measures reading, aggregating and recording windows, which is what grows
    // with the number of events (publishing is bounded by the catalogue's cardinality).
    let options = metrics_aggregator::Options {
        max_windows_per_run: (minutes as usize) + 5,
        initial_backfill: Duration::minutes(minutes + 30),
        ..Default::default()
    };
    let agg = metrics_aggregator::Aggregator::new(pool.clone(), "bench", flags, Vec::new(), None, options);

    println!("metrics bench: database {database}, {rounds} rounds per size, events over {minutes} one-minute windows");
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>9} {:>11} {:>9}",
        "events", "run ms", "scan ms", "server ms", "run/scan", "run/server", "µs/event"
    );
    let c = owner.get().await?;
    for &n in sizes {
        c.batch_execute("TRUNCATE observability_events RESTART IDENTITY").await?;
        let now: DateTime<Utc> = c.fetch_one("SELECT now()", &[]).await?.get(0);
        // Events end 5 minutes ago, so every window is closed (grace 120 s).
        let start =
            holdfast_shared::metrics::window_start_of(now - Duration::minutes(minutes + 5), Duration::minutes(1));
        let end = start + Duration::minutes(minutes);
        let span_ms = (minutes * 60_000) as f64;
        let t = Instant::now();
        c.run(GENERATE, &[&start, &span_ms, &(n as f64), &n]).await?;
        c.batch_execute("VACUUM (ANALYZE) observability_events").await?;
        eprintln!("  generated {n} events in {:.1} s", t.elapsed().as_secs_f64());

        let (mut runs, mut scans, mut servers, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            c.batch_execute(
                "UPDATE metrics_cursor SET next_window_start = NULL, last_seen_id = 0; DELETE FROM metrics_batches;",
            )
            .await?;
            // Alternate which goes first, so cache warmth does not favour one side.
            let (run_ms, scan_ms) = if round % 2 == 0 {
                let s = scan(&c, start, end, n).await?;
                (timed_run(&agg, now, n).await?, s)
            } else {
                let r = timed_run(&agg, now, n).await?;
                (r, scan(&c, start, end, n).await?)
            };
            let server_ms = server_scan(&c, start, end, n).await?;
            runs.push(run_ms);
            scans.push(scan_ms);
            servers.push(server_ms);
            ratios.push(run_ms / scan_ms);
        }
        let per_round: Vec<String> = runs.iter().zip(&scans).map(|(r, s)| format!("{r:.0}/{s:.0}")).collect();
        eprintln!("  rounds (run/scan ms): {}", per_round.join(", "));
        let (r, s, sv, ratio) = (median(&mut runs), median(&mut scans), median(&mut servers), median(&mut ratios));
        println!(
            "{:>9} {:>10.1} {:>10.1} {:>10.1} {:>8.2}x {:>10.2}x {:>9.2}",
            n,
            r,
            s,
            sv,
            ratio,
            r / sv,
            r * 1000.0 / n.max(1) as f64
        );
    }
    println!("run = one aggregator run closing every window (read + sanitise + aggregate + store)");
    println!(
        "scan = the same SELECT streamed to the client and discarded; server = its EXPLAIN ANALYZE execution time"
    );
    println!("run/scan = median of per-round ratios; run/server = ratio of medians");
    Ok(())
}

async fn timed_run(
    agg: &metrics_aggregator::Aggregator,
    now: DateTime<Utc>,
    n: i64,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let t = Instant::now();
    let report = agg.run_once(now).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if report.events != n as u64 {
        return Err(format!("aggregator read {} events, expected {n}", report.events).into());
    }
    Ok(ms)
}

const SCAN: &str = "SELECT id, created_at, source, event_type, context FROM observability_events
                     WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id";

async fn scan(
    c: &tokio_postgres::Client,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    n: i64,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    use futures::StreamExt;
    let t = Instant::now();
    // Streamed (a million rows), as the unnamed statement like every other read.
    use tokio_postgres::types::{ToSql, Type};
    let params: [(&(dyn ToSql + Sync), Type); 2] = [(&start, Type::TIMESTAMPTZ), (&end, Type::TIMESTAMPTZ)];
    let stream = c.query_typed_raw(SCAN, params).await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = 0i64;
    while let Some(r) = stream.next().await {
        r?;
        rows += 1;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if rows != n {
        return Err(format!("scan read {rows} rows, expected {n}").into());
    }
    Ok(ms)
}

async fn server_scan(
    c: &tokio_postgres::Client,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    n: i64,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    // The same plan executed inside PostgreSQL (heap and jsonb read, no output or transfer).
    let sql = format!("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {SCAN}");
    let plan: serde_json::Value = c.fetch_one(&sql, &[&start, &end]).await?.get(0);
    let rows = plan[0]["Plan"]["Actual Rows"].as_f64().unwrap_or_default() as i64;
    if rows != n {
        return Err(format!("server scan counted {rows} rows, expected {n}").into());
    }
    Ok(plan[0]["Execution Time"].as_f64().unwrap_or_default())
}
