//! Holds API against real PostgreSQL (fresh database per test) and the emulator's SSM.

use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Ctx {
    db: TestDb,
    aws: TestAws,
    svc: Arc<HoldsService>,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

/// A future weekday evening inside the demo policy's service hours.
const START: &str = "2030-01-07T19:00:00Z";

/// Booking horizon of every policy these tests publish (the default 180 days would refuse the
/// fixed 2030 dates).
const TEST_MAX_DAYS_AHEAD: u32 = 3650;

impl Ctx {
    async fn new() -> Ctx {
        Self::with_pool(16).await
    }

    async fn with_pool(size: usize) -> Ctx {
        let db = TestDb::with_pool_size(size).await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        // Fixed dates in 2030 (START): a booking horizon that reaches them whatever today is.
        policy.booking_horizon.max_days_ahead = TEST_MAX_DAYS_AHEAD;
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Test Bistro", &policy).await.expect("publish");
        drop(c);
        let svc = Arc::new(Self::service(&db, &aws));
        Ctx { db, aws, svc, restaurant, policy }
    }

    fn prefix(aws: &TestAws) -> String {
        format!("/{}/dev", aws.prefix)
    }

    fn service(db: &TestDb, aws: &TestAws) -> HoldsService {
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let flags = Arc::new(FlagLoader::unrecorded(
            ssm,
            holdfast_shared::flags::Environment::Dev,
            Self::prefix(aws),
            Duration::from_secs(30),
        ));
        HoldsService::new(db.pool.clone(), flags)
    }

    async fn set_flag(&self, name: &str, value: &str) {
        let ssm = aws_sdk_ssm::Client::new(&self.aws.sdk);
        ssm.put_parameter()
            .name(holdfast_shared::flags::ssm_parameter_name(&Self::prefix(&self.aws), name))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("put flag");
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call_h(method, path, body, &[]).await
    }

    async fn call_h(&self, method: &str, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let req = api_request(method, path, &body, Some("tester"), headers);
        response_json(holds_api::api::handle(&self.svc, req).await)
    }

    async fn hold(&self, tables: Option<Vec<Value>>, start: &str, party: u16) -> (u16, Value) {
        let mut body = json!({ "restaurant_id": self.restaurant, "party_size": party, "start": start });
        if let Some(t) = tables {
            body["table_ids"] = json!(t);
        }
        self.call("POST", "/holds", body).await
    }

    fn table(&self, label: &str) -> Value {
        json!(self.policy.tables.iter().find(|t| t.label == label).expect("demo table").id)
    }

    async fn count(&self, sql: &str) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_one(sql, &[]).await.expect("count").get(0)
    }

    async fn events(&self, event_type: &str) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_one("SELECT count(*) FROM observability_events WHERE event_type = $1", &[&event_type])
            .await
            .expect("events")
            .get(0)
    }

    fn guest() -> Value {
        json!({ "guest": { "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000", "notes": "window seat, allergic to nuts" } })
    }
}

/// No two active exclusive claims on one table overlap (checked independently by SQL).
const OVERLAPS: &str = "SELECT count(*) FROM table_claims a JOIN table_claims b
    ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
    WHERE a.active AND b.active AND a.exclusive AND b.exclusive";

