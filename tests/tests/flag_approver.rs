//! Flag approver against real PostgreSQL (fresh database per test) and the emulator's SSM
//! (a unique SSM root per test, so environments never collide between tests).
//!
//! Callers use the dev-token convention `sub;groups=a,b` (claims `sub` and `groups`), e.g.
//! `olga;groups=holdfast-ops`; a bare subject is a guest. See [`request`].

use flag_approver::ssm::SsmFlags;
use flag_approver::FlagApprover;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::{FlagLoader, FlagOrigin};
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::events::Source;
use holdfast_shared::flags::{names, ssm_parameter_name, Environment};
use holdfast_tests::{response_json, TestAws, TestDb};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Ctx {
    db: TestDb,
    aws: TestAws,
    svc: Arc<FlagApprover>,
}

impl Ctx {
    async fn new() -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let svc = Arc::new(Self::approver(&db, &aws, aws_sdk_ssm::Client::new(&aws.sdk)));
        Ctx { db, aws, svc }
    }

    fn root(aws: &TestAws) -> String {
        format!("/{}", aws.prefix)
    }

    fn prefix(&self, env: Environment) -> String {
        format!("{}/{}", Self::root(&self.aws), env.as_str())
    }

    fn approver(db: &TestDb, aws: &TestAws, client: aws_sdk_ssm::Client) -> FlagApprover {
        FlagApprover::new(db.pool.clone(), SsmFlags::new(client, Self::root(aws)).expect("valid root"))
    }

    fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.aws.sdk)
    }

    /// An SSM client whose endpoint is `endpoint`, without retries (failures show at once).
    fn ssm_at(&self, endpoint: &str) -> aws_sdk_ssm::Client {
        let conf = aws_sdk_ssm::config::Builder::from(&self.aws.sdk)
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_ssm::Client::from_conf(conf)
    }

    fn loader(&self, client: aws_sdk_ssm::Client, env: Environment, ttl: Duration) -> FlagLoader {
        FlagLoader::unrecorded(client, env, self.prefix(env), ttl)
    }

    async fn set_ssm(&self, env: Environment, flag: &str, value: &str) {
        self.ssm()
            .put_parameter()
            .name(ssm_parameter_name(&self.prefix(env), flag))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("put parameter");
    }

    /// The raw SSM value and version of a flag, `None` when the parameter does not exist.
    async fn ssm_value(&self, env: Environment, flag: &str) -> Option<(String, i64)> {
        match self.ssm().get_parameter().name(ssm_parameter_name(&self.prefix(env), flag)).send().await {
            Ok(out) => out.parameter.map(|p| (p.value.unwrap_or_default(), p.version)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => None,
            Err(e) => panic!("get_parameter: {e:?}"),
        }
    }

    async fn call_with(svc: &FlagApprover, method: &str, path: &str, body: Value, sub: Option<&str>) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        response_json(flag_approver::api::handle(svc, request(method, path, "", &body, sub)).await)
    }

    async fn call(&self, method: &str, path: &str, body: Value, sub: &str) -> (u16, Value) {
        Self::call_with(&self.svc, method, path, body, Some(sub)).await
    }

    async fn get_query(&self, path: &str, query: &str, sub: &str) -> (u16, Value) {
        response_json(flag_approver::api::handle(&self.svc, request("GET", path, query, "", Some(sub))).await)
    }

    /// A grouped proposal: `changes` as (flag, value).
    async fn propose_group(&self, who: &str, env: Environment, changes: &[(&str, Value)]) -> (u16, Value) {
        let changes: Vec<Value> = changes.iter().map(|(f, v)| json!({ "flag": f, "value": v })).collect();
        let body = json!({ "environment": env, "changes": changes, "reason": "grouped change INC-2" });
        self.call("POST", "/flags/proposals", body, who).await
    }

    async fn propose(&self, who: &str, flag: &str, env: Environment, value: Value) -> (u16, Value) {
        let body = json!({ "flag": flag, "environment": env, "value": value, "reason": "test change INC-1" });
        self.call("POST", "/flags/proposals", body, who).await
    }

    async fn propose_ok(&self, who: &str, flag: &str, env: Environment, value: Value) -> String {
        let (s, v) = self.propose(who, flag, env, value).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn approve(&self, who: &str, id: &str) -> (u16, Value) {
        self.call("POST", &format!("/flags/proposals/{id}/approve"), Value::Null, who).await
    }

    async fn count(&self, sql: &str, params: &[&dyn Param]) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_one(sql, params).await.expect("count").get(0)
    }

    /// Audit actions of one proposal, oldest first, as (action, actor, detail).
    async fn audit_of(&self, id: &str) -> Vec<(String, String, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        let id: uuid::Uuid = id.parse().expect("uuid");
        c.fetch("SELECT action, actor, detail FROM flag_audit WHERE proposal_id = $1 ORDER BY id", &[&id])
            .await
            .expect("audit")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

fn actions(rows: &[(String, String, Option<String>)]) -> Vec<&str> {
    rows.iter().map(|r| r.0.as_str()).collect()
}

/// A member of `holdfast-ops` (may propose, reject, read the audit and the matrix, break glass).
fn ops(sub: &str) -> String {
    format!("{sub};groups=holdfast-ops")
}

/// A member of `holdfast-flag-approvers` (may approve).
fn approver(sub: &str) -> String {
    format!("{sub};groups=holdfast-flag-approvers")
}

/// A member of both groups.
fn both(sub: &str) -> String {
    format!("{sub};groups=holdfast-ops,holdfast-flag-approvers")
}

/// The API Gateway v2 request Lambda would receive. `who` follows the dev-token convention
/// `sub;groups=a,b`, which the harness (`apigw_v2_http_request`) turns into the claims `sub` and
/// `groups` (API Gateway's flattened array `[a b]`), as the local gateway does for
/// `Authorization: Bearer dev:sub;groups=a,b`.
fn request(method: &str, path: &str, query: &str, body: &str, who: Option<&str>) -> lambda_http::Request {
    use lambda_http::http::{header, HeaderMap, HeaderValue, Method};
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let ev = holdfast_adapters::http::apigw_v2_http_request(method, path, query, &headers, body, who);
    holdfast_adapters::http::lambda_request(&ev).expect("valid API Gateway v2 event")
}

#[tokio::test]
async fn propose_approve_apply_round_trip_is_visible_to_the_loader() {
    let t = Ctx::new().await;
    let env = Environment::Staging;
    let loader = t.loader(t.ssm(), env, Duration::from_secs(3600));
    let first = loader.get().await;
    assert_eq!((first.origin, first.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 180), "default before any change");

    let (s, p) = t.propose(&ops("alice@example.com"), names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["proposer"], "alice@example.com");
    assert_eq!((p["before"].clone(), p["after"].clone()), (Value::Null, json!("300")));
    assert_eq!((p["approvals_required"].clone(), p["approvals_missing"].clone()), (json!(1), json!(1)));
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, None, "nothing written before approval");

    let (s, got) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, &ops("carol")).await;
    assert_eq!((s, got["status"].clone()), (200, json!("pending")));

    let body = json!({ "reason": "looks right" });
    let (s, p) = t.call("POST", &format!("/flags/proposals/{id}/approve"), body, &approver("bob@example.com")).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "applied", "{p}");
    assert_eq!(p["approvals"], json!(["bob@example.com"]));
    assert!(p["applied_at"].is_string());
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 1)));

    // The runtime loader sees it: a fresh container at once, a warm one after its TTL
    // (invalidate stands in for the TTL passing).
    let fresh = t.loader(t.ssm(), env, Duration::from_secs(3600)).get().await;
    assert_eq!((fresh.origin, fresh.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 300));
    assert_eq!(loader.get().await.set.hold_ttl_seconds(), 180, "warm cache within its TTL");
    loader.invalidate().await;
    assert_eq!(loader.get().await.set.hold_ttl_seconds(), 300);
    // Other environments are untouched.
    let dev = t.loader(t.ssm(), Environment::Dev, Duration::from_secs(3600)).get().await;
    assert_eq!(dev.set.hold_ttl_seconds(), 180);

    // Every step is audited with actor, before/after, reason and request id.
    let c = t.db.pool.get().await.expect("conn");
    let rows = c
        .fetch(
            "SELECT action, actor, before_value, after_value, reason, request_id FROM flag_audit \
             WHERE proposal_id = $1 ORDER BY id",
            &[&id.parse::<uuid::Uuid>().expect("uuid")],
        )
        .await
        .expect("audit");
    #[allow(clippy::type_complexity)]
    let got: Vec<(String, String, Option<String>, Option<String>, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
    assert_eq!(
        got,
        vec![
            ("proposed".into(), "alice@example.com".into(), None, Some("300".into()), Some("test change INC-1".into())),
            ("approved".into(), "bob@example.com".into(), None, Some("300".into()), Some("looks right".into())),
            ("applied".into(), "bob@example.com".into(), None, Some("300".into()), None),
        ]
    );
    assert!(rows.iter().all(|r| r.get::<_, Option<String>>(5).is_some()), "request ids recorded");
    let changed = t.count("SELECT count(*) FROM observability_events WHERE event_type = 'flags.changed'", &[]).await;
    assert_eq!(changed, 1);

    // The read endpoint, filtered, newest first.
    let (s, a) = t.get_query("/flags/audit", "flag=holds.ttlSeconds&environment=staging&limit=10", &ops("carol")).await;
    assert_eq!(s, 200, "{a}");
    let listed: Vec<&str> =
        a["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(listed, ["applied", "approved", "proposed"]);
    let (_, none) = t.get_query("/flags/audit", "flag=holds.ttlSeconds&environment=prod", &ops("carol")).await;
    assert_eq!(none["entries"], json!([]));
    let (s, bad) = t.get_query("/flags/audit", "environment=production", &ops("carol")).await;
    assert_eq!((s, bad["error"]["field"].clone()), (422, json!("environment")));
}

#[tokio::test]
async fn critical_flag_in_prod_needs_two_other_people() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    let id = t.propose_ok(&ops("alice"), names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, env, json!(50)).await;
    let (s, p) = t.approve(&approver("bob"), &id).await;
    assert_eq!((s, p["status"].clone(), p["approvals_missing"].clone()), (200, json!("pending"), json!(1)));
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT).await, None);
    let (s, e) = t.approve(&approver("BOB"), &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("duplicate_approval")));
    let (s, p) = t.approve(&approver("carol"), &id).await;
    assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT).await.map(|v| v.0), Some("50".into()));
    assert_eq!(actions(&t.audit_of(&id).await), ["proposed", "approved", "approve_refused", "approved", "applied"]);
    let rollout = t
        .count(
            "SELECT count(*) FROM observability_events WHERE event_type = 'flags.changed' \
             AND (context->>'rollout_percent')::int = 50",
            &[],
        )
        .await;
    assert_eq!(rollout, 1, "the rollout step is visible in events");
}

