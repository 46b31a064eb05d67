//! Benchmark: hold throughput through the real handler against pgbench baselines on the same
//! database, alternating in each round of one run; reports medians and the ratios.
//!
//! Each request holds one table in a window no other request uses (its own hour), so every hold
//! succeeds and the figure is the cost of the write path (policy read, guest and claim locks,
//! expiry prune, hold + claim insert under the exclusion constraint, commit, observability
//! event), not of contention.
//!
//! Two shapes:
//! - **shared pool** (default): `--clients` tasks over one pool, against pgbench running the
//!   same SQL (`-M prepared`, one statement per round trip, then pipelined as the handler sends
//!   it) and pgbench doing only the **bare claim insert** (one row under the exclusion
//!   constraint, no locks, no prune, no hold row: the physical limit of a hold).
//! - **instances** (`--instances N`): N simulated Lambda containers, each its own holds service
//!   with a pool of ONE connection serving one request at a time, through the pooler
//!   (PgBouncer, transaction pooling) and/or directly; against pgbench with N clients running
//!   the same pipelined SQL through the same route (`-M extended`: unnamed statements, as the
//!   handler runs them; named ones do not survive transaction pooling). Server connections are
//!   sampled during each phase (PgBouncer's `SHOW POOLS`; `pg_stat_activity` when direct).

use crate::Res;
use holdfast_adapters::db::{pool_from_url, replace_dbname};
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::{BookingPolicy, ServiceHours, TableSpec, TurnTime, MAX_DAYS_AHEAD_LIMIT};
use holds_api::HoldsService;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BENCH_DB: &str = "holdfast_bench_holds";
const RESTAURANT: &str = "5d2c1f3e-0000-4000-8000-0000000be7c0";
/// The one hold row every bare-insert claim points at (its foreign key needs one).
const BARE_HOLD: &str = "5d2c1f3e-0000-4000-8000-0000000ba4e0";

