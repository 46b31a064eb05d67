//! Fault injection (issue 14). Each test breaks one thing mid-flight, against real PostgreSQL
//! and the emulator, and checks the end state: no double booking, no lost job, no unexplained
//! duplicate, and a retriable answer to the caller (503 + Retry-After from the holds API, a
//! batch item failure from the email sender) — or, where a resend could deliver twice (an SES
//! outcome nobody knows), a suppressed job with its alarm event instead of a blind retry.
//!
//! - the holds API's confirm, its connection killed (`pg_terminate_backend`) inside its
//!   transaction, after the booking was written and before the commit;
//! - the outbox relay, its connection killed between SQS accepting a batch and the commit;
//! - PostgreSQL (a private throwaway cluster) stopped and started under a rush;
//! - the emulator cut (a TCP proxy) during a relay tick and during a send;
//! - SES timing out, answering 5xx, losing the connection after the request; SES throttling
//!   and Resend's 5xx and timeout (both retried, safely);
//! - the sender killed between SES accepting and the ledger commit (the handler aborted; its
//!   database connection killed), then the message redelivered;
//! - the residue, measured: `HOLDFAST_FAULT_SENDS` sends (default 500) with injected ambiguous
//!   outcomes and crashes, duplicates counted (docs/testing.md has the 10 000-send figures).

use chrono::Utc;
use deadpool_postgres::Pool;
use email_sender::clock::{ManualClock, SystemClock};
use email_sender::error::EmailError;
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::{ApiKey, EmailProvider, OutgoingEmail, Receipt, ResendProvider, SendError, SesProvider};
use email_sender::relay::OutboxRelay;
use email_sender::sqs as q;
use email_sender::store::SendStore;
use futures::future::BoxFuture;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::email::{Backoff, EmailJob, EmailType};
use holdfast_shared::ids::{BookingId, RestaurantId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, http_get, response_json, wait_for, EmailFixture, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Database sessions

/// The local superuser (`HOLDFAST_ADMIN_DATABASE_URL`), which may end any session.
fn admin_pool() -> Pool {
    let url = std::env::var("HOLDFAST_ADMIN_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .expect("HOLDFAST_ADMIN_DATABASE_URL is not set: run ./scripts/services.sh and `source .local/env`");
    holdfast_adapters::db::pool_from_url(&url, 2).expect("admin url parses")
}

/// The functions' sessions (`application_name = 'holdfast'`) on database `db` that match
/// `condition`, an SQL predicate over `pg_stat_activity`.
fn sessions_sql(select: &str, condition: &str) -> String {
    format!(
        "SELECT {select} FROM pg_stat_activity WHERE datname = $1 AND application_name = 'holdfast'
         AND pid <> pg_backend_pid() AND ({condition})"
    )
}

async fn sessions(admin: &Pool, db: &str, condition: &str) -> i64 {
    let c = admin.get().await.expect("admin connection");
    c.fetch_one(&sessions_sql("count(*)", condition), &[&db]).await.expect("pg_stat_activity").get(0)
}

/// `pg_terminate_backend` on those sessions; how many were ended.
async fn terminate(admin: &Pool, db: &str, condition: &str) -> i64 {
    let c = admin.get().await.expect("admin connection");
    let sql = sessions_sql("count(*) FILTER (WHERE pg_terminate_backend(pid))", condition);
    c.fetch_one(&sql, &[&db]).await.expect("pg_terminate_backend").get(0)
}

/// A session blocked on a lock the test holds.
const WAITING_ON_A_LOCK: &str = "wait_event_type = 'Lock'";

async fn count(pool: &Pool, sql: &str, params: &[&dyn Param]) -> i64 {
    pool.get().await.expect("conn").fetch_one(sql, params).await.expect("count").get(0)
}

/// No two active exclusive claims on one table overlap (checked independently by SQL).
const OVERLAPS: &str = "SELECT count(*) FROM table_claims a JOIN table_claims b
    ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
    WHERE a.active AND b.active AND a.exclusive AND b.exclusive";

// ---------------------------------------------------------------------------------------------
// Holds API

/// Fixed dates in 2030: every policy published here reaches them.
const START: &str = "2030-01-07T19:00:00Z";

/// A restaurant with the demo policy (eight tables), its horizon reaching 2030.
async fn publish_restaurant(pool: &Pool) -> RestaurantId {
    let restaurant = RestaurantId::new_random();
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = 3650;
    let c = pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, restaurant, "Fault Bistro", &policy).await.expect("publish policy");
    restaurant
}

fn holds_service(pool: &Pool, aws: &TestAws) -> Arc<HoldsService> {
    let flags = Arc::new(FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&aws.sdk),
        holdfast_shared::flags::Environment::Dev,
        format!("/{}/dev", aws.prefix),
        Duration::from_secs(30),
    ));
    Arc::new(HoldsService::new(pool.clone(), flags))
}

/// Status, `Retry-After` and JSON body of one holds API call by guest `sub`.
async fn call(
    svc: &HoldsService,
    method: &str,
    path: &str,
    body: &Value,
    sub: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let resp = holds_api::api::handle(svc, api_request(method, path, &body.to_string(), Some(sub), headers)).await;
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    let (status, v) = response_json(resp);
    (status, retry_after, v)
}

fn guest() -> Value {
    json!({ "guest": { "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000" } })
}

fn confirmed_job_key(booking: &str) -> String {
    let id = Uuid::parse_str(booking).expect("booking id");
    EmailJob::for_booking(EmailType::BookingConfirmed, BookingId(id)).dedupe_key()
}

#[tokio::test]
async fn a_confirm_killed_mid_transaction_is_a_503_and_its_retry_books_once() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let admin = admin_pool();
    let restaurant = publish_restaurant(&db.pool).await;
    let svc = holds_service(&db.pool, &aws);
    let body = json!({ "restaurant_id": restaurant, "party_size": 2, "start": START });
    let (s, _, h) = call(&svc, "POST", "/holds", &body, "ada", &[]).await;
    assert_eq!(s, 201, "{h}");
    let path = format!("/holds/{}/confirm", h["hold_id"].as_str().expect("hold id"));
    const KEY: &str = "confirm-ada-1";

    // An uncommitted row with the confirm's own idempotency key: the confirm writes the
    // booking, its claims, the hold and the outbox row, then waits on this row (its last
    // statement before the commit). That is where its connection is killed.
    let mut blocker_conn = db.pool.get().await.expect("conn");
    let blocker = blocker_conn.transaction().await.expect("tx");
    blocker
        .run(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response)
             VALUES ('POST /holds/{id}/confirm|ada', $1, 'blocker', 200, '{}')",
            &[&KEY],
        )
        .await
        .expect("blocking row");
    let first = tokio::spawn({
        let (svc, path) = (svc.clone(), path.clone());
        async move { call(&svc, "POST", &path, &guest(), "ada", &[("idempotency-key", KEY)]).await }
    });
    wait_for("the confirm to wait inside its transaction", Duration::from_secs(15), || async {
        (sessions(&admin, &db.name, WAITING_ON_A_LOCK).await == 1).then_some(())
    })
    .await;
    assert_eq!(terminate(&admin, &db.name, WAITING_ON_A_LOCK).await, 1, "the confirm's session is ended");
    let (s, retry_after, v) = first.await.expect("confirm task");
    assert_eq!(s, 503, "a killed connection is retriable: {v}");
    assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
    assert!(retry_after.as_deref().and_then(|r| r.parse::<u32>().ok()).is_some_and(|n| n > 0), "{retry_after:?}");
    blocker.rollback().await.expect("rollback");
    drop(blocker_conn);

    // The killed transaction left nothing behind: no booking, no claim, no email job.
    assert_eq!(count(&db.pool, "SELECT count(*) FROM bookings", &[]).await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM email_outbox", &[]).await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM holds WHERE status = 'held'", &[]).await, 1);

    // The client retries as told, with the same key: one booking, and the same answer again.
    let (s, _, v) = call(&svc, "POST", &path, &guest(), "ada", &[("idempotency-key", KEY)]).await;
    assert_eq!(s, 200, "{v}");
    let booking = v["booking_id"].as_str().expect("booking id").to_string();
    let (s2, _, again) = call(&svc, "POST", &path, &guest(), "ada", &[("idempotency-key", KEY)]).await;
    assert_eq!((s2, &again), (200, &v), "a replay, not a second booking");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM bookings", &[]).await, 1);
    assert_eq!(count(&db.pool, OVERLAPS, &[]).await, 0);
    let key = confirmed_job_key(&booking);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM email_outbox WHERE dedupe_key = $1", &[&key]).await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM holds WHERE status = 'confirmed'", &[]).await, 1);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL restarted under a rush, on a private throwaway cluster