#[tokio::test]
async fn self_approval_is_refused_and_audited() {
    let t = Ctx::new().await;
    let id = t.propose_ok(&both("alice@example.com"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    // The proposer holds the approver role too, and tries under look-alike spellings: the
    // subjects are compared after NFKC and case folding, so each is the proposer.
    for who in ["alice@example.com", "Alice@Example.com", "ａｌｉｃｅ@ｅｘａｍｐｌｅ.com"] {
        let (s, e) = t.approve(&approver(who), &id).await;
        assert_eq!((s, e["error"]["code"].clone()), (403, json!("self_approval")), "{who}");
    }
    let (_, p) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, &approver("bob")).await;
    assert_eq!((p["status"].clone(), p["approvals"].clone()), (json!("pending"), json!([])));
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
    let audit = t.audit_of(&id).await;
    assert_eq!(actions(&audit), ["proposed", "approve_refused", "approve_refused", "approve_refused"]);
    assert_eq!(audit[1].2.as_deref(), Some("self_approval"));
}

#[tokio::test]
async fn a_body_claiming_another_actor_is_refused_and_identity_comes_from_the_authorizer() {
    let t = Ctx::new().await;
    // Propose claiming to be someone else: refused as an unknown field, nothing stored.
    for field in ["proposer", "actor", "user"] {
        let mut body = json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "x" });
        body[field] = json!("bob");
        let (s, e) = t.call("POST", "/flags/proposals", body, &ops("alice")).await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!(field)), "{e}");
    }
    assert_eq!(t.count("SELECT count(*) FROM flag_proposals", &[]).await, 0);

    // The proposer cannot approve by claiming to be another approver in the body.
    let id = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    for field in ["approver", "actor", "sub"] {
        let mut body = json!({ "reason": "ok" });
        body[field] = json!("bob");
        let (s, e) = t.call("POST", &format!("/flags/proposals/{id}/approve"), body, &both("alice")).await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!(field)), "{e}");
    }
    // No identity from the authorizer: 401, whatever the body says.
    let (s, e) = Ctx::call_with(&t.svc, "POST", &format!("/flags/proposals/{id}/approve"), Value::Null, None).await;
    assert_eq!((s, e["error"]["code"].clone()), (401, json!("unauthenticated")));
    let (_, p) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, &ops("carol")).await;
    assert_eq!(
        (p["status"].clone(), p["approvals"].clone(), p["proposer"].clone()),
        (json!("pending"), json!([]), json!("alice"))
    );
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
}

