//! Flag approver against real PostgreSQL (fresh database per test) and the emulator's SSM
//! (a unique SSM root per test, so environments never collide between tests).

use flag_approver::ssm::SsmFlags;
use flag_approver::FlagApprover;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::{FlagLoader, FlagOrigin};
use holdfast_shared::events::Source;
use holdfast_shared::flags::{names, ssm_parameter_name, Environment};
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
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
        FlagLoader::new(client, env, self.prefix(env), ttl)
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
        response_json(flag_approver::api::handle(svc, api_request(method, path, &body, sub, &[])).await)
    }

    async fn call(&self, method: &str, path: &str, body: Value, sub: &str) -> (u16, Value) {
        Self::call_with(&self.svc, method, path, body, Some(sub)).await
    }

    async fn get_query(&self, path: &str, query: &str, sub: &str) -> (u16, Value) {
        let ev = holdfast_adapters::http::apigw_v2_event("GET", path, query, &[], "", Some(sub));
        let req = lambda_http::request::from_str(&ev.to_string()).expect("valid event");
        response_json(flag_approver::api::handle(&self.svc, req).await)
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

    async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.query_one(sql, params).await.expect("count").get(0)
    }

    /// Audit actions of one proposal, oldest first, as (action, actor, detail).
    async fn audit_of(&self, id: &str) -> Vec<(String, String, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        let id: uuid::Uuid = id.parse().expect("uuid");
        c.query("SELECT action, actor, detail FROM flag_audit WHERE proposal_id = $1 ORDER BY id", &[&id])
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

#[tokio::test]
async fn propose_approve_apply_round_trip_is_visible_to_the_loader() {
    let t = Ctx::new().await;
    let env = Environment::Staging;
    let loader = t.loader(t.ssm(), env, Duration::from_secs(3600));
    let first = loader.get().await;
    assert_eq!((first.origin, first.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 180), "default before any change");

    let (s, p) = t.propose("alice@example.com", names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["proposer"], "alice@example.com");
    assert_eq!((p["before"].clone(), p["after"].clone()), (Value::Null, json!("300")));
    assert_eq!((p["approvals_required"].clone(), p["approvals_missing"].clone()), (json!(1), json!(1)));
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, None, "nothing written before approval");

    let (s, got) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, "carol").await;
    assert_eq!((s, got["status"].clone()), (200, json!("pending")));

    let body = json!({ "reason": "looks right" });
    let (s, p) = t.call("POST", &format!("/flags/proposals/{id}/approve"), body, "bob@example.com").await;
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
        .query(
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
    let (s, a) = t.get_query("/flags/audit", "flag=holds.ttlSeconds&environment=staging&limit=10", "carol").await;
    assert_eq!(s, 200, "{a}");
    let listed: Vec<&str> =
        a["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(listed, ["applied", "approved", "proposed"]);
    let (_, none) = t.get_query("/flags/audit", "flag=holds.ttlSeconds&environment=prod", "carol").await;
    assert_eq!(none["entries"], json!([]));
    let (s, bad) = t.get_query("/flags/audit", "environment=production", "carol").await;
    assert_eq!((s, bad["error"]["field"].clone()), (422, json!("environment")));
}

#[tokio::test]
async fn critical_flag_in_prod_needs_two_other_people() {
    let t = Ctx::new().await;
    let env = Environment::Prod;
    let id = t.propose_ok("alice", names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, env, json!(50)).await;
    let (s, p) = t.approve("bob", &id).await;
    assert_eq!((s, p["status"].clone(), p["approvals_missing"].clone()), (200, json!("pending"), json!(1)));
    assert_eq!(t.ssm_value(env, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT).await, None);
    let (s, e) = t.approve("BOB", &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("duplicate_approval")));
    let (s, p) = t.approve("carol", &id).await;
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
    let id = t.propose_ok("alice@example.com", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    for who in ["alice@example.com", "Alice@Example.com"] {
        let (s, e) = t.approve(who, &id).await;
        assert_eq!((s, e["error"]["code"].clone()), (403, json!("self_approval")), "{who}");
    }
    let (_, p) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, "bob").await;
    assert_eq!((p["status"].clone(), p["approvals"].clone()), (json!("pending"), json!([])));
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
    let audit = t.audit_of(&id).await;
    assert_eq!(actions(&audit), ["proposed", "approve_refused", "approve_refused"]);
    assert_eq!(audit[1].2.as_deref(), Some("self_approval"));
}

