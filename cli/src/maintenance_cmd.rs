//! `holdfast maintenance …`: the retention run by hand, its status, and the growth benchmark
//! (issue 15). The run is `metrics_aggregator::maintenance`, the code the hourly Lambda runs.

use crate::Res;
use chrono::{DateTime, Duration, Utc};
use clap::Subcommand;
use holdfast_adapters::config::Config;
use holdfast_adapters::sql::Sql;
use metrics_aggregator::maintenance::{self, Maintenance, Options, StepEnd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand)]
pub enum MaintenanceCmd {
    /// Run every retention step once, as the hourly function does, and print its report (exit
    /// status 1 when a step failed or the event partitions are unhealthy). Settings come from
    /// the HOLDFAST_EVENT_RETENTION_DAYS, HOLDFAST_EVENT_PARTITIONS_AHEAD_DAYS, … variables
    /// (docs/metrics.md#retention); the flags override them.
    Run {
        #[arg(long)]
        event_retention_days: Option<u32>,
        #[arg(long)]
        partitions_ahead_days: Option<u32>,
        /// Stop starting new batches after this many seconds (the rest waits for the next run).
        #[arg(long)]
        budget_seconds: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read-only: the event partitions, rows due for the next run, and the last run.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Growth benchmark: quote and hold latency and hold throughput on an empty database and on
    /// one loaded with past claims and events (then maintained and analysed, as production
    /// would be), in the same run; and the aggregator's run time for new events alone vs over
    /// the old ones. Two throwaway databases; release build (BENCHMARKS.md).
    Bench {
        #[arg(long, default_value_t = 5_000_000)]
        past_claims: i64,
        #[arg(long, default_value_t = 20_000_000)]
        past_events: i64,
        /// New events the aggregator closes (over `--minutes` one-minute windows).
        #[arg(long, default_value_t = 1_000_000)]
        new_events: i64,
        #[arg(long, default_value_t = 60)]
        minutes: i64,
        /// Days the past events are spread over (ending yesterday; within the 90-day retention).
        #[arg(long, default_value_t = 89)]
        event_days: i64,
        /// Days the past claims are spread over (ending yesterday).
        #[arg(long, default_value_t = 365)]
        claim_days: i64,
        /// Restaurants the past claims belong to (8 tables each; the bench restaurant is one).
        #[arg(long, default_value_t = 1000)]
        restaurants: i64,
        /// Seconds of quotes, then of holds, per database per round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

pub async fn run(cmd: MaintenanceCmd) -> Res {
    match cmd {
        MaintenanceCmd::Run { event_retention_days, partitions_ahead_days, budget_seconds, json } => {
            let overrides = [
                (maintenance::EVENT_RETENTION_DAYS.env, event_retention_days),
                (maintenance::PARTITIONS_AHEAD_DAYS.env, partitions_ahead_days),
                (maintenance::BUDGET_SECONDS.env, budget_seconds),
            ];
            let options = Options::from_lookup(|k| {
                overrides
                    .iter()
                    .find(|(name, _)| *name == k)
                    .and_then(|(_, v)| v.map(|v| v.to_string()))
                    .or_else(|| std::env::var(k).ok())
            })?;
            let cfg = Config::from_env()?;
            let m = Maintenance::new(crate::local::pool(&cfg).await?, options);
            let report = m.run().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
            }
            let problems = report.problems();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; ").into())
            }
        }
        MaintenanceCmd::Status { json } => {
            let cfg = Config::from_env()?;
            let m = Maintenance::new(crate::local::pool(&cfg).await?, Options::from_env()?);
            let s = m.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s, m.options());
            }
            Ok(())
        }
        MaintenanceCmd::Bench {
            past_claims,
            past_events,
            new_events,
            minutes,
            event_days,
            claim_days,
            restaurants,
            seconds,
            clients,
            rounds,
        } => {
            bench(BenchArgs {
                past_claims: past_claims.max(0),
                past_events: past_events.max(0),
                new_events: new_events.max(1),
                minutes: minutes.clamp(1, 120),
                event_days: event_days.clamp(2, 89),
                claim_days: claim_days.max(2),
                restaurants: restaurants.max(1),
                seconds: seconds.max(1),
                clients: clients.max(1),
                rounds: rounds.max(1),
            })
            .await
        }
    }
}