/// A PostgreSQL cluster of this test's own (initdb into a temp dir, a free port), so stopping
/// it disturbs nobody. Run as the `postgres` OS user when the test runs as root, as
/// scripts/services.sh does. Removed on drop.
struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let bin = PathBuf::from(
            std::env::var("HOLDFAST_PG_BIN")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or("/usr/lib/postgresql/15/bin".into()),
        );
        assert!(bin.join("initdb").exists(), "no initdb in {}: set HOLDFAST_PG_BIN (source .local/env)", bin.display());
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("holdfast-faults-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        if as_postgres {
            let ok = std::process::Command::new("chown").arg("postgres:").arg(&dir).status().expect("chown");
            assert!(ok.success(), "chown postgres {}", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let cluster = PrivateCluster { bin, dir, port, as_postgres };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"]);
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nmax_connections = 60\n\
             shared_buffers = 16MB\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            cluster.port,
            cluster.dir.display()
        );
        let path = cluster.dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&path, text).expect("postgresql.conf");
        cluster.ctl("start");
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A PostgreSQL program, as the `postgres` OS user when the test runs as root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `pg_ctl start`, or `stop` in fast mode (sessions are ended, as in a restart or failover).
    fn ctl(&self, action: &str) {
        let (data, log) = (self.data(), self.dir.join("server.log").display().to_string());
        match action {
            "start" => self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "start"]),
            _ => self.run("pg_ctl", &["-D", &data, "-w", "-t", "60", "-m", "fast", action]),
        }
    }

    fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One holds API call repeated while it answers 503, as a client honouring `Retry-After`
/// would (same Idempotency-Key each time). Every answer is logged.
async fn until_not_503(
    svc: &HoldsService,
    path: &str,
    body: &Value,
    sub: &str,
    key: &str,
    log: &Mutex<Vec<(u16, bool, Instant)>>,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, retry_after, v) = call(svc, "POST", path, body, sub, &[("idempotency-key", key)]).await;
        log.lock().expect("log").push((s, retry_after.is_some(), Instant::now()));
        if s != 503 {
            return (s, v);
        }
        assert!(Instant::now() < deadline, "still 503 after 60 s: the pool never recovered ({v})");
        let secs = retry_after.and_then(|r| r.parse::<u64>().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

/// How a rush flow (hold, then confirm) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FlowEnd {
    Booked(String),
    /// 409: the tables were taken (a correct answer under contention).
    Refused,
}

async fn rush_flow(
    svc: Arc<HoldsService>,
    restaurant: RestaurantId,
    i: usize,
    log: Arc<Mutex<Vec<(u16, bool, Instant)>>>,
) -> FlowEnd {
    let sub = format!("guest-{i}");
    // Twenty evenings, two seatings each: contention, but room for most.
    let day = chrono::NaiveDate::from_ymd_opt(2030, 1, 7).expect("date") + chrono::Days::new((i % 20) as u64);
    let start = format!("{day}T{}:00Z", if i % 40 < 20 { "19:00" } else { "21:00" });
    let body = json!({ "restaurant_id": restaurant, "party_size": 2, "start": start });
    let (s, h) = until_not_503(&svc, "/holds", &body, &sub, &format!("hold-{i}"), &log).await;
    match s {
        201 => {}
        409 => return FlowEnd::Refused,
        other => panic!("hold {i}: unexpected {other}: {h}"),
    }
    let path = format!("/holds/{}/confirm", h["hold_id"].as_str().expect("hold id"));
    let (s, v) = until_not_503(&svc, &path, &guest(), &sub, &format!("confirm-{i}"), &log).await;
    match s {
        200 => FlowEnd::Booked(v["booking_id"].as_str().expect("booking id").to_string()),
        other => panic!("confirm {i}: unexpected {other}: {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_during_a_rush_the_pool_recovers_without_a_restart() {
    let cluster = Arc::new(tokio::task::spawn_blocking(PrivateCluster::start).await.expect("private cluster"));
    let su = holdfast_adapters::db::pool_from_url(&cluster.url("postgres", "postgres"), 1).expect("superuser pool");
    // The same split as everywhere: migrations as the owner, the function as a runtime login.
    let c = su.get().await.expect("private cluster up");
    for sql in [
        "CREATE ROLE holdfast_runtime NOLOGIN",
        "CREATE ROLE hf_rush LOGIN IN ROLE holdfast_runtime",
        "CREATE DATABASE hf_rush",
    ] {
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(c);
    let owner = holdfast_adapters::db::pool_from_url(&cluster.url("postgres", "hf_rush"), 2).expect("owner pool");
    holdfast_adapters::db::migrate(&owner).await.expect("migrations apply");
    let aws = TestAws::new().await;
    let restaurant = publish_restaurant(&owner).await;
    let pool = holdfast_adapters::db::pool_from_url(&cluster.url("hf_rush", "hf_rush"), 8).expect("runtime pool");
    // One service (one pool) for the whole rush: "the function" is never restarted.
    let svc = holds_service(&pool, &aws);

    // 80 flows started 50 ms apart (4 s); PostgreSQL goes down one second in, for two seconds.
    const FLOWS: usize = 80;
    let log: Arc<Mutex<Vec<(u16, bool, Instant)>>> = Arc::default();
    let mut flows = Vec::new();
    let rush_started = Instant::now();
    let restart = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || c.ctl("stop")).await.expect("stop");
            let down = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || c.ctl("start")).await.expect("start");
            (down, Instant::now())
        })
    };
    for i in 0..FLOWS {
        tokio::time::sleep_until((rush_started + Duration::from_millis(50 * i as u64)).into()).await;
        flows.push(tokio::spawn(rush_flow(svc.clone(), restaurant, i, log.clone())));
    }
    let (down_at, up_at) = restart.await.expect("restart");
    let mut ends = Vec::new();
    for f in flows {
        ends.push(f.await.expect("flow"));
    }

    let log = log.lock().expect("log").clone();
    let unavailable = log.iter().filter(|(s, _, _)| *s == 503).count();
    assert!(unavailable > 0, "the restart was not felt: no 503 in {} answers", log.len());
    assert!(log.iter().all(|(s, ra, _)| *s != 503 || *ra), "every 503 carries Retry-After");
    let statuses: HashSet<u16> = log.iter().map(|(s, _, _)| *s).collect();
    assert!(statuses.iter().all(|s| [200, 201, 409, 503].contains(s)), "unexpected statuses {statuses:?}");
    let during = log.iter().filter(|(_, _, t)| *t >= down_at && *t < up_at).count();
    let after_ok = log.iter().filter(|(s, _, t)| *t > up_at && (*s == 200 || *s == 201)).count();
    assert!(after_ok > 0, "nothing succeeded after PostgreSQL came back: the pool did not recover");

    let booked: Vec<String> = ends
        .iter()
        .filter_map(|e| match e {
            FlowEnd::Booked(b) => Some(b.clone()),
            FlowEnd::Refused => None,
        })
        .collect();
    let distinct: HashSet<&String> = booked.iter().collect();
    assert_eq!(distinct.len(), booked.len(), "two flows got the same booking");
    assert!(!booked.is_empty());
    let check = holdfast_adapters::db::pool_from_url(&cluster.url("postgres", "hf_rush"), 1).expect("check pool");
    assert_eq!(count(&check, "SELECT count(*) FROM bookings", &[]).await, booked.len() as i64, "a booking per 200");
    assert_eq!(count(&check, OVERLAPS, &[]).await, 0, "no double booking");
    assert_eq!(count(&check, "SELECT count(*) FROM holds WHERE status = 'confirmed'", &[]).await, booked.len() as i64);
    for b in &booked {
        let key = confirmed_job_key(b);
        let n = count(&check, "SELECT count(*) FROM email_outbox WHERE dedupe_key = $1", &[&key]).await;
        assert_eq!(n, 1, "booking {b}: its confirmation email job, exactly once");
    }
    println!(
        "rush: {FLOWS} flows, {} booked, {} refused (409), {} answers, {unavailable} of them 503 \
         ({during} while PostgreSQL was down), {after_ok} successes after the restart",
        booked.len(),
        ends.len() - booked.len(),
        log.len()
    );
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of the emulator that can be cut, drop answers, or run a hook