#[tokio::test]
async fn quote_chooses_tables_and_writes_only_an_event() {
    let t = Ctx::new().await;
    let (s, v) = t
        .call("POST", &format!("/restaurants/{}/quotes", t.restaurant), json!({"party_size": 2, "start": START}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!v["table_ids"].as_array().expect("tables").is_empty());
    assert_eq!(v["policy_hash"], json!(t.policy.content_hash()));
    assert_eq!(v["policy_version"], 1);
    assert!(v["selection_snapshot"].is_object());
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM table_claims").await, 0);
    assert_eq!(t.events("quote.completed").await, 1);
}

#[tokio::test]
async fn second_hold_on_taken_tables_is_a_409_with_alternatives() {
    let t = Ctx::new().await;
    let table = t.table("M1");
    let (s, first) = t.hold(Some(vec![table.clone()]), START, 2).await;
    assert_eq!(s, 201, "{first}");
    let (s, v) = t.hold(Some(vec![table.clone()]), "2030-01-07T19:30:00Z", 2).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "hold_conflict");
    let alts = v["error"]["alternatives"].as_array().expect("alternatives");
    assert!(!alts.is_empty(), "a conflict must offer alternatives");
    assert!(alts.iter().all(|a| a["table_ids"] != json!([table]) || a["start"] != json!("2030-01-07T19:30:00Z")));
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 1);
    assert_eq!(t.count(OVERLAPS).await, 0);
    assert_eq!(t.events("hold.conflict").await, 1);
}

#[tokio::test]
async fn a_merged_hold_is_all_or_nothing() {
    let t = Ctx::new().await;
    // Find two adjacent mergeable tables in the demo plan.
    let (a, b) = t
        .policy
        .tables
        .iter()
        .find_map(|x| x.adjacent.first().filter(|_| x.mergeable).map(|y| (x.id, *y)))
        .expect("demo plan has adjacent tables");
    let (s, _) = t.hold(Some(vec![json!(b)]), START, 1).await;
    assert_eq!(s, 201);
    let cap: u16 = t.policy.tables.iter().filter(|x| x.id == a || x.id == b).map(|x| x.capacity).sum();
    let (s, v) = t.hold(Some(vec![json!(a), json!(b)]), START, cap).await;
    assert_eq!(s, 409, "{v}");
    let on_a: i64 = {
        let c = t.db.pool.get().await.expect("conn");
        c.fetch_one("SELECT count(*) FROM table_claims WHERE table_id = $1", &[&a.as_uuid()]).await.expect("q").get(0)
    };
    assert_eq!(on_a, 0, "the free table of a refused merge must not stay claimed");
}

#[tokio::test]
async fn an_expired_hold_never_blocks_and_cannot_be_confirmed() {
    let t = Ctx::new().await;
    let table = t.table("M1");
    let (_, h) = t.hold(Some(vec![table.clone()]), START, 2).await;
    // Let time pass: the hold's deadline is now behind the database clock. No sweeper runs.
    let c = t.db.pool.get().await.expect("conn");
    c.run("UPDATE holds SET expires_at = now() - interval '1 second'", &[]).await.expect("age hold");
    c.run("UPDATE table_claims SET expires_at = now() - interval '1 second'", &[]).await.expect("age claim");
    drop(c);
    let (s, v) = t.hold(Some(vec![table]), START, 2).await;
    assert_eq!(s, 201, "an expired hold blocked a new one: {v}");
    let (s, v) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!((s, v["error"]["code"].clone()), (410, json!("hold_expired")));
    let (s, v) = t.call("GET", &format!("/holds/{}", h["hold_id"].as_str().expect("id")), Value::Null).await;
    assert_eq!((s, v["state"].clone()), (200, json!("expired")));
    assert_eq!(t.count(OVERLAPS).await, 0);
}