fn print_report(r: &maintenance::Report) {
    if r.concurrent_run {
        println!("another maintenance run holds the lock: this one did nothing");
    }
    for s in &r.steps {
        let end = match &s.end {
            StepEnd::Failed(e) => format!("failed: {e}"),
            other => serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        };
        println!("{:<24} {:>10}  {end}", s.step.as_str(), s.rows);
    }
    if !r.partitions_created.is_empty() {
        println!("partitions created: {}", r.partitions_created.join(", "));
    }
    if !r.partitions_dropped.is_empty() {
        println!("partitions dropped: {}", r.partitions_dropped.join(", "));
    }
    let h = &r.health;
    println!(
        "event partitions: {} ({} day(s) ahead, {} row(s) in the default partition); retention {} days; {} ms",
        h.partitions, h.days_ahead, h.default_rows, r.event_retention_days, r.duration_ms
    );
    for p in r.problems() {
        println!("PROBLEM: {p}");
    }
}

fn print_status(s: &maintenance::Status, o: &Options) {
    let fmt = |t: Option<DateTime<Utc>>, none: &str| {
        t.map(|t| t.format("%Y-%m-%d %H:%MZ").to_string()).unwrap_or(none.into())
    };
    println!("event partitions ({}, retention {} days):", s.partitions.len(), o.event_retention_days());
    for p in &s.partitions {
        let range = if p.to.is_none() && p.from.is_none() {
            "default (rows whose day has no partition)".to_owned()
        } else {
            format!("{} .. {}", fmt(p.from, "the beginning"), fmt(p.to, "-"))
        };
        println!("  {:<32} {:<40} ~{} rows", p.name, range, p.rows_estimate.max(0));
    }
    let h = &s.health;
    println!(
        "days ahead: {} (want >= 2; configured {}), rows in the default partition: {}",
        h.days_ahead,
        o.partitions_ahead_days(),
        h.default_rows
    );
    println!("due for the next run:");
    for (step, n) in &s.due {
        println!("  {:<24} {n}", step.as_str());
    }
    match &s.last_run {
        Some((at, what)) => println!("last run: {what} at {}", at.format("%Y-%m-%d %H:%M:%SZ")),
        None => println!("last run: none recorded"),
    }
}

// ------------------------------------------------------------------------------ bench

struct BenchArgs {
    past_claims: i64,
    past_events: i64,
    new_events: i64,
    minutes: i64,
    event_days: i64,
    claim_days: i64,
    restaurants: i64,
    seconds: u64,
    clients: usize,
    rounds: usize,
}

const EMPTY_DB: &str = "holdfast_bench_growth_empty";
const LOADED_DB: &str = "holdfast_bench_growth_loaded";
const RESTAURANT: &str = "5d2c1f3e-0000-4000-8000-0000000be7c1";
/// Rows per generating statement (progress is printed between them).
const CHUNK: i64 = 1_000_000;

/// One database under test: its pools and the holds service built on it.
struct Side {
    name: &'static str,
    owner: deadpool_postgres::Pool,
    pool: deadpool_postgres::Pool,
    svc: Arc<holds_api::HoldsService>,
    tables: Vec<holdfast_shared::policy::TableSpec>,
}

/// Per round, per side: latencies (ms) and hold throughput.
#[derive(Default)]
struct Figures {
    quote_p50: Vec<f64>,
    quote_p99: Vec<f64>,
    hold_p50: Vec<f64>,
    hold_p99: Vec<f64>,
    holds_per_s: Vec<f64>,
    agg_ms: Vec<f64>,
    non_2xx: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nearest-rank percentile of `v` (sorted here).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// The bench restaurant's policy: the demo floor plan open round the clock, 15-minute
/// seatings, no buffer, bookable 180 days ahead (as `holds bench`), so every hold of the run
/// gets a window of its own.
fn bench_policy() -> holdfast_shared::policy::BookingPolicy {
    use holdfast_shared::policy::{BookingPolicy, ServiceHours, TurnTime, MAX_DAYS_AHEAD_LIMIT};
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = MAX_DAYS_AHEAD_LIMIT;
    policy.service_hours =
        (0..7).map(|weekday| ServiceHours { weekday, opens_minute: 0, closes_minute: 24 * 60 }).collect();
    policy.turn_times = vec![TurnTime { max_party: policy.max_party_size, minutes: 15 }];
    policy.buffer_minutes = 0;
    policy
}

async fn side(name: &'static str) -> Res<Side> {
    let crate::local::Scratch { pool, owner, .. } = crate::local::scratch_database(name, 16).await?;
    let policy = bench_policy();
    holds_api::store::publish_policy(&pool.get().await?, RESTAURANT.parse()?, "Growth Bistro", &policy).await?;
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let flags = Arc::new(holdfast_adapters::flags::FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&sdk),
        holdfast_shared::flags::Environment::Dev,
        "/holdfast-bench/dev",
        std::time::Duration::from_secs(3600),
    ));
    let svc = Arc::new(holds_api::HoldsService::new(pool.clone(), flags));
    svc.verify_enforcement().await?;
    let mut tables = policy.tables.clone();
    tables.sort_by_key(|t| t.id);
    Ok(Side { name, owner, pool, svc, tables })
}