type Hook = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Pass,
    /// Forward the request to the emulator, then close the connection without its answer:
    /// "the connection was lost after the request was sent".
    DropAnswer,
}

/// One request per connection (forwarded with `Connection: close`). `cut` closes the listening
/// socket, so new connections are refused (nothing was sent); `restore` listens again on the
/// same address. Records each request's operation (`X-Amz-Target`, or the path) and body.
struct Proxy {
    addr: SocketAddr,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    state: Arc<ProxyState>,
}

struct ProxyState {
    mode: Mutex<ProxyMode>,
    hook: Mutex<Option<Hook>>,
    seen: Mutex<Vec<(String, String)>>,
}

impl Proxy {
    async fn start() -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state =
            Arc::new(ProxyState { mode: Mutex::new(ProxyMode::Pass), hook: Mutex::new(None), seen: Mutex::default() });
        let p = Arc::new(Proxy { addr, accept: Mutex::new(None), state });
        p.listen(listener);
        p
    }

    fn listen(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = forward(inbound, state).await;
                });
            }
        });
        *self.accept.lock().expect("accept") = Some(task);
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop listening: from now on connections are refused. Returns once the socket is closed.
    async fn cut(&self) {
        let task = self.accept.lock().expect("accept").take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restore(&self) {
        let listener = wait_for("the proxy's port to be free again", Duration::from_secs(5), || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.listen(listener);
    }

    fn set_mode(&self, mode: ProxyMode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    fn set_hook(&self, hook: Option<Hook>) {
        *self.state.hook.lock().expect("hook") = hook;
    }

    /// Bodies of the requests for `operation` seen so far.
    fn seen(&self, operation: &str) -> Vec<String> {
        self.state.seen.lock().expect("seen").iter().filter(|(op, _)| op == operation).map(|(_, b)| b.clone()).collect()
    }
}

/// The SES v2 `SendEmail` operation as the proxy names it (REST: its path).
const SES_SEND: &str = "/v2/email/outbound-emails";

async fn forward(mut inbound: TcpStream, state: Arc<ProxyState>) -> std::io::Result<()> {
    let (head, body) = read_message(&mut inbound).await?;
    let text = String::from_utf8_lossy(&head).to_string();
    let operation = header(&text, "x-amz-target")
        .unwrap_or_else(|| text.split_whitespace().nth(1).unwrap_or("").split('?').next().unwrap_or("").to_string());
    state.seen.lock().expect("seen").push((operation.clone(), String::from_utf8_lossy(&body).to_string()));
    let mut upstream = TcpStream::connect(holdfast_tests::emulator_addr()).await?;
    upstream.write_all(&with_connection_close(&text)).await?;
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    if *state.mode.lock().expect("mode") == ProxyMode::DropAnswer {
        return Ok(()); // the emulator did the work; the client hears nothing back
    }
    let hook = state.hook.lock().expect("hook").clone();
    if let Some(h) = hook {
        h(operation).await;
    }
    let split = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    inbound.write_all(&with_connection_close(&String::from_utf8_lossy(&response[..split]))).await?;
    inbound.write_all(&response[split..]).await?;
    inbound.shutdown().await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A message head with any `Connection` header replaced by `close`.
fn with_connection_close(head: &str) -> Vec<u8> {
    let mut lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let mut out = lines.join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    out.into_bytes()
}

/// One HTTP/1.1 request: head (through the blank line) and its `Content-Length` body.
async fn read_message(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let len = header(&String::from_utf8_lossy(&buf[..head_end]), "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.truncate(head_end);
    Ok((buf, body))
}

// ---------------------------------------------------------------------------------------------
// Email harness

const VISIBILITY: u32 = 2;

/// Counts what it is asked to send (by dedupe key) and accepts everything.
struct Counting {
    sent: Mutex<Vec<String>>,
}

impl Counting {
    fn new() -> Arc<Counting> {
        Arc::new(Counting { sent: Mutex::default() })
    }
    fn sent(&self) -> Vec<String> {
        let mut v = self.sent.lock().expect("sent").clone();
        v.sort();
        v
    }
}

impl EmailProvider for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        self.sent.lock().expect("sent").push(email.idempotency_key.clone());
        Box::pin(async { Ok(Receipt { provider: "counting", message_id: None }) })
    }
}

/// The shared email fixture; this file's helpers hang off it.
struct E(EmailFixture);

impl std::ops::Deref for E {
    type Target = EmailFixture;
    fn deref(&self) -> &EmailFixture {
        &self.0
    }
}

impl E {
    async fn new() -> E {
        E(EmailFixture::new("Chez Faute", VISIBILITY).await)
    }

    async fn booking(&self, email: &str) -> BookingId {
        let id = BookingId::new_random();
        self.db
            .pool
            .get()
            .await
            .expect("conn")
            .run(
                "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email)
                 VALUES ($1, $2, 'confirmed', 2, '2030-01-07 19:00Z', '2030-01-07 21:00Z', 'Jane Doe', $3)",
                &[&id.as_uuid(), &self.restaurant.as_uuid(), &email],
            )
            .await
            .expect("booking");
        id
    }

    /// A unique guest address for this test (the emulator keeps every test's mail).
    fn address(&self, n: usize) -> String {
        format!("guest{n}+{}@example.com", self.aws.prefix)
    }

    fn settings(&self) -> Settings {
        Settings {
            queue_url: self.pair.queue_url.clone(),
            from_address: "bookings@holdfast.test".into(),
            ops_address: None,
            lease: chrono::Duration::seconds(3),
            backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
            max_hop_delay_seconds: 1,
        }
    }

    fn sender(&self, provider: Arc<dyn EmailProvider>, sqs: aws_sdk_sqs::Client) -> EmailSender {
        EmailSender::new(SendStore::new(self.db.pool.clone()), provider, sqs, Arc::new(SystemClock), self.settings())
    }

    fn sqs_at(&self, endpoint: &str) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&self.aws.sdk).endpoint_url(endpoint).build())
    }

    /// SES at `endpoint` (the emulator behind a proxy, or a stand-in), with a 1 s attempt
    /// timeout so a hung provider costs the test a second, not five.
    fn ses_at(&self, endpoint: &str) -> Arc<SesProvider> {
        use aws_sdk_sesv2::config::timeout::TimeoutConfig;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(1))
            .operation_attempt_timeout(Duration::from_secs(1))
            .operation_timeout(Duration::from_secs(3))
            .build();
        let conf =
            aws_sdk_sesv2::config::Builder::from(&self.aws.sdk).endpoint_url(endpoint).timeout_config(timeouts).build();
        Arc::new(SesProvider::new(aws_sdk_sesv2::Client::from_conf(conf)))
    }

    async fn send_job(&self, job: &EmailJob) {
        self.sqs
            .send_message()
            .queue_url(&self.pair.queue_url)
            .message_body(serde_json::to_string(job).expect("json"))
            .send()
            .await
            .expect("send to the queue");
    }

    /// Accumulate at least `n` messages, each held 5 s (long enough to form one batch, short
    /// enough that one not acknowledged comes back soon).
    async fn receive_n(&self, n: usize, timeout: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = vec![];
        while got.len() < n {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} messages, got {}", got.len());
            let m = q::receive(&self.sqs, &self.pair.queue_url, 0, Some(5)).await.expect("receive");
            if m.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got.extend(m);
        }
        got
    }

    /// Deliver to `sender` whatever the queue hands out until it is empty (redeliveries
    /// included), as the event source mapping would; returns every delivery's failures.
    async fn drain(&self, sender: &EmailSender, timeout: Duration) -> Vec<q::Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut deliveries = vec![];
        loop {
            let (visible, inflight, delayed) = q::queue_depth(&self.sqs, &self.pair.queue_url).await.expect("depth");
            if visible + inflight + delayed == 0 {
                return deliveries;
            }
            assert!(tokio::time::Instant::now() < deadline, "the queue did not drain: {deliveries:?}");
            let msgs = q::receive(&self.sqs, &self.pair.queue_url, 1, None).await.expect("receive");
            if !msgs.is_empty() {
                deliveries.push(self.deliver(sender, &msgs).await);
            }
        }
    }

    async fn deliver(&self, sender: &EmailSender, msgs: &[aws_sdk_sqs::types::Message]) -> q::Delivery {
        q::deliver(&self.sqs, sender, &self.pair.queue_url, &self.pair.queue_arn, &self.region, msgs)
            .await
            .expect("deliver")
    }

    async fn ledger(&self, key: &str) -> Option<(String, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_opt("SELECT state, last_error FROM email_sends WHERE dedupe_key = $1", &[&key])
            .await
            .expect("ledger")
            .map(|r| (r.get(0), r.get(1)))
    }

    /// The job's attempts, oldest first: id, provider, outcome, code.
    async fn attempts(&self, key: &str) -> Vec<(Uuid, String, Option<String>, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT attempt_id, provider, outcome, error_code FROM email_send_attempts
             WHERE dedupe_key = $1 ORDER BY started_at, finished_at NULLS LAST",
            &[&key],
        )
        .await
        .expect("attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }

    async fn events(&self, event_type: &str) -> Vec<Value> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch("SELECT context FROM observability_events WHERE event_type = $1 ORDER BY id", &[&event_type])
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Messages the emulator's SES accepted for `address`.
    async fn mail_to(&self, address: &str) -> usize {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| holdfast_tests::DEFAULT_AWS_ENDPOINT.into());
        let data: Value = serde_json::from_str(&http_get(&endpoint, "/moto-api/data.json").await).expect("moto data");
        fn walk(v: &Value, address: &str, n: &mut usize) {
            match v {
                Value::Object(m) => {
                    if m.get("destinations").is_some_and(|d| d.to_string().contains(address)) {
                        *n += 1;
                    }
                    m.values().for_each(|x| walk(x, address, n));
                }
                Value::Array(xs) => xs.iter().for_each(|x| walk(x, address, n)),
                _ => {}
            }
        }
        let mut n = 0;
        walk(&data["ses"], address, &mut n);
        n
    }
}