#[tokio::test]
async fn confirm_books_atomically_writes_the_outbox_and_blocks_others() {
    let t = Ctx::new().await;
    let table = t.table("M2");
    let (_, h) = t.hold(Some(vec![table.clone()]), START, 2).await;
    let id = h["hold_id"].as_str().expect("id").to_string();
    let (s, v) = t.call("POST", &format!("/holds/{id}/confirm"), Ctx::guest()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "confirmed");
    let booking = v["booking_id"].as_str().expect("booking").to_string();
    assert_eq!(t.count("SELECT count(*) FROM bookings WHERE status = 'confirmed'").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM table_claims WHERE active AND kind = 'booking'").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM table_claims WHERE active AND kind = 'hold'").await, 0);
    let c = t.db.pool.get().await.expect("conn");
    let payload: Value = c
        .fetch_one("SELECT payload FROM email_outbox WHERE email_type = 'booking_confirmed'", &[])
        .await
        .expect("outbox row")
        .get(0);
    assert_eq!(payload["booking_id"], json!(booking));
    assert!(!payload.to_string().contains("ada@example.com"), "no PII in the job");
    drop(c);

    // Confirming again: not live. A hold against the booking: conflict.
    let (s, v) = t.call("POST", &format!("/holds/{id}/confirm"), Ctx::guest()).await;
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("hold_not_live")));
    let (s, _) = t.hold(Some(vec![table]), "2030-01-07T20:00:00Z", 2).await;
    assert_eq!(s, 409);
    assert_eq!(t.count(OVERLAPS).await, 0);
}

/// Quotes and the alternatives of a 409 see confirmed bookings, not only live holds: a booked
/// table is never quoted or offered for an overlapping time.
#[tokio::test]
async fn quotes_and_alternatives_never_offer_a_booked_table() {
    let t = Ctx::new().await;
    let m1 = t.table("M1");
    let (s, h) = t.hold(Some(vec![m1.clone()]), START, 2).await;
    assert_eq!(s, 201, "{h}");
    let (s, b) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.count("SELECT count(*) FROM table_claims WHERE active AND kind = 'hold'").await, 0);

    let quote = json!({ "party_size": 2, "start": START });
    let (s, q) = t.call("POST", &format!("/restaurants/{}/quotes", t.restaurant), quote).await;
    assert_eq!(s, 200, "{q}");
    assert!(!q["table_ids"].as_array().expect("tables").contains(&m1), "booked M1 quoted: {q}");
    assert_eq!(q["selection_snapshot"]["busy_tables_count"], 1, "{q}");

    let (s, c) = t.hold(Some(vec![m1.clone()]), START, 2).await;
    assert_eq!(s, 409, "{c}");
    let alternatives = c["error"]["alternatives"].as_array().expect("alternatives");
    assert!(!alternatives.is_empty(), "{c}");
    for alt in alternatives {
        if alt["start"] == json!(START) {
            assert!(!alt["table_ids"].as_array().expect("ids").contains(&m1), "booked M1 offered: {alt}");
        }
    }
    // The first alternative is really free: holding it succeeds.
    let first = &alternatives[0];
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": first["start"], "table_ids": first["table_ids"] });
    let (s, won) = t.call("POST", "/holds", body).await;
    assert_eq!(s, 201, "{won}");
}

#[tokio::test]
async fn release_frees_tables_and_is_idempotent() {
    let t = Ctx::new().await;
    let table = t.table("M1");
    let (_, h) = t.hold(Some(vec![table.clone()]), START, 2).await;
    let id = h["hold_id"].as_str().expect("id").to_string();
    for _ in 0..2 {
        let (s, v) = t.call("DELETE", &format!("/holds/{id}"), Value::Null).await;
        assert_eq!((s, v["state"].clone()), (200, json!("released")));
    }
    let (s, _) = t.hold(Some(vec![table]), START, 2).await;
    assert_eq!(s, 201);
    assert_eq!(t.events("hold.released").await, 2);
}

