//! A booking's whole life (issue 13), end to end: the holds API's real handler writes the
//! outbox, the real outbox relay publishes to SQS on the emulator, the real email sender sends
//! through the emulator's SES, and every assertion counts what SES really received.

use chrono::{DateTime, Duration, Utc};
use email_sender::clock::ManualClock;
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::SesProvider;
use email_sender::relay::OutboxRelay;
use email_sender::sqs::{self as q, QueuePair};
use email_sender::store::SendStore;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::Backoff;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, http_get, response_json, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::sync::Arc;

const FROM: &str = "bookings@holdfast.test";
const OPS: &str = "ops@holdfast.test";

struct Ctx {
    db: TestDb,
    aws: TestAws,
    svc: HoldsService,
    sqs: aws_sdk_sqs::Client,
    pair: QueuePair,
    region: String,
    clock: Arc<ManualClock>,
    restaurant: RestaurantId,
    policy: BookingPolicy,
    /// Unique per test: SES on the emulator is shared, so mail is counted by address.
    guest_email: String,
}

impl Ctx {
    async fn new(request_received_delay_minutes: u32) -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        // Fixed dates in 2030: a booking horizon that reaches them whatever today is.
        policy.booking_horizon.max_days_ahead = 3650;
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Lifecycle Bistro", &policy).await.expect("publish");
        drop(c);
        let prefix = format!("/{}/dev", aws.prefix);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        ssm.put_parameter()
            .name(holdfast_shared::flags::ssm_parameter_name(&prefix, "email.requestReceivedDelayMinutes"))
            .value(request_received_delay_minutes.to_string())
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("flag");
        let flags = FlagLoader::unrecorded(
            ssm,
            holdfast_shared::flags::Environment::Dev,
            prefix,
            std::time::Duration::from_secs(30),
        );
        let svc = HoldsService::new(db.pool.clone(), Arc::new(flags));
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let pair = q::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), 30).await.expect("queues");
        let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
        email_sender::ensure_ses_identity(&aws.sdk, FROM).await.expect("identity");
        let guest_email = format!("guest+{}@example.com", aws.prefix);
        let clock = Arc::new(ManualClock::new(Utc::now()));
        Ctx { db, aws, svc, sqs, pair, region, clock, restaurant, policy, guest_email }
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        response_json(holds_api::api::handle(&self.svc, api_request(method, path, &body, Some(who), &[])).await)
    }

    fn request_body(&self, start: &str, party: u16) -> Value {
        json!({ "restaurant_id": self.restaurant, "party_size": party, "start": start,
                "guest": { "name": "Jane Doe", "email": self.guest_email } })
    }

    fn sender(&self) -> EmailSender {
        let settings = Settings {
            queue_url: self.pair.queue_url.clone(),
            from_address: FROM.into(),
            ops_address: Some(OPS.into()),
            lease: chrono::Duration::seconds(3),
            backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
            max_hop_delay_seconds: 1,
        };
        let ses = Arc::new(SesProvider::new(aws_sdk_sesv2::Client::new(&self.aws.sdk)));
        EmailSender::new(SendStore::new(self.db.pool.clone()), ses, self.sqs.clone(), self.clock.clone(), settings)
    }

    /// Everything due by `at` goes out: relay ticks and a fresh consumer (a restart each time)
    /// delivers until the queue is empty, or holds only jobs that are not due yet (those the
    /// consumer re-queues with a short delay hop, as in production with 15-minute hops).
    async fn pump(&self, at: DateTime<Utc>) {
        self.clock.set(at);
        let relay =
            OutboxRelay::new(self.db.pool.clone(), self.sqs.clone(), self.pair.queue_url.clone(), self.clock.clone());
        let sender = self.sender();
        for _ in 0..30 {
            let published = relay.tick().await.expect("relay").published;
            // In-flight messages are ones this pump received: `deliver` deleted or re-queued
            // each (it fails the test otherwise), and the emulator's count of them lags. What is
            // left to wait for is what is visible, or delayed by a re-queue hop.
            let (visible, _in_flight, delayed) = q::queue_depth(&self.sqs, &self.pair.queue_url).await.expect("depth");
            if published == 0 && visible + delayed == 0 {
                return;
            }
            let wait = if visible == 0 { 2 } else { 0 };
            let msgs = q::receive(&self.sqs, &self.pair.queue_url, wait, None).await.expect("receive");
            if msgs.is_empty() {
                continue;
            }
            let not_due = |m: &aws_sdk_sqs::types::Message| {
                let job: Option<holdfast_shared::email::EmailJob> =
                    m.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
                job.and_then(|j| j.not_before).is_some_and(|nb| nb > at)
            };
            let only_not_due = msgs.iter().all(not_due);
            let d = q::deliver(&self.sqs, &sender, &self.pair.queue_url, &self.pair.queue_arn, &self.region, &msgs)
                .await
                .expect("deliver");
            assert!(d.failed.is_empty(), "{d:?}");
            if only_not_due && published == 0 {
                return;
            }
        }
        panic!("the queue did not settle");
    }

    /// The emails SES accepted (the sender's ledger: state `sent` with SES's message id), by
    /// type. The database is this test's own, so every row is this test's mail.
    async fn mail(&self) -> Vec<String> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT email_type FROM email_sends WHERE state = 'sent' AND provider = 'ses'
                AND provider_message_id IS NOT NULL ORDER BY sent_at",
            &[],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Subjects of the mail the emulator's SES holds for this test's guest (one slow read of
    /// the emulator's whole state, so only once per test).
    async fn ses_subjects(&self) -> Vec<String> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("endpoint");
        let data: Value = serde_json::from_str(&http_get(&endpoint, "/moto-api/data.json").await).expect("json");
        let msgs = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
        msgs.iter()
            .filter(|m| m["destinations"]["ToAddresses"].to_string().contains(&self.guest_email))
            .map(|m| format!("{} | {}", m["subject"].as_str().unwrap_or(""), m["body"].as_str().unwrap_or("")))
            .collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.pool.get().await.expect("conn").fetch_one(sql, &[]).await.expect("count").get(0)
    }

    async fn skipped(&self, reason: &str) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_one(
            "SELECT count(*) FROM observability_events WHERE event_type = 'email.skipped' AND context->>'error_code' = $1",
            &[&reason],
        )
        .await
        .expect("events")
        .get(0)
    }
}