/// The attempt id an SES request carried as its `holdfast_attempt` tag.
fn attempt_tag(body: &str) -> Option<Uuid> {
    let v: Value = serde_json::from_str(body).ok()?;
    v["EmailTags"]
        .as_array()?
        .iter()
        .find(|t| t["Name"] == email_sender::provider::ATTEMPT_TAG)
        .and_then(|t| t["Value"].as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

// ---------------------------------------------------------------------------------------------
// Outbox relay

#[tokio::test]
async fn a_relay_killed_between_publish_and_commit_publishes_again_and_the_ledger_sends_once() {
    let e = E::new().await;
    let admin = admin_pool();
    let b = e.booking(&e.address(1)).await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    let c = e.db.pool.get().await.expect("conn");
    assert!(holdfast_adapters::outbox::enqueue(&c, &job, Utc::now()).await.expect("enqueue"));

    // SQS accepts the batch; before the relay hears so, its session (idle inside the page's
    // transaction, holding the row lock) is killed.
    let proxy = Proxy::start().await;
    let killed = Arc::new(AtomicUsize::new(0));
    proxy.set_hook(Some({
        let (admin, db, killed) = (admin.clone(), e.db.name.clone(), killed.clone());
        Arc::new(move |op: String| {
            let (admin, db, killed) = (admin.clone(), db.clone(), killed.clone());
            Box::pin(async move {
                if op == "AmazonSQS.SendMessageBatch" {
                    let n = terminate(&admin, &db, "state = 'idle in transaction'").await;
                    killed.fetch_add(n as usize, Ordering::SeqCst);
                }
            })
        })
    }));
    let relay = OutboxRelay::new(
        e.db.pool.clone(),
        e.sqs_at(&proxy.endpoint()),
        e.pair.queue_url.clone(),
        Arc::new(SystemClock),
    );
    let err = relay.tick().await.expect_err("the relay's commit is lost with its connection");
    assert!(matches!(&err, EmailError::Db(f) if f.is_retriable()), "a retriable failure (next tick): {err}");
    assert_eq!(killed.load(Ordering::SeqCst), 1);
    let row = c
        .fetch_one(
            "SELECT published_at IS NULL, attempts, dead_at IS NULL FROM email_outbox WHERE dedupe_key = $1",
            &[&job.dedupe_key()],
        )
        .await
        .expect("outbox row");
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(2), "still waiting, not dead");
    assert_eq!(row.get::<_, i32>(1), 0, "a lost commit is not SQS refusing the row");

    // The next tick publishes it again: two copies on the queue.
    proxy.set_hook(None);
    assert_eq!(relay.tick().await.expect("tick").published, 1);
    assert_eq!(relay.tick().await.expect("tick").published, 0, "published, and marked so");
    let msgs = e.receive_n(2, Duration::from_secs(15)).await;
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert_eq!(serde_json::from_str::<EmailJob>(m.body.as_deref().expect("body")).expect("job"), job);
    }
    // The ledger absorbs the copy: one send, one explained skip.
    let provider = Counting::new();
    let d = e.deliver(&e.sender(provider.clone(), e.sqs.clone()), &msgs).await;
    assert!(d.failed.is_empty(), "{d:?}");
    assert_eq!(provider.sent(), vec![job.dedupe_key()]);
    let skipped = e.events("email.skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["error_code"], "duplicate_in_batch");
    assert_eq!(e.ledger(&job.dedupe_key()).await.map(|l| l.0), Some("sent".into()));
    assert_eq!(q::queue_depth(&e.sqs, &e.pair.queue_url).await.expect("depth"), (0, 0, 0));
}

#[tokio::test]
async fn the_emulator_cut_mid_relay_leaves_the_rest_waiting_then_publishes_each_row_once() {
    let e = E::new().await;
    let c = e.db.pool.get().await.expect("conn");
    let mut jobs = vec![];
    for i in 0..25 {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(i)).await);
        assert!(holdfast_adapters::outbox::enqueue(&c, &job, Utc::now()).await.expect("enqueue"));
        jobs.push(job);
    }
    // The first batch of ten goes through; then the emulator is unreachable (refused).
    let proxy = Proxy::start().await;
    proxy.set_hook(Some({
        let p = Arc::downgrade(&proxy);
        Arc::new(move |op: String| {
            let p = p.clone();
            Box::pin(async move {
                if op == "AmazonSQS.SendMessageBatch" {
                    if let Some(p) = p.upgrade() {
                        p.cut().await;
                    }
                }
            })
        })
    }));
    let relay = OutboxRelay::new(
        e.db.pool.clone(),
        e.sqs_at(&proxy.endpoint()),
        e.pair.queue_url.clone(),
        Arc::new(SystemClock),
    );
    let r = relay.tick().await.expect("a tick with SQS gone midway still commits what it did");
    assert_eq!((r.published, r.refused, r.dead, r.sqs_unavailable), (10, 0, 0, true), "{r:?}");
    let waiting = count(
        &e.db.pool,
        "SELECT count(*) FROM email_outbox WHERE published_at IS NULL AND attempts = 0 AND dead_at IS NULL
         AND last_error = 'sqs_unavailable'",
        &[],
    )
    .await;
    assert_eq!(waiting, 15, "the rest wait, not counted against them");

    proxy.set_hook(None);
    proxy.restore().await;
    let r = relay.tick().await.expect("tick");
    assert_eq!((r.published, r.sqs_unavailable), (15, false), "{r:?}");
    assert_eq!(count(&e.db.pool, "SELECT count(*) FROM email_outbox WHERE published_at IS NULL", &[]).await, 0);

    // Exactly the 25 jobs on the queue, each once; each sent once.
    let msgs = e.receive_n(25, Duration::from_secs(20)).await;
    let keys: Vec<String> = msgs
        .iter()
        .map(|m| serde_json::from_str::<EmailJob>(m.body.as_deref().expect("body")).expect("job").dedupe_key())
        .collect();
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!((msgs.len(), distinct.len()), (25, 25), "no row lost, none published twice");
    let provider = Counting::new();
    let sender = e.sender(provider.clone(), e.sqs.clone());
    for chunk in msgs.chunks(10) {
        assert!(e.deliver(&sender, chunk).await.failed.is_empty());
    }
    let mut want: Vec<String> = jobs.iter().map(|j| j.dedupe_key()).collect();
    want.sort();
    assert_eq!(provider.sent(), want);
    assert_eq!(e.events("email.retried").await.len(), 1, "one relay event for the outage, not one per row");
}

