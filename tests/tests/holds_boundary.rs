//! Who may act on a hold, and how much one guest may do (issue 12), against real PostgreSQL
//! through the holds API's real handler and API Gateway v2 request shapes.

use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::{BookingPolicy, GuestLimits};
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

struct Ctx {
    db: TestDb,
    _aws: TestAws,
    svc: HoldsService,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

const DAY: &str = "2030-01-07";

impl Ctx {
    async fn new(limits: GuestLimits) -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        policy.guest_limits = limits;
        // Fixed dates in 2030 (DAY): a booking horizon that reaches them whatever today is.
        policy.booking_horizon.max_days_ahead = 3650;
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Test Bistro", &policy).await.expect("publish");
        drop(c);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let prefix = format!("/{}/dev", aws.prefix);
        let flags =
            FlagLoader::unrecorded(ssm, holdfast_shared::flags::Environment::Dev, prefix, Duration::from_secs(30));
        let svc = HoldsService::new(db.pool.clone(), Arc::new(flags));
        Ctx { db, _aws: aws, svc, restaurant, policy }
    }

    async fn call(
        &self,
        who: Option<&str>,
        method: &str,
        path: &str,
        body: &Value,
        h: &[(&str, &str)],
    ) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        response_json(holds_api::api::handle(&self.svc, api_request(method, path, &body, who, h)).await)
    }

    fn hold_body(&self, table: usize, time: &str) -> Value {
        json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": format!("{DAY}T{time}:00Z"),
                "table_ids": [self.policy.tables[table].id] })
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.pool.get().await.expect("conn").fetch_one(sql, &[]).await.expect("count").get(0)
    }

    fn staff_of(&self, r: RestaurantId, name: &str) -> String {
        format!("{name};groups=restaurant:{}:staff", r.as_uuid())
    }
}

fn guest(name: &str, notes: &str) -> Value {
    json!({ "guest": { "name": name, "email": "ada@example.com", "notes": notes } })
}

#[tokio::test]
async fn someone_elses_hold_is_not_found_on_every_route_including_replays() {
    let t = Ctx::new(GuestLimits::DEFAULT).await;
    let key = [("Idempotency-Key", "alice-1")];
    let (s, h) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(0, "19:00"), &key).await;
    assert_eq!(s, 201, "{h}");
    let id = h["hold_id"].as_str().expect("id").to_string();
    let (hold, confirm) = (format!("/holds/{id}"), format!("/holds/{id}/confirm"));

    let here = t.staff_of(t.restaurant, "sam");
    let there = t.staff_of(RestaurantId::new_random(), "tom");
    let strangers =
        ["mallory", "ALICE-not", there.as_str(), "olga;groups=holdfast-ops", "amir;groups=holdfast-flag-approvers"];
    for who in strangers {
        for (method, path, body) in
            [("GET", &hold, Value::Null), ("DELETE", &hold, Value::Null), ("POST", &confirm, guest("Mal", "x"))]
        {
            let (s, v) = t.call(Some(who), method, path, &body, &key).await;
            assert_eq!(s, 404, "{who} {method} {path}: {v}");
            assert_eq!(v["error"]["code"], "not_found", "{v}");
        }
        // Alice's Idempotency-Key on POST /holds is not a replay of Alice's answer for them.
        let (s, v) = t.call(Some(who), "POST", "/holds", &t.hold_body(0, "19:00"), &key).await;
        assert_ne!(v["hold_id"], h["hold_id"], "{who} replayed alice's hold: {s} {v}");
    }
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 0, "no stranger booked");

    // No token at all: 401 on every route.
    for (method, path) in
        [("GET", hold.as_str()), ("DELETE", hold.as_str()), ("POST", confirm.as_str()), ("POST", "/holds")]
    {
        let (s, v) = t.call(None, method, path, &json!({}), &[]).await;
        assert_eq!(s, 401, "{method} {path}: {v}");
    }

    // The owner under a look-alike spelling, and this restaurant's staff, may act on it.
    let (s, v) = t.call(Some("ＡＬＩＣＥ"), "GET", &hold, &Value::Null, &[]).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("live")), "{v}");
    let (s, v) = t.call(Some(&here), "GET", &hold, &Value::Null, &[]).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = t.call(Some("alice"), "POST", &confirm, &guest("Alice", "window"), &key).await;
    assert_eq!(s, 200, "{v}");
    let owner: Option<String> =
        t.db.pool
            .get()
            .await
            .expect("conn")
            .fetch_one("SELECT owner_subject FROM bookings", &[])
            .await
            .expect("booking")
            .get(0);
    assert_eq!(owner.as_deref(), Some("alice"), "the booking belongs to the hold's owner");
    // A stranger replaying Alice's confirm key gets 404, not Alice's booking.
    let (s, v) = t.call(Some("mallory"), "POST", &confirm, &guest("Alice", "window"), &key).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn holds_without_an_owner_are_for_staff_and_ops_only() {
    let t = Ctx::new(GuestLimits::DEFAULT).await;
    let (_, h) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(1, "19:00"), &[]).await;
    let id = h["hold_id"].as_str().expect("id").to_string();
    // What the migration leaves for holds written before owners were stored.
    let c = t.db.pool.get().await.expect("conn");
    c.run("UPDATE holds SET owner_subject = NULL", &[]).await.expect("legacy");
    let path = format!("/holds/{id}");
    for (who, want) in
        [("alice".to_string(), 404), (t.staff_of(t.restaurant, "sam"), 200), ("olga;groups=holdfast-ops".into(), 200)]
    {
        let (s, v) = t.call(Some(&who), "GET", &path, &Value::Null, &[]).await;
        assert_eq!(s, want, "{who}: {v}");
    }
}