#[tokio::test]
async fn policy_drift_requotes_and_confirms_once_and_notifies_ops_once() {
    let t = Ctx::new().await;
    let (_, h1) = t.hold(None, START, 2).await;
    let (_, h2) = t.hold(None, "2030-01-07T12:00:00Z", 2).await;
    let mut v2 = BookingPolicy::demo(2);
    v2.booking_horizon.max_days_ahead = TEST_MAX_DAYS_AHEAD;
    v2.buffer_minutes += 15; // any field changes the hash
    let c = t.db.pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, t.restaurant, "Test Bistro", &v2).await.expect("publish v2");
    drop(c);

    let (s, v) = t.call("POST", &format!("/holds/{}/confirm", h1["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policy_drift"]["recovered"], true);
    assert_eq!(v["replaced_hold_id"], h1["hold_id"]);
    assert_eq!(v["policy_version"], 2);
    let (s, _) = t.call("POST", &format!("/holds/{}/confirm", h2["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 200);

    assert_eq!(t.events("policy.drift.recovered").await, 2);
    assert_eq!(
        t.count("SELECT count(*) FROM email_outbox WHERE email_type = 'ops_policy_drift'").await,
        1,
        "once per policy version"
    );
    assert_eq!(t.count("SELECT count(*) FROM holds WHERE status = 'released' AND replaced_by IS NOT NULL").await, 2);
    assert_eq!(
        t.count("SELECT count(*) FROM table_claims WHERE active AND kind = 'hold'").await,
        0,
        "no hold left behind"
    );
    assert_eq!(t.count(OVERLAPS).await, 0);

    // A retry of the first confirm (its answer lost, no Idempotency-Key) finds the guest's hold
    // replaced by the recovery: it answers with the booking that recovery made.
    let (s, again) =
        t.call("POST", &format!("/holds/{}/confirm", h1["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!((s, again["error"]["code"].as_str()), (409, Some("hold_not_live")), "{again}");
    assert_eq!(again["error"]["booking_id"], v["booking_id"], "follows replaced_by to the booking");
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 2, "no second booking");
}

#[tokio::test]
async fn drift_with_nothing_left_is_a_409_and_keeps_the_hold() {
    let t = Ctx::new().await;
    let (_, h) = t.hold(None, START, 2).await;
    let mut v2 = BookingPolicy::demo(2);
    v2.booking_horizon.max_days_ahead = TEST_MAX_DAYS_AHEAD;
    v2.service_hours.clear(); // closed: nothing can be re-quoted
    let c = t.db.pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, t.restaurant, "Test Bistro", &v2).await.expect("publish v2");
    drop(c);
    let (s, v) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "policy_drift_no_table");
    assert!(v["error"]["alternatives"].is_array());
    assert_eq!(t.events("policy.drift.failed").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 0);
    assert_eq!(
        t.count("SELECT count(*) FROM email_outbox WHERE email_type = 'ops_policy_drift'").await,
        1,
        "a failed recovery notifies ops too"
    );
    let (_, g) = t.call("GET", &format!("/holds/{}", h["hold_id"].as_str().expect("id")), Value::Null).await;
    assert_eq!(g["state"], "live", "a failed recovery must not lose the guest's hold");
}

#[tokio::test]
async fn a_hold_with_incomplete_metadata_is_refused_at_confirm() {
    let t = Ctx::new().await;
    let (_, h) = t.hold(None, START, 2).await;
    let c = t.db.pool.get().await.expect("conn");
    // A legacy hold, written before metadata was required.
    c.run("UPDATE holds SET policy_hash = NULL, selection_snapshot = NULL", &[]).await.expect("legacy");
    drop(c);
    let (s, v) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "metadata_incomplete");
    let missing: Vec<String> = serde_json::from_value(v["error"]["missing"].clone()).expect("list");
    assert!(
        missing.contains(&"policy_hash".to_string()) && missing.contains(&"selection_snapshot".to_string()),
        "{missing:?}"
    );
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM email_outbox").await, 0);
    assert_eq!(t.events("hold.metadata.rejected").await, 1);
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_writes_nothing() {
    let t = Ctx::new().await;
    let r = t.restaurant;
    let quote = format!("/restaurants/{r}/quotes");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", "/holds".into(), "{not json".into(), 400, ""),
        ("POST", "/holds".into(), json!({"restaurant_id": r, "start": START}).to_string(), 422, "party_size"),
        (
            "POST",
            "/holds".into(),
            json!({"restaurant_id": r, "party_size": 2, "start": START, "guest_name": "Ada"}).to_string(),
            422,
            "guest_name",
        ),
        (
            "POST",
            "/holds".into(),
            json!({"restaurant_id": r, "party_size": 0, "start": START}).to_string(),
            422,
            "party_size",
        ),
        (
            "POST",
            "/holds".into(),
            json!({"restaurant_id": r, "party_size": 2, "start": "tomorrow"}).to_string(),
            422,
            "start",
        ),
        (
            "POST",
            "/holds".into(),
            json!({"restaurant_id": "nope", "party_size": 2, "start": START}).to_string(),
            422,
            "restaurant_id",
        ),
        (
            "POST",
            "/holds".into(),
            json!({"restaurant_id": r, "party_size": 2, "start": START, "table_ids": []}).to_string(),
            422,
            "table_ids",
        ),
        ("POST", quote.clone(), json!({"party_size": 45, "start": START}).to_string(), 422, ""),
        ("POST", quote.clone(), json!({"party_size": 2, "start": "2030-01-07T04:00:00Z"}).to_string(), 422, ""),
        (
            "POST",
            format!("/restaurants/{}/quotes", RestaurantId::new_random()),
            json!({"party_size": 2, "start": START}).to_string(),
            404,
            "",
        ),
        ("GET", format!("/holds/{}", uuid::Uuid::new_v4()), String::new(), 404, ""),
        ("GET", "/holds/not-a-uuid".into(), String::new(), 400, "hold_id"),
        ("POST", "/holds".into(), format!("{{\"pad\":\"{}\"}}", "x".repeat(20_000)), 413, ""),
        (
            "POST",
            format!("/holds/{}/confirm", uuid::Uuid::new_v4()),
            json!({"guest": {"name": "A", "email": "not-an-email"}}).to_string(),
            422,
            "guest.email",
        ),
        ("PUT", "/holds".into(), String::new(), 405, ""),
    ];
    for (method, path, body, status, field) in cases {
        let req = api_request(method, &path, &body, Some("tester"), &[]);
        let (s, v) = response_json(holds_api::api::handle(&t.svc, req).await);
        assert_eq!(s, status, "{method} {path} {body:.80} → {v}");
        assert!(v["error"]["code"].is_string(), "JSON error body expected: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{v}");
        }
    }
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM table_claims").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 0);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let t = Ctx::new().await;
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START });
    let (s1, v1) = t.call_h("POST", "/holds", body.clone(), &[("Idempotency-Key", "abc-1")]).await;
    let (s2, v2) = t.call_h("POST", "/holds", body.clone(), &[("Idempotency-Key", "abc-1")]).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1, v2);
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 1);
    let mut other = body.clone();
    other["party_size"] = json!(3);
    let (s, v) = t.call_h("POST", "/holds", other, &[("Idempotency-Key", "abc-1")]).await;
    assert_eq!((s, v["error"]["code"].clone()), (422, json!("idempotency_key_reused")));

    let path = format!("/holds/{}/confirm", v1["hold_id"].as_str().expect("id"));
    let (c1, b1) = t.call_h("POST", &path, Ctx::guest(), &[("Idempotency-Key", "conf-1")]).await;
    let (c2, b2) = t.call_h("POST", &path, Ctx::guest(), &[("Idempotency-Key", "conf-1")]).await;
    assert_eq!((c1, c2), (200, 200));
    assert_eq!(b1["booking_id"], b2["booking_id"]);
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 1);
}