/// Past claims as production accumulates them, `claim_days` up to yesterday over
/// `restaurants` restaurants of 8 tables: per two visits, one booking (a confirmed hold whose
/// hold claim was deactivated by the confirm, and the booking's claim, still active) and one
/// abandoned hold (its claim still active: expired; maintenance deactivates it). 3 claims per 2
/// visits, no two active claims of a table overlapping.
const LOAD_VISITS: &str = "
WITH v AS (
  SELECT i, t.id AS table_id, t.restaurant_id,
         $3::timestamptz + (i / $2) * make_interval(secs => $4) AS s
    FROM generate_series($1::bigint, $6::bigint - 1) AS i
    JOIN bench_tables t ON t.n = i % $2
), b AS (
  INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email,
                        created_at, updated_at, owner_subject)
  SELECT md5('b' || i)::uuid, restaurant_id, 'confirmed', 2, s, s + make_interval(secs => $5), 'Bench Guest',
         'guest@bench.invalid', s - interval '2 days', s - interval '2 days', 'bench-' || (i % 100000)
    FROM v WHERE i % 2 = 0
), h AS (
  INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode, expires_at,
                     policy_version, policy_hash, table_ids, selection_snapshot, booking_id, owner_subject,
                     created_at, updated_at)
  SELECT md5('h' || i)::uuid, restaurant_id, 2, s, s + make_interval(secs => $5),
         tstzrange(s, s + make_interval(secs => $5), '[)'),
         CASE WHEN i % 2 = 0 THEN 'confirmed' ELSE 'held' END, 'enforced',
         s - interval '2 days' + interval '5 minutes', 1, repeat('a', 64), ARRAY[table_id],
         '{\"strategy\":\"single\"}', CASE WHEN i % 2 = 0 THEN md5('b' || i)::uuid END,
         'bench-' || (i % 100000), s - interval '2 days', s - interval '2 days'
    FROM v
)
INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, booking_id, during, expires_at, exclusive, active)
SELECT restaurant_id, table_id, 'hold', md5('h' || i)::uuid, NULL, tstzrange(s, s + make_interval(secs => $5), '[)'),
       s - interval '2 days' + interval '5 minutes', true, i % 2 = 1
  FROM v
UNION ALL
SELECT restaurant_id, table_id, 'booking', NULL, md5('b' || i)::uuid, tstzrange(s, s + make_interval(secs => $5), '[)'),
       NULL, true, true
  FROM v WHERE i % 2 = 0";

/// Events as the recorder writes them (the `metrics bench` mix), evenly over [$1, $1 + $2 ms).
const GENERATE_EVENTS: &str = "
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
  FROM generate_series($4::bigint, $5::bigint - 1) AS i";