/// pgbench script: the statements the handler's hold path runs, one round trip each (the
/// baseline the target is set against). Each transaction takes the next day of 2040 onwards on
/// the client's table: no two windows share a table and an hour.
const PGBENCH_SCRIPT: &str = r#"SELECT nextval('bench_day') AS day \gset
SELECT id AS tid, min_party AS party FROM restaurant_tables ORDER BY id OFFSET (CAST(:client_id AS int) % 8) LIMIT 1 \gset
BEGIN;
SELECT body FROM booking_policies WHERE restaurant_id = CAST(:rid AS uuid) ORDER BY version DESC LIMIT 1;
SELECT pg_advisory_xact_lock(hashtextextended(:rid || '|' || 'bench-guest-' || :day, 0));
SELECT pg_advisory_xact_lock(k.t, k.h) FROM (SELECT DISTINCT hashtext(t::text) AS t, h::int AS h FROM unnest(ARRAY[CAST(:tid AS uuid)]) AS t, generate_series(floor(extract(epoch FROM timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int))) / 3600)::bigint, ceil(extract(epoch FROM timestamptz '2040-01-01 21:00+00' + make_interval(days => CAST(:day AS int))) / 3600)::bigint - 1) AS h ORDER BY 1, 2) AS k;
UPDATE table_claims SET active = false WHERE id IN (SELECT id FROM table_claims WHERE active AND kind = 'hold' AND expires_at <= now() AND table_id = ANY(ARRAY[CAST(:tid AS uuid)]) AND during && tstzrange(timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 21:00+00' + make_interval(days => CAST(:day AS int)), '[)') ORDER BY id FOR NO KEY UPDATE);
WITH h AS (INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode, expires_at, policy_version, policy_hash, table_ids, selection_snapshot, owner_subject) SELECT gen_random_uuid(), CAST(:rid AS uuid), CAST(:party AS smallint), timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 20:30+00' + make_interval(days => CAST(:day AS int)), tstzrange(timestamptz '2040-01-01 19:00+00' + make_interval(days => CAST(:day AS int)), timestamptz '2040-01-01 21:00+00' + make_interval(days => CAST(:day AS int)), '[)'), 'held', 'enforced', now() + interval '180 seconds', 1, repeat('a', 64), ARRAY[CAST(:tid AS uuid)], '{"strategy":"single"}', 'bench-guest-' || :day WHERE (SELECT count(*) FROM holds WHERE restaurant_id = CAST(:rid AS uuid) AND owner_subject = 'bench-guest-' || :day AND status = 'held' AND expires_at > now()) < 4 RETURNING id, expires_at, blocked) INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive) SELECT CAST(:rid AS uuid), CAST(:tid AS uuid), 'hold', h.id, h.blocked, h.expires_at, true FROM h;
COMMIT;
INSERT INTO observability_events (source, event_type, severity, restaurant_id, context) VALUES ('holds-api', 'hold.created', 'info', CAST(:rid AS uuid), '{"operation":"hold","outcome":"success"}');
"#;

/// pgbench script: the bare claim insert, one statement (autocommit) per transaction: the
/// client's table (`:t0`..`:t7`), the next hour from 2060 onwards, the exclusion constraint and
/// its GiST index, the foreign keys, WAL and commit; no lock, no prune, no hold row, no event.
const BARE_INSERT_SCRIPT: &str = r#"INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive) SELECT CAST(:rid AS uuid), (ARRAY[CAST(:t0 AS uuid), CAST(:t1 AS uuid), CAST(:t2 AS uuid), CAST(:t3 AS uuid), CAST(:t4 AS uuid), CAST(:t5 AS uuid), CAST(:t6 AS uuid), CAST(:t7 AS uuid)])[1 + CAST(:client_id AS int) % 8], 'hold', CAST(:hid AS uuid), tstzrange(s, s + interval '15 minutes', '[)'), now() + interval '180 seconds', true FROM (SELECT timestamptz '2060-01-01 00:00+00' + make_interval(hours => CAST(nextval('bench_claim') AS int)) AS s) AS w;
"#;

/// The same script with the guest lock, the claim locks, the prune and the guarded hold+claims
/// insert pipelined, as the handler sends them (`store::hold_write`): the stricter baseline.
fn pipelined_script() -> String {
    let mut out = String::new();
    for line in PGBENCH_SCRIPT.lines() {
        if line.starts_with("SELECT pg_advisory_xact_lock(hashtextextended") {
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

/// Where the instances' connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Through the pooler (PgBouncer locally, RDS Proxy in AWS).
    Pooler,
    /// Straight to PostgreSQL.
    Direct,
    /// Both, direct first.
    Both,
}

pub struct BenchArgs {
    pub seconds: u64,
    pub clients: usize,
    pub rounds: usize,
    /// Simulated Lambda instances, a pool of one connection each; `None` = the shared pool.
    pub instances: Option<usize>,
    pub via: Via,
    /// The runtime role's URL through the pooler (any database: the bench's replaces it).
    pub pooler_url: Option<String>,
    /// PgBouncer's admin console (`…/pgbouncer`, a `stats_users` member); default: the pooler
    /// URL with the database `pgbouncer`.
    pub pooler_admin_url: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Hold windows no other request uses: per table, the next hour from tomorrow 00:00 UTC
/// (15-minute seatings, so each hold is alone in its (table, hour) claim lock), each by a new
/// guest (no one reaches the live-hold limit), like a reservation drop's many guests.
struct Windows {
    tables: Vec<TableSpec>,
    next_hour: Vec<AtomicU64>,
    first: chrono::DateTime<chrono::Utc>,
}

impl Windows {
    fn request(&self, client: usize) -> (String, String) {
        let k = client % self.tables.len();
        let table = &self.tables[k];
        let hour = self.next_hour[k].fetch_add(1, Ordering::Relaxed) as i64;
        let start = self.first + chrono::Duration::hours(hour);
        let body = serde_json::json!({"restaurant_id": RESTAURANT, "party_size": table.min_party, "start": start,
                                      "table_ids": [table.id]});
        (body.to_string(), format!("bench-guest-{k}-{hour}"))
    }
}

/// The handler's holds in one phase.
#[derive(Default)]
struct HandlerPhase {
    holds: u64,
    errors: u64,
    /// A few of the errors, by status and code, for the report.
    samples: BTreeMap<String, u64>,
    rate: f64,
}

/// `svcs[i]` serves client task `i` (the same service for all in the shared-pool shape).
async fn drive_handler(svcs: &[Arc<HoldsService>], windows: &Arc<Windows>, seconds: u64) -> Res<HandlerPhase> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let samples = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for (client, svc) in svcs.iter().enumerate() {
        let (svc, windows, samples) = (svc.clone(), windows.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let (mut n, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let (body, guest) = windows.request(client);
                let headers = [("content-type".to_owned(), "application/json".to_owned())];
                let ev = holdfast_adapters::http::apigw_v2_event("POST", "/holds", "", &headers, &body, Some(&guest));
                let Ok(req) = lambda_http::request::from_str(&ev.to_string()) else { break };
                let resp = holds_api::api::handle(&svc, req).await;
                let status = resp.status().as_u16();
                if status == 201 {
                    n += 1;
                    continue;
                }
                errors += 1;
                let code = match resp.body() {
                    lambda_http::Body::Text(t) => serde_json::from_str::<serde_json::Value>(t)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned)),
                    _ => None,
                };
                let key = format!("{status} {}", code.unwrap_or_default());
                *samples.lock().expect("samples").entry(key).or_default() += 1;
            }
            (n, errors)
        }));
    }
    let mut phase = HandlerPhase::default();
    for t in tasks {
        let (n, e) = t.await?;
        phase.holds += n;
        phase.errors += e;
    }
    phase.rate = phase.holds as f64 / started.elapsed().as_secs_f64();
    phase.samples = std::mem::take(&mut *samples.lock().expect("samples"));
    Ok(phase)
}