fn count(sent: &[String], email_type: &str) -> usize {
    sent.iter().filter(|s| *s == email_type).count()
}

const START: &str = "2030-01-07T19:00:00Z";

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(START).expect("t").to_utc()
}

#[tokio::test]
async fn a_request_confirmed_inline_gets_one_confirmation_and_no_request_received() {
    let t = Ctx::new(1).await;
    let (s, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("confirmed")), "{b}");
    assert_eq!(b["table_ids"].as_array().map(Vec::len), Some(1), "{b}");
    // Past the request-received delay, well before the reminder.
    t.pump(Utc::now() + Duration::minutes(2)).await;
    let mail = t.mail().await;
    assert_eq!(count(&mail, "booking_confirmed"), 1, "{mail:?}");
    assert_eq!(count(&mail, "request_received"), 0, "{mail:?}");
    assert_eq!(t.skipped("superseded_by_confirmation").await, 1, "recorded as superseded");
    let mail = t.ses_subjects().await;
    assert_eq!(mail.len(), 1, "what SES received: {mail:?}");
    assert!(mail[0].starts_with("Your table at Lifecycle Bistro is confirmed |"), "{mail:?}");
    // The guest reads the time in the restaurant's zone (Europe/London), with its abbreviation.
    assert!(mail[0].contains("Mon 7 Jan 2030, 19:00 GMT"), "{mail:?}");
}

#[tokio::test]
async fn a_request_with_no_table_free_waits_retries_and_tells_ops_once() {
    let t = Ctx::new(1).await;
    // Every table of the floor taken at 19:00 by other guests (party 2 fits tables seating 2-4).
    for (i, table) in t.policy.tables.iter().enumerate() {
        let body = json!({ "restaurant_id": t.restaurant, "party_size": table.min_party.max(1), "start": START,
                           "table_ids": [table.id] });
        let (s, h) = t.call(&format!("other-{i}"), "POST", "/holds", &body).await;
        assert_eq!(s, 201, "{h}");
    }
    let (s, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("requested")), "{b}");
    let _ = b["booking_id"].as_str().expect("id");
    // The request-received email is due the flag's delay after the request, not before (the
    // relay only publishes it then; pumping now would leave it delayed in SQS in real time).
    let delay: f64 = t.db.pool.get().await.expect("conn")
        .fetch_one("SELECT extract(epoch FROM not_before - created_at)::float8 FROM email_outbox WHERE email_type = 'request_received'", &[])
        .await
        .expect("row")
        .get(0);
    assert!((59.0..=61.0).contains(&delay), "{delay}");
    assert_eq!(count(&t.mail().await, "request_received"), 0);
    t.pump(Utc::now() + Duration::minutes(1) + Duration::seconds(5)).await;
    assert_eq!(count(&t.mail().await, "request_received"), 1);

    // The durable job: attempts 2..4 when due (time moved by making them due now).
    for attempt in 2..=4 {
        let c = t.db.pool.get().await.expect("conn");
        c.run("UPDATE booking_assignments SET not_before = now() WHERE state = 'pending'", &[]).await.expect("due");
        let r = t.svc.run_due_assignments(10).await.expect("run");
        assert_eq!(r.attempted, 1, "attempt {attempt}: {r:?}");
    }
    let r = t.svc.run_due_assignments(10).await.expect("run");
    assert_eq!(r.attempted, 0, "no fifth attempt");
    assert_eq!(t.count("SELECT attempts::bigint FROM booking_assignments").await, 4);
    assert_eq!(t.count("SELECT count(*) FROM booking_assignments WHERE state = 'exhausted'").await, 1);
    assert_eq!(t.count("SELECT count(*) FROM bookings WHERE status = 'requested'").await, 1, "stays pending");
    t.pump(Utc::now() + Duration::minutes(2)).await;
    t.pump(Utc::now() + Duration::minutes(3)).await;
    let mail = t.mail().await;
    assert_eq!(count(&mail, "ops_pending_attention"), 1, "one ops notice: {mail:?}");
    assert_eq!(count(&mail, "booking_confirmed"), 0);
}