async fn load(side: &Side, a: &BenchArgs) -> Res {
    let c = side.owner.get().await?;
    let t = Instant::now();
    // Restaurants and tables for the claims to belong to (ids only; the FKs need them).
    c.run(
        "INSERT INTO restaurants (id, name) SELECT md5('r' || r)::uuid, 'Bench ' || r FROM generate_series(1, $1::bigint - 1) r",
        &[&a.restaurants],
    )
    .await?;
    c.run(
        "INSERT INTO restaurant_tables (id, restaurant_id, label, min_party, capacity, zone)
         SELECT md5('t' || r || '/' || n)::uuid, md5('r' || r)::uuid, 'T' || n, 1, 4, 'main'
           FROM generate_series(1, $1::bigint - 1) r, generate_series(1, 8) n",
        &[&a.restaurants],
    )
    .await?;
    c.batch_execute(
        "CREATE TABLE bench_tables AS
           SELECT (row_number() OVER (ORDER BY id) - 1)::bigint AS n, id, restaurant_id FROM restaurant_tables;
         CREATE UNIQUE INDEX ON bench_tables (n); ANALYZE bench_tables;",
    )
    .await?;
    let tables: i64 = c.fetch_one("SELECT count(*) FROM bench_tables", &[]).await?.get(0);
    let visits = (a.past_claims * 2 + 2) / 3;
    let per_table = ((visits + tables - 1) / tables).max(1);
    let now: DateTime<Utc> = c.fetch_one("SELECT now()", &[]).await?.get(0);
    let base = now - Duration::days(a.claim_days);
    let spacing = ((a.claim_days - 1) * 86_400) as f64 / per_table as f64;
    // A seated visit of at most 90 minutes that never reaches the next visit of its table.
    let length = spacing.min(5_400.0) * 0.9;
    let mut lo = 0;
    while lo < visits {
        let hi = (lo + CHUNK / 2).min(visits);
        c.run(LOAD_VISITS, &[&lo, &tables, &base, &spacing, &length, &hi]).await?;
        eprintln!("  [{}] visits {hi}/{visits} ({:.0} s)", side.name, t.elapsed().as_secs_f64());
        lo = hi;
    }
    c.batch_execute("DROP TABLE bench_tables").await?;

    // Past events over the event days, ending yesterday; their day partitions first (as the
    // hourly maintenance would have made them).
    let today = now.date_naive();
    for d in 1..=a.event_days + 1 {
        let day = today - Duration::days(d);
        c.run("SELECT holdfast_create_event_partition($1)", &[&day]).await?;
    }
    let start = (today - Duration::days(a.event_days)).and_time(chrono::NaiveTime::MIN).and_utc();
    let span_ms = ((a.event_days - 1) * 86_400_000) as f64;
    let mut lo = 0;
    while lo < a.past_events {
        let hi = (lo + CHUNK).min(a.past_events);
        c.run(GENERATE_EVENTS, &[&start, &span_ms, &(a.past_events as f64), &lo, &hi]).await?;
        eprintln!("  [{}] past events {hi}/{} ({:.0} s)", side.name, a.past_events, t.elapsed().as_secs_f64());
        lo = hi;
    }
    eprintln!("  [{}] loaded in {:.0} s", side.name, t.elapsed().as_secs_f64());
    Ok(())
}

/// What production does to a loaded database: maintenance (until nothing is left over; a
/// real deployment runs it hourly from the start), then VACUUM ANALYZE.
async fn settle(side: &Side) -> Res {
    let t = Instant::now();
    let m = Maintenance::new(side.pool.clone(), Options::default());
    for _ in 0..1000 {
        let r = m.run().await?;
        if !r.problems().is_empty() {
            return Err(format!("[{}] maintenance: {}", side.name, r.problems().join("; ")).into());
        }
        if !r.steps.iter().any(|s| s.end == StepEnd::MoreLeft) {
            break;
        }
    }
    side.owner.get().await?.batch_execute("VACUUM ANALYZE").await?;
    eprintln!("  [{}] maintenance + VACUUM ANALYZE in {:.0} s", side.name, t.elapsed().as_secs_f64());
    Ok(())
}

/// `new_events` events over the `minutes` one-minute windows ending 5 minutes before `now`.
async fn new_events(side: &Side, a: &BenchArgs, now: DateTime<Utc>) -> Res<DateTime<Utc>> {
    let start = holdfast_shared::metrics::window_start_of(now - Duration::minutes(a.minutes + 5), Duration::minutes(1));
    let span_ms = (a.minutes * 60_000) as f64;
    let c = side.owner.get().await?;
    c.run(GENERATE_EVENTS, &[&start, &span_ms, &(a.new_events as f64), &0i64, &a.new_events]).await?;
    c.batch_execute("ANALYZE observability_events").await?;
    Ok(start)
}