/// One pgbench run.
struct Pgbench {
    tps: f64,
    failed: u64,
}

/// `pgbench` with `clients` clients for `seconds` of `script` in protocol `mode`; its tps
/// (without initial connection time) and failed transactions.
fn pgbench(
    pg_bin: &str,
    (clients, seconds, mode): (usize, u64, &str),
    script: &std::path::Path,
    vars: &[String],
    url: &str,
) -> Res<Pgbench> {
    let mut cmd = std::process::Command::new(format!("{pg_bin}/pgbench"));
    cmd.args(["-n", "-M", mode, "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string()]);
    for v in vars {
        cmd.args(["-D", v]);
    }
    let out = cmd.arg("-f").arg(script).arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l[prefix.len()..].split_whitespace().next())
    };
    let tps = value("tps = ").and_then(|v| v.parse::<f64>().ok());
    let failed = value("number of failed transactions: ").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    match tps {
        Some(tps) if out.status.success() => Ok(Pgbench { tps, failed }),
        _ => Err(format!("pgbench failed: {}{}", text, String::from_utf8_lossy(&out.stderr)).into()),
    }
}

/// How to count the connections of a phase.
#[derive(Clone)]
enum Probe {
    /// PgBouncer's admin console: the bench database's pool in `SHOW POOLS`.
    Pooler(deadpool_postgres::Pool),
    /// The server's own view: backends on the bench database other than the schema owner's
    /// (the prober's pool).
    Direct(deadpool_postgres::Pool),
}

/// Peak connections seen while a phase ran (sampled every 50 ms).
#[derive(Default, Clone, Copy)]
struct Peak {
    server: i64,
    client: i64,
    samples: u32,
}

impl Probe {
    async fn sample(&self) -> Res<(i64, i64)> {
        match self {
            Probe::Pooler(admin) => {
                let c = admin.get().await?;
                let mut out = (0, 0);
                for msg in c.simple_query("SHOW POOLS").await? {
                    let tokio_postgres::SimpleQueryMessage::Row(r) = msg else { continue };
                    if r.get("database") != Some(BENCH_DB) {
                        continue;
                    }
                    let n = |col: &str| r.get(col).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                    out.0 +=
                        ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"].iter().map(|c| n(c)).sum::<i64>();
                    out.1 += n("cl_active") + n("cl_waiting");
                }
                Ok(out)
            }
            Probe::Direct(owner) => {
                let c = owner.get().await?;
                let n: i64 = c
                    .fetch_one(
                        "SELECT count(*) FROM pg_stat_activity
                          WHERE datname = current_database() AND usename <> current_user",
                        &[],
                    )
                    .await?
                    .get(0);
                Ok((n, n))
            }
        }
    }