// ---------------------------------------------------------------------------------------------
// The email sender: emulator unreachable, provider faults, killed mid-send

#[tokio::test]
async fn the_emulator_unreachable_during_a_send_is_retried_and_each_email_goes_out_once() {
    let e = E::new().await;
    email_sender::ensure_ses_identity(&e.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let mut jobs = vec![];
    for i in 0..3 {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(i)).await);
        e.send_job(&job).await;
        jobs.push(job);
    }
    // SES and SQS (its visibility changes) both through the proxy, which is cut.
    let proxy = Proxy::start().await;
    let sender = e.sender(e.ses_at(&proxy.endpoint()), e.sqs_at(&proxy.endpoint()));
    proxy.cut().await;
    let msgs = e.receive_n(3, Duration::from_secs(15)).await;
    let d = e.deliver(&sender, &msgs).await;
    assert_eq!(d.failed.len(), 3, "refused before anything was sent: every record is retried ({d:?})");
    for job in &jobs {
        let key = job.dedupe_key();
        assert_eq!(e.ledger(&key).await, Some(("in_progress".into(), Some("ses_unreachable".into()))));
        let attempts = e.attempts(&key).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!((attempts[0].2.as_deref(), attempts[0].3.as_deref()), (Some("not_sent"), Some("ses_unreachable")));
    }
    let retried = e.events("email.retried").await;
    assert_eq!(retried.len(), 3);
    assert!(retried.iter().all(|r| r["error_code"] == "ses_unreachable"), "{retried:?}");

    proxy.restore().await;
    let deliveries = e.drain(&sender, Duration::from_secs(30)).await;
    assert!(deliveries.iter().all(|d| d.failed.is_empty()), "{deliveries:?}");
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(e.ledger(&job.dedupe_key()).await.map(|l| l.0), Some("sent".into()));
        assert_eq!(e.mail_to(&e.address(i)).await, 1, "guest {i}: exactly one email");
    }
    assert!(e.events("email.suppressed").await.is_empty());
    assert_eq!(proxy.seen(SES_SEND).len(), 3, "one SES call per email once it was back");
}

#[tokio::test]
async fn an_ses_answer_lost_after_the_request_is_suppressed_not_resent() {
    let e = E::new().await;
    email_sender::ensure_ses_identity(&e.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await);
    e.send_job(&job).await;
    let proxy = Proxy::start().await;
    proxy.set_mode(ProxyMode::DropAnswer);
    let sender = e.sender(e.ses_at(&proxy.endpoint()), e.sqs.clone());
    let msgs = e.receive_n(1, Duration::from_secs(15)).await;
    let d = e.deliver(&sender, &msgs).await;
    assert!(d.failed.is_empty(), "decided, not retried: {d:?}");
    // SES did accept it; the sender cannot know, so it does not send it again.
    assert_eq!(e.mail_to(&e.address(1)).await, 1);
    let key = job.dedupe_key();
    assert_eq!(e.ledger(&key).await, Some(("suppressed_ambiguous".into(), Some("ses_connection_lost".into()))));
    let attempts = e.attempts(&key).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].2.as_deref(), attempts[0].3.as_deref()), (Some("ambiguous"), Some("ses_connection_lost")));
    let sent = proxy.seen(SES_SEND);
    assert_eq!(sent.len(), 1);
    assert_eq!(attempt_tag(&sent[0]), Some(attempts[0].0), "the SES request carried the recorded attempt id");
    let suppressed = e.events("email.suppressed").await;
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0]["error_code"], "ses_connection_lost");

    // An at-least-once duplicate of the job changes nothing.
    proxy.set_mode(ProxyMode::Pass);
    e.send_job(&job).await;
    let d = e.deliver(&sender, &e.receive_n(1, Duration::from_secs(15)).await).await;
    assert!(d.failed.is_empty());
    assert_eq!(proxy.seen(SES_SEND).len(), 1, "no second SES call");
    assert_eq!(e.mail_to(&e.address(1)).await, 1);
    assert_eq!(e.events("email.skipped").await[0]["error_code"], "already_suppressed");
}

/// What a stand-in provider endpoint answers, request by request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status; for SES errors, this `x-amzn-ErrorType`.
    Status(u16, &'static str),
    /// Read the request and never answer (the client times out).
    Hang,
}

