//! One correlation id per booking (issue 15, docs/observability.md), end to end on real
//! PostgreSQL and SQS on the emulator: the holds API's handler, the outbox relay and the email
//! sender run as the functions run them, and their log lines are captured through the
//! functions' own subscriber (`holdfast_adapters::telemetry::subscriber`, JSON, at the deployed
//! level INFO) into memory.
//!
//! Checked: the id a hold starts with is on every line of the hold's and the confirm's
//! requests, on the relay's and the sender's lines about the booking, on the SQS message
//! attribute, on the hold, booking and outbox rows and in the `observability_events` of all
//! three; every line carries the request id, the function and the cold-start flag; no guest
//! value appears in any line. Then: requests that bring another id or none carry on with the
//! booking's, the auto-assign job's lines and emails keep the request's id, and a hostile
//! header is refused with nothing written.
//!
//! The tests share the one capture buffer, so they take turns (`TURN`).

use chrono::Utc;
use email_sender::clock::ManualClock;
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::{EmailProvider, OutgoingEmail, Receipt, SendError};
use email_sender::relay::{OutboxRelay, CORRELATION_ATTRIBUTE};
use email_sender::sqs::{self as q, QueuePair};
use email_sender::store::SendStore;
use futures::future::BoxFuture;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_adapters::telemetry::{self, LogFormat};
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::Backoff;
use holdfast_shared::events::Source;
use holdfast_shared::flags::Environment;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, response_json, LogBuffer, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::util::SubscriberInitExt;

const FROM: &str = "bookings@holdfast.test";
const START: &str = "2030-01-07T19:00:00Z";

/// The guest: every value must reach the email and no log line.
const NAME: &str = "Marguerite Quillfeather";
const EMAIL: &str = "marguerite.quillfeather@example.org";
const PHONE: &str = "+44 7700 900461";
const NOTES: &str = "window seat, walnut allergy, anniversary";
const PII: &[&str] =
    &[NAME, "Quillfeather", EMAIL, "marguerite.quillfeather", PHONE, "7700900461", "900461", NOTES, "walnut"];

// ------------------------------------------------------------------------------ log capture

/// Every line this test binary logs, as the functions' subscriber writes them in Lambda.
fn logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    *LOGS.get_or_init(|| {
        let buf = LogBuffer::leaked();
        // The template's LoggingConfig: JSON, ApplicationLogLevel INFO.
        let filter = telemetry::env_filter(Some("INFO"), None);
        let installed = telemetry::subscriber(LogFormat::Json, filter, buf.writer()).try_init();
        assert!(installed.is_ok(), "the capturing subscriber must be the global one");
        buf
    })
}

fn log_len() -> usize {
    logs().len()
}

fn log_text(from: usize) -> String {
    logs().text_from(from)
}

/// The lines logged since `from`, each parsed (a line that is not a JSON object fails).
fn lines(from: usize) -> Vec<Value> {
    log_text(from)
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON log line: {l}"),
        })
        .collect()
}

/// One at a time: the tests share the capture buffer.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every line carries the invocation's fields: a request id, `function`, a boolean cold-start
/// flag and a correlation id. Returns the distinct request ids.
fn assert_invocation_fields(step: &str, lines: &[Value], function: &str) -> BTreeSet<String> {
    assert!(!lines.is_empty(), "{step}: no log line at all");
    let mut requests = BTreeSet::new();
    for l in lines {
        let request = l["requestId"].as_str().filter(|r| !r.is_empty());
        assert!(request.is_some(), "{step}: a line without requestId: {l}");
        assert_eq!(l["function"], function, "{step}: {l}");
        assert!(l["cold_start"].is_boolean(), "{step}: a line without cold_start: {l}");
        let corr = l["correlation_id"].as_str().map(CorrelationId::parse);
        assert!(matches!(corr, Some(Ok(_))), "{step}: a line without a correlation id: {l}");
        assert!(l["level"].is_string() && l["timestamp"].is_string() && l["message"].is_string(), "{l}");
        requests.extend(request.map(str::to_string));
    }
    requests
}

fn assert_no_pii(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for p in PII {
        assert!(!lower.contains(&p.to_lowercase()), "{what}: the guest's {p:?} in {text}");
    }
}

fn with_id<'a>(lines: &'a [Value], id: &CorrelationId) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["correlation_id"] == id.as_str()).collect()
}

