//! Through PgBouncer in transaction pooling mode (issue 16), the local stand-in for RDS Proxy:
//! each transaction, and each statement outside one, may run on a different server connection,
//! and PgBouncer 1.18 carries no named prepared statement between them.
//!
//! - a rush of many "Lambda instances" (one pool of one connection each) doing holds and
//!   confirms through the holds API handler, with the outbox relay, the email sender and the
//!   metrics aggregator running beside them: PgBouncer's admin console, sampled during the rush,
//!   shows far more client connections than server connections, the server connections never
//!   above the pool size, and nothing fails;
//! - the regression guard: a private PgBouncer that hands every transaction (and every statement
//!   outside one) to the next server connection in turn (`server_round_robin`), where a named
//!   statement outside a transaction or a statement cached across transactions fails every
//!   time (checked first, so the guard is known to bite); every store path runs twice there.

use deadpool_postgres::Pool;
use email_sender::clock::SystemClock;
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::SinkProvider;
use email_sender::relay::OutboxRelay;
use email_sender::sqs::{self as q, QueuePair};
use email_sender::store::SendStore;
use holdfast_adapters::db::pool_from_url;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::Backoff;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, pgbouncer_admin_url, response_json, wait_for, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;
use uuid::Uuid;

/// PgBouncer's server connections per (database, role) (`default_pool_size`).
fn pool_size() -> i64 {
    std::env::var("HOLDFAST_PGBOUNCER_POOL_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// No two active exclusive claims on one table overlap (checked independently by SQL).
const OVERLAPS: &str = "SELECT count(*) FROM table_claims a JOIN table_claims b
    ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
    WHERE a.active AND b.active AND a.exclusive AND b.exclusive";

async fn count(pool: &Pool, sql: &str) -> i64 {
    pool.get().await.expect("conn").fetch_one(sql, &[]).await.expect("count").get(0)
}

/// A restaurant with the demo policy (eight tables), its horizon reaching 2030.
async fn publish_restaurant(pool: &Pool) -> RestaurantId {
    let restaurant = RestaurantId::new_random();
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = 3650;
    let c = pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, restaurant, "Pooled Bistro", &policy).await.expect("publish policy");
    restaurant
}

fn flag_loader(aws: &TestAws) -> Arc<FlagLoader> {
    Arc::new(FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&aws.sdk),
        holdfast_shared::flags::Environment::Dev,
        format!("/{}/dev", aws.prefix),
        Duration::from_secs(300),
    ))
}

/// Status and JSON body of one holds API call by `sub`.
async fn call(svc: &HoldsService, method: &str, path: &str, body: &Value, sub: &str) -> (u16, Value) {
    let req = api_request(method, path, &body.to_string(), Some(sub), &[]);
    response_json(holds_api::api::handle(svc, req).await)
}

fn guest() -> Value {
    json!({ "guest": { "name": "Ada Lovelace", "email": "ada@example.com" } })
}