/// A loopback HTTP server standing in for SES's or Resend's endpoint. Requests are answered in
/// script order; past the script, 200 with a message id. Keeps every request's text.
struct StandIn {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    async fn start(script: Vec<Answer>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (seen, next, script) = (seen.clone(), next.clone(), script.clone());
                tokio::spawn(async move {
                    let Ok((head, body)) = read_message(&mut s).await else { return };
                    let text = format!("{}{}", String::from_utf8_lossy(&head), String::from_utf8_lossy(&body));
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    seen.lock().expect("requests").push(text.clone());
                    let resend = text.starts_with("POST /emails ");
                    let (status, error_type) = match script.get(n).copied().unwrap_or(Answer::Status(200, "")) {
                        Answer::Hang => {
                            // Hold the connection open past any client timeout.
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            return;
                        }
                        Answer::Status(s, t) => (s, t),
                    };
                    let body = match (status, resend) {
                        (200, false) => format!(r#"{{"MessageId":"stand-in-{n}"}}"#),
                        (200, true) => format!(r#"{{"id":"re_stand_in_{n}"}}"#),
                        _ => r#"{"message":"injected fault"}"#.to_string(),
                    };
                    let typed = if error_type.is_empty() {
                        String::new()
                    } else {
                        format!("x-amzn-ErrorType: {error_type}\r\n")
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{typed}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        StandIn { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

#[tokio::test]
async fn ses_timing_out_or_answering_5xx_is_suppressed_and_alarmed_not_resent() {
    let e = E::new().await;
    let stand_in = StandIn::start(vec![Answer::Hang, Answer::Status(500, "InternalFailure")]).await;
    let sender = e.sender(e.ses_at(&stand_in.url), e.sqs.clone());
    let mut cases = vec![];
    for (i, want) in ["ses_timeout", "ses_5xx"].into_iter().enumerate() {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(i)).await);
        e.send_job(&job).await;
        let d = e.deliver(&sender, &e.receive_n(1, Duration::from_secs(15)).await).await;
        assert!(d.failed.is_empty(), "{want}: decided, not retried ({d:?})");
        let key = job.dedupe_key();
        assert_eq!(e.ledger(&key).await, Some(("suppressed_ambiguous".into(), Some(want.into()))));
        let attempts = e.attempts(&key).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!((attempts[0].1.as_str(), attempts[0].2.as_deref()), ("ses", Some("ambiguous")));
        assert_eq!(stand_in.requests().len(), i + 1, "{want}: one request, no SDK retry");
        let body = stand_in.requests()[i].split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        assert_eq!(attempt_tag(&body), Some(attempts[0].0), "tagged with the recorded attempt");
        cases.push(job);
    }
    let suppressed = e.events("email.suppressed").await;
    let codes: Vec<&str> = suppressed.iter().filter_map(|c| c["error_code"].as_str()).collect();
    assert_eq!(codes, vec!["ses_timeout", "ses_5xx"]);

    // SQS delivers both again (at least once): nothing more reaches the provider.
    for job in &cases {
        e.send_job(job).await;
    }
    let d = e.deliver(&sender, &e.receive_n(2, Duration::from_secs(15)).await).await;
    assert!(d.failed.is_empty());
    assert_eq!(stand_in.requests().len(), 2);
    let skipped = e.events("email.skipped").await;
    assert!(skipped.len() == 2 && skipped.iter().all(|s| s["error_code"] == "already_suppressed"), "{skipped:?}");

    // What the alarm watches: the aggregator turns the events into EmailsSuppressed.
    let c = e.db.pool.get().await.expect("conn");
    let rows: Vec<holdfast_shared::metrics::EventRow> = c
        .fetch("SELECT id, created_at, source, event_type, context FROM observability_events", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| holdfast_shared::metrics::EventRow {
            id: r.get(0),
            created_at: r.get(1),
            source: r.get(2),
            event_type: r.get(3),
            context: r.get(4),
        })
        .collect();
    let from = rows.iter().map(|r| r.created_at).min().expect("rows");
    let data = holdfast_shared::metrics::aggregate_window("dev", from, chrono::Duration::hours(1), &rows);
    let total: f64 = data
        .iter()
        .filter(|d| d.name == holdfast_shared::metrics::names::EMAILS_SUPPRESSED)
        .map(|d| match d.value {
            holdfast_shared::metrics::DatumValue::Sum(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 2.0);
}

#[tokio::test]
async fn ses_throttling_is_certainly_unsent_so_it_is_retried_and_sent_once() {
    let e = E::new().await;
    let stand_in = StandIn::start(vec![Answer::Status(429, "TooManyRequestsException")]).await;
    let sender = e.sender(e.ses_at(&stand_in.url), e.sqs.clone());
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await);
    e.send_job(&job).await;
    let d = e.deliver(&sender, &e.receive_n(1, Duration::from_secs(15)).await).await;
    assert_eq!(d.failed.len(), 1, "a batch item failure: retried after its backoff");
    let key = job.dedupe_key();
    assert_eq!(e.ledger(&key).await, Some(("in_progress".into(), Some("ses_throttled".into()))));
    e.drain(&sender, Duration::from_secs(30)).await;
    assert_eq!(e.ledger(&key).await.map(|l| l.0), Some("sent".into()));
    let outcomes: Vec<Option<String>> = e.attempts(&key).await.into_iter().map(|a| a.2).collect();
    assert_eq!(outcomes, vec![Some("not_sent".into()), Some("accepted".into())]);
    assert_eq!(stand_in.requests().len(), 2);
    assert!(e.events("email.suppressed").await.is_empty());
}

#[tokio::test]
async fn resend_5xx_and_timeouts_are_retried_with_the_same_idempotency_key_and_request() {
    let e = E::new().await;
    let stand_in = StandIn::start(vec![Answer::Status(500, ""), Answer::Hang]).await;
    let resend = Arc::new(ResendProvider::new(&stand_in.url, ApiKey::new("re_test_key")).expect("client"));
    let sender = e.sender(resend, e.sqs.clone());
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await);
    e.send_job(&job).await;
    let deliveries = e.drain(&sender, Duration::from_secs(60)).await;
    let failed: usize = deliveries.iter().map(|d| d.failed.len()).sum();
    assert_eq!(failed, 2, "the 500 and the timeout were batch item failures: {deliveries:?}");
    let key = job.dedupe_key();
    assert_eq!(e.ledger(&key).await.map(|l| l.0), Some("sent".into()));
    let attempts = e.attempts(&key).await;
    let outcomes: Vec<(&str, Option<&str>)> = attempts.iter().map(|a| (a.1.as_str(), a.3.as_deref())).collect();
    assert_eq!(
        outcomes,
        vec![("resend", Some("resend_http_500")), ("resend", Some("resend_timeout")), ("resend", None)]
    );
    // Resend drops a repeat of the key; that needs the very same request each time.
    let reqs = stand_in.requests();
    assert_eq!(reqs.len(), 3);
    let keys: HashSet<Option<String>> = reqs.iter().map(|r| header(r, "idempotency-key")).collect();
    assert_eq!(keys, HashSet::from([Some(key.clone())]));
    let bodies: HashSet<&str> = reqs.iter().map(|r| r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).collect();
    assert_eq!(bodies.len(), 1, "identical bodies");
    assert!(e.events("email.suppressed").await.is_empty());
}

/// SES that, once SES accepted the email, reports it to the test and never returns: the
/// invocation dies there (a crash, a timeout) before the ledger hears of it.
struct DiesAfterAccept {
    ses: Arc<SesProvider>,
    accepted: Arc<Notify>,
}

impl EmailProvider for DiesAfterAccept {
    fn name(&self) -> &'static str {
        "ses"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let r = self.ses.send(email).await;
            if r.is_ok() {
                self.accepted.notify_one();
                std::future::pending::<()>().await;
            }
            r
        })
    }
}

#[tokio::test]
async fn a_sender_killed_between_ses_accepting_and_the_ledger_commit_does_not_send_again() {
    let e = E::new().await;
    email_sender::ensure_ses_identity(&e.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await);
    e.send_job(&job).await;
    let proxy = Proxy::start().await;
    let accepted = Arc::new(Notify::new());
    let dying = Arc::new(e.sender(
        Arc::new(DiesAfterAccept { ses: e.ses_at(&proxy.endpoint()), accepted: accepted.clone() }),
        e.sqs.clone(),
    ));
    let msgs = e.receive_n(1, Duration::from_secs(15)).await;
    let event = q::sqs_event(&msgs, &e.pair.queue_arn, &e.region);
    let invocation = tokio::spawn({
        let dying = dying.clone();
        async move { dying.handle(event).await }
    });
    tokio::time::timeout(Duration::from_secs(20), accepted.notified()).await.expect("SES accepted the email");
    invocation.abort(); // killed: nothing recorded, the message not deleted
    assert!(invocation.await.is_err_and(|j| j.is_cancelled()));
    let key = job.dedupe_key();
    assert_eq!(e.ledger(&key).await.map(|l| l.0), Some("in_progress".into()));
    let first = e.attempts(&key).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].2, None, "the attempt's outcome is unknown");
    assert_eq!(e.mail_to(&e.address(1)).await, 1);

    // SQS redelivers it (after the visibility timeout; busy until the dead lease ends).
    let sender = e.sender(e.ses_at(&proxy.endpoint()), e.sqs.clone());
    let deliveries = e.drain(&sender, Duration::from_secs(30)).await;
    assert!(deliveries.last().is_some_and(|d| d.failed.is_empty()), "{deliveries:?}");
    assert_eq!(e.mail_to(&e.address(1)).await, 1, "not sent twice");
    assert_eq!(proxy.seen(SES_SEND).len(), 1, "no second SES call");
    assert_eq!(attempt_tag(&proxy.seen(SES_SEND)[0]), Some(first[0].0), "the tag names the unresolved attempt");
    assert_eq!(e.ledger(&key).await, Some(("suppressed_ambiguous".into(), Some("earlier_attempt_unresolved".into()))));
    let suppressed = e.events("email.suppressed").await;
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0]["error_code"], "earlier_attempt_unresolved");
    let attempts = e.attempts(&key).await;
    assert_eq!(attempts[0].2, None, "the first stays unknown: that is what an operator checks");
    assert_eq!(attempts.last().map(|a| a.2.clone()), Some(Some("not_sent".into())));
}

/// SES that, once SES accepted the email, waits for the test before returning.
struct PausesAfterAccept {
    ses: Arc<SesProvider>,
    accepted: Arc<Notify>,
    resume: Arc<Notify>,
}

impl EmailProvider for PausesAfterAccept {
    fn name(&self) -> &'static str {
        "ses"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let r = self.ses.send(email).await;
            self.accepted.notify_one();
            self.resume.notified().await;
            r
        })
    }
}