async fn aggregator_run(side: &Side, a: &BenchArgs, now: DateTime<Utc>) -> Res<f64> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let flags = Arc::new(holdfast_adapters::flags::FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&sdk),
        holdfast_shared::flags::Environment::Dev,
        "/holdfast-bench/dev",
        metrics_aggregator::FLAG_TTL,
    ));
    // No sinks: reading, aggregating and recording windows is what could grow with the table.
    let options = metrics_aggregator::Options {
        max_windows_per_run: (a.minutes as usize) + 5,
        initial_backfill: Duration::minutes(a.minutes + 30),
        ..Default::default()
    };
    let agg = metrics_aggregator::Aggregator::new(side.pool.clone(), "bench", flags, Vec::new(), None, options);
    side.owner
        .get()
        .await?
        .batch_execute(
            "UPDATE metrics_cursor SET next_window_start = NULL, last_seen_id = 0; DELETE FROM metrics_batches;",
        )
        .await?;
    // The windows hold the new events, and whatever the maintenance runs recorded meanwhile.
    let start = holdfast_shared::metrics::window_start_of(now - Duration::minutes(a.minutes + 5), Duration::minutes(1));
    let expected: i64 = side
        .owner
        .get()
        .await?
        .fetch_one(
            "SELECT count(*) FROM observability_events WHERE created_at >= $1 AND created_at < $2",
            &[&start, &(start + Duration::minutes(a.minutes))],
        )
        .await?
        .get(0);
    let t = Instant::now();
    let report = agg.run_once(now).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if report.events != expected as u64 || expected < a.new_events {
        return Err(format!("[{}] aggregator read {} events, expected {expected}", side.name, report.events).into());
    }
    Ok(ms)
}

/// Requests through the real handler (`holds_api::api::handle`, API Gateway v2 events) from
/// `clients` tasks for `seconds`: each request's latency (ms) and the number that failed.
async fn drive(side: &Side, a: &BenchArgs, hold: bool, next: &Arc<AtomicU64>) -> Res<(Vec<f64>, u64, f64)> {
    let first_start = (Utc::now() + Duration::days(1)).date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let deadline = Instant::now() + std::time::Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..a.clients {
        let (svc, next, table) = (side.svc.clone(), next.clone(), side.tables[client % side.tables.len()].clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut bad) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let d = next.fetch_add(1, Ordering::Relaxed) as i64;
                let start = first_start + Duration::minutes(15 * d);
                let (path, body, want) = if hold {
                    // A new window and a new guest each time: every hold succeeds.
                    let body = serde_json::json!({"restaurant_id": RESTAURANT, "party_size": table.min_party,
                                                  "start": start, "table_ids": [table.id]});
                    ("/holds".to_owned(), body, 201)
                } else {
                    // Quotes around the windows the holds take (they see those claims).
                    let at = first_start + Duration::minutes(15 * (d % 20_000));
                    let body = serde_json::json!({"party_size": 2, "start": at});
                    (format!("/restaurants/{RESTAURANT}/quotes"), body, 200)
                };
                let ev = holdfast_adapters::http::apigw_v2_event(
                    "POST",
                    &path,
                    "",
                    &[("content-type".into(), "application/json".into())],
                    body.to_string(),
                    Some(&format!("bench-guest-{d}")),
                );
                let Ok(req) = lambda_http::request::from_str(&ev.to_string()) else { break };
                let t = Instant::now();
                let resp = holds_api::api::handle(&svc, req).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if resp.status().as_u16() != want {
                    bad += 1;
                }
            }
            (lat, bad)
        }));
    }
    let (mut all, mut bad) = (Vec::new(), 0);
    for t in tasks {
        let (l, b) = t.await?;
        all.extend(l);
        bad += b;
    }
    Ok((all, bad, started.elapsed().as_secs_f64()))
}

async fn measure(side: &Side, a: &BenchArgs, next: &Arc<AtomicU64>, f: &mut Figures) -> Res<String> {
    let (mut q, qbad, _) = drive(side, a, false, next).await?;
    let (mut h, hbad, secs) = drive(side, a, true, next).await?;
    let (q50, q99, h50, h99) =
        (percentile(&mut q, 50.0), percentile(&mut q, 99.0), percentile(&mut h, 50.0), percentile(&mut h, 99.0));
    let rate = (h.len() as u64 - hbad.min(h.len() as u64)) as f64 / secs;
    f.quote_p50.push(q50);
    f.quote_p99.push(q99);
    f.hold_p50.push(h50);
    f.hold_p99.push(h99);
    f.holds_per_s.push(rate);
    f.non_2xx += qbad + hbad;
    Ok(format!(
        "{}: quote p50/p99 {q50:.2}/{q99:.2} ms ({} quotes), hold p50/p99 {h50:.2}/{h99:.2} ms, {rate:.0} holds/s, {} non-2xx",
        side.name,
        q.len(),
        qbad + hbad
    ))
}