#[tokio::test]
async fn contradictory_change_is_refused_with_its_rule_id_against_the_target_environment() {
    let t = Ctx::new().await;
    // Merges are on by default: dropping adjacency breaks FR001.
    let (s, e) = t.propose(&ops("alice"), names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Dev, json!(false)).await;
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["rule_ids"].clone()),
        (422, json!("contradiction"), json!(["FR001"]))
    );
    // FR004 only in prod.
    let (s, e) =
        t.propose(&ops("alice"), names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, Environment::Prod, json!(0)).await;
    assert_eq!((s, e["error"]["rule_ids"].clone()), (422, json!(["FR004"])));
    t.propose_ok(&ops("alice"), names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, Environment::Staging, json!(0)).await;
    // Validation reads the target environment's set from SSM: with merges off in staging
    // (an applied change), dropping adjacency there is fine, while dev still refuses it.
    t.set_ssm(Environment::Staging, names::ALLOCATOR_MERGES_ENABLED, "false").await;
    t.propose_ok(&ops("alice"), names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Staging, json!(false)).await;
    let (s, _) = t.propose(&ops("alice"), names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Dev, json!(false)).await;
    assert_eq!(s, 422);
    // Type and range.
    let (s, e) = t.propose(&ops("alice"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(5)).await;
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["field"].clone()),
        (422, json!("invalid_value"), json!("value"))
    );
    let (s, e) = t.propose(&ops("alice"), "holds.noSuchFlag", Environment::Dev, json!(true)).await;
    assert_eq!((s, e["error"]["code"].clone()), (422, json!("unknown_flag")));
    // Refusals of registry flags are audited with their rule ids.
    let refused = t
        .count(
            "SELECT count(*) FROM flag_audit WHERE action = 'propose_refused' AND detail = 'contradiction: FR001' \
             AND environment = 'dev' AND actor = 'alice'",
            &[],
        )
        .await;
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn concurrent_proposals_on_one_flag_the_second_becomes_stale() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    let first = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    let second = t.propose_ok(&ops("carol"), names::HOLDS_TTL_SECONDS, env, json!(240)).await;
    let (_, p) = t.approve(&approver("bob"), &first).await;
    assert_eq!(p["status"], "applied");
    // The second was judged against 180; the flag is now 300: refused at apply.
    let (s, p) = t.approve(&approver("bob"), &second).await;
    assert_eq!(
        (s, p["status"].clone(), p["last_error"].clone()),
        (200, json!("approved"), json!("stale_proposal")),
        "{p}"
    );
    let (s, e) = t.call("POST", &format!("/flags/proposals/{second}/apply"), Value::Null, &approver("bob")).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("stale_proposal")));
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 1)));
    assert_eq!(actions(&t.audit_of(&second).await), ["proposed", "approved", "apply_refused", "apply_refused"]);
}

#[tokio::test]
async fn concurrent_approvals_and_applies_write_ssm_once() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    let id = t.propose_ok(&ops("alice"), names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES, env, json!(10)).await;
    let path = format!("/flags/proposals/{id}/approve");
    let apply = format!("/flags/proposals/{id}/apply");
    let (bob, carol, dave, erin) = (approver("bob"), approver("carol"), ops("dave"), ops("erin"));
    let (a, b, c, d) = tokio::join!(
        t.call("POST", &path, Value::Null, &bob),
        t.call("POST", &path, Value::Null, &carol),
        t.call("POST", &apply, Value::Null, &dave),
        t.call("POST", &apply, Value::Null, &erin),
    );
    let approvals = [a, b];
    let applied: Vec<_> = approvals.iter().filter(|(s, v)| *s == 200 && v["status"] == "applied").collect();
    assert_eq!(applied.len(), 1, "exactly one approval applies: {approvals:?}");
    let refused: Vec<_> = approvals.iter().filter(|(s, v)| *s == 409 && v["error"]["code"] == "not_pending").collect();
    assert_eq!(refused.len(), 1, "{approvals:?}");
    // An apply that ran before the approval is refused (not approved); after it, applied is final.
    for (s, v) in [c, d] {
        assert_eq!((s, v["error"]["code"].clone()), (409, json!("not_approved")), "{v}");
    }
    assert_eq!(t.ssm_value(env, names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES).await, Some(("10".into(), 1)));
    let n = t.count("SELECT count(*) FROM flag_audit WHERE action = 'applied'", &[]).await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_deleted_or_truncated() {
    let t = Ctx::new().await;
    let id = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    let c = t.db.pool.get().await.expect("conn");
    let owner_pool = t.db.owner_pool();
    let owner = owner_pool.get().await.expect("owner conn");
    let attempts = [
        "UPDATE flag_audit SET actor = 'mallory'",
        "DELETE FROM flag_audit",
        "TRUNCATE flag_audit",
        "UPDATE flag_audit SET reason = 'x' WHERE false",
    ];
    // Layer 1: the privileges are not there, for the functions' runtime role (never granted)
    // nor for the owner that ran the migration (revoked).
    for conn in [&c, &owner] {
        for sql in attempts {
            let e = conn.batch_execute(sql).await.expect_err(sql);
            assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
        }
    }
    // Layer 2: the owner (not the runtime role: tests/tests/db_roles.rs) can grant itself the
    // privileges back; the trigger still refuses.
    owner.batch_execute("GRANT UPDATE, DELETE, TRUNCATE ON flag_audit TO CURRENT_USER").await.expect("grant");
    for sql in attempts {
        let e = owner.batch_execute(sql).await.expect_err(sql);
        let db = e.as_db_error().expect("server error");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::RAISE_EXCEPTION, "{sql}");
        assert!(db.message().contains("append-only"), "{sql}: {}", db.message());
    }
    // Appending still works, and the original rows are intact.
    let audit = t.audit_of(&id).await;
    assert_eq!(audit, vec![("proposed".to_string(), "alice".to_string(), None)]);
    c.run(
        "INSERT INTO flag_audit (action, actor, flag, environment) VALUES ('rejected', 'x', 'holds.ttlSeconds', 'dev')",
        &[],
    )
    .await
    .expect("insert");
    assert_eq!(t.count("SELECT count(*) FROM flag_audit", &[]).await, 2);
}