#[tokio::test]
async fn a_sender_whose_ledger_connection_dies_after_ses_accepted_does_not_send_again() {
    let e = E::new().await;
    let admin = admin_pool();
    email_sender::ensure_ses_identity(&e.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await);
    let key = job.dedupe_key();
    e.send_job(&job).await;
    let proxy = Proxy::start().await;
    let (accepted, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let provider =
        PausesAfterAccept { ses: e.ses_at(&proxy.endpoint()), accepted: accepted.clone(), resume: resume.clone() };
    let sender = Arc::new(e.sender(Arc::new(provider), e.sqs.clone()));
    let msgs = e.receive_n(1, Duration::from_secs(15)).await;
    let invocation = tokio::spawn({
        let (sender, sqs, pair, region, msgs) =
            (sender.clone(), e.sqs.clone(), e.pair.clone(), e.region.clone(), msgs.clone());
        async move { q::deliver(&sqs, &sender, &pair.queue_url, &pair.queue_arn, &region, &msgs).await }
    });
    tokio::time::timeout(Duration::from_secs(20), accepted.notified()).await.expect("SES accepted the email");
    // The test locks the ledger row: the sender's commit of "sent" waits on it, and there its
    // connection is killed.
    let mut lock_conn = e.db.pool.get().await.expect("conn");
    let lock = lock_conn.transaction().await.expect("tx");
    lock.fetch("SELECT 1 FROM email_sends WHERE dedupe_key = $1 FOR UPDATE", &[&key]).await.expect("lock");
    resume.notify_one();
    wait_for("the ledger commit to wait on the test's lock", Duration::from_secs(15), || async {
        (sessions(&admin, &e.db.name, WAITING_ON_A_LOCK).await == 1).then_some(())
    })
    .await;
    assert_eq!(terminate(&admin, &e.db.name, WAITING_ON_A_LOCK).await, 1);
    let d = invocation.await.expect("task").expect("deliver");
    assert!(d.failed.is_empty(), "a sent email is not retried even when its record is lost: {d:?}");
    lock.rollback().await.expect("rollback");
    drop(lock_conn);
    assert_eq!(e.ledger(&key).await.map(|l| l.0), Some("in_progress".into()), "the record was lost");
    assert_eq!(e.attempts(&key).await[0].2, None);

    // An at-least-once duplicate after the lease: suppressed, not sent.
    e.send_job(&job).await;
    let sender = e.sender(e.ses_at(&proxy.endpoint()), e.sqs.clone());
    e.drain(&sender, Duration::from_secs(30)).await;
    assert_eq!(e.mail_to(&e.address(1)).await, 1, "not sent twice");
    assert_eq!(proxy.seen(SES_SEND).len(), 1);
    assert_eq!(e.ledger(&key).await.map(|l| l.0), Some("suppressed_ambiguous".into()));
    assert_eq!(e.events("email.suppressed").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The residue, measured

tokio::task_local! {
    /// The running invocation's "kill me" switch (the bench drops the invocation when pulled).
    static KILL: Arc<Notify>;
}

/// How the stand-in provider behaves across a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// SES: no idempotency key, so the handler suppresses after an ambiguous outcome.
    Ses,
    /// What the sender did before: claims to deduplicate (so the handler retries ambiguous
    /// outcomes) but does not — a blind retry, for comparison.
    BlindRetry,
    /// Resend: drops a repeat of the same key, so retrying is safe.
    Resend,
}

/// A provider with injected faults, per call: 2 % refused (certainly unsent), 2.5 % ambiguous
/// and not delivered, 2.5 % ambiguous but delivered, 0.5 % killed right after delivering (the
/// whole invocation, a batch of up to ten, dies before its ledger commit). Deliveries are
/// counted per job.
struct Faulty {
    kind: Kind,
    rng: Mutex<u64>,
    delivered: Mutex<HashMap<String, u32>>,
    calls: AtomicUsize,
}

impl Faulty {
    fn new(kind: Kind, seed: u64) -> Faulty {
        Faulty { kind, rng: Mutex::new(seed), delivered: Mutex::default(), calls: AtomicUsize::new(0) }
    }

    /// splitmix64 → [0, 1): reproducible runs without a dependency.
    fn roll(&self) -> f64 {
        let mut s = self.rng.lock().expect("rng");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn deliver(&self, key: &str) {
        let mut d = self.delivered.lock().expect("delivered");
        let n = d.entry(key.to_string()).or_default();
        if self.kind == Kind::Resend && *n > 0 {
            return; // the provider drops the repeat
        }
        *n += 1;
    }
}

impl EmailProvider for Faulty {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Ses => "ses",
            Kind::BlindRetry => "blind",
            Kind::Resend => "resend",
        }
    }
    fn dedupe_window(&self) -> Option<chrono::Duration> {
        (self.kind != Kind::Ses).then(|| chrono::Duration::hours(24))
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let roll = self.roll();
        Box::pin(async move {
            let key = email.idempotency_key.as_str();
            match roll {
                r if r < 0.02 => Err(SendError::transient("ses_unreachable")),
                r if r < 0.045 => Err(SendError::ambiguous("ses_timeout")),
                r if r < 0.07 => {
                    self.deliver(key);
                    Err(SendError::ambiguous("ses_5xx"))
                }
                r if r < 0.075 => {
                    self.deliver(key);
                    if let Ok(kill) = KILL.try_with(|k| k.clone()) {
                        kill.notify_one();
                    }
                    std::future::pending().await
                }
                _ => {
                    self.deliver(key);
                    Ok(Receipt { provider: self.name(), message_id: None })
                }
            }
        })
    }
}

#[derive(Debug, Default)]
struct Residue {
    jobs: usize,
    provider_calls: usize,
    sent_once: usize,
    /// Jobs delivered more than once, and the extra deliveries.
    duplicates: usize,
    extra_deliveries: u32,
    /// Suppressed jobs the provider had in fact delivered (correct, but an operator checks)…
    suppressed_delivered: usize,
    /// …and ones it had not (the guest has no email until an operator resends).
    suppressed_undelivered: usize,
    dead_lettered: usize,
    killed_invocations: usize,
    /// Neither delivered, nor suppressed, nor dead-lettered: must be 0.
    lost: usize,
}

/// `n` jobs through the real handler and ledger, SQS simulated in memory (batches of 10, a
/// failed or killed record comes back with its receive count + 1, the DLQ after 5 receives),
/// time moved past every lease between rounds.
async fn residue(db: &TestDb, sqs: &aws_sdk_sqs::Client, restaurant: RestaurantId, kind: Kind, n: usize) -> Residue {
    let c = db.pool.get().await.expect("conn");
    let ids: Vec<Uuid> = c
        .fetch(
            "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email)
             SELECT gen_random_uuid(), $1, 'confirmed', 2, '2030-01-07 19:00Z', '2030-01-07 21:00Z', 'Guest',
                    'guest' || g || '@example.com'
             FROM generate_series(1, $2::int) g RETURNING id",
            &[&restaurant.as_uuid(), &(n as i32)],
        )
        .await
        .expect("bookings")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let jobs: Vec<EmailJob> =
        ids.iter().map(|b| EmailJob::for_booking(EmailType::BookingConfirmed, BookingId(*b))).collect();
    let provider = Arc::new(Faulty::new(kind, 0x5EED_0014));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let lease = chrono::Duration::seconds(120);
    let settings = Settings {
        queue_url: "http://unused.invalid/queue".into(),
        from_address: "bookings@holdfast.test".into(),
        ops_address: None,
        lease,
        backoff: Backoff::PRODUCTION,
        max_hop_delay_seconds: 900,
    };
    let sender =
        EmailSender::new(SendStore::new(db.pool.clone()), provider.clone(), sqs.clone(), clock.clone(), settings);
    let mut queue: VecDeque<(String, String, u32)> =
        jobs.iter().enumerate().map(|(i, j)| (format!("m{i}"), serde_json::to_string(j).expect("json"), 1)).collect();
    let mut r = Residue { jobs: n, ..Residue::default() };
    let mut rounds = 0;
    while !queue.is_empty() {
        rounds += 1;
        assert!(rounds <= 20, "still {} messages after 20 rounds", queue.len());
        let mut next = VecDeque::new();
        while !queue.is_empty() {
            let batch: Vec<(String, String, u32)> = queue.drain(..queue.len().min(10)).collect();
            let mut ev = aws_lambda_events::event::sqs::SqsEvent::default();
            ev.records = batch
                .iter()
                .map(|(id, body, receives)| {
                    let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
                    m.message_id = Some(id.clone());
                    m.body = Some(body.clone());
                    m.attributes.insert("ApproximateReceiveCount".into(), receives.to_string());
                    m
                })
                .collect();
            let kill = Arc::new(Notify::new());
            let failed: HashSet<String> = tokio::select! {
                biased;
                resp = KILL.scope(kill.clone(), sender.handle(ev)) => {
                    resp.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
                }
                _ = kill.notified() => {
                    r.killed_invocations += 1;
                    batch.iter().map(|(id, _, _)| id.clone()).collect()
                }
            };
            for (id, body, receives) in batch {
                if !failed.contains(&id) {
                    continue;
                }
                if receives >= q::MAX_RECEIVE_COUNT {
                    r.dead_lettered += 1;
                } else {
                    next.push_back((id, body, receives + 1));
                }
            }
        }
        queue = next;
        // Leases of killed invocations end, backoffs pass.
        clock.advance(lease + chrono::Duration::seconds(1));
    }
    let keys: Vec<String> = jobs.iter().map(|j| j.dedupe_key()).collect();
    let states: HashMap<String, String> = c
        .fetch("SELECT dedupe_key, state FROM email_sends WHERE dedupe_key = ANY($1)", &[&keys])
        .await
        .expect("ledger")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let delivered = provider.delivered.lock().expect("delivered").clone();
    r.provider_calls = provider.calls.load(Ordering::Relaxed);
    let mut undelivered: usize = 0;
    for key in &keys {
        let d = delivered.get(key).copied().unwrap_or(0);
        let suppressed = states.get(key).is_some_and(|s| s == "suppressed_ambiguous");
        match (d, suppressed) {
            (0, true) => r.suppressed_undelivered += 1,
            (_, true) => r.suppressed_delivered += 1,
            (0, false) => undelivered += 1,
            (1, false) => r.sent_once += 1,
            (_, false) => {}
        }
        if d > 1 {
            r.duplicates += 1;
            r.extra_deliveries += d - 1;
        }
    }
    r.lost = undelivered.saturating_sub(r.dead_lettered);
    r
}

fn per_10k(x: usize, n: usize) -> f64 {
    x as f64 * 10_000.0 / n as f64
}

#[tokio::test]
async fn the_at_least_once_residue_under_injected_faults() {
    let n: usize = std::env::var("HOLDFAST_FAULT_SENDS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    // Never called: no record carries a receipt handle, no job is deferred.
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let restaurant = RestaurantId::new_random();
    db.pool
        .get()
        .await
        .expect("conn")
        .run("INSERT INTO restaurants (id, name) VALUES ($1, 'Bench Bistro')", &[&restaurant.as_uuid()])
        .await
        .expect("restaurant");
    let mut results = vec![];
    for kind in [Kind::Ses, Kind::BlindRetry, Kind::Resend] {
        let t = Instant::now();
        let r = residue(&db, &sqs, restaurant, kind, n).await;
        println!(
            "{kind:?}: {} jobs, {} provider calls, {} killed invocations in {:.1} s: sent once {}, \
             duplicates {} ({:.1} per 10 000 sends, {} extra emails), suppressed {} delivered + {} undelivered \
             ({:.1} undelivered per 10 000), dead-lettered {}, lost {}",
            r.jobs,
            r.provider_calls,
            r.killed_invocations,
            t.elapsed().as_secs_f64(),
            r.sent_once,
            r.duplicates,
            per_10k(r.duplicates, n),
            r.extra_deliveries,
            r.suppressed_delivered,
            r.suppressed_undelivered,
            per_10k(r.suppressed_undelivered, n),
            r.dead_lettered,
            r.lost,
        );
        results.push((kind, r));
    }
    for (kind, r) in &results {
        assert_eq!(r.lost, 0, "{kind:?}: a job neither sent, suppressed nor dead-lettered: {r:?}");
        assert!(r.killed_invocations > 0, "{kind:?}: the kill fault never fired: {r:?}");
    }
    let (ses, blind, resend) = (&results[0].1, &results[1].1, &results[2].1);
    assert_eq!(ses.duplicates, 0, "SES: no guest gets an email twice: {ses:?}");
    assert!(ses.suppressed_delivered + ses.suppressed_undelivered > 0, "{ses:?}");
    assert!(blind.duplicates > 0, "the injected faults do cause duplicates under a blind retry: {blind:?}");
    assert_eq!((resend.duplicates, resend.suppressed_delivered + resend.suppressed_undelivered), (0, 0), "{resend:?}");
    // Every suppression is alarmed.
    let suppressed_events =
        count(&db.pool, "SELECT count(*) FROM observability_events WHERE event_type = 'email.suppressed'", &[]).await;
    assert_eq!(suppressed_events as usize, ses.suppressed_delivered + ses.suppressed_undelivered);
}

// ---------------------------------------------------------------------------------------------
// The operator's steps for a suppressed email, as the runbook gives them

/// The SQL blocks of the runbook's "Suppressed: outcome unknown" section, in order.
fn runbook_sql() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let doc = std::fs::read_to_string(root.join("docs/runbooks/email.md")).expect("runbook");
    let section =
        doc.split("### Suppressed: outcome unknown").nth(1).expect("the section").split("\n### ").next().unwrap_or("");
    section.split("```sql").skip(1).filter_map(|b| b.split("```").next()).map(|b| b.trim().to_string()).collect()
}

#[tokio::test]
async fn the_runbook_steps_for_a_suppressed_email_settle_it_either_way() {
    let e = E::new().await;
    email_sender::ensure_ses_identity(&e.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let c = e.db.pool.get().await.expect("conn");
    let (delivered, resent) = (
        EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(1)).await),
        EmailJob::for_booking(EmailType::BookingConfirmed, e.booking(&e.address(2)).await),
    );
    for job in [&delivered, &resent] {
        assert!(holdfast_adapters::outbox::enqueue(&c, job, Utc::now()).await.expect("enqueue"));
    }
    let relay = OutboxRelay::new(e.db.pool.clone(), e.sqs.clone(), e.pair.queue_url.clone(), Arc::new(SystemClock));
    assert_eq!(relay.tick().await.expect("tick").published, 2);
    // SES accepts both and the answers are lost: both suppressed.
    let proxy = Proxy::start().await;
    proxy.set_mode(ProxyMode::DropAnswer);
    let sender = e.sender(e.ses_at(&proxy.endpoint()), e.sqs.clone());
    assert!(e.deliver(&sender, &e.receive_n(2, Duration::from_secs(15)).await).await.failed.is_empty());
    proxy.set_mode(ProxyMode::Pass);

    let sql = runbook_sql();
    assert_eq!(sql.len(), 3, "find, delivered, resend: {sql:?}");
    let found = c.fetch(sql[0].as_str(), &[]).await.expect("step 1 runs");
    let keys: HashSet<String> = found.iter().map(|r| r.get::<_, String>("dedupe_key")).collect();
    assert_eq!(keys, HashSet::from([delivered.dedupe_key(), resent.dedupe_key()]));

    // Step 3 for the one SES delivered, step 4 for the other (say the guest never got it).
    c.batch_execute(&sql[1].replace("<dedupe key>", &delivered.dedupe_key())).await.expect("step 3 runs");
    c.batch_execute(&sql[2].replace("<dedupe key>", &resent.dedupe_key())).await.expect("step 4 runs");
    assert_eq!(e.ledger(&delivered.dedupe_key()).await, Some(("sent".into(), Some("operator_confirmed".into()))));
    assert_eq!(relay.tick().await.expect("tick").published, 1, "the relay publishes the resend");
    let deliveries = e.drain(&sender, Duration::from_secs(30)).await;
    assert!(deliveries.iter().all(|d| d.failed.is_empty()), "{deliveries:?}");
    assert_eq!(e.ledger(&resent.dedupe_key()).await.map(|l| l.0), Some("sent".into()));
    assert_eq!(e.mail_to(&e.address(1)).await, 1, "confirmed delivered: not sent again");
    assert_eq!(e.mail_to(&e.address(2)).await, 2, "resent on purpose, once");
    assert!(c.fetch(sql[0].as_str(), &[]).await.expect("step 1").is_empty(), "nothing left to decide");
}
