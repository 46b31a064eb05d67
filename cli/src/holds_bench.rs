//! Benchmark: hold throughput through the real handler vs pgbench running the same SQL on the
//! same database, alternating rounds in one run; reports medians and the ratio.
//!
//! Each request holds one table in a window no other request uses, so every hold succeeds and
//! the figure is the cost of the write path (policy read, table lock, expiry prune, hold + claim
//! insert under the exclusion constraint, commit, observability event), not of contention.

use crate::Res;
use holdfast_adapters::flags::FlagLoader;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::{BookingPolicy, ServiceHours, TurnTime, MAX_DAYS_AHEAD_LIMIT};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BENCH_DB: &str = "holdfast_bench_holds";
const RESTAURANT: &str = "5d2c1f3e-0000-4000-8000-0000000be7c0";

/// pgbench script: the statements the handler's hold path runs, one round trip each (the
/// baseline the target is set against).
const PGBENCH_SCRIPT: &str = r#"SELECT nextval('bench_day') AS day \gset
SELECT id AS tid, min_party AS party FROM restaurant_tables ORDER BY id OFFSET (CAST(:client_id AS int) % 8) LIMIT 1 \gset
BEGIN;
SELECT body FROM booking_policies WHERE restaurant_id = CAST(:rid AS uuid) ORDER BY version DESC LIMIT 1;
SELECT pg_advisory_xact_lock(hashtextextended(:rid || '|' || 'bench-guest-' || :day, 0));
SELECT id FROM restaurant_tables WHERE id = ANY(ARRAY[CAST(:tid AS uuid)]) ORDER BY id FOR NO KEY UPDATE;
UPDATE table_claims SET active = false WHERE active AND kind = 'hold' AND expires_at <= now() AND table_id = ANY(ARRAY[CAST(:tid AS uuid)]) AND during && tstzrange(timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 21:00+00' + make_interval(days => CAST(:day AS int)), '[)');
WITH h AS (INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode, expires_at, policy_version, policy_hash, table_ids, selection_snapshot, owner_subject) SELECT gen_random_uuid(), CAST(:rid AS uuid), CAST(:party AS smallint), timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 20:30+00' + make_interval(days => CAST(:day AS int)), tstzrange(timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 21:00+00' + make_interval(days => CAST(:day AS int)), '[)'), 'held', 'enforced', now() + interval '180 seconds', 1, repeat('a', 64), ARRAY[CAST(:tid AS uuid)], '{"strategy":"single"}', 'bench-guest-' || :day WHERE (SELECT count(*) FROM holds WHERE restaurant_id = CAST(:rid AS uuid) AND owner_subject = 'bench-guest-' || :day AND status = 'held' AND expires_at > now()) < 4 RETURNING id, expires_at, blocked) INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive) SELECT CAST(:rid AS uuid), CAST(:tid AS uuid), 'hold', h.id, h.blocked, h.expires_at, true FROM h;
COMMIT;
INSERT INTO observability_events (source, event_type, severity, restaurant_id, context) VALUES ('holds-api', 'hold.created', 'info', CAST(:rid AS uuid), '{"operation":"hold","outcome":"success"}');
"#;