    /// Sample until `stop`; the peak.
    fn watch(self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Res<Peak>> {
        tokio::spawn(async move {
            let mut peak = Peak::default();
            while !stop.load(Ordering::Relaxed) {
                let (server, client) = self.sample().await?;
                peak.server = peak.server.max(server);
                peak.client = peak.client.max(client);
                peak.samples += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(peak)
        })
    }
}

/// Run `phase` while `probe` samples the connections.
async fn watched<T, F: std::future::Future<Output = Res<T>>>(probe: &Probe, phase: F) -> Res<(T, Peak)> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = probe.clone().watch(stop.clone());
    let out = phase.await;
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await??;
    Ok((out?, peak))
}

/// Everything the rounds share.
struct Bench {
    pg_bin: String,
    /// The runtime role's URL of the bench database, direct.
    url: String,
    owner: deadpool_postgres::Pool,
    windows: Arc<Windows>,
    flags: Arc<FlagLoader>,
    vars: Vec<String>,
    scripts: Scripts,
}

struct Scripts {
    plain: std::path::PathBuf,
    piped: std::path::PathBuf,
    bare: std::path::PathBuf,
}

pub async fn run(a: BenchArgs) -> Res {
    let pg_bin = std::env::var("HOLDFAST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    // Handler and pgbench both run as the runtime role, as the holds API does.
    let crate::local::Scratch { url, pool, owner } = crate::local::scratch_database(BENCH_DB, a.clients + 2).await?;
    let restaurant: RestaurantId = RESTAURANT.parse()?;
    // Every hold needs a window of its own inside the booking horizon (no start in the past or
    // more than MAX_DAYS_AHEAD_LIMIT days ahead): the bench policy is the demo floor plan open
    // round the clock with 15-minute seatings and no buffer; one per table and hour leaves
    // ~700 000 windows.
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = MAX_DAYS_AHEAD_LIMIT;
    policy.service_hours =
        (0..7).map(|weekday| ServiceHours { weekday, opens_minute: 0, closes_minute: 24 * 60 }).collect();
    policy.turn_times = vec![TurnTime { max_party: policy.max_party_size, minutes: 15 }];
    policy.buffer_minutes = 0;
    let first =
        (chrono::Utc::now() + chrono::Duration::days(1)).date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let mut tables: Vec<_> = policy.tables.clone();
    tables.sort_by_key(|t| t.id);
    {
        let c = pool.get().await?;
        holds_api::store::publish_policy(&c, restaurant, "Bench Bistro", &policy).await?;
        owner
            .get()
            .await?
            .batch_execute(&format!(
                "CREATE SEQUENCE bench_day START 100000; CREATE SEQUENCE bench_claim START 1;
                 GRANT USAGE ON SEQUENCE bench_day, bench_claim TO holdfast_runtime;
                 INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode,
                                    expires_at, table_ids)
                 VALUES ('{BARE_HOLD}', '{RESTAURANT}', 2, '2060-01-01 00:00+00', '2060-01-01 00:15+00',
                         tstzrange('2060-01-01 00:00+00', '2060-01-01 00:15+00', '[)'), 'held', 'enforced',
                         '2060-01-01 00:00+00', ARRAY['{}'::uuid])",
                tables[0].id
            ))
            .await?;
    }
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let flags = Arc::new(FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&sdk),
        holdfast_shared::flags::Environment::Dev,
        "/holdfast-bench/dev",
        Duration::from_secs(3600),
    ));
    let next_hour = tables.iter().map(|_| AtomicU64::new(0)).collect();
    let mut vars = vec![format!("rid={RESTAURANT}"), format!("hid={BARE_HOLD}")];
    vars.extend(tables.iter().enumerate().map(|(i, t)| format!("t{i}={}", t.id)));
    let dir = std::env::temp_dir();
    let scripts = Scripts {
        plain: dir.join("holdfast-hold-bench.sql"),
        piped: dir.join("holdfast-hold-bench-pipelined.sql"),
        bare: dir.join("holdfast-hold-bench-bare-insert.sql"),
    };
    std::fs::write(&scripts.plain, PGBENCH_SCRIPT)?;
    std::fs::write(&scripts.piped, pipelined_script())?;
    std::fs::write(&scripts.bare, BARE_INSERT_SCRIPT)?;
    let bench =
        Bench { pg_bin, url, owner, windows: Arc::new(Windows { tables, next_hour, first }), flags, vars, scripts };
    match a.instances {
        None => shared_pool(&bench, &a, pool).await,
        Some(n) => {
            // Only the instances' connections (and pgbench's) on the bench database from here.
            drop(pool);
            // Direct first: PgBouncer keeps its server connections to the bench database open
            // for `server_idle_timeout` after the pooler's phases, and they would count there.
            let routes = match a.via {
                Via::Pooler => vec![Via::Pooler],
                Via::Direct => vec![Via::Direct],
                Via::Both => vec![Via::Direct, Via::Pooler],
            };
            for via in routes {
                instances(&bench, &a, n, via).await?;
            }
            Ok(())
        }
    }
}