// ------------------------------------------------------------------------------ the system

/// The email provider: keeps what it was asked to send.
#[derive(Default)]
struct Outbox {
    sent: Mutex<Vec<String>>,
}

impl EmailProvider for Outbox {
    fn name(&self) -> &'static str {
        "capture"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.push(format!("{}\n{}\n{}\n{}", email.to, email.subject, email.text, email.html));
        let id = format!("capture-{}", sent.len());
        Box::pin(async move { Ok(Receipt { provider: "capture", message_id: Some(id) }) })
    }
}

struct Ctx {
    db: TestDb,
    svc: HoldsService,
    sqs: aws_sdk_sqs::Client,
    pair: QueuePair,
    region: String,
    relay: OutboxRelay,
    sender: EmailSender,
    /// The relay's and the sender's clock: set past what is due before each pump.
    clock: Arc<ManualClock>,
    provider: Arc<Outbox>,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

impl Ctx {
    async fn new() -> Ctx {
        let _ = logs();
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        policy.booking_horizon.max_days_ahead = 3650; // the fixed dates in 2030
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Correlation Bistro", &policy).await.expect("publish");
        drop(c);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let flags = FlagLoader::new(
            ssm,
            Environment::Dev,
            format!("/{}/dev", aws.prefix),
            std::time::Duration::from_secs(30),
            EventRecorder::new(db.pool.clone()),
            Source::HoldsApi,
        );
        let svc = HoldsService::new(db.pool.clone(), Arc::new(flags));
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let pair = q::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), 30).await.expect("queues");
        let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let relay = OutboxRelay::new(db.pool.clone(), sqs.clone(), pair.queue_url.clone(), clock.clone());
        let provider = Arc::new(Outbox::default());
        let settings = Settings {
            lease: chrono::Duration::seconds(3),
            backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
            max_hop_delay_seconds: 1,
            ..Settings::production(pair.queue_url.clone(), FROM.into(), Some("ops@holdfast.test".into()))
        };
        let carrier: Arc<dyn EmailProvider> = provider.clone();
        let sender = EmailSender::new(SendStore::new(db.pool.clone()), carrier, sqs.clone(), clock.clone(), settings);
        Ctx { db, svc, sqs, pair, region, relay, sender, clock, provider, restaurant, policy }
    }

    /// A request through the holds API's handler: status, body and `X-Correlation-Id`.
    async fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: &Value,
        corr: Option<&str>,
    ) -> (u16, Value, String) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let headers: Vec<(&str, &str)> = corr.map(|c| ("X-Correlation-Id", c)).into_iter().collect();
        let resp = holds_api::api::handle(&self.svc, api_request(method, path, &body, Some(who), &headers)).await;
        let header = resp
            .headers()
            .get(holds_api::api::CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (status, body) = response_json(resp);
        (status, body, header)
    }

    fn guest() -> Value {
        json!({ "name": NAME, "email": EMAIL, "phone": PHONE, "notes": NOTES })
    }

    async fn value(&self, sql: &str, id: &str) -> Option<String> {
        let c = self.db.pool.get().await.expect("conn");
        let uuid = uuid::Uuid::parse_str(id).expect("uuid");
        c.fetch_one(sql, &[&uuid]).await.expect(sql).get(0)
    }

    async fn outbox_ids(&self, booking: &str) -> Vec<(String, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        let uuid = uuid::Uuid::parse_str(booking).expect("uuid");
        c.fetch(
            "SELECT email_type, correlation_id FROM email_outbox WHERE booking_id = $1 ORDER BY created_at",
            &[&uuid],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    async fn events_with(&self, id: &CorrelationId) -> BTreeSet<(String, String)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT source, event_type FROM observability_events WHERE context->>'correlation_id' = $1",
            &[&id.as_str()],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }
}