async fn bench(a: BenchArgs) -> Res {
    println!(
        "growth bench: {} past claims ({} days, {} restaurants), {} past events ({} days), {} new events over {} min; \
         {} rounds, {} s quotes + {} s holds per database, {} clients",
        a.past_claims,
        a.claim_days,
        a.restaurants,
        a.past_events,
        a.event_days,
        a.new_events,
        a.minutes,
        a.rounds,
        a.seconds,
        a.seconds,
        a.clients
    );
    let empty = side(EMPTY_DB).await?;
    let loaded = side(LOADED_DB).await?;
    load(&loaded, &a).await?;
    settle(&empty).await?;
    settle(&loaded).await?;

    // The aggregator first: the latency rounds record events of their own in the last hour.
    let now: DateTime<Utc> = empty.owner.get().await?.fetch_one("SELECT now()", &[]).await?.get(0);
    for s in [&empty, &loaded] {
        new_events(s, &a, now).await?;
    }
    let (mut fe, mut fl) = (Figures::default(), Figures::default());
    for round in 0..a.rounds {
        // Alternate which side goes first, so cache warmth favours neither.
        let order: [(&Side, bool); 2] =
            if round % 2 == 0 { [(&empty, true), (&loaded, false)] } else { [(&loaded, false), (&empty, true)] };
        for (s, is_empty) in order {
            let ms = aggregator_run(s, &a, now).await?;
            eprintln!("  round {}: [{}] aggregator {ms:.0} ms", round + 1, s.name);
            if is_empty {
                fe.agg_ms.push(ms)
            } else {
                fl.agg_ms.push(ms)
            }
        }
    }

    let next = Arc::new(AtomicU64::new(0));
    for round in 0..a.rounds {
        let order: [(&Side, bool); 2] =
            if round % 2 == 0 { [(&empty, true), (&loaded, false)] } else { [(&loaded, false), (&empty, true)] };
        for (s, is_empty) in order {
            let line = measure(s, &a, &next, if is_empty { &mut fe } else { &mut fl }).await?;
            println!("round {}: {line}", round + 1);
        }
    }

    let row = |name: &str, e: f64, l: f64, ratio: f64, target: &str| {
        println!("{name:<28} {e:>12.2} {l:>12.2} {ratio:>10.2}  {target}");
    };
    println!("medians over {} rounds:", a.rounds);
    println!("{:<28} {:>12} {:>12} {:>10}  target", "", "empty", "loaded", "ratio");
    let (e, l) = (median(fe.quote_p50.clone()), median(fl.quote_p50.clone()));
    row("quote p50 ms", e, l, e / l, ">= 0.90 (empty/loaded)");
    let (e, l) = (median(fe.quote_p99.clone()), median(fl.quote_p99.clone()));
    row("quote p99 ms", e, l, e / l, ">= 0.90 (empty/loaded)");
    let (e, l) = (median(fe.hold_p50.clone()), median(fl.hold_p50.clone()));
    row("hold p50 ms", e, l, e / l, ">= 0.90 (empty/loaded)");
    let (e, l) = (median(fe.hold_p99.clone()), median(fl.hold_p99.clone()));
    row("hold p99 ms", e, l, e / l, ">= 0.90 (empty/loaded)");
    let (e, l) = (median(fe.holds_per_s.clone()), median(fl.holds_per_s.clone()));
    row("holds/s", e, l, l / e, ">= 0.90 (loaded/empty)");
    let (e, l) = (median(fe.agg_ms.clone()), median(fl.agg_ms.clone()));
    row(&format!("aggregator run ms ({} new)", a.new_events), e, l, l / e, "<= 1.10 (loaded/empty)");
    println!("non-2xx answers: empty {}, loaded {}", fe.non_2xx, fl.non_2xx);
    Ok(())
}
