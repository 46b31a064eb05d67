//! Test harness: every integration test gets its own freshly migrated PostgreSQL database and
//! its own AWS resource names on the emulator, so tests run in parallel without interfering.
//!
//! Settings come from the environment written by `scripts/services.sh` (`.local/env`); when a
//! variable is unset the harness uses the same defaults that script uses.

use aws_config::SdkConfig;
use deadpool_postgres::Pool;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

pub use holdfast_adapters::db::replace_dbname;

pub const DEFAULT_AWS_ENDPOINT: &str = "http://127.0.0.1:5055";

/// The runtime role's URL (`DATABASE_URL`): what the functions connect as. Locally (and in
/// CI) it goes through PgBouncer in transaction pooling mode, as through RDS Proxy in AWS.
pub fn runtime_url() -> String {
    required_env("DATABASE_URL")
}

/// The runtime role straight to PostgreSQL (`HOLDFAST_DIRECT_DATABASE_URL`; `DATABASE_URL` when
/// unset), for the few tests that need a real session of their own (see [`TestDb::direct_pool`]).
pub fn direct_url() -> String {
    std::env::var("HOLDFAST_DIRECT_DATABASE_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(runtime_url)
}

/// PgBouncer's admin console (`HOLDFAST_PGBOUNCER_ADMIN_URL`, database `pgbouncer`):
/// `SHOW POOLS`, `SHOW SERVERS`.
pub fn pgbouncer_admin_url() -> String {
    required_env("HOLDFAST_PGBOUNCER_ADMIN_URL")
}

/// The schema owner's URL (`HOLDFAST_OWNER_DATABASE_URL`): creates and migrates databases.
pub fn owner_url() -> String {
    required_env("HOLDFAST_OWNER_DATABASE_URL")
}

/// The local superuser's URL (`HOLDFAST_ADMIN_DATABASE_URL`): only for what neither
/// application role may do (roles, passwords, other roles' sessions).
pub fn admin_url() -> String {
    required_env("HOLDFAST_ADMIN_DATABASE_URL")
}

/// The local cluster's CA certificate (`HOLDFAST_PG_CA_FILE`), which its server certificate
/// chains to.
pub fn ca_file() -> String {
    required_env("HOLDFAST_PG_CA_FILE")
}

// The roles' passwords and the CA are generated per checkout, so there is no default to fall
// back on: the settings come from `scripts/services.sh`.
fn required_env(key: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{key} is not set: run ./scripts/services.sh and `source .local/env` first"))
}

/// `host:port` of the AWS emulator the tests use (from `AWS_ENDPOINT_URL`, as the SDK sees it),
/// for tests that put something between the SDK and the emulator.
pub fn emulator_addr() -> String {
    let url = env_or("AWS_ENDPOINT_URL", DEFAULT_AWS_ENDPOINT);
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    rest.trim_end_matches('/').to_string()
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// Point the AWS SDK at the emulator unless the caller configured something else. Test-only:
/// the dummy keys are moto's, not secrets.
pub fn ensure_aws_env() {
    for (k, v) in [
        ("AWS_ENDPOINT_URL", DEFAULT_AWS_ENDPOINT),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "eu-west-1"),
    ] {
        if std::env::var(k).map(|v| v.is_empty()).unwrap_or(true) {
            // SAFETY-free: set_var is only unsafe in edition 2024; tests set these before any
            // SDK client exists and always to the same values.
            std::env::set_var(k, v);
        }
    }
}

/// A fresh database named `hf_test_<uuid>`, created and migrated by the schema owner (which has
/// CREATEDB and owns the schema), used by the tests as the runtime role, over TLS, as the
/// functions use it. Old ones are dropped by `scripts/test.sh` before a run.
pub struct TestDb {
    pub name: String,
    /// The runtime role's URL for this database (through PgBouncer, like [`runtime_url`]).
    pub url: String,
    /// The runtime role: what the functions connect as (no DDL, append-only audit), through
    /// PgBouncer: each statement outside a transaction, and each transaction, may run on a
    /// different server connection, as behind RDS Proxy.
    pub pool: Pool,
    /// The schema owner's URL for this database.
    pub owner_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(size: usize) -> TestDb {
        let owner_base = owner_url();
        let name = format!("hf_test_{}", Uuid::new_v4().simple());
        let creator = holdfast_adapters::db::pool_from_url(&owner_base, 1).expect("HOLDFAST_OWNER_DATABASE_URL parses");
        let client = creator
            .get()
            .await
            .expect("cannot reach PostgreSQL: run ./scripts/services.sh (or ./scripts/test.sh) first");
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let owner_url = replace_dbname(&owner_base, &name);
        let owner = holdfast_adapters::db::pool_from_url(&owner_url, 1).expect("owner pool");
        holdfast_adapters::db::migrate(&owner).await.expect("migrations apply");
        let url = replace_dbname(&runtime_url(), &name);
        let pool = holdfast_adapters::db::pool_from_url(&url, size).expect("pool");
        TestDb { name, url, pool, owner_url }
    }

    /// A pool as the schema owner, for what a test does that the functions may not: DDL
    /// (dropping a constraint, disabling a trigger), rewriting audit rows.
    pub fn owner_pool(&self) -> Pool {
        holdfast_adapters::db::pool_from_url(&self.owner_url, 2).expect("owner pool")
    }

    /// A pool as the superuser on this database: creating roles, changing passwords, ending
    /// other roles' sessions (`pg_terminate_backend`).
    pub fn admin_pool(&self) -> Pool {
        holdfast_adapters::db::pool_from_url(&replace_dbname(&admin_url(), &self.name), 2).expect("admin pool")
    }

    /// The runtime role's URL for this database, straight to PostgreSQL.
    pub fn direct_url(&self) -> String {
        replace_dbname(&direct_url(), &self.name)
    }

    /// A pool as the runtime role straight to PostgreSQL, for a test that needs a session of its
    /// own: one client, one backend for its lifetime (`pg_backend_pid()` names the connection),
    /// or what a pooler refuses by design.
    pub fn direct_pool(&self, size: usize) -> Pool {
        holdfast_adapters::db::pool_from_url(&self.direct_url(), size).expect("direct pool")
    }
}

/// AWS SDK config for the emulator plus a unique prefix for this test's resource names.
pub struct TestAws {
    pub sdk: SdkConfig,
    pub prefix: String,
}

impl TestAws {
    pub async fn new() -> TestAws {
        ensure_aws_env();
        let sdk = holdfast_adapters::aws::sdk_config().await;
        let prefix = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        TestAws { sdk, prefix }
    }

    pub fn name(&self, base: &str) -> String {
        format!("{}-{}", self.prefix, base)
    }
}

/// Wait for a condition instead of sleeping for a guess: polls `check` every 50 ms until it
/// returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Build a real API Gateway v2 request (parsed by lambda_http, as in AWS).
pub fn api_request(
    method: &str,
    path: &str,
    body: &str,
    sub: Option<&str>,
    headers: &[(&str, &str)],
) -> lambda_http::Request {
    let headers: Vec<(String, String)> = std::iter::once(("content-type".to_string(), "application/json".to_string()))
        .chain(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let ev = holdfast_adapters::http::apigw_v2_event(method, path, "", &headers, body, sub);
    lambda_http::request::from_str(&ev.to_string()).expect("valid API Gateway v2 event")
}

/// Status and JSON body of a handler response.
pub fn response_json(resp: lambda_http::Response<lambda_http::Body>) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let bytes: Vec<u8> = match resp.body() {
        lambda_http::Body::Text(t) => t.as_bytes().to_vec(),
        lambda_http::Body::Binary(b) => b.clone(),
        _ => vec![],
    };
    let v = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    (status, v)
}

/// A plain HTTP/1.0 GET on loopback (the emulator's `/moto-api/data.json`), body as text.
pub async fn http_get(endpoint: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::replace_dbname;

    #[test]
    fn replaces_database_name_keeping_params() {
        assert_eq!(replace_dbname("postgres://u@h:1/db", "x"), "postgres://u@h:1/x");
        assert_eq!(replace_dbname("postgres://u@h:1/db?sslmode=disable", "x"), "postgres://u@h:1/x?sslmode=disable");
        assert_eq!(replace_dbname("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}

/// A test binary's log output, captured in memory: pass [`LogBuffer::writer`] to the
/// subscriber the test installs, then read what was logged since an offset.
#[derive(Clone, Copy)]
pub struct LogBuffer(&'static std::sync::Mutex<Vec<u8>>);

impl LogBuffer {
    /// A buffer for the whole test binary (subscribers are process-global).
    pub fn leaked() -> LogBuffer {
        LogBuffer(Box::leak(Box::new(std::sync::Mutex::new(Vec::new()))))
    }

    /// A `MakeWriter` for tracing-subscriber: every write appends to the buffer.
    pub fn writer(self) -> impl Fn() -> LogWriter + Send + Sync + 'static {
        move || LogWriter(self.0)
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was logged from byte `from` on (lossy: a test asserts on text).
    pub fn text_from(&self, from: usize) -> String {
        let buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf[from.min(buf.len())..]).into_owned()
    }
}

pub struct LogWriter(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The email tests' world: a fresh database, an email queue and its DLQ on the emulator, and
/// one restaurant to hang bookings on.
pub struct EmailFixture {
    pub db: TestDb,
    pub aws: TestAws,
    pub sqs: aws_sdk_sqs::Client,
    pub pair: email_sender::sqs::QueuePair,
    pub region: String,
    pub restaurant: holdfast_shared::ids::RestaurantId,
}

impl EmailFixture {
    pub async fn new(restaurant_name: &str, visibility_seconds: u32) -> EmailFixture {
        use holdfast_adapters::sql::Sql;
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let pair =
            email_sender::sqs::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), visibility_seconds)
                .await
                .expect("queues");
        let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
        let restaurant = holdfast_shared::ids::RestaurantId::new_random();
        let c = db.pool.get().await.expect("conn");
        c.run("INSERT INTO restaurants (id, name) VALUES ($1, $2)", &[&restaurant.as_uuid(), &restaurant_name])
            .await
            .expect("restaurant");
        EmailFixture { db, aws, sqs, pair, region, restaurant }
    }
}
