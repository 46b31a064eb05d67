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

pub const DEFAULT_DATABASE_URL: &str = "postgres://holdfast@127.0.0.1:55432/holdfast";
pub const DEFAULT_AWS_ENDPOINT: &str = "http://127.0.0.1:5055";

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

/// A fresh, migrated database named `hf_test_<uuid>`, created by the application role (which
/// has CREATEDB and nothing more). Old ones are dropped by `scripts/test.sh` before a run.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: Pool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(size: usize) -> TestDb {
        let base = env_or("DATABASE_URL", DEFAULT_DATABASE_URL);
        let name = format!("hf_test_{}", Uuid::new_v4().simple());
        let admin = holdfast_adapters::db::pool_from_url(&base, 1).expect("DATABASE_URL parses");
        let client =
            admin.get().await.expect("cannot reach PostgreSQL: run ./scripts/services.sh (or ./scripts/test.sh) first");
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let url = replace_dbname(&base, &name);
        let pool = holdfast_adapters::db::pool_from_url(&url, size).expect("pool");
        holdfast_adapters::db::migrate(&pool).await.expect("migrations apply");
        TestDb { name, url, pool }
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