fn id(v: &str) -> CorrelationId {
    CorrelationId::parse(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

// ------------------------------------------------------------------------------ the tests

#[tokio::test]
async fn one_id_from_the_hold_to_the_email_on_every_line_event_and_message() {
    let _turn = TURN.lock().await;
    let t = Ctx::new().await;
    let started = log_len();
    let booking_id = id(&format!("booking-{}", uuid::Uuid::new_v4().simple()));

    // The hold: the caller's id, on every line, the hold row and the answer.
    let from = log_len();
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START });
    let (s, hold, header) = t.call("guest-1", "POST", "/holds", &body, Some(booking_id.as_str())).await;
    assert_eq!((s, header.as_str()), (201, booking_id.as_str()), "{hold}");
    let hold_lines = lines(from);
    let hold_requests = assert_invocation_fields("hold", &hold_lines, "holds-api");
    assert_eq!(with_id(&hold_lines, &booking_id).len(), hold_lines.len(), "every hold line: {hold_lines:?}");
    assert!(hold_lines.iter().all(|l| l["cold_start"] == true), "the function's first invocation: {hold_lines:?}");
    assert!(hold_lines.iter().any(|l| l["message"] == "request" && l["status"] == 201), "{hold_lines:?}");
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_string();
    let stored = t.value("SELECT correlation_id FROM holds WHERE id = $1", &hold_id).await;
    assert_eq!(stored.as_deref(), Some(booking_id.as_str()));

    // The confirm, the client sending the id back: every line, the booking and its outbox rows.
    let from = log_len();
    let path = format!("/holds/{hold_id}/confirm");
    let (s, confirmed, header) =
        t.call("guest-1", "POST", &path, &json!({ "guest": Ctx::guest() }), Some(booking_id.as_str())).await;
    assert_eq!((s, header.as_str()), (200, booking_id.as_str()), "{confirmed}");
    let confirm_lines = lines(from);
    let confirm_requests = assert_invocation_fields("confirm", &confirm_lines, "holds-api");
    assert_eq!(
        with_id(&confirm_lines, &booking_id).len(),
        confirm_lines.len(),
        "every confirm line: {confirm_lines:?}"
    );
    assert!(confirm_lines.iter().all(|l| l["cold_start"] == false), "a warm invocation: {confirm_lines:?}");
    assert!(hold_requests.is_disjoint(&confirm_requests), "one request id per invocation");
    let booking = confirmed["booking_id"].as_str().expect("booking id").to_string();
    let stored = t.value("SELECT correlation_id FROM bookings WHERE id = $1", &booking).await;
    assert_eq!(stored.as_deref(), Some(booking_id.as_str()));
    let outbox = t.outbox_ids(&booking).await;
    assert!(!outbox.is_empty() && outbox.iter().all(|(_, c)| c.as_deref() == Some(booking_id.as_str())), "{outbox:?}");

    // The relay: its tick's lines carry its own request id; the booking's row, the booking's id.
    // Past the confirmation's due time (it would otherwise be published with the rest of its
    // delay), long before the reminder's.
    t.clock.set(Utc::now() + chrono::Duration::minutes(1));
    let from = log_len();
    let report = t.relay.tick().await.expect("relay");
    assert!(report.published >= 1, "{report:?}");
    let relay_lines = lines(from);
    assert_invocation_fields("relay", &relay_lines, "outbox-relay");
    let published = with_id(&relay_lines, &booking_id);
    assert!(
        published.iter().any(|l| l["message"] == "outbox row published" && l["email_type"] == "booking_confirmed"),
        "the relay's line about the booking: {relay_lines:?}"
    );

    // SQS: the message carries the id as its attribute.
    let msgs = q::receive(&t.sqs, &t.pair.queue_url, 1, None).await.expect("receive");
    assert_eq!(msgs.len(), 1, "the confirmation (the reminder is due in 2030): {msgs:?}");
    let attribute = msgs[0]
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(CORRELATION_ATTRIBUTE))
        .and_then(|a| a.string_value.clone());
    assert_eq!(attribute.as_deref(), Some(booking_id.as_str()), "{:?}", msgs[0]);
    assert_no_pii("the SQS message", &format!("{:?}", msgs[0]));

    // The sender: the record's lines carry the booking's id.
    let from = log_len();
    let d =
        q::deliver(&t.sqs, &t.sender, &t.pair.queue_url, &t.pair.queue_arn, &t.region, &msgs).await.expect("deliver");
    assert!(d.failed.is_empty(), "{d:?}");
    let sender_lines = lines(from);
    assert_invocation_fields("sender", &sender_lines, "email-sender");
    let sent = with_id(&sender_lines, &booking_id);
    assert!(
        sent.iter().any(|l| l["message"] == "email sent" && l["email_type"] == "booking_confirmed"),
        "the sender's line about the booking: {sender_lines:?}"
    );
    let mail = t.provider.sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        mail.len() == 1 && mail[0].contains(EMAIL) && mail[0].contains("Quillfeather"),
        "the guest's email: {mail:?}"
    );

    // The events of all three carry it.
    let events = t.events_with(&booking_id).await;
    for want in [
        ("holds-api", "hold.created"),
        ("holds-api", "hold.confirmed"),
        ("outbox-relay", "email.published"),
        ("email-sender", "email.sent"),
    ] {
        assert!(events.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} not in {events:?}");
    }

    // Timed calls: the relay's and the sender's DB, SQS and provider calls have their lines.
    let operations: BTreeSet<&str> =
        relay_lines.iter().chain(&sender_lines).filter_map(|l| l["operation"].as_str()).collect();
    for op in ["db.outbox_due", "sqs.send_message_batch", "db.claim_sends", "provider.send", "db.finish_sends"] {
        assert!(operations.contains(op), "no `call finished` line for {op}: {operations:?}");
    }

    // No guest value in any line of the whole run.
    let log = log_text(started);
    assert_no_pii("the log", &log);
    let steps = [&hold_lines, &confirm_lines, &relay_lines, &sender_lines].map(|l| l.len());
    eprintln!(
        "correlation: one booking logged {} lines (hold {}, confirm {}, relay {}, sender {}), {} bytes, \
         {} events with its id",
        steps.iter().sum::<usize>(),
        steps[0],
        steps[1],
        steps[2],
        steps[3],
        log.len(),
        events.len()
    );
}