/// A client that times out and retries while its first request is still running gets the
/// first response, not a conflict with itself: duplicates that queue behind the first one's
/// locks replay its stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_idempotency_key_get_the_first_response() {
    let t = Ctx::new().await;
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START, "table_ids": [t.table("M1")] })
        .to_string();
    let concurrently = |method: &'static str, path: String, body: String, key: &'static str| {
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (svc, path, body) = (t.svc.clone(), path.clone(), body.clone());
                tokio::spawn(async move {
                    let req = api_request(method, &path, &body, Some("tester"), &[("Idempotency-Key", key)]);
                    response_json(holds_api::api::handle(&svc, req).await)
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.expect("task"));
            }
            out
        }
    };
    let holds = concurrently("POST", "/holds".into(), body, "retry-hold").await;
    let first = &holds[0].1;
    for (s, v) in &holds {
        assert_eq!(*s, 201, "{v}");
        assert_eq!(v["hold_id"], first["hold_id"], "{v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 1);

    let path = format!("/holds/{}/confirm", first["hold_id"].as_str().expect("id"));
    let confirms = concurrently("POST", path, Ctx::guest().to_string(), "retry-confirm").await;
    let booking = &confirms[0].1["booking_id"];
    assert!(booking.is_string(), "{:?}", confirms[0]);
    for (s, v) in &confirms {
        assert_eq!((*s, &v["booking_id"]), (200, booking), "{v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 1);
    // One confirmation, and one reminder (issue 13), however many retries.
    assert_eq!(t.count("SELECT count(*) FROM email_outbox WHERE email_type = 'booking_confirmed'").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM email_outbox WHERE email_type = 'reminder'").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM email_outbox").await, 2);
}

#[tokio::test]
async fn database_outage_is_a_503_with_retry_after() {
    let aws = TestAws::new().await;
    // Nothing listens on port 9: the database is "gone".
    let pool = holdfast_adapters::db::pool_from_url("postgres://holdfast@127.0.0.1:9/none", 2).expect("pool");
    let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
    let flags = Arc::new(FlagLoader::unrecorded(
        ssm,
        holdfast_shared::flags::Environment::Dev,
        format!("/{}/dev", aws.prefix),
        Duration::from_secs(30),
    ));
    let svc = HoldsService::new(pool, flags);
    let body = json!({ "restaurant_id": RestaurantId::new_random(), "party_size": 2, "start": START }).to_string();
    let resp = holds_api::api::handle(&svc, api_request("POST", "/holds", &body, Some("t"), &[])).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let (_, v) = response_json(resp);
    assert_eq!(v["error"]["code"], "database_unavailable");
}

#[tokio::test]
async fn hold_writes_are_refused_when_the_constraint_is_missing() {
    let t = Ctx::new().await;
    let owner = t.db.owner_pool(); // DDL: only the schema owner can lose the constraint
    let c = owner.get().await.expect("conn");
    c.batch_execute("ALTER TABLE table_claims DROP CONSTRAINT table_claims_no_overlap").await.expect("drop");
    drop(c);
    let svc = Ctx::service(&t.db, &t.aws); // a fresh container: cold-start check
    assert!(!svc.verify_enforcement().await.expect("db up"));
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START }).to_string();
    let (s, v) =
        response_json(holds_api::api::handle(&svc, api_request("POST", "/holds", &body, Some("t"), &[])).await);
    assert_eq!((s, v["error"]["code"].clone()), (503, json!("strict_constraint_missing")));
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 0);
    assert_eq!(t.events("strict.verify.failed").await, 1);
}