/// A TCP forwarder to the emulator that can be taken down and brought back, standing in for an
/// SSM outage: while down it closes new and existing connections.
struct Outage {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Outage {
    async fn start() -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue; // dropped: connection closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(holdfast_tests::emulator_addr()).await else { return };
                    tokio::select! {
                        biased;
                        _ = rx.wait_for(|up| !*up) => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Outage { addr, up }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn ssm_outage_loader_serves_last_good_and_the_approved_change_stays_retriable() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    let outage = Outage::start().await;
    let through = t.ssm_at(&outage.endpoint());
    // The approver and a runtime loader both reach SSM through the forwarder. TTL zero: every
    // get reads SSM, so the test needs no sleeping.
    let svc = Ctx::approver(&t.db, &t.aws, through.clone());
    let loader = t.loader(through.clone(), env, Duration::ZERO);

    let id = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    let (_, p) = t.approve(&approver("bob"), &id).await;
    assert_eq!(p["status"], "applied");
    let snap = loader.get().await;
    assert_eq!((snap.origin, snap.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 300));
    let (s, pending) = Ctx::call_with(
        &svc,
        "POST",
        "/flags/proposals",
        json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "shorter holds" }),
        Some(&ops("alice")),
    )
    .await;
    assert_eq!(s, 201, "{pending}");
    let second = pending["id"].as_str().expect("id").to_string();

    outage.set_up(false);
    // The loader keeps serving the last good set; a cold container gets the safe defaults.
    let snap = loader.get().await;
    assert_eq!((snap.origin, snap.set.hold_ttl_seconds()), (FlagOrigin::LastGood, 300));
    let cold = t.loader(through.clone(), env, Duration::ZERO).get().await;
    assert_eq!((cold.origin, cold.set.hold_ttl_seconds()), (FlagOrigin::Defaults, 180));
    let dead = t.loader(t.ssm_at("http://127.0.0.1:9"), env, Duration::ZERO);
    assert_eq!(dead.get().await.origin, FlagOrigin::Defaults);
    assert!(dead.ssm_calls() >= 1);

    // Approving while SSM is down: approved, not applied, kept.
    let path = format!("/flags/proposals/{second}");
    let (s, p) = Ctx::call_with(&svc, "POST", &format!("{path}/approve"), Value::Null, Some(&approver("bob"))).await;
    assert_eq!(
        (s, p["status"].clone(), p["last_error"].clone()),
        (200, json!("apply_failed"), json!("ssm_unavailable")),
        "{p}"
    );
    let resp =
        flag_approver::api::handle(&svc, request("POST", &format!("{path}/apply"), "", "", Some(&ops("carol")))).await;
    assert!(resp.headers().get("retry-after").is_some());
    let (s, e) = response_json(resp);
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["status"].clone()),
        (503, json!("ssm_unavailable"), json!("apply_failed"))
    );
    // Proposing needs a fresh read of SSM: refused while it is down.
    let (s, _) = Ctx::call_with(
        &svc,
        "POST",
        "/flags/proposals",
        json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 200, "reason": "x" }),
        Some(&ops("alice")),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 1)));

    // SSM is back: the same approved change is applied by a later apply call.
    outage.set_up(true);
    let (s, p) = Ctx::call_with(&svc, "POST", &format!("{path}/apply"), Value::Null, Some(&ops("carol"))).await;
    assert_eq!((s, p["status"].clone(), p["last_error"].clone()), (200, json!("applied"), Value::Null), "{p}");
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("240".into(), 2)));
    let snap = loader.get().await;
    assert_eq!((snap.origin, snap.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 240));
    assert_eq!(
        actions(&t.audit_of(&second).await),
        ["proposed", "approved", "apply_failed", "apply_failed", "applied"]
    );
}

#[tokio::test]
async fn loader_warns_and_records_an_event_once_for_a_contradictory_set() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    // An out-of-band edit (the approver would refuse it): merges on, adjacency off.
    t.set_ssm(env, names::ALLOCATOR_REQUIRE_ADJACENCY, "false").await;
    let recorder = EventRecorder::new(t.db.pool.clone());
    let loader = FlagLoader::new(t.ssm(), env, t.prefix(env), Duration::ZERO, recorder, Source::HoldsApi);
    let snap = loader.get().await;
    assert_eq!(snap.violations.iter().map(|v| v.rule_id).collect::<Vec<_>>(), ["FR001"]);
    assert!(!snap.set.require_adjacency(), "served as read: the loader reports, it does not rewrite");
    loader.get().await; // same violations: not recorded again
    let sql = "SELECT count(*) FROM observability_events WHERE event_type = 'flags.contradiction' \
               AND source = 'holds-api' AND context->>'error_code' = 'fr001'";
    assert_eq!(t.count(sql, &[]).await, 1);
    // Fixed through the approver (a change that removes a violation is allowed).
    let id = t.propose_ok(&ops("alice"), names::ALLOCATOR_REQUIRE_ADJACENCY, env, json!(true)).await;
    t.approve(&approver("bob"), &id).await;
    let (_, p) = t.approve(&approver("carol"), &id).await; // critical in prod: two approvers
    assert_eq!(p["status"], "applied", "{p}");
    assert!(loader.get().await.violations.is_empty());
}

#[tokio::test]
async fn matrix_shows_effective_values_defaults_sources_and_violations() {
    let t = Ctx::new().await;
    t.set_ssm(Environment::Staging, names::HOLDS_TTL_SECONDS, "240").await;
    t.set_ssm(Environment::Dev, names::HOLDS_TTL_SECONDS, "not-a-number").await;
    t.set_ssm(Environment::Prod, names::ALLOCATOR_REQUIRE_ADJACENCY, "false").await;
    let (s, m) = t.call("GET", "/flags/matrix", Value::Null, &ops("carol")).await;
    assert_eq!(s, 200, "{m}");
    let flag =
        |name: &str| m["flags"].as_array().expect("flags").iter().find(|f| f["name"] == name).cloned().expect("row");
    let ttl = flag(names::HOLDS_TTL_SECONDS);
    assert_eq!(ttl["values"]["staging"], json!({ "value": "240", "default": "180", "source": "ssm" }));
    assert_eq!(ttl["values"]["dev"], json!({ "value": "180", "default": "180", "source": "invalid" }));
    assert_eq!(ttl["values"]["prod"], json!({ "value": "180", "default": "180", "source": "default" }));
    let envs = m["environments"].as_array().expect("envs");
    let prod = envs.iter().find(|e| e["environment"] == "prod").expect("prod");
    assert_eq!(prod["violations"][0]["rule_id"], "FR001");
    let dev = envs.iter().find(|e| e["environment"] == "dev").expect("dev");
    assert_eq!((dev["ssm"].clone(), dev["problems"][0]["code"].clone()), (json!("ok"), json!("invalid_value")));
    assert_eq!(flag(names::METRICS_DATADOG_ENABLED)["values"]["dev"]["value"], "false", "per-environment default");
}