/// The classic shape: `a.clients` tasks over one pool vs pgbench (plain, pipelined, bare insert).
async fn shared_pool(b: &Bench, a: &BenchArgs, pool: deadpool_postgres::Pool) -> Res {
    let svc = Arc::new(HoldsService::new(pool, b.flags.clone()));
    svc.verify_enforcement().await?;
    let svcs: Vec<_> = (0..a.clients).map(|_| svc.clone()).collect();
    let shape = |mode| (a.clients, a.seconds, mode);
    let (mut handler, mut plain, mut piped, mut bare) = (vec![], vec![], vec![], vec![]);
    for round in 1..=a.rounds {
        let h = drive_handler(&svcs, &b.windows, a.seconds).await?;
        let p = pgbench(&b.pg_bin, shape("prepared"), &b.scripts.plain, &b.vars, &b.url)?;
        let pp = pgbench(&b.pg_bin, shape("prepared"), &b.scripts.piped, &b.vars, &b.url)?;
        let bi = pgbench(&b.pg_bin, shape("prepared"), &b.scripts.bare, &b.vars, &b.url)?;
        println!(
            "round {round}: handler {:.0} holds/s ({} non-201{}), pgbench {:.0} tx/s (ratio {:.2}), \
             pipelined {:.0} tx/s (ratio {:.2}), bare insert {:.0}/s (ratio {:.2})",
            h.rate,
            h.errors,
            error_samples(&h.samples),
            p.tps,
            h.rate / p.tps,
            pp.tps,
            h.rate / pp.tps,
            bi.tps,
            h.rate / bi.tps
        );
        handler.push(h.rate);
        plain.push(p.tps);
        piped.push(pp.tps);
        bare.push(bi.tps);
    }
    let (h, p, pp, bi) = (median(handler), median(plain), median(piped), median(bare));
    println!(
        "median over {} rounds of {} s with {} clients: handler {h:.0} holds/s; pgbench same SQL {p:.0} tx/s, \
         ratio {:.2} (target >= 0.60); pipelined {pp:.0} tx/s, ratio {:.2}; bare claim insert {bi:.0}/s, \
         ratio {:.2} (target >= 0.50)",
        a.rounds,
        a.seconds,
        a.clients,
        h / p,
        h / pp,
        h / bi
    );
    Ok(())
}

fn error_samples(samples: &BTreeMap<String, u64>) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let list: Vec<String> = samples.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    format!(": {}", list.join(", "))
}