#[tokio::test]
async fn a_change_sends_one_update_and_frees_the_old_tables() {
    let t = Ctx::new(0).await;
    let (_, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    let id = b["booking_id"].as_str().expect("id").to_string();
    let old_tables = b["table_ids"].clone();
    let (s, changed) =
        t.call("jane", "PATCH", &format!("/bookings/{id}"), &json!({ "start": "2030-01-07T21:00:00Z" })).await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!((changed["revision"].as_i64(), changed["start"].as_str()), (Some(2), Some("2030-01-07T21:00:00Z")));
    // The old slot is free again: another guest can hold the very same table then.
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START, "table_ids": old_tables });
    let (s, v) = t.call("someone", "POST", "/holds", &body).await;
    assert_eq!(s, 201, "{v}");
    // A change that cannot be seated leaves the booking as it was.
    let (s, v) = t.call("jane", "PATCH", &format!("/bookings/{id}"), &json!({ "party_size": 40 })).await;
    assert!(s == 409 || s == 422, "{s} {v}");
    let (_, now) = t.call("jane", "GET", &format!("/bookings/{id}"), &Value::Null).await;
    assert_eq!((now["revision"].as_i64(), now["party_size"].as_i64()), (Some(2), Some(2)), "{now}");
    // Someone else cannot change it.
    let (s, _) = t.call("mallory", "PATCH", &format!("/bookings/{id}"), &json!({ "party_size": 3 })).await;
    assert_eq!(s, 404);
    t.pump(Utc::now() + Duration::minutes(1)).await;
    let mail = t.mail().await;
    assert_eq!((count(&mail, "booking_confirmed"), count(&mail, "booking_updated")), (1, 1), "{mail:?}");
}

#[tokio::test]
async fn a_cancel_frees_the_tables_sends_one_email_and_no_reminder() {
    let t = Ctx::new(0).await;
    let (_, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    let id = b["booking_id"].as_str().expect("id").to_string();
    let tables = b["table_ids"].clone();
    let staff = format!("sam;groups=restaurant:{}:staff", t.restaurant.as_uuid());
    let (s1, first) = t.call(&staff, "POST", &format!("/bookings/{id}/cancel"), &Value::Null).await;
    let (s2, second) = t.call("jane", "POST", &format!("/bookings/{id}/cancel"), &Value::Null).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "a second cancel answers like the first");
    assert_eq!(first["status"], "cancelled");
    assert_eq!(t.count("SELECT count(*) FROM table_claims WHERE active").await, 0, "tables free");
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START, "table_ids": tables });
    assert_eq!(t.call("someone", "POST", "/holds", &body).await.0, 201);
    // Past the reminder time: the reminder is skipped, not sent.
    t.pump(start() - Duration::hours(1)).await;
    let mail = t.mail().await;
    assert_eq!(count(&mail, "booking_cancelled"), 1, "{mail:?}");
    assert_eq!(count(&mail, "reminder"), 0, "{mail:?}");
}

#[tokio::test]
async fn the_reminder_goes_once_at_its_time_and_follows_a_change() {
    let t = Ctx::new(0).await;
    let (_, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    let id = b["booking_id"].as_str().expect("id").to_string();
    t.pump(start() - Duration::hours(25)).await;
    assert_eq!(count(&t.mail().await, "reminder"), 0, "not before its time");
    // Moved two hours later: the old reminder is superseded, the new one is due at 20:00 - 24 h.
    let (s, _) = t.call("jane", "PATCH", &format!("/bookings/{id}"), &json!({ "start": "2030-01-07T21:00:00Z" })).await;
    assert_eq!(s, 200);
    t.pump(start() - Duration::hours(24) + Duration::minutes(1)).await;
    assert_eq!(count(&t.mail().await, "reminder"), 0, "the old time no longer reminds");
    // Each pump is a fresh consumer (a restart); sent once however often it runs.
    for _ in 0..3 {
        t.pump(start() - Duration::hours(22) + Duration::minutes(1)).await;
    }
    let mail = t.mail().await;
    assert_eq!(count(&mail, "reminder"), 1, "{mail:?}");
    assert_eq!(t.skipped("superseded_by_change").await, 1);
}

#[tokio::test]
async fn the_reminder_lead_is_policy_data() {
    let t = Ctx::new(0).await;
    let mut v2 = t.policy.clone();
    v2.version = 2;
    v2.reminder_hours_before = 2;
    let c = t.db.pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, t.restaurant, "Lifecycle Bistro", &v2).await.expect("publish");
    let (s, b) = t.call("jane", "POST", "/bookings", &t.request_body(START, 2)).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("confirmed")), "{b}");
    let at: DateTime<Utc> = c
        .fetch_one("SELECT not_before FROM email_outbox WHERE email_type = 'reminder'", &[])
        .await
        .expect("one reminder")
        .get(0);
    assert_eq!(at, start() - Duration::hours(2));
}