#[tokio::test]
async fn reject_and_expiry_end_a_proposal() {
    let t = Ctx::new().await;
    let id = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    let (s, e) = t.call("POST", &format!("/flags/proposals/{id}/reject"), json!({}), &ops("carol")).await;
    assert_eq!((s, e["error"]["field"].clone()), (422, json!("reason")));
    let (s, p) =
        t.call("POST", &format!("/flags/proposals/{id}/reject"), json!({ "reason": "not now" }), &ops("carol")).await;
    assert_eq!((s, p["status"].clone(), p["rejected_by"].clone()), (200, json!("rejected"), json!("carol")));
    let (s, e) = t.approve(&approver("bob"), &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("not_pending")));

    // A proposal past its deadline cannot be approved; the expiry is persisted and audited.
    let old = t.propose_ok(&ops("alice"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(300)).await;
    let c = t.db.pool.get().await.expect("conn");
    c.run(
        "UPDATE flag_proposals SET created_at = now() - interval '2 days', expires_at = now() - interval '1 day' \
         WHERE id = $1",
        &[&old.parse::<uuid::Uuid>().expect("uuid")],
    )
    .await
    .expect("age the proposal");
    let (s, e) = t.approve(&approver("bob"), &old).await;
    assert_eq!((s, e["error"]["code"].clone()), (410, json!("expired")));
    let (_, p) = t.call("GET", &format!("/flags/proposals/{old}"), Value::Null, &approver("bob")).await;
    assert_eq!(p["status"], "expired");
    assert_eq!(actions(&t.audit_of(&old).await), ["proposed", "expired"]);
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
    let (s, _) =
        t.call("GET", &format!("/flags/proposals/{}", uuid::Uuid::new_v4()), Value::Null, &approver("bob")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn database_outage_is_a_503_with_retry_after() {
    let aws = TestAws::new().await;
    let pool = holdfast_adapters::db::pool_from_url("postgres://holdfast@127.0.0.1:9/none", 1).expect("pool");
    let ssm = SsmFlags::new(aws_sdk_ssm::Client::new(&aws.sdk), format!("/{}", aws.prefix)).expect("root");
    let svc = FlagApprover::new(pool, ssm);
    let body = json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "x" });
    for (method, path, body) in [
        ("POST", "/flags/proposals".to_string(), body.to_string()),
        ("GET", format!("/flags/proposals/{}", uuid::Uuid::new_v4()), String::new()),
    ] {
        let resp = flag_approver::api::handle(&svc, request(method, &path, "", &body, Some(&ops("alice")))).await;
        assert_eq!(resp.status().as_u16(), 503, "{method} {path}");
        assert!(resp.headers().get("retry-after").is_some());
        let (_, v) = response_json(resp);
        assert_eq!(v["error"]["code"], "database_unavailable");
    }
}

// ---- roles (issue 12) ----

/// Every route of the flags API with a method it takes, for the role matrix.
fn every_route(id: &str) -> Vec<(&'static str, String, Value)> {
    let change = json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "x" });
    vec![
        ("POST", "/flags/proposals".into(), change.clone()),
        ("GET", format!("/flags/proposals/{id}"), Value::Null),
        ("POST", format!("/flags/proposals/{id}/approve"), Value::Null),
        ("POST", format!("/flags/proposals/{id}/reject"), json!({ "reason": "no" })),
        ("POST", format!("/flags/proposals/{id}/apply"), Value::Null),
        ("POST", "/flags/break-glass".into(), change),
        ("GET", "/flags/reviews".into(), Value::Null),
        ("POST", format!("/flags/reviews/{id}/acknowledge"), Value::Null),
        ("GET", "/flags/audit".into(), Value::Null),
        ("GET", "/flags/matrix".into(), Value::Null),
    ]
}

#[tokio::test]
async fn a_guest_gets_403_and_no_token_401_on_every_flags_route() {
    let t = Ctx::new().await;
    let id = t.propose_ok(&ops("olga"), names::HOLDS_TTL_SECONDS, Environment::Dev, json!(300)).await;
    let staff = format!("sam;groups=restaurant:{}:staff", uuid::Uuid::new_v4());
    for (method, path, body) in every_route(&id) {
        for guest in ["mallory", staff.as_str(), "eve;groups=holdfast-opsx,holdfast-flag-approvers-not"] {
            let (s, e) = t.call(method, &path, body.clone(), guest).await;
            assert_eq!((s, e["error"]["code"].clone()), (403, json!("forbidden")), "{guest} {method} {path}: {e}");
        }
        let (s, e) = Ctx::call_with(&t.svc, method, &path, body.clone(), None).await;
        assert_eq!((s, e["error"]["code"].clone()), (401, json!("unauthenticated")), "{method} {path}");
    }
    // Nothing moved: the one proposal is still pending, unapproved, and nothing reached SSM.
    let (_, p) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, &ops("olga")).await;
    assert_eq!((p["status"].clone(), p["approvals"].clone()), (json!("pending"), json!([])));
    assert_eq!(t.count("SELECT count(*) FROM flag_proposals", &[]).await, 1);
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
}

#[tokio::test]
async fn ops_propose_but_cannot_approve_and_approvers_approve_but_cannot_propose() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    // An approver alone cannot propose, reject, read the audit or the matrix.
    let (s, e) = t.propose(&approver("amir"), names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    assert_eq!((s, e["error"]["code"].clone()), (403, json!("forbidden")));
    for path in ["/flags/audit", "/flags/matrix"] {
        let (s, _) = t.call("GET", path, Value::Null, &approver("amir")).await;
        assert_eq!(s, 403, "{path}");
    }
    let id = t.propose_ok(&ops("olga"), names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    let (s, _) =
        t.call("POST", &format!("/flags/proposals/{id}/reject"), json!({ "reason": "x" }), &approver("amir")).await;
    assert_eq!(s, 403);
    // Another ops member cannot approve: ops is not the approver role.
    let (s, e) = t.approve(&ops("oscar"), &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (403, json!("forbidden")));
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("holdfast-flag-approvers")), "{e}");
    // Both read the proposal; the approver approves and it is applied.
    let (s, _) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, &approver("amir")).await;
    assert_eq!(s, 200);
    let (s, p) = t.approve(&approver("amir"), &id).await;
    assert_eq!((s, p["status"].clone(), p["approvals"].clone()), (200, json!("applied"), json!(["amir"])), "{p}");
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await.map(|v| v.0), Some("300".into()));
    assert_eq!(actions(&t.audit_of(&id).await), ["proposed", "approved", "applied"], "a 403 is not audited");
}

