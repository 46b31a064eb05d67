//! The holds API's pre-traffic smoke hook (CodeDeploy, `infra/template.yaml`,
//! `HoldsApiSmokeHookFunction`) against the real holds API handler: the event its Python code
//! builds is one `lambda_http` accepts as API Gateway's, reaches the read route with the
//! caller's claims and a real database, writes nothing, and the hook's own verdict on the answer
//! (as Lambda would return it) is a pass; with the database down it is a failure. The hook's
//! reporting to CodeDeploy is checked with stubbed clients by `scripts/lint-infra.sh`.
//!
//! Needs `python3` (standard library only: the hook imports boto3 only inside its handler).

use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_tests::{TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The hook's Python source: the `InlineCode: |` block of `HoldsApiSmokeHookFunction`.
fn hook_source() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let template = std::fs::read_to_string(root.join("infra/template.yaml")).expect("template");
    let lines: Vec<&str> = template.lines().collect();
    let start = lines.iter().position(|l| *l == "  HoldsApiSmokeHookFunction:").expect("the hook resource");
    let code =
        start + lines[start..].iter().position(|l| l.trim() == "InlineCode: |").expect("the hook's InlineCode") + 1;
    let indent = lines[code].len() - lines[code].trim_start().len();
    let body: Vec<&str> = lines[code..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| if l.trim().is_empty() { "" } else { &l[indent..] })
        .collect();
    assert!(body.len() > 20, "InlineCode block not found: {body:?}");
    body.join("\n")
}

/// Runs `smoke_event()` or `verdict(<stdin>)` of the hook's module in python3.
fn python(call: &str, stdin: &str) -> Value {
    let driver = format!(
        "import json, os, sys, types\nm = types.ModuleType('index')\nexec(os.environ['HOOK_CODE'], m.__dict__)\n\
         print(json.dumps({call}))\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &driver])
        .env("HOOK_CODE", hook_source())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// What Lambda returns for an API Gateway v2 event, as `lambda_http` encodes the response: a
/// binary body goes out base64-encoded (the `Body` type's own serialisation) with
/// `isBase64Encoded`.
fn lambda_payload(resp: lambda_http::Response<lambda_http::Body>) -> Value {
    let headers: serde_json::Map<String, Value> =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default()))).collect();
    let b64 = matches!(resp.body(), lambda_http::Body::Binary(_));
    let body = serde_json::to_value(resp.body()).expect("body serialises");
    json!({"statusCode": resp.status().as_u16(), "headers": headers, "body": body, "isBase64Encoded": b64, "cookies": []})
}

fn service(pool: deadpool_postgres::Pool, aws: &TestAws) -> HoldsService {
    let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
    let env = holdfast_shared::flags::Environment::Dev;
    let flags = FlagLoader::unrecorded(ssm, env, format!("/{}/dev", aws.prefix), Duration::from_secs(30));
    HoldsService::new(pool, Arc::new(flags))
}

/// Rows in every table of the test database (as the schema owner, who may read them all).
async fn rows_everywhere(db: &TestDb) -> i64 {
    let c = db.owner_pool().get().await.expect("owner connection");
    c.fetch_one(
        "SELECT COALESCE(sum((xpath('/row/n/text()', query_to_xml(
                    format('SELECT count(*) AS n FROM %I.%I', schemaname, relname), false, true, '')))[1]::text::bigint), 0)::bigint
           FROM pg_stat_user_tables",
        &[],
    )
    .await
    .expect("count rows")
    .get(0)
}

#[tokio::test]
async fn the_hooks_request_reads_a_404_from_the_real_handler_and_writes_nothing() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let svc = service(db.pool.clone(), &aws);

    let event = python("m.smoke_event()", "");
    assert_eq!(event["requestContext"]["http"]["method"], "GET");
    let req = lambda_http::request::from_str(&event.to_string()).expect("lambda_http accepts the hook's event");
    assert!(req.uri().path().starts_with("/holds/"), "{}", req.uri());

    let before = rows_everywhere(&db).await;
    assert!(before > 0, "refinery's history table has rows; zero means the count is broken");
    let resp = holds_api::api::handle(&svc, req).await;
    assert_eq!(resp.status().as_u16(), 404);
    let payload = lambda_payload(resp);
    assert_eq!(payload["isBase64Encoded"], true, "the handler's JSON is a binary body: the hook must decode it");
    assert_eq!(rows_everywhere(&db).await, before, "the smoke request wrote to the database");

    // The hook's verdict on exactly what Lambda would hand it.
    assert_eq!(python("m.verdict(json.load(sys.stdin))", &payload.to_string()), json!([true, "404 not_found"]));
}

#[tokio::test]
async fn the_hook_fails_a_version_that_cannot_reach_its_database() {
    let aws = TestAws::new().await;
    // Nothing listens on port 1: every connection is refused, as with a broken VPC path or proxy.
    let dead = holdfast_adapters::db::pool_from_url("postgres://holdfast:x@127.0.0.1:1/holdfast", 1).expect("pool");
    let svc = service(dead, &aws);
    let event = python("m.smoke_event()", "");
    let req = lambda_http::request::from_str(&event.to_string()).expect("event");
    let payload = lambda_payload(holds_api::api::handle(&svc, req).await);
    assert_eq!(payload["statusCode"], 503, "{payload}");
    let verdict = python("m.verdict(json.load(sys.stdin))", &payload.to_string());
    assert_eq!(verdict, json!([false, "expected 404, got 503"]));
}

#[tokio::test]
async fn the_hook_fails_an_answer_without_the_callers_identity() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let svc = service(db.pool.clone(), &aws);
    // The same event with the authorizer's claims gone: the function refuses it (401), which is
    // what a version that stopped reading the claims would answer too.
    let mut event = python("m.smoke_event()", "");
    event["requestContext"].as_object_mut().expect("context").remove("authorizer");
    let req = lambda_http::request::from_str(&event.to_string()).expect("event");
    let payload = lambda_payload(holds_api::api::handle(&svc, req).await);
    let verdict = python("m.verdict(json.load(sys.stdin))", &payload.to_string());
    assert_eq!(verdict, json!([false, "expected 404, got 401"]));
}