/// `n` simulated Lambda instances (pool of one each) through `via`, vs pgbench with `n` clients
/// on the same route.
async fn instances(b: &Bench, a: &BenchArgs, n: usize, via: Via) -> Res {
    let (route_url, probe) = match via {
        Via::Pooler => {
            let base = a
                .pooler_url
                .clone()
                .ok_or("--pooler-url (or HOLDFAST_PGBOUNCER_URL in .local/env) is needed to go through the pooler")?;
            let admin = a.pooler_admin_url.clone().unwrap_or_else(|| replace_dbname(&base, "pgbouncer"));
            (replace_dbname(&base, BENCH_DB), Probe::Pooler(pool_from_url(&admin, 1)?))
        }
        _ => (b.url.clone(), Probe::Direct(b.owner.clone())),
    };
    let route = if via == Via::Pooler { "pooler" } else { "direct" };
    let shape = (n, a.seconds, "extended");
    let (mut handler, mut baseline) = (vec![], vec![]);
    let (mut errors, mut failed) = (0u64, 0u64);
    let (mut peak_handler, mut peak_pgbench) = (Peak::default(), Peak::default());
    for round in 1..=a.rounds {
        // A fleet per round: one service per instance, each with its own pool of one
        // connection; cold starts (the constraint check) before the clock starts, and the fleet
        // gone (its connections closed) before pgbench's phase is counted. The flag cache is
        // shared: it makes no database calls.
        let mut svcs = Vec::with_capacity(n);
        for _ in 0..n {
            let svc = Arc::new(HoldsService::new(pool_from_url(&route_url, 1)?, b.flags.clone()));
            svc.verify_enforcement().await?;
            svcs.push(svc);
        }
        let (h, hp) = watched(&probe, drive_handler(&svcs, &b.windows, a.seconds)).await?;
        drop(svcs);
        let (p, pp) = watched(&probe, async {
            let (pg_bin, script, vars, url) =
                (b.pg_bin.clone(), b.scripts.piped.clone(), b.vars.clone(), route_url.clone());
            tokio::task::spawn_blocking(move || pgbench(&pg_bin, shape, &script, &vars, &url)).await?
        })
        .await?;
        println!(
            "{route} round {round}: handler {:.0} holds/s ({} non-201{}; server conns max {}, clients max {}), \
             pgbench {:.0} tx/s ({} failed; server conns max {}, clients max {}), ratio {:.2}",
            h.rate,
            h.errors,
            error_samples(&h.samples),
            hp.server,
            hp.client,
            p.tps,
            p.failed,
            pp.server,
            pp.client,
            h.rate / p.tps
        );
        errors += h.errors;
        failed += p.failed;
        for (total, seen) in [(&mut peak_handler, hp), (&mut peak_pgbench, pp)] {
            total.server = total.server.max(seen.server);
            total.client = total.client.max(seen.client);
            total.samples += seen.samples;
        }
        handler.push(h.rate);
        baseline.push(p.tps);
    }
    let (h, p) = (median(handler), median(baseline));
    println!(
        "{route}, {n} instances (pool 1 each), median over {} rounds of {} s: handler {h:.0} holds/s, pgbench \
         (same pipelined SQL, -M extended, {n} clients) {p:.0} tx/s, ratio {:.2}{}; errors: handler {errors}, \
         pgbench {failed}; server connections max {} (handler) / {} (pgbench), client connections max {} / {} \
         ({} + {} samples)",
        a.rounds,
        a.seconds,
        h / p,
        if via == Via::Pooler { " (target >= 0.60)" } else { "" },
        peak_handler.server,
        peak_pgbench.server,
        peak_handler.client,
        peak_pgbench.client,
        peak_handler.samples,
        peak_pgbench.samples
    );
    if via == Via::Pooler {
        // PgBouncer closes idle server connections after its server_idle_timeout; until then
        // the next run could not drop the bench database. Wait for that here (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        while probe.sample().await?.0 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipelined_script_has_one_pipeline_around_the_hold_write() {
        let s = pipelined_script();
        assert_eq!(s.matches("\\startpipeline").count(), 1, "{s}");
        assert_eq!(s.matches("\\endpipeline").count(), 1, "{s}");
        let start = s.find("\\startpipeline").expect("start");
        let end = s.find("\\endpipeline").expect("end");
        let inside = &s[start..end];
        for stmt in ["hashtextextended", "pg_advisory_xact_lock(k.t, k.h)", "UPDATE table_claims", "WITH h AS"] {
            assert!(inside.contains(stmt), "{stmt} outside the pipeline");
        }
    }
}