#[tokio::test]
async fn critical_prod_flag_needs_two_approvers_other_than_the_proposer_even_if_the_proposer_is_one() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    let id = t.propose_ok(&both("Alice"), names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, env, json!(50)).await;
    let (s, e) = t.approve(&approver("ＡＬＩＣＥ"), &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (403, json!("self_approval")), "a look-alike of the proposer");
    let (s, p) = t.approve(&approver("bob"), &id).await;
    assert_eq!((s, p["approvals_missing"].clone()), (200, json!(1)));
    let (s, e) = t.approve(&approver("Ｂob"), &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("duplicate_approval")), "a look-alike of bob");
    let (s, p) = t.approve(&approver("carol"), &id).await;
    assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
    assert_eq!(p["approvals"], json!(["bob", "carol"]));
}

// ---- grouped proposals ----

#[tokio::test]
async fn a_grouped_proposal_is_validated_combined_approved_once_and_applied_together() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    // Alone, dropping adjacency breaks FR001 (merges are on); with merges off in the same
    // proposal the combined result is fine.
    let (s, e) = t.propose_group(&ops("olga"), env, &[(names::ALLOCATOR_REQUIRE_ADJACENCY, json!(false))]).await;
    assert_eq!((s, e["error"]["rule_ids"].clone()), (422, json!(["FR001"])));
    let group = [(names::ALLOCATOR_MERGES_ENABLED, json!(false)), (names::ALLOCATOR_REQUIRE_ADJACENCY, json!(false))];
    let (s, p) = t.propose_group(&ops("olga"), env, &group).await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(p["changes"].as_array().map(Vec::len), Some(2));
    assert_eq!((p["flag"].clone(), p["after"].clone()), (json!(names::ALLOCATOR_MERGES_ENABLED), json!("false")));
    // Shape errors name the field.
    for bad in [
        json!({ "environment": "dev", "changes": [], "reason": "x" }),
        json!({ "environment": "dev", "changes": [{ "flag": names::HOLDS_TTL_SECONDS, "value": 300 }],
                "flag": names::HOLDS_TTL_SECONDS, "value": 300, "reason": "x" }),
    ] {
        let (s, e) = t.call("POST", "/flags/proposals", bad, &ops("olga")).await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!("changes")), "{e}");
    }
    let dup = [(names::HOLDS_TTL_SECONDS, json!(300)), (names::HOLDS_TTL_SECONDS, json!(240))];
    let (s, e) = t.propose_group(&ops("olga"), env, &dup).await;
    assert_eq!((s, e["error"]["code"].clone()), (422, json!("duplicate_flag")));

    // One approval round applies both.
    let (s, p) = t.approve(&approver("amir"), &id).await;
    assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
    assert_eq!(t.ssm_value(env, names::ALLOCATOR_MERGES_ENABLED).await.map(|v| v.0), Some("false".into()));
    assert_eq!(t.ssm_value(env, names::ALLOCATOR_REQUIRE_ADJACENCY).await.map(|v| v.0), Some("false".into()));
    assert!(p["changes"].as_array().expect("changes").iter().all(|c| c["ssm_version"] == json!(1)), "{p}");
    // One audit entry per change for each step.
    let audit = t.audit_of(&id).await;
    assert_eq!(actions(&audit), ["proposed", "proposed", "approved", "approved", "applied", "applied"]);
    let (_, a) = t.get_query("/flags/audit", "flag=allocator.requireAdjacency&environment=dev", &ops("olga")).await;
    let listed: Vec<&str> =
        a["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(listed, ["applied", "approved", "proposed", "propose_refused"]);
}

/// An HTTP forwarder to the emulator that refuses chosen SSM calls: each connection carries one
/// request (`Connection: close` both ways); a refused one is closed without an answer, as a
/// dropped connection in an outage. `fail` decides from the `X-Amz-Target` header (e.g.
/// `AmazonSSM.PutParameter`) and the 1-based count of calls with that target so far.
struct FlakySsm {
    addr: SocketAddr,
}

type FailRule = Arc<dyn Fn(&str, usize) -> bool + Send + Sync>;

impl FlakySsm {
    async fn start(fail: FailRule) -> FlakySsm {
        use std::collections::HashMap;
        use std::sync::Mutex;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (fail, counts) = (fail.clone(), counts.clone());
                tokio::spawn(async move {
                    let _ = Self::forward(inbound, fail, counts).await;
                });
            }
        });
        FlakySsm { addr }
    }

    async fn forward(
        mut inbound: TcpStream,
        fail: FailRule,
        counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (head, body) = read_message(&mut inbound).await?;
        let target = header_value(&head, "x-amz-target").unwrap_or_default();
        let n = {
            let mut c = counts.lock().expect("counts");
            let n = c.entry(target.clone()).or_default();
            *n += 1;
            *n
        };
        if fail(&target, n) {
            return Ok(()); // dropped: the client sees the connection close with no answer
        }
        let mut upstream = TcpStream::connect(holdfast_tests::emulator_addr()).await?;
        upstream.write_all(&with_connection_close(&head)).await?;
        upstream.write_all(&body).await?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response).await?;
        let split = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
        inbound.write_all(&with_connection_close(&response[..split])).await?;
        inbound.write_all(&response[split..]).await?;
        inbound.shutdown().await
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header_value(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The head (through the blank line) with any `Connection` header replaced by `close`.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let mut out = lines.join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    out.into_bytes()
}