#[tokio::test]
async fn shadow_mode_holds_are_advisory_but_bookings_stay_exclusive() {
    let t = Ctx::new().await;
    t.set_flag("holds.strictConflicts.rolloutPercent", "0").await; // not yet rolled out
    let table = t.table("M1");
    let (s1, h1) = t.hold(Some(vec![table.clone()]), START, 2).await;
    let (s2, h2) = t.hold(Some(vec![table.clone()]), START, 2).await;
    assert_eq!((s1, s2), (201, 201), "{h1} {h2}");
    assert_eq!(h1["strict_mode"], "shadow");
    assert_eq!(t.events("hold.conflict.shadow").await, 1, "the would-be conflict is recorded");
    let (a, _) = t.call("POST", &format!("/holds/{}/confirm", h1["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    let (b, v) = t.call("POST", &format!("/holds/{}/confirm", h2["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!((a, b), (200, 409), "{v}");
    assert_eq!(t.count(OVERLAPS).await, 0);
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 1);
}

#[tokio::test]
async fn no_guest_pii_reaches_events() {
    let t = Ctx::new().await;
    let (_, h) = t.hold(None, START, 2).await;
    let (s, _) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 200);
    let c = t.db.pool.get().await.expect("conn");
    let rows = c.fetch("SELECT context::text FROM observability_events", &[]).await.expect("events");
    assert!(rows.len() >= 2);
    for r in rows {
        let text: String = r.get(0);
        for pii in ["Ada", "Lovelace", "ada@example.com", "7946", "nuts"] {
            assert!(!text.contains(pii), "PII {pii:?} leaked into an event: {text}");
        }
    }
}

/// 1000 concurrent hold requests for overlapping windows on a small floor plan: zero
/// double bookings (checked by SQL), zero 5xx, and every loser a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_holds_never_double_book() {
    let t = Ctx::with_pool(24).await;
    let labels: Vec<Value> = t.policy.tables.iter().take(4).map(|x| json!(x.id)).collect();
    let starts = ["2030-01-07T19:00:00Z", "2030-01-07T19:30:00Z", "2030-01-07T20:00:00Z", "2030-01-07T18:30:00Z"];
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        let svc = t.svc.clone();
        let body = json!({
            "restaurant_id": t.restaurant,
            "party_size": 2,
            "start": starts[i % starts.len()],
            "table_ids": [labels[(i / 4) % labels.len()]],
        })
        .to_string();
        // A reservation drop: a thousand different guests (one guest may only hold a few).
        let guest = format!("guest-{i}");
        tasks.push(tokio::spawn(async move {
            let req = api_request("POST", "/holds", &body, Some(&guest), &[]);
            response_json(holds_api::api::handle(&svc, req).await)
        }));
    }
    let mut won = 0;
    let mut lost = 0;
    for task in tasks {
        let (s, v) = task.await.expect("task");
        match s {
            201 => won += 1,
            409 => {
                assert_eq!(v["error"]["code"], "hold_conflict", "{v}");
                lost += 1;
            }
            other => panic!("unexpected status {other}: {v}"),
        }
    }
    assert_eq!(won + lost, 1000);
    assert!(won >= 4, "each table can be held at least once");
    assert_eq!(t.count(OVERLAPS).await, 0, "double booking!");
    assert_eq!(t.count("SELECT count(*) FROM holds").await, won as i64);
}

#[tokio::test]
async fn backfill_repairs_legacy_holds_so_they_can_be_confirmed() {
    let t = Ctx::new().await;
    let (_, h) = t.hold(None, START, 2).await;
    let c = t.db.pool.get().await.expect("conn");
    c.run(
        "UPDATE holds SET policy_hash = NULL, policy_version = NULL, selection_snapshot = NULL, table_ids = '{}'",
        &[],
    )
    .await
    .expect("legacy");
    let dry = holds_api::backfill::backfill_hold_metadata(&c, true).await.expect("dry run");
    assert_eq!((dry.candidates, dry.repaired, dry.unrepairable), (1, 1, 0));
    assert_eq!(t.count("SELECT count(*) FROM holds WHERE policy_hash IS NULL").await, 1, "dry run writes nothing");
    let real = holds_api::backfill::backfill_hold_metadata(&c, false).await.expect("backfill");
    assert_eq!(real.repaired, 1);
    let again = holds_api::backfill::backfill_hold_metadata(&c, false).await.expect("idempotent");
    assert_eq!(again.candidates, 0);
    drop(c);
    let (s, v) = t.call("POST", &format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id")), Ctx::guest()).await;
    assert_eq!(s, 200, "{v}");
}