#[tokio::test]
async fn a_body_claiming_another_actor_is_refused_and_identity_comes_from_the_authorizer() {
    let t = Ctx::new().await;
    // Propose claiming to be someone else: refused as an unknown field, nothing stored.
    for field in ["proposer", "actor", "user"] {
        let mut body = json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "x" });
        body[field] = json!("bob");
        let (s, e) = t.call("POST", "/flags/proposals", body, "alice").await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!(field)), "{e}");
    }
    assert_eq!(t.count("SELECT count(*) FROM flag_proposals", &[]).await, 0);

    // The proposer cannot approve by claiming to be another approver in the body.
    let id = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    for field in ["approver", "actor", "sub"] {
        let mut body = json!({ "reason": "ok" });
        body[field] = json!("bob");
        let (s, e) = t.call("POST", &format!("/flags/proposals/{id}/approve"), body, "alice").await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!(field)), "{e}");
    }
    // No identity from the authorizer: 401, whatever the body says.
    let (s, e) = Ctx::call_with(&t.svc, "POST", &format!("/flags/proposals/{id}/approve"), Value::Null, None).await;
    assert_eq!((s, e["error"]["code"].clone()), (401, json!("unauthenticated")));
    let (_, p) = t.call("GET", &format!("/flags/proposals/{id}"), Value::Null, "carol").await;
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
    let (s, e) = t.propose("alice", names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Dev, json!(false)).await;
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["rule_ids"].clone()),
        (422, json!("contradiction"), json!(["FR001"]))
    );
    // FR004 only in prod.
    let (s, e) = t.propose("alice", names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, Environment::Prod, json!(0)).await;
    assert_eq!((s, e["error"]["rule_ids"].clone()), (422, json!(["FR004"])));
    t.propose_ok("alice", names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, Environment::Staging, json!(0)).await;
    // Validation reads the target environment's set from SSM: with merges off in staging
    // (an applied change), dropping adjacency there is fine, while dev still refuses it.
    t.set_ssm(Environment::Staging, names::ALLOCATOR_MERGES_ENABLED, "false").await;
    t.propose_ok("alice", names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Staging, json!(false)).await;
    let (s, _) = t.propose("alice", names::ALLOCATOR_REQUIRE_ADJACENCY, Environment::Dev, json!(false)).await;
    assert_eq!(s, 422);
    // Type and range.
    let (s, e) = t.propose("alice", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(5)).await;
    assert_eq!(
        (s, e["error"]["code"].clone(), e["error"]["field"].clone()),
        (422, json!("invalid_value"), json!("value"))
    );
    let (s, e) = t.propose("alice", "holds.noSuchFlag", Environment::Dev, json!(true)).await;
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
    let first = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    let second = t.propose_ok("carol", names::HOLDS_TTL_SECONDS, env, json!(240)).await;
    let (_, p) = t.approve("bob", &first).await;
    assert_eq!(p["status"], "applied");
    // The second was judged against 180; the flag is now 300: refused at apply.
    let (s, p) = t.approve("bob", &second).await;
    assert_eq!(
        (s, p["status"].clone(), p["last_error"].clone()),
        (200, json!("approved"), json!("stale_proposal")),
        "{p}"
    );
    let (s, e) = t.call("POST", &format!("/flags/proposals/{second}/apply"), Value::Null, "bob").await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("stale_proposal")));
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 1)));
    assert_eq!(actions(&t.audit_of(&second).await), ["proposed", "approved", "apply_refused", "apply_refused"]);
}