#[tokio::test]
async fn a_booking_keeps_its_id_through_requests_that_bring_none_or_another() {
    let _turn = TURN.lock().await;
    let t = Ctx::new().await;
    let started = log_len();

    // No header: a minted id, stored with the hold.
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START });
    let (s, hold, minted) = t.call("guest-2", "POST", "/holds", &body, None).await;
    assert_eq!(s, 201, "{hold}");
    let minted = id(&minted);
    assert!(uuid::Uuid::parse_str(minted.as_str()).is_ok(), "a minted id is a UUID: {minted}");
    let hold_id = hold["hold_id"].as_str().expect("hold").to_string();

    // A stranger learns nothing: 404, and the answer carries the stranger's own id.
    let path = format!("/holds/{hold_id}");
    let (s, _, header) = t.call("stranger", "GET", &path, &Value::Null, None).await;
    assert_eq!(s, 404);
    assert_ne!(header, minted.as_str(), "a stranger must not learn the hold's id");

    // The confirm brings another id: from the hold on, it is the hold's.
    let other = id(&format!("client-{}", uuid::Uuid::new_v4().simple()));
    let from = log_len();
    let confirm = format!("/holds/{hold_id}/confirm");
    let (s, confirmed, header) =
        t.call("guest-2", "POST", &confirm, &json!({ "guest": Ctx::guest() }), Some(other.as_str())).await;
    assert_eq!((s, header.as_str()), (200, minted.as_str()), "{confirmed}");
    let confirm_lines = lines(from);
    assert_invocation_fields("confirm", &confirm_lines, "holds-api");
    let adopted = confirm_lines
        .iter()
        .find(|l| l["request_correlation_id"] == other.as_str())
        .unwrap_or_else(|| panic!("no line records the request's own id: {confirm_lines:?}"));
    assert_eq!(adopted["correlation_id"], minted.as_str());
    let last = confirm_lines.last().expect("lines");
    assert_eq!((&last["message"], &last["correlation_id"]), (&json!("request"), &json!(minted.as_str())));
    let booking = confirmed["booking_id"].as_str().expect("booking").to_string();
    let stored = t.value("SELECT correlation_id FROM bookings WHERE id = $1", &booking).await;
    assert_eq!(stored.as_deref(), Some(minted.as_str()));

    // A cancel with no header answers with, and writes, the booking's id.
    let (s, _, header) = t.call("guest-2", "POST", &format!("/bookings/{booking}/cancel"), &Value::Null, None).await;
    assert_eq!((s, header.as_str()), (200, minted.as_str()));
    let outbox = t.outbox_ids(&booking).await;
    assert!(outbox.iter().any(|(t, _)| t == "booking_cancelled"), "{outbox:?}");
    assert!(outbox.iter().all(|(_, c)| c.as_deref() == Some(minted.as_str())), "{outbox:?}");

    // A request that waits for a table: the auto-assign job's lines and emails keep its id.
    for (i, table) in t.policy.tables.iter().enumerate() {
        let body = json!({ "restaurant_id": t.restaurant, "party_size": table.min_party.max(1), "start": START,
                           "table_ids": [table.id] });
        let (s, h, _) = t.call(&format!("blocker-{i}"), "POST", "/holds", &body, None).await;
        assert_eq!(s, 201, "{h}");
    }
    let requested = id(&format!("request-{}", uuid::Uuid::new_v4().simple()));
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": "2030-01-07T19:30:00Z",
                       "guest": Ctx::guest() });
    let (s, b, header) = t.call("guest-3", "POST", "/bookings", &body, Some(requested.as_str())).await;
    assert_eq!((s, b["status"].as_str(), header.as_str()), (201, Some("requested"), requested.as_str()), "{b}");
    let pending = b["booking_id"].as_str().expect("booking").to_string();
    // A table frees up (a blocker lets go) and the job is due now.
    let c = t.db.pool.get().await.expect("conn");
    let blocker: uuid::Uuid =
        c.fetch_one("SELECT id FROM holds WHERE owner_subject = 'blocker-0'", &[]).await.expect("blocker").get(0);
    let (s, _, _) = t.call("blocker-0", "DELETE", &format!("/holds/{blocker}"), &Value::Null, None).await;
    assert_eq!(s, 200);
    c.run("UPDATE booking_assignments SET not_before = now() WHERE state = 'pending'", &[]).await.expect("due");
    let from = log_len();
    let report = t.svc.run_due_assignments(10).await.expect("assign");
    assert_eq!((report.attempted, report.confirmed), (1, 1), "{report:?}");
    let assign_lines = lines(from);
    assert!(
        assign_lines.iter().any(|l| l["correlation_id"] == requested.as_str() && l["operation"] == "db.assign_write"),
        "the job's lines carry the request's id: {assign_lines:?}"
    );
    let outbox = t.outbox_ids(&pending).await;
    assert!(outbox.iter().any(|(t, _)| t == "booking_confirmed"), "{outbox:?}");
    assert!(outbox.iter().all(|(_, c)| c.as_deref() == Some(requested.as_str())), "{outbox:?}");

    assert_no_pii("the log", &log_text(started));
}