#[tokio::test]
async fn the_fifth_live_hold_is_a_429_with_retry_after_and_writes_nothing() {
    let t = Ctx::new(GuestLimits::DEFAULT).await;
    for (i, time) in ["18:00", "19:00", "20:00", "21:00"].iter().enumerate() {
        let (s, v) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(i, time), &[]).await;
        assert_eq!(s, 201, "hold {i}: {v}");
    }
    // (Table index 4 is the booth for 3 to 6: the demo's other tables all seat two.)
    let req = api_request("POST", "/holds", &t.hold_body(5, "19:00").to_string(), Some("Alice"), &[]);
    let resp = holds_api::api::handle(&t.svc, req).await;
    let retry: u32 = resp.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    let (s, v) = response_json(resp);
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("too_many_live_holds")), "{v}");
    assert!((1..=180).contains(&retry), "Retry-After is when the oldest hold expires: {retry}");
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 4, "nothing written");
    assert_eq!(t.count("SELECT count(*) FROM table_claims").await, 4, "nothing written");
    // Another guest is not affected; a released hold frees a place.
    let (s, v) = t.call(Some("bob"), "POST", "/holds", &t.hold_body(5, "19:00"), &[]).await;
    assert_eq!(s, 201, "{v}");
    let c = t.db.pool.get().await.expect("conn");
    let first: uuid::Uuid =
        c.fetch_one("SELECT id FROM holds WHERE owner_subject = 'alice' LIMIT 1", &[]).await.expect("hold").get(0);
    let (s, _) = t.call(Some("alice"), "DELETE", &format!("/holds/{first}"), &Value::Null, &[]).await;
    assert_eq!(s, 200);
    let (s, v) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(6, "19:00"), &[]).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn concurrent_holds_by_one_guest_never_pass_the_limit() {
    let t = Arc::new(Ctx::new(GuestLimits { max_live_holds: 2, max_confirms_per_hour: 10 }).await);
    let mut tasks = Vec::new();
    for (table, time) in
        [(0, "19:00"), (1, "19:00"), (2, "19:00"), (3, "19:00"), (5, "19:00"), (6, "19:00"), (7, "19:00"), (0, "15:00")]
    {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            t.call(Some("alice"), "POST", "/holds", &t.hold_body(table, time), &[]).await.0
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.expect("task"));
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 2, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 201 || *c == 429), "{codes:?}");
    assert_eq!(t.count("SELECT count(*) FROM holds WHERE status = 'held'").await, 2);
}

#[tokio::test]
async fn confirmations_per_guest_are_rate_limited() {
    let t = Ctx::new(GuestLimits { max_live_holds: 4, max_confirms_per_hour: 2 }).await;
    let mut ids = Vec::new();
    for (i, time) in ["18:00", "19:00", "20:00"].iter().enumerate() {
        let (s, v) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(i, time), &[]).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["hold_id"].as_str().expect("id").to_string());
    }
    for id in &ids[..2] {
        let (s, v) = t.call(Some("alice"), "POST", &format!("/holds/{id}/confirm"), &guest("Alice", ""), &[]).await;
        assert_eq!(s, 200, "{v}");
    }
    let req =
        api_request("POST", &format!("/holds/{}/confirm", ids[2]), &guest("Alice", "").to_string(), Some("alice"), &[]);
    let resp = holds_api::api::handle(&t.svc, req).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (s, v) = response_json(resp);
    assert_eq!((s, v["error"]["code"].as_str()), (429, Some("confirm_rate_limited")), "{v}");
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 2, "the third was not booked");
}

#[tokio::test]
async fn guest_text_with_links_or_control_characters_is_refused_and_writes_nothing() {
    let t = Ctx::new(GuestLimits::DEFAULT).await;
    let (_, h) = t.call(Some("alice"), "POST", "/holds", &t.hold_body(0, "19:00"), &[]).await;
    let confirm = format!("/holds/{}/confirm", h["hold_id"].as_str().expect("id"));
    let cases = [
        (guest("Ada http://evil.example/login", ""), "guest.name"),
        (guest("Ada\u{0}", ""), "guest.name"),
        (guest("Ada\u{1b}[2J", ""), "guest.name"),
        (guest("Ada\u{202E}gnp.exe", ""), "guest.name"),
        (guest("Ada", "see www.evil.example"), "guest.notes"),
        (guest("Ada", "bell\u{7}"), "guest.notes"),
        (guest(&"A".repeat(201), ""), "guest.name"),
    ];
    for (body, field) in cases {
        let (s, v) = t.call(Some("alice"), "POST", &confirm, &body, &[]).await;
        assert_eq!((s, v["error"]["field"].as_str()), (422, Some(field)), "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.contains("evil") && !msg.contains("Ada"), "no input echoed: {msg}");
    }
    assert_eq!(t.count("SELECT count(*) FROM bookings").await, 0);
    assert_eq!(t.count("SELECT count(*) FROM email_outbox").await, 0);
}