/// The same script with the guest lock, the table lock, the prune and the guarded hold+claims
/// insert pipelined, as
/// the handler sends them (`store::hold_write`): the stricter baseline.
fn pipelined_script() -> String {
    let mut out = String::new();
    for line in PGBENCH_SCRIPT.lines() {
        if line.starts_with("SELECT pg_advisory_xact_lock") {
            out.push_str("\\startpipeline\n");
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("WITH h AS") {
            out.push_str("\\endpipeline\n");
        }
    }
    out
}

pub struct BenchArgs {
    pub seconds: u64,
    pub clients: usize,
    pub rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(a: BenchArgs) -> Res {
    let base = std::env::var("DATABASE_URL")?;
    let pg_bin = std::env::var("HOLDFAST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let admin = holdfast_adapters::db::pool_from_url(&base, 1)?;
    {
        let c = admin.get().await?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {BENCH_DB}")).await?;
        c.batch_execute(&format!("CREATE DATABASE {BENCH_DB}")).await?;
    }
    let url = holdfast_adapters::db::replace_dbname(&base, BENCH_DB);
    let pool = holdfast_adapters::db::pool_from_url(&url, a.clients + 2)?;
    holdfast_adapters::db::migrate(&pool).await?;
    let restaurant: RestaurantId = RESTAURANT.parse()?;
    // Every hold needs a window of its own inside the booking horizon (no start in the past or
    // more than MAX_DAYS_AHEAD_LIMIT days ahead): the bench policy is the demo floor plan open
    // round the clock with 15-minute seatings and no buffer, so ~350 000 windows fit.
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = MAX_DAYS_AHEAD_LIMIT;
    policy.service_hours =
        (0..7).map(|weekday| ServiceHours { weekday, opens_minute: 0, closes_minute: 24 * 60 }).collect();
    policy.turn_times = vec![TurnTime { max_party: policy.max_party_size, minutes: 15 }];
    policy.buffer_minutes = 0;
    let first_start =
        (chrono::Utc::now() + chrono::Duration::days(1)).date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    {
        let c = pool.get().await?;
        holds_api::store::publish_policy(&c, restaurant, "Bench Bistro", &policy).await?;
        c.batch_execute("CREATE SEQUENCE bench_day START 100000").await?;
    }
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let flags = Arc::new(FlagLoader::new(
        aws_sdk_ssm::Client::new(&sdk),
        holdfast_shared::flags::Environment::Dev,
        "/holdfast-bench/dev",
        Duration::from_secs(3600),
    ));
    let svc = Arc::new(holds_api::HoldsService::new(pool.clone(), flags));
    svc.verify_enforcement().await?;
    let mut tables: Vec<_> = policy.tables.clone();
    tables.sort_by_key(|t| t.id);
    let day = Arc::new(AtomicU64::new(0));

    let script = std::env::temp_dir().join("holdfast-hold-bench.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)?;
    let piped = std::env::temp_dir().join("holdfast-hold-bench-pipelined.sql");
    std::fs::write(&piped, pipelined_script())?;
    let (mut handler_rates, mut pgbench_rates, mut piped_rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        // --- handler
        let deadline = Instant::now() + Duration::from_secs(a.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..a.clients {
            let (svc, day, table) = (svc.clone(), day.clone(), tables[client % tables.len()].clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    // A new window and a new guest each time: every hold succeeds (no conflict, and
                    // no guest reaches the live-hold limit), like a reservation drop's many guests.
                    let d = day.fetch_add(1, Ordering::Relaxed) as i64;
                    let start = first_start + chrono::Duration::minutes(15 * d);
                    let body = serde_json::json!({"restaurant_id": RESTAURANT, "party_size": table.min_party, "start": start, "table_ids": [table.id]}).to_string();
                    let ev = holdfast_adapters::http::apigw_v2_event("POST", "/holds", "", &[("content-type".into(), "application/json".into())], &body, Some(&format!("bench-guest-{d}")));
                    let req = match lambda_http::request::from_str(&ev.to_string()) {
                        Ok(r) => r,
                        Err(_) => break,
                    };
                    let resp = holds_api::api::handle(&svc, req).await;
                    if resp.status().as_u16() == 201 { n += 1 } else { errors += 1 }
                }
                (n, errors)
            }));
        }
        let (mut n, mut errors) = (0u64, 0u64);
        for t in tasks {
            let (a, b) = t.await?;
            n += a;
            errors += b;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        handler_rates.push(rate);
        // --- pgbench, same database, same SQL: one statement per round trip, then pipelined
        let tps = pgbench(&pg_bin, &a, &script, &url)?;
        pgbench_rates.push(tps);
        let piped_tps = pgbench(&pg_bin, &a, &piped, &url)?;
        piped_rates.push(piped_tps);
        println!(
            "round {round}: handler {rate:.0} holds/s ({errors} non-201), pgbench {tps:.0} tx/s (ratio {:.2}), \
             pgbench pipelined {piped_tps:.0} tx/s (ratio {:.2})",
            rate / tps,
            rate / piped_tps
        );
    }
    let (h, p, pp) = (median(handler_rates), median(pgbench_rates), median(piped_rates));
    println!(
        "median over {} rounds of {} s with {} clients: handler {h:.0} holds/s, pgbench {p:.0} tx/s, ratio {:.2} \
         (target >= 0.60); pgbench pipelined {pp:.0} tx/s, ratio {:.2}",
        a.rounds,
        a.seconds,
        a.clients,
        h / p,
        h / pp
    );
    Ok(())
}

/// One pgbench run of `script` for `a.seconds`; its tps (without initial connection time).
fn pgbench(pg_bin: &str, a: &BenchArgs, script: &std::path::Path, url: &str) -> Res<f64> {
    let out = std::process::Command::new(format!("{pg_bin}/pgbench"))
        .args(["-n", "-M", "prepared", "-c", &a.clients.to_string(), "-j", "2", "-T", &a.seconds.to_string()])
        .args(["-D", &format!("rid={RESTAURANT}"), "-f"])
        .arg(script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("pgbench failed: {}{}", text, String::from_utf8_lossy(&out.stderr)))?;
    Ok(tps)
}