/// One integer column of a PgBouncer admin-console row (0 when absent: columns vary by version).
fn col(r: &tokio_postgres::SimpleQueryRow, name: &str) -> i64 {
    r.try_get(name).ok().flatten().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// PgBouncer's pool for the runtime role on `database`: (client connections, server
/// connections) from `SHOW POOLS`, and the server connections `SHOW SERVERS` lists for it.
async fn pool_counts(admin: &Pool, database: &str) -> (i64, i64, i64) {
    let c = admin.get().await.expect("PgBouncer admin console");
    let (mut clients, mut servers) = (0, 0);
    for m in c.simple_query("SHOW POOLS").await.expect("SHOW POOLS") {
        if let SimpleQueryMessage::Row(r) = m {
            if r.try_get("database").ok().flatten() == Some(database)
                && r.try_get("user").ok().flatten() == Some("holdfast")
            {
                clients = col(&r, "cl_active") + col(&r, "cl_waiting");
                servers = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"].iter().map(|n| col(&r, n)).sum();
            }
        }
    }
    let mut listed = 0;
    for m in c.simple_query("SHOW SERVERS").await.expect("SHOW SERVERS") {
        if let SimpleQueryMessage::Row(r) = m {
            if r.try_get("database").ok().flatten() == Some(database) {
                listed += 1;
            }
        }
    }
    (clients, servers, listed)
}

/// How a rush flow (hold, then confirm) ended.
#[derive(Debug)]
enum Flow {
    Booked,
    /// 409 on the hold: the tables were taken (a correct answer under contention).
    Refused,
    /// Anything else: the failure this test exists to catch.
    Failed(String),
}

async fn rush_flow(svc: Arc<HoldsService>, restaurant: RestaurantId, i: usize) -> Flow {
    let sub = format!("rush-guest-{i}");
    // Two guests an evening for eight tables: most book, a few collide (409, the loser).
    let day = chrono::NaiveDate::from_ymd_opt(2030, 1, 7).expect("date") + chrono::Days::new((i % 100) as u64);
    let body = json!({ "restaurant_id": restaurant, "party_size": 2, "start": format!("{day}T19:00:00Z") });
    let (s, h) = call(&svc, "POST", "/holds", &body, &sub).await;
    match s {
        201 => {}
        409 => return Flow::Refused,
        other => return Flow::Failed(format!("hold {i}: {other} {h}")),
    }
    let path = format!("/holds/{}/confirm", h["hold_id"].as_str().unwrap_or_default());
    match call(&svc, "POST", &path, &guest(), &sub).await {
        (200, _) => Flow::Booked,
        (other, v) => Flow::Failed(format!("confirm {i}: {other} {v}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rush_of_many_instances_shares_a_few_server_connections_without_an_error() {
    const INSTANCES: usize = 100;
    const FLOWS: usize = 200;
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let restaurant = publish_restaurant(&db.pool).await;
    let flags = flag_loader(&aws);
    let admin = pool_from_url(&pgbouncer_admin_url(), 1).expect("admin console url");
    let before = pool_counts(&admin, &db.name).await;

    // Warm instances, as at a dinner rush: each holds its one connection to PgBouncer.
    let instances: Vec<Arc<HoldsService>> = (0..INSTANCES)
        .map(|_| Arc::new(HoldsService::new(pool_from_url(&db.url, 1).expect("pool"), flags.clone())))
        .collect();
    for chunk in instances.chunks(10) {
        let warm = chunk.iter().map(|svc| async move { svc.verify_enforcement().await.expect("warm instance") });
        futures::future::join_all(warm).await;
    }

    // Beside the rush, each on its own one-connection pool: the outbox relay publishing to the
    // emulator's SQS, the email sender consuming it, the metrics aggregator closing windows.
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let pair: QueuePair =
        q::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), 30).await.expect("queues");
    let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
    let relay = OutboxRelay::new(pool(&db.url), sqs.clone(), pair.queue_url.clone(), Arc::new(SystemClock));
    let sink = Arc::new(SinkProvider::default());
    let settings = Settings {
        queue_url: pair.queue_url.clone(),
        from_address: "bookings@holdfast.test".into(),
        ops_address: None,
        lease: chrono::Duration::seconds(30),
        backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
        max_hop_delay_seconds: 1,
    };
    let sender =
        EmailSender::new(SendStore::new(pool(&db.url)), sink.clone(), sqs.clone(), Arc::new(SystemClock), settings);
    let aggregator = metrics_aggregator::Aggregator::new(
        pool(&db.url),
        "dev",
        flags.clone(),
        Vec::new(),
        None,
        metrics_aggregator::Options::default(),
    );

    let rushing = Arc::new(AtomicBool::new(true));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let samples: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::default();
    let sampler = {
        let (admin, name, rushing, samples) = (admin.clone(), db.name.clone(), rushing.clone(), samples.clone());
        tokio::spawn(async move {
            while rushing.load(Ordering::SeqCst) {
                let s = pool_counts(&admin, &name).await;
                samples.lock().expect("samples").push(s);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let background = {
        let (rushing, errors) = (rushing.clone(), errors.clone());
        let (sqs, url, arn) = (sqs.clone(), pair.queue_url.clone(), pair.queue_arn.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while rushing.load(Ordering::SeqCst) {
                let (r, d, a) =
                    tokio::join!(relay.tick(), q::poll_once(&sqs, &sender, &url, &arn, &region, 0), async {
                        let now = aggregator.db_now().await?;
                        aggregator.run_once(now).await
                    });
                {
                    let mut e = errors.lock().expect("errors");
                    if let Err(x) = r {
                        e.push(format!("relay: {x}"));
                    }
                    match d {
                        Ok(d) if !d.failed.is_empty() => {
                            e.push(format!("sender: {} batch item failures", d.failed.len()))
                        }
                        Ok(d) => sent += d.deleted,
                        Err(x) => e.push(format!("sender: {x}")),
                    }
                    if let Err(x) = a {
                        e.push(format!("aggregator: {x}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (relay, sender, sent)
        })
    };

    let flows: Vec<_> =
        (0..FLOWS).map(|i| tokio::spawn(rush_flow(instances[i % INSTANCES].clone(), restaurant, i))).collect();
    let mut ends = Vec::new();
    for f in flows {
        ends.push(f.await.expect("flow"));
    }
    rushing.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let (relay, sender, sent) = background.await.expect("background");

    let failed: Vec<&String> =
        ends.iter().filter_map(|e| if let Flow::Failed(m) = e { Some(m) } else { None }).collect();
    assert!(failed.is_empty(), "{} of {FLOWS} flows failed through PgBouncer: {failed:?}", failed.len());
    let errors = errors.lock().expect("errors").clone();
    assert!(errors.is_empty(), "relay, sender or aggregator failed through PgBouncer: {errors:?}");
    let booked = ends.iter().filter(|e| matches!(e, Flow::Booked)).count();
    assert!(booked >= FLOWS / 2, "only {booked} of {FLOWS} flows booked");
    assert_eq!(count(&db.pool, OVERLAPS).await, 0, "no double booking");

    // Every confirmation email goes out: the last ones after the rush.
    let sent = AtomicUsize::new(sent);
    let (relay, sender, sqs, pair, sent_so_far) = (&relay, &sender, &sqs, &pair, &sent);
    wait_for("every confirmation email sent", Duration::from_secs(60), move || async move {
        relay.tick().await.expect("relay");
        let d = q::poll_once(sqs, sender, &pair.queue_url, &pair.queue_arn, "eu-west-1", 0).await.expect("sender");
        assert!(d.failed.is_empty(), "sender: batch item failures after the rush");
        let n = sent_so_far.fetch_add(d.deleted, Ordering::SeqCst) + d.deleted;
        (n >= booked).then_some(())
    })
    .await;
    assert_eq!(sink.sent() as usize, booked, "one email per booking");

    let samples = samples.lock().expect("samples").clone();
    let max_clients = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let max_servers = samples.iter().map(|s| s.1.max(s.2)).max().unwrap_or(0);
    println!(
        "pooler rush: {FLOWS} flows over {INSTANCES} instances, {booked} booked; {} samples during the rush: \
         client connections up to {max_clients}, server connections up to {max_servers} (pool size {}); \
         before the rush {before:?}",
        samples.len(),
        pool_size()
    );
    assert!(samples.len() >= 5, "the rush was sampled only {} times", samples.len());
    assert!(max_servers >= 1, "no server connection seen: the sampler is not looking at this pool");
    assert!(max_servers <= pool_size(), "{max_servers} server connections: above the pool size {}", pool_size());
    assert!(
        max_clients >= 3 * pool_size(),
        "client connections peaked at {max_clients}: not far above the pool size {}",
        pool_size()
    );
}

fn pool(url: &str) -> Pool {
    pool_from_url(url, 1).expect("pool")
}

// ---------------------------------------------------------------------------------------------
// The regression guard: a PgBouncer that rotates server connections on every assignment

/// A PgBouncer of this test's own: the local one's config (same auth file, TLS files and
/// cluster) with `server_round_robin` on, a small pool kept open, and its own port, pid and log.
/// Run as the `postgres` OS user when the test runs as root, as scripts/services.sh does.
struct RotatingBouncer {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

/// Server connections of the rotating PgBouncer: enough that the next one is never the last.
const ROTATING_POOL: usize = 3;

impl RotatingBouncer {
    fn start() -> RotatingBouncer {
        let ini_path = std::env::var("HOLDFAST_PGBOUNCER_INI")
            .expect("HOLDFAST_PGBOUNCER_INI is not set: run ./scripts/services.sh and `source .local/env`");
        let bin = std::env::var("HOLDFAST_PGBOUNCER_BIN").unwrap_or_else(|_| "pgbouncer".into());
        let as_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("holdfast-pooler-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        if as_root {
            let ok = std::process::Command::new("chown").arg("postgres:").arg(&dir).status().expect("chown");
            assert!(ok.success(), "chown postgres {}", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let local = std::fs::read_to_string(&ini_path).expect("the local PgBouncer's config");
        let mut ini = String::new();
        for line in local.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            match key {
                "listen_port" => ini.push_str(&format!("listen_port = {port}\n")),
                "pidfile" => ini.push_str(&format!("pidfile = {}\n", dir.join("pgbouncer.pid").display())),
                "logfile" => ini.push_str(&format!("logfile = {}\n", dir.join("pgbouncer.log").display())),
                "default_pool_size" => ini.push_str(&format!("default_pool_size = {ROTATING_POOL}\n")),
                "server_idle_timeout" => ini.push_str("server_idle_timeout = 0\n"),
                "pool_mode" => ini.push_str("pool_mode = transaction\nserver_round_robin = 1\n"),
                _ => {
                    ini.push_str(line);
                    ini.push('\n');
                }
            }
        }
        assert!(ini.contains("server_round_robin = 1"), "the local config has no pool_mode line:\n{local}");
        let ini_file = dir.join("pgbouncer.ini");
        std::fs::write(&ini_file, ini).expect("write config");
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]);
            c
        } else {
            std::process::Command::new(&bin)
        };
        // It logs to its log file too (read by the test): keep the test's output quiet.
        let child = cmd
            .arg(&ini_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        RotatingBouncer { child, dir, port }
    }

    /// `url` (one of the local PgBouncer's) pointed at this one.
    fn url(&self, url: &str) -> String {
        let local = std::env::var("HOLDFAST_PGBOUNCER_PORT").unwrap_or_else(|_| "56432".into());
        let moved = url.replacen(&format!("127.0.0.1:{local}/"), &format!("127.0.0.1:{}/", self.port), 1);
        assert_ne!(moved, url, "{} is not a URL of the local PgBouncer", url.split('@').nth(1).unwrap_or(""));
        moved
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for RotatingBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer, which shuts down at once on SIGTERM.
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Open [`ROTATING_POOL`] server connections at once (transactions held open together), so
/// from then on every assignment takes a different one from the last.
async fn fill_pool(url: &str) {
    let clients: Vec<Pool> = (0..ROTATING_POOL).map(|_| pool(url)).collect();
    let mut conns = Vec::new();
    for p in &clients {
        conns.push(p.get().await.expect("connect through the rotating PgBouncer"));
    }
    let mut txs = Vec::new();
    for c in conns.iter_mut() {
        let tx = c.transaction().await.expect("begin");
        tx.fetch_one("SELECT 1", &[]).await.expect("a server connection");
        txs.push(tx);
    }
    for tx in txs {
        tx.commit().await.expect("commit");
    }
}

/// The guard bites: a named statement outside a transaction (tokio-postgres prepares, then
/// executes: two round trips, two server connections here), and a statement cached in one
/// transaction and used in the next, both fail. These are the forms clippy.toml forbids.
#[allow(clippy::disallowed_methods)]
async fn named_statements_fail(url: &str) {
    let probe = pool(url);
    let c = probe.get().await.expect("conn");
    let named = c.query("SELECT 1", &[]).await;
    let e = named.expect_err("a named statement outside a transaction must fail here");
    assert_eq!(e.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{e:?}");
    drop(c);
    let mut c = probe.get().await.expect("conn");
    let cached = {
        let tx = c.transaction().await.expect("begin");
        let stmt = tx.prepare_cached("SELECT 2").await.expect("prepare");
        tx.query(&stmt, &[]).await.expect("first use, same transaction");
        tx.commit().await.expect("commit");
        let tx = c.transaction().await.expect("begin");
        let again = tx.prepare_cached("SELECT 2").await.expect("from the cache");
        let r = tx.query(&again, &[]).await;
        drop(tx);
        r
    };
    let e = cached.expect_err("a statement cached across transactions must fail here");
    assert_eq!(e.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{e:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_path_runs_twice_where_server_connections_rotate() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let bouncer = RotatingBouncer::start();
    let url = bouncer.url(&db.url);
    wait_for("the rotating PgBouncer to accept connections", Duration::from_secs(10), || async {
        pool(&url).get().await.ok().map(|_| ())
    })
    .await;
    fill_pool(&url).await;

    named_statements_fail(&url).await;

    // The holds API over a one-connection pool through it: every use case twice.
    let restaurant = publish_restaurant(&pool(&url)).await;
    let svc = Arc::new(HoldsService::new(pool(&url), flag_loader(&aws)));
    svc.verify_enforcement().await.expect("enforcement check");
    let mut answers = Vec::new();
    for round in 0..2 {
        let sub = format!("guest-{round}");
        let start = format!("2030-02-{:02}T19:00:00Z", 10 + round);
        let quote = json!({ "party_size": 2, "start": start });
        answers.push(call(&svc, "POST", &format!("/restaurants/{restaurant}/quotes"), &quote, &sub).await);
        let hold = json!({ "restaurant_id": restaurant, "party_size": 2, "start": start });
        let (s, h) = call(&svc, "POST", "/holds", &hold, &sub).await;
        answers.push((s, h.clone()));
        let hold_id = h["hold_id"].as_str().unwrap_or_default().to_string();
        answers.push(call(&svc, "GET", &format!("/holds/{hold_id}"), &Value::Null, &sub).await);
        let (s, b) = call(&svc, "POST", &format!("/holds/{hold_id}/confirm"), &guest(), &sub).await;
        answers.push((s, b.clone()));
        let booking = b["booking_id"].as_str().unwrap_or_default().to_string();
        // A second hold, released.
        let later = json!({ "restaurant_id": restaurant, "party_size": 2, "start": format!("2030-02-{:02}T21:30:00Z", 10 + round) });
        let (s, h2) = call(&svc, "POST", "/holds", &later, &sub).await;
        answers.push((s, h2.clone()));
        let h2 = h2["hold_id"].as_str().unwrap_or_default().to_string();
        answers.push(call(&svc, "DELETE", &format!("/holds/{h2}"), &Value::Null, &sub).await);
        // The booking read, moved, cancelled.
        answers.push(call(&svc, "GET", &format!("/bookings/{booking}"), &Value::Null, &sub).await);
        let change = json!({ "start": format!("2030-02-{:02}T20:00:00Z", 20 + round) });
        answers.push(call(&svc, "PATCH", &format!("/bookings/{booking}"), &change, &sub).await);
        answers.push(call(&svc, "POST", &format!("/bookings/{booking}/cancel"), &json!({}), &sub).await);
        // A booking request, confirmed inline, and the auto-assign job runner.
        let request = json!({ "restaurant_id": restaurant, "party_size": 2, "start": format!("2030-03-{:02}T19:00:00Z", 1 + round), "guest": guest()["guest"] });
        answers.push(call(&svc, "POST", "/bookings", &request, &sub).await);
        svc.run_due_assignments(10).await.expect("auto-assign run");
    }
    let bad: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s >= 400).collect();
    assert!(bad.is_empty(), "holds API answers under rotating server connections: {bad:?}");

    // The email path: relay, sender (claim, finish, events), twice.
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let pair = q::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), 30).await.expect("queues");
    let relay = OutboxRelay::new(pool(&url), sqs.clone(), pair.queue_url.clone(), Arc::new(SystemClock));
    let sink = Arc::new(SinkProvider::default());
    let settings = Settings::production(pair.queue_url.clone(), "bookings@holdfast.test".into(), None);
    let sender =
        EmailSender::new(SendStore::new(pool(&url)), sink.clone(), sqs.clone(), Arc::new(SystemClock), settings);
    let outbox: i64 = count(&db.pool, "SELECT count(*) FROM email_outbox WHERE not_before <= now()").await;
    assert!(outbox >= 2, "the flows above enqueued {outbox} emails");
    let mut published = 0;
    for _ in 0..2 {
        published += relay.tick().await.expect("relay tick").published;
        let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
        let d = q::poll_once(&sqs, &sender, &pair.queue_url, &pair.queue_arn, &region, 1).await.expect("sender");
        assert!(d.failed.is_empty(), "sender: batch item failures under rotating server connections");
    }
    assert!(published >= 2 && sink.sent() >= 1, "published {published}, sent {}", sink.sent());

    // The metrics aggregator, twice.
    let aggregator = metrics_aggregator::Aggregator::new(
        pool(&url),
        "dev",
        flag_loader(&aws),
        Vec::new(),
        None,
        metrics_aggregator::Options::default(),
    );
    for _ in 0..2 {
        let now = aggregator.db_now().await.expect("db clock");
        aggregator.run_once(now + chrono::Duration::minutes(5)).await.expect("aggregator run");
    }

    assert_eq!(count(&db.pool, OVERLAPS).await, 0);
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "PgBouncer logged prepared statement errors:\n{log}");
}