#[tokio::test]
async fn a_hostile_correlation_header_is_refused_and_nothing_is_written() {
    let _turn = TURN.lock().await;
    let t = Ctx::new().await;
    let started = log_len();
    let long = format!("a{}", "0".repeat(64));
    let hostile = [
        EMAIL,
        "short1",
        long.as_str(),
        "has space in it",
        "id\"},{\"level\":\"ERROR\"",
        "+447700900461",
        "07700900461",
        "caf\u{e9}-12345678",
        "a,b-c-d-e-f-g-h",
    ];
    let body = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": START });
    for v in hostile {
        let (s, err, header) = t.call("guest-4", "POST", "/holds", &body, Some(v)).await;
        assert_eq!((s, err["error"]["field"].as_str()), (422, Some("X-Correlation-Id")), "{v:?}: {err}");
        assert!(
            CorrelationId::parse(&header).is_ok() && header != v,
            "{v:?}: answered with a fresh id, got {header:?}"
        );
        assert!(!err.to_string().contains(v), "the value is not echoed: {err}");
    }
    let c = t.db.pool.get().await.expect("conn");
    let holds: i64 = c.fetch_one("SELECT count(*) FROM holds", &[]).await.expect("count").get(0);
    assert_eq!(holds, 0, "nothing written");
    let log = log_text(started);
    for v in [EMAIL, "has space in it", "+447700900461", "07700900461"] {
        assert!(!log.contains(v), "{v:?} reached the log");
    }
    // A well-formed id still works, and an unknown route is a 404 before the header matters.
    let ok = id("9b2f0c1e-6a4d-4f0e-8a57-2d0c5b1e7f33");
    let (s, _, header) = t.call("guest-4", "POST", "/holds", &body, Some(ok.as_str())).await;
    assert_eq!((s, header.as_str()), (201, ok.as_str()));
    let (s, _, _) = t.call("guest-4", "GET", "/nowhere", &Value::Null, Some("bad")).await;
    assert_eq!(s, 404);
}