/// One HTTP request: head (through the blank line) and a `Content-Length` body.
async fn read_message(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
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
    let len: usize = header_value(&buf[..head_end], "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.split_off(head_end);
    Ok((buf, body))
}

#[tokio::test]
async fn a_grouped_proposal_with_an_ssm_outage_mid_apply_leaves_every_flag_unchanged() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    // The prod kill switch as one proposal (approved normally here): reason, then the switch.
    t.set_ssm(env, names::HOLDS_TTL_SECONDS, "240").await; // an unrelated flag, set before
    let group = [
        (names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, json!("INC-7 false 409s")),
        (names::HOLDS_STRICT_CONFLICTS, json!(false)),
        (names::HOLDS_TTL_SECONDS, json!(300)),
    ];
    let (s, p) = t.propose_group(&ops("olga"), env, &group).await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(p["approvals_required"], 2, "critical in prod: the most any change needs");

    // SSM drops the connection of the second PutParameter: the first write has landed, the
    // second does not, the third is never attempted; the first is restored.
    let rule: FailRule = Arc::new(|target: &str, n: usize| target == "AmazonSSM.PutParameter" && n == 2);
    let flaky = FlakySsm::start(rule).await;
    let svc = Ctx::approver(&t.db, &t.aws, t.ssm_at(&flaky.endpoint()));
    let approve = format!("/flags/proposals/{id}/approve");
    let (s, p) = Ctx::call_with(&svc, "POST", &approve, Value::Null, Some(&approver("amir"))).await;
    assert_eq!((s, p["status"].clone()), (200, json!("pending")), "{p}");
    let (s, p) = Ctx::call_with(&svc, "POST", &approve, Value::Null, Some(&approver("bea"))).await;
    assert_eq!(
        (s, p["status"].clone(), p["last_error"].clone()),
        (200, json!("apply_failed"), json!("ssm_unavailable")),
        "{p}"
    );
    // Every flag is as before the proposal: the reason absent, strict conflicts absent (on),
    // the TTL still 240.
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON).await, None);
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS).await, None);
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await.map(|v| v.0), Some("240".into()));
    let fresh = t.loader(t.ssm(), env, Duration::ZERO).get().await;
    assert!(fresh.set.strict_conflicts() && fresh.violations.is_empty(), "no half-applied kill switch");
    let audit = t.audit_of(&id).await;
    let failed: Vec<_> = audit.iter().filter(|r| r.0 == "apply_failed").collect();
    assert_eq!(failed.len(), 3, "one entry per change: {audit:?}");
    assert!(
        failed.iter().all(|r| r.2.as_deref().is_some_and(|d| d.contains("1 earlier write(s) restored"))),
        "{failed:?}"
    );

    // SSM is healthy again: one apply writes all three.
    let (s, p) = t.call("POST", &format!("/flags/proposals/{id}/apply"), Value::Null, &ops("olga")).await;
    assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS).await.map(|v| v.0), Some("false".into()));
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await.map(|v| v.0), Some("300".into()));
    let snap = t.loader(t.ssm(), env, Duration::ZERO).get().await;
    assert!(!snap.set.strict_conflicts() && snap.violations.is_empty());
}

#[tokio::test]
async fn a_persistent_outage_mid_apply_is_reported_and_one_retry_completes_the_group() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    let group = [(names::HOLDS_TTL_SECONDS, json!(300)), (names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES, json!(10))];
    let (_, p) = t.propose_group(&ops("olga"), env, &group).await;
    let id = p["id"].as_str().expect("id").to_string();
    // Every SSM write after the first fails, the restore included.
    let rule: FailRule = Arc::new(|target: &str, n: usize| {
        (target == "AmazonSSM.PutParameter" && n >= 2) || target == "AmazonSSM.DeleteParameter"
    });
    let flaky = FlakySsm::start(rule).await;
    let svc = Ctx::approver(&t.db, &t.aws, t.ssm_at(&flaky.endpoint()));
    let (_, p) =
        Ctx::call_with(&svc, "POST", &format!("/flags/proposals/{id}/approve"), Value::Null, Some(&approver("amir")))
            .await;
    assert_eq!(p["status"], "apply_failed", "{p}");
    let audit = t.audit_of(&id).await;
    let detail = audit.iter().rev().find(|r| r.0 == "apply_failed").and_then(|r| r.2.clone()).unwrap_or_default();
    assert!(detail.contains("NOT restored: holds.ttlSeconds"), "{detail}");
    // Back: the retry sees its own first write and completes the rest.
    let (s, p) = t.call("POST", &format!("/flags/proposals/{id}/apply"), Value::Null, &ops("olga")).await;
    assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await.map(|v| v.0), Some("300".into()));
    assert_eq!(t.ssm_value(env, names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES).await.map(|v| v.0), Some("10".into()));
}

// ---- break-glass ----

fn kill_switch_body(env: &str, reason: &str) -> Value {
    json!({
        "environment": env,
        "changes": [
            { "flag": names::HOLDS_STRICT_CONFLICTS, "value": false },
            { "flag": names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "value": reason }
        ],
        "reason": reason
    })
}