#[tokio::test]
async fn concurrent_approvals_and_applies_write_ssm_once() {
    let t = Ctx::new().await;
    let env = Environment::Dev;
    let id = t.propose_ok("alice", names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES, env, json!(10)).await;
    let path = format!("/flags/proposals/{id}/approve");
    let apply = format!("/flags/proposals/{id}/apply");
    let (a, b, c, d) = tokio::join!(
        t.call("POST", &path, Value::Null, "bob"),
        t.call("POST", &path, Value::Null, "carol"),
        t.call("POST", &apply, Value::Null, "dave"),
        t.call("POST", &apply, Value::Null, "erin"),
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
    let id = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    let c = t.db.pool.get().await.expect("conn");
    let attempts = [
        "UPDATE flag_audit SET actor = 'mallory'",
        "DELETE FROM flag_audit",
        "TRUNCATE flag_audit",
        "UPDATE flag_audit SET reason = 'x' WHERE false",
    ];
    // Layer 1: the privileges are revoked, even from the owner that ran the migration.
    for sql in attempts {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
    }
    // Layer 2: the owner can grant itself the privileges back; the trigger still refuses.
    c.batch_execute("GRANT UPDATE, DELETE, TRUNCATE ON flag_audit TO CURRENT_USER").await.expect("grant");
    for sql in attempts {
        let e = c.batch_execute(sql).await.expect_err(sql);
        let db = e.as_db_error().expect("server error");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::RAISE_EXCEPTION, "{sql}");
        assert!(db.message().contains("append-only"), "{sql}: {}", db.message());
    }
    // Appending still works, and the original rows are intact.
    let audit = t.audit_of(&id).await;
    assert_eq!(audit, vec![("proposed".to_string(), "alice".to_string(), None)]);
    c.execute(
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

    let id = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, env, json!(300)).await;
    let (_, p) = t.approve("bob", &id).await;
    assert_eq!(p["status"], "applied");
    let snap = loader.get().await;
    assert_eq!((snap.origin, snap.set.hold_ttl_seconds()), (FlagOrigin::Ssm, 300));
    let (s, pending) = Ctx::call_with(
        &svc,
        "POST",
        "/flags/proposals",
        json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "dev", "value": 240, "reason": "shorter holds" }),
        Some("alice"),
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
    let (s, p) = Ctx::call_with(&svc, "POST", &format!("{path}/approve"), Value::Null, Some("bob")).await;
    assert_eq!(
        (s, p["status"].clone(), p["last_error"].clone()),
        (200, json!("apply_failed"), json!("ssm_unavailable")),
        "{p}"
    );
    let resp =
        flag_approver::api::handle(&svc, api_request("POST", &format!("{path}/apply"), "", Some("carol"), &[])).await;
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
        Some("alice"),
    )
    .await;
    assert_eq!(s, 503);
    assert_eq!(t.ssm_value(env, names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 1)));

    // SSM is back: the same approved change is applied by a later apply call.
    outage.set_up(true);
    let (s, p) = Ctx::call_with(&svc, "POST", &format!("{path}/apply"), Value::Null, Some("carol")).await;
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
    let loader =
        t.loader(t.ssm(), env, Duration::ZERO).with_recorder(EventRecorder::new(t.db.pool.clone()), Source::HoldsApi);
    let snap = loader.get().await;
    assert_eq!(snap.violations.iter().map(|v| v.rule_id).collect::<Vec<_>>(), ["FR001"]);
    assert!(!snap.set.require_adjacency(), "served as read: the loader reports, it does not rewrite");
    loader.get().await; // same violations: not recorded again
    let sql = "SELECT count(*) FROM observability_events WHERE event_type = 'flags.contradiction' \
               AND source = 'holds-api' AND context->>'error_code' = 'fr001'";
    assert_eq!(t.count(sql, &[]).await, 1);
    // Fixed through the approver (a change that removes a violation is allowed).
    let id = t.propose_ok("alice", names::ALLOCATOR_REQUIRE_ADJACENCY, env, json!(true)).await;
    t.approve("bob", &id).await;
    let (_, p) = t.approve("carol", &id).await; // critical in prod: two approvers
    assert_eq!(p["status"], "applied", "{p}");
    assert!(loader.get().await.violations.is_empty());
}

#[tokio::test]
async fn matrix_shows_effective_values_defaults_sources_and_violations() {
    let t = Ctx::new().await;
    t.set_ssm(Environment::Staging, names::HOLDS_TTL_SECONDS, "240").await;
    t.set_ssm(Environment::Dev, names::HOLDS_TTL_SECONDS, "not-a-number").await;
    t.set_ssm(Environment::Prod, names::ALLOCATOR_REQUIRE_ADJACENCY, "false").await;
    let (s, m) = t.call("GET", "/flags/matrix", Value::Null, "carol").await;
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
    let id = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(240)).await;
    let (s, e) = t.call("POST", &format!("/flags/proposals/{id}/reject"), json!({}), "carol").await;
    assert_eq!((s, e["error"]["field"].clone()), (422, json!("reason")));
    let (s, p) =
        t.call("POST", &format!("/flags/proposals/{id}/reject"), json!({ "reason": "not now" }), "carol").await;
    assert_eq!((s, p["status"].clone(), p["rejected_by"].clone()), (200, json!("rejected"), json!("carol")));
    let (s, e) = t.approve("bob", &id).await;
    assert_eq!((s, e["error"]["code"].clone()), (409, json!("not_pending")));

    // A proposal past its deadline cannot be approved; the expiry is persisted and audited.
    let old = t.propose_ok("alice", names::HOLDS_TTL_SECONDS, Environment::Dev, json!(300)).await;
    let c = t.db.pool.get().await.expect("conn");
    c.execute(
        "UPDATE flag_proposals SET created_at = now() - interval '2 days', expires_at = now() - interval '1 day' \
         WHERE id = $1",
        &[&old.parse::<uuid::Uuid>().expect("uuid")],
    )
    .await
    .expect("age the proposal");
    let (s, e) = t.approve("bob", &old).await;
    assert_eq!((s, e["error"]["code"].clone()), (410, json!("expired")));
    let (_, p) = t.call("GET", &format!("/flags/proposals/{old}"), Value::Null, "bob").await;
    assert_eq!(p["status"], "expired");
    assert_eq!(actions(&t.audit_of(&old).await), ["proposed", "expired"]);
    assert_eq!(t.ssm_value(Environment::Dev, names::HOLDS_TTL_SECONDS).await, None);
    let (s, _) = t.call("GET", &format!("/flags/proposals/{}", uuid::Uuid::new_v4()), Value::Null, "bob").await;
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
        let resp = flag_approver::api::handle(&svc, api_request(method, &path, &body, Some("alice"), &[])).await;
        assert_eq!(resp.status().as_u16(), 503, "{method} {path}");
        assert!(resp.headers().get("retry-after").is_some());
        let (_, v) = response_json(resp);
        assert_eq!(v["error"]["code"], "database_unavailable");
    }
}