#[tokio::test]
async fn break_glass_applies_a_kill_switch_with_one_ops_member_audited_alarmed_and_reviewed() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    let body = kill_switch_body("prod", "INC-42 false 409s at dinner rush, @olga");
    // Only ops may break glass.
    for who in [approver("amir"), "mallory".to_string()] {
        let (s, _) = t.call("POST", "/flags/break-glass", body.clone(), &who).await;
        assert_eq!(s, 403, "{who}");
    }
    // Only kill switches turned off (with their reason).
    let not_a_switch =
        json!({ "environment": "prod", "flag": names::METRICS_DATADOG_ENABLED, "value": false, "reason": "x" });
    let (s, e) = t.call("POST", "/flags/break-glass", not_a_switch, &ops("olga")).await;
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["field"].clone()),
        (422, json!("break_glass_not_allowed"), json!("changes"))
    );
    assert_eq!(t.count("SELECT count(*) FROM flag_audit WHERE action = 'break_glass_refused'", &[]).await, 1);

    let (s, p) = t.call("POST", "/flags/break-glass", body, &ops("olga")).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(
        (p["status"].clone(), p["break_glass"].clone(), p["approvals"].clone(), p["approvals_required"].clone()),
        (json!("applied"), json!(true), json!([]), json!(0)),
        "{p}"
    );
    assert_eq!((p["review"]["status"].clone(), p["review"]["actor"].clone()), (json!("open"), json!("olga")));
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS).await.map(|v| v.0), Some("false".into()));
    let snap = t.loader(t.ssm(), env, Duration::ZERO).get().await;
    assert!(!snap.set.strict_conflicts() && snap.violations.is_empty(), "the kill switch is on, FR002 satisfied");
    // Audited as break-glass (one entry per change), then applied.
    let audit = t.audit_of(&id).await;
    assert_eq!(actions(&audit), ["break_glass", "break_glass", "applied", "applied"]);
    assert!(audit.iter().all(|r| r.1 == "olga"));
    // The event the FlagBreakGlass alarm counts.
    let n = t.count("SELECT count(*) FROM observability_events WHERE event_type = 'flags.break_glass'", &[]).await;
    assert_eq!(n, 1);

    // The review: not by the actor under any spelling, then by someone else; once.
    let ack = format!("/flags/reviews/{id}/acknowledge");
    for me in [ops("olga"), both("OLGA"), ops("ｏｌｇａ")] {
        let (s, e) = t.call("POST", &ack, Value::Null, &me).await;
        assert_eq!((s, e["error"]["code"].clone()), (403, json!("self_review")), "{me}");
    }
    let (s, open) = t.call("GET", "/flags/reviews", Value::Null, &approver("amir")).await;
    assert_eq!((s, open["reviews"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, r) = t.call("POST", &ack, json!({ "reason": "checked INC-42, right call" }), &approver("amir")).await;
    assert_eq!(
        (s, r["status"].clone(), r["acknowledged_by"].clone()),
        (200, json!("acknowledged"), json!("amir")),
        "{r}"
    );
    let (s, e) = t.call("POST", &ack, Value::Null, &ops("oscar")).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("already_acknowledged")));
    let (_, open) = t.call("GET", "/flags/reviews", Value::Null, &approver("amir")).await;
    assert_eq!(open["reviews"], json!([]));
    let all = t.audit_of(&id).await;
    let tail: Vec<&str> = actions(&all)[4..].to_vec();
    assert_eq!(tail.iter().filter(|a| **a == "acknowledge_refused").count(), 8, "(3 self + 1 repeat) x 2 changes");
    assert_eq!(tail.iter().filter(|a| **a == "review_acknowledged").count(), 2);
    // An acknowledged review is final, even for the table owner.
    let c = t.db.pool.get().await.expect("conn");
    let e =
        c.run("UPDATE flag_reviews SET acknowledged_by = 'mallory'", &[]).await.expect_err("acknowledgement is final");
    assert!(e.to_string().contains("flag_reviews") || e.as_db_error().is_some(), "{e}");
}

#[tokio::test]
async fn an_unacknowledged_break_glass_review_past_24_hours_raises_the_overdue_alarm() {
    let t = Ctx::new().await;
    let (s, p) = t.call("POST", "/flags/break-glass", kill_switch_body("staging", "INC-43"), &ops("olga")).await;
    assert_eq!((s, p["status"].clone()), (201, json!("applied")), "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    let overdue_events =
        "SELECT count(*) FROM observability_events WHERE event_type = 'flags.review_overdue' AND severity = 'error'";

    // Within 24 h: quiet.
    let now = chrono::Utc::now();
    let r = t.svc.sweep_reviews(now).await.expect("sweep");
    assert_eq!((r.overdue, r.newly_overdue), (0, 0));
    // The sweep's clock 25 h later: overdue, audited once, an event per sweep.
    let later = now + chrono::TimeDelta::hours(25);
    let r = t.svc.sweep_reviews(later).await.expect("sweep");
    assert_eq!((r.overdue, r.newly_overdue), (1, 1));
    // Or the row itself aged (as a real day would): still overdue on the real clock.
    // (The table's guard refuses changing the deadline, so the test lifts it for the backdating,
    // as the schema owner: the functions' role cannot touch a trigger.)
    let owner = t.db.owner_pool();
    let c = owner.get().await.expect("owner conn");
    c.batch_execute("ALTER TABLE flag_reviews DISABLE TRIGGER flag_reviews_guard").await.expect("lift the guard");
    c.run(
        "UPDATE flag_reviews SET opened_at = now() - interval '26 hours', due_at = now() - interval '2 hours' \
         WHERE proposal_id = $1",
        &[&id.parse::<uuid::Uuid>().expect("uuid")],
    )
    .await
    .expect("backdate the review");
    c.batch_execute("ALTER TABLE flag_reviews ENABLE TRIGGER flag_reviews_guard").await.expect("restore the guard");
    let r = t.svc.sweep_reviews(chrono::Utc::now()).await.expect("sweep");
    assert_eq!((r.overdue, r.newly_overdue), (1, 0), "signalled on every sweep, audited once");
    assert_eq!(t.count(overdue_events, &[]).await, 2);
    let audit = t.audit_of(&id).await;
    assert_eq!(actions(&audit).iter().filter(|a| **a == "review_overdue").count(), 2, "one per change");
    assert!(audit.iter().filter(|r| r.0 == "review_overdue").all(|r| r.1 == "system"));
    let (_, reviews) = t.call("GET", "/flags/reviews", Value::Null, &ops("oscar")).await;
    assert_eq!(reviews["reviews"][0]["status"], "overdue");

    // What the metrics aggregator publishes from these rows: FlagReviewsOverdue > 0, the
    // metric and threshold of the alarm in infra/template.yaml.
    let rows: Vec<holdfast_shared::metrics::EventRow> = c
        .fetch(
            "SELECT id, created_at, source, event_type, context FROM observability_events \
             WHERE event_type = 'flags.review_overdue'",
            &[],
        )
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
    let start = holdfast_shared::metrics::window_start_of(rows[0].created_at, chrono::Duration::hours(1));
    let data = holdfast_shared::metrics::aggregate_window("staging", start, chrono::Duration::hours(2), &rows);
    let overdue = data.iter().find(|d| d.name == holdfast_shared::metrics::names::FLAG_REVIEWS_OVERDUE).expect("datum");
    assert_eq!(overdue.value, holdfast_shared::metrics::DatumValue::Sum(2.0));
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).expect("template");
    let alarm = template.split("FlagReviewOverdueAlarm:").nth(1).expect("the overdue alarm exists");
    let alarm = alarm.split("\n\n").next().unwrap_or_default();
    assert!(alarm.contains("MetricName: FlagReviewsOverdue") && alarm.contains("Threshold: 0"), "{alarm}");
    assert!(alarm.contains("ComparisonOperator: GreaterThanThreshold"), "{alarm}");

    // Acknowledged (late): the next sweep is quiet again, so the alarm clears.
    let (s, _) = t.call("POST", &format!("/flags/reviews/{id}/acknowledge"), Value::Null, &approver("amir")).await;
    assert_eq!(s, 200);
    let r = t.svc.sweep_reviews(later).await.expect("sweep");
    assert_eq!((r.overdue, r.newly_overdue), (0, 0));
    assert_eq!(t.count(overdue_events, &[]).await, 2);
}
