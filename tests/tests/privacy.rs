//! Privacy property test (issue 14): generated guest names, emails, phones and notes, realistic
//! and hostile (unicode, quotes, markup, JSON look-alikes, long), go through every request path
//! that takes them — hold → confirm, booking request, change, cancel, and the same values in
//! invalid requests — and on through the outbox relay, SQS on the emulator and the email
//! sender, against real PostgreSQL. None of them may reach:
//! - a log line (a JSON subscriber at DEBUG, above the deployed INFO, captured in memory),
//! - any HTTP response body (errors included),
//! - an SQS message (body, system attributes, message attributes),
//! - any database row outside `bookings` (`observability_events`, `email_outbox`,
//!   `email_sends`, `idempotency_keys`, `metrics_batches`, …),
//! - a metric datum the aggregator hands its sinks.
//!
//! Excluded, explicitly, because they must hold the values: the `bookings` row (the one store
//! of guest details) and the provider request (the email itself, captured here to prove the
//! values really went through). Each value carries a random marker (letters g–z, or the phone's
//! digits) that no id, hash or code can contain, so a leak is found however it was escaped.
//!
//! `HOLDFAST_PRIVACY_CASES` sets the case count (default 24).

use chrono::{Duration, NaiveDate, Utc};
use email_sender::clock::{Clock, ManualClock};
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::{EmailProvider, OutgoingEmail, Receipt, SendError};
use email_sender::relay::OutboxRelay;
use email_sender::sqs::{self as q, QueuePair};
use email_sender::store::SendStore;
use futures::future::BoxFuture;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::{Backoff, EmailJob};
use holdfast_shared::events::Source;
use holdfast_shared::flags::Environment;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::metrics::MetricDatum;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, response_json, LogBuffer, TestAws, TestDb};
use holds_api::HoldsService;
use metrics_aggregator::sinks::{BoxFuture as SinkFuture, Sink, SinkError};
use metrics_aggregator::{Aggregator, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const FROM: &str = "bookings@holdfast.test";
const OPS: &str = "ops@holdfast.test";

// ------------------------------------------------------------------------------ log capture

/// Every log line of this test binary, as the functions' JSON subscriber would write them.
fn logs() -> LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    *LOGS.get_or_init(|| {
        let buf = LogBuffer::leaked();
        // The deployed subscriber (`holdfast_adapters::telemetry::init_lambda_logs`) at DEBUG
        // for every crate (deployed: INFO; RUST_LOG=debug is what an operator would turn on),
        // with span fields included: a superset of what CloudWatch would get.
        let installed = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_current_span(true)
            .with_span_list(true)
            .with_target(true)
            .without_time()
            .with_writer(buf.writer())
            .try_init();
        assert!(installed.is_ok(), "the capturing subscriber must be the global one");
        buf
    })
}

fn log_text(from: usize) -> String {
    logs().text_from(from)
}

fn log_len() -> usize {
    logs().len()
}

// ------------------------------------------------------------------------------ guest values

/// One guest's details, each with the marker that finds it.
#[derive(Debug, Clone)]
struct Guest {
    name: String,
    email: String,
    phone: String,
    notes: String,
    name_mark: String,
    email_mark: String,
    notes_mark: String,
    phone_digits: String,
}

impl Guest {
    /// What must not be found in a sink: each marker, each whole value (as written and as JSON
    /// writes it), and the phone however it is formatted.
    fn needles(&self) -> Vec<(&'static str, String)> {
        let mut n = vec![
            ("name", self.name_mark.clone()),
            ("email", self.email_mark.clone()),
            ("notes", self.notes_mark.clone()),
            ("phone", self.phone_digits.clone()),
            ("phone", self.phone.clone()),
            ("phone", self.phone[self.phone.len() - 9..].to_string()),
        ];
        for (what, v) in [("name", &self.name), ("email", &self.email), ("notes", &self.notes)] {
            n.push((what, v.clone()));
            let json = Value::String(v.clone()).to_string();
            n.push((what, json[1..json.len() - 1].to_string()));
        }
        n
    }

    fn body(&self) -> Value {
        json!({ "name": self.name, "email": self.email, "phone": self.phone, "notes": self.notes })
    }
}

/// `None`, or which value of `g` was found in `haystack` (case-insensitively) and where.
fn find_leak(g: &Guest, haystack: &str) -> Option<String> {
    let hay = haystack.to_lowercase();
    g.needles().into_iter().find_map(|(what, needle)| {
        let needle = needle.to_lowercase();
        let at = hay.find(&needle)?;
        let from = hay[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
        let excerpt: String = haystack[from.min(haystack.len())..].chars().take(240).collect();
        Some(format!("the guest's {what} ({needle:?}) in …{excerpt}…"))
    })
}

fn check(g: &Guest, sink: &str, haystack: &str) -> Result<(), TestCaseError> {
    match find_leak(g, haystack) {
        None => Ok(()),
        Some(leak) => Err(TestCaseError::fail(format!("{sink}: {leak}"))),
    }
}

/// A marker: 10 letters from g–z, which no uuid, hash, code or number contains.
fn mark() -> impl Strategy<Value = String> {
    "[g-z]{10}"
}

fn guest() -> impl Strategy<Value = Guest> {
    let first = prop::sample::select(vec![
        "Ada",
        "Zoë",
        "José María",
        "D'Arcy",
        "O\"Neil",
        "李小龍",
        "Анна",
        "محمد",
        "Ada ✨🍝",
        "{\"name\":\"x\"}",
        "<b>Bold</b> &amp;",
        "Robert'); DROP TABLE bookings;--",
        "null",
        "Ada \\u0000 Lovelace",
    ]);
    let local = prop::sample::select(vec!["ada", "zoë", "o'brien", "first.last", "a+tag", "{x}", "名"]);
    let domain = prop::sample::select(vec!["example.com", "bücher.example", "mail.example.co.uk"]);
    let notes = prop::sample::select(vec![
        "window seat please",
        "{\"allergy\": \"nuts\", \"seat\": [1, 2]}",
        "line one\nline two\twith a tab",
        "\"quoted\" and 'single' and `back`",
        "🎂 birthday — surprise! ünïcödé",
        "<script>alert(1)</script>",
    ]);
    ((first, mark(), 0usize..150), (local, mark(), domain), "[0-9]{8}", (notes, mark(), 0usize..700)).prop_map(
        |((first, name_mark, pad), (local, email_mark, domain), digits, (notes, notes_mark, long))| {
            let name_mark_cap = format!("{}{}", name_mark[..1].to_uppercase(), &name_mark[1..]);
            let name = format!("{first} {name_mark_cap} {}", "ǅ".repeat(pad)).trim().to_string();
            let phone = format!("+44 (0)20 {} {}", &digits[..4], &digits[4..]);
            Guest {
                email: format!("{local}.{email_mark}@{domain}"),
                notes: format!("{notes} {notes_mark} {}", "lorem ipsum ".repeat(long / 12)).trim().to_string(),
                phone_digits: format!("44020{digits}"),
                name,
                phone,
                name_mark,
                email_mark,
                notes_mark,
            }
        },
    )
}

// ------------------------------------------------------------------------------ capturing ends

/// The email provider: keeps what it was asked to send (which must hold the guest's details).
#[derive(Default)]
struct CapturingProvider {
    sent: Mutex<Vec<(String, String)>>,
}

impl EmailProvider for CapturingProvider {
    fn name(&self) -> &'static str {
        "capture"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.push((email.to.clone(), format!("{}\n{}\n{}", email.subject, email.text, email.html)));
        let id = format!("capture-{}", sent.len());
        Box::pin(async move { Ok(Receipt { provider: "capture", message_id: Some(id) }) })
    }
}

/// A metrics sink that keeps what the aggregator would publish.
#[derive(Default, Clone)]
struct CapturingSink {
    data: Arc<Mutex<Vec<String>>>,
}

impl Sink for CapturingSink {
    /// Stands in for the CloudWatch sink (`metrics_publications.sink` names one of the two).
    fn name(&self) -> &'static str {
        "cloudwatch"
    }
    fn max_age(&self) -> chrono::Duration {
        chrono::Duration::days(13)
    }
    fn part_count(&self, data: &[MetricDatum]) -> usize {
        usize::from(!data.is_empty())
    }
    fn send_part<'a>(&'a self, data: &'a [MetricDatum], _part: usize) -> SinkFuture<'a, Result<(), SinkError>> {
        let text = format!("{data:?}\n{}", metrics_aggregator::payload::encode(data));
        self.data.lock().unwrap_or_else(|p| p.into_inner()).push(text);
        Box::pin(async { Ok(()) })
    }
}

// ------------------------------------------------------------------------------ the system

struct Ctx {
    db: TestDb,
    aws: TestAws,
    svc: HoldsService,
    sqs: aws_sdk_sqs::Client,
    pair: QueuePair,
    region: String,
    clock: Arc<ManualClock>,
    provider: Arc<CapturingProvider>,
    restaurant: RestaurantId,
    case: AtomicU32,
    /// HTTP answers and SQS messages checked, for the summary.
    answers: AtomicU32,
    messages: AtomicU32,
}

impl Ctx {
    async fn new() -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        policy.booking_horizon.max_days_ahead = 3650; // the cases' fixed dates in 2030
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Privacy Bistro", &policy).await.expect("publish");
        drop(c);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        // No delay on the request-received email: every email of a case is due at once.
        ssm.put_parameter()
            .name(holdfast_shared::flags::ssm_parameter_name(&Self::prefix(&aws), "email.requestReceivedDelayMinutes"))
            .value("0")
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("flag");
        let svc = HoldsService::new(db.pool.clone(), Arc::new(Self::flags(&db, &aws, Source::HoldsApi)));
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let pair = q::create_queue_pair(&sqs, &aws.name("email"), &aws.name("email-dlq"), 30).await.expect("queues");
        let region = aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let provider = Arc::new(CapturingProvider::default());
        Ctx {
            db,
            aws,
            svc,
            sqs,
            pair,
            region,
            clock,
            provider,
            restaurant,
            case: AtomicU32::new(0),
            answers: AtomicU32::new(0),
            messages: AtomicU32::new(0),
        }
    }

    fn prefix(aws: &TestAws) -> String {
        format!("/{}/dev", aws.prefix)
    }

    /// The flag loader as the deployed functions build it (recording contradictions).
    fn flags(db: &TestDb, aws: &TestAws, source: Source) -> FlagLoader {
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let recorder = EventRecorder::new(db.pool.clone());
        FlagLoader::new(ssm, Environment::Dev, Self::prefix(aws), std::time::Duration::from_secs(30), recorder, source)
    }

    fn sender(&self) -> EmailSender {
        let settings = Settings {
            lease: chrono::Duration::seconds(3),
            backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
            max_hop_delay_seconds: 1,
            ..Settings::production(self.pair.queue_url.clone(), FROM.into(), Some(OPS.into()))
        };
        let provider: Arc<dyn EmailProvider> = self.provider.clone();
        EmailSender::new(SendStore::new(self.db.pool.clone()), provider, self.sqs.clone(), self.clock.clone(), settings)
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        response_json(holds_api::api::handle(&self.svc, api_request(method, path, body, Some(who), headers)).await)
    }

    /// Every SQS message the relay publishes, checked as received (attributes of all kinds
    /// requested), then delivered to the email sender as the event source mapping would.
    async fn pump(&self, g: &Guest) -> Result<usize, TestCaseError> {
        self.clock.set(Utc::now() + Duration::minutes(1));
        let relay =
            OutboxRelay::new(self.db.pool.clone(), self.sqs.clone(), self.pair.queue_url.clone(), self.clock.clone());
        let sender = self.sender();
        let mut seen = 0;
        // Messages the relay published that were not received yet (moto shows them at once;
        // a short wait covers a slower queue).
        let mut unseen = 0;
        for _ in 0..20 {
            unseen += relay.tick().await.map_err(fail)?.published;
            let msgs = self
                .sqs
                .receive_message()
                .queue_url(&self.pair.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(if unseen > 0 { 1 } else { 0 })
                .message_attribute_names("All")
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| fail(aws_sdk_sqs::error::DisplayErrorContext(e)))?
                .messages
                .unwrap_or_default();
            if msgs.is_empty() && unseen == 0 {
                return Ok(seen);
            }
            for m in &msgs {
                check(g, "an SQS message", &format!("{m:?}"))?;
            }
            seen += msgs.len();
            self.messages.fetch_add(msgs.len() as u32, Ordering::Relaxed);
            unseen = unseen.saturating_sub(msgs.len());
            let now = self.clock.now();
            let not_due = |m: &aws_sdk_sqs::types::Message| {
                let job: Option<EmailJob> = m.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
                job.and_then(|j| j.not_before).is_some_and(|nb| nb > now)
            };
            // A deferral the sender re-queues comes back after its hop: not worth waiting for.
            let only_not_due = !msgs.is_empty() && msgs.iter().all(not_due);
            let d = q::deliver(&self.sqs, &sender, &self.pair.queue_url, &self.pair.queue_arn, &self.region, &msgs)
                .await
                .map_err(fail)?;
            prop_assert!(d.failed.is_empty(), "the sender failed records: {:?}", d);
            if only_not_due && unseen == 0 {
                return Ok(seen);
            }
        }
        Err(TestCaseError::fail("the queue did not settle"))
    }

    /// Every row of every table but `bookings`, as JSON text.
    async fn rows_outside_bookings(&self) -> Result<Vec<(String, String)>, TestCaseError> {
        let c = self.db.pool.get().await.map_err(fail)?;
        let tables = c
            .fetch(
                "SELECT table_name::text FROM information_schema.tables
                  WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'bookings'",
                &[],
            )
            .await
            .map_err(fail)?;
        let mut out = Vec::new();
        for t in tables {
            let table: String = t.get(0);
            let sql = format!("SELECT coalesce(string_agg(row_to_json(t)::text, E'\\n'), '') FROM \"{table}\" t");
            let rows: String = c.fetch_one(&sql, &[]).await.map_err(fail)?.get(0);
            out.push((table, rows));
        }
        Ok(out)
    }

    /// One case: the guest books every way there is, then the same values are sent in invalid
    /// requests; nothing but the booking row and the email may hold them.
    async fn case(&self, g: &Guest) -> Result<(), TestCaseError> {
        let n = self.case.fetch_add(1, Ordering::SeqCst);
        let logs_from = log_len();
        let day = NaiveDate::from_ymd_opt(2030, 1, 7).expect("date") + Duration::days(i64::from(n));
        let at = |hour: u32| format!("{day}T{hour}:00:00Z");
        let who = format!("privacy-guest-{n}");
        let r = self.restaurant;
        let mut answers: Vec<(u16, Value)> = Vec::new();

        // Valid: hold → confirm (with an idempotency key, so the answer is stored), request,
        // change, read, cancel.
        let hold = json!({ "restaurant_id": r, "party_size": 2, "start": at(19) }).to_string();
        let (s, h) = self.call(&who, "POST", "/holds", &hold, &[]).await;
        prop_assert_eq!(s, 201, "hold: {}", h);
        let hold_id = h["hold_id"].as_str().unwrap_or_default().to_string();
        answers.push((s, h));
        let key = format!("confirm-{n}");
        let confirm = json!({ "guest": g.body() }).to_string();
        let (s, c) =
            self.call(&who, "POST", &format!("/holds/{hold_id}/confirm"), &confirm, &[("Idempotency-Key", &key)]).await;
        prop_assert_eq!(s, 200, "confirm of {:?}: {}", g, c);
        let confirmed = c["booking_id"].as_str().unwrap_or_default().to_string();
        answers.push((s, c));
        let request = json!({ "restaurant_id": r, "party_size": 3, "start": at(20), "guest": g.body() });
        let (s, b) = self.call(&who, "POST", "/bookings", &request.to_string(), &[("Idempotency-Key", "rq")]).await;
        prop_assert_eq!(s, 201, "request of {:?}: {}", g, b);
        let requested = b["booking_id"].as_str().unwrap_or_default().to_string();
        answers.push((s, b));
        // Both confirmations go out before the change and the cancel (a cancelled booking's
        // pending confirmation would be skipped).
        let mut messages = self.pump(g).await?;
        let (s, v) = self
            .call(&who, "PATCH", &format!("/bookings/{confirmed}"), &json!({ "start": at(21) }).to_string(), &[])
            .await;
        prop_assert_eq!(s, 200, "change: {}", v);
        answers.push((s, v));
        let (s, v) = self.call(&who, "GET", &format!("/bookings/{confirmed}"), "", &[]).await;
        prop_assert_eq!(s, 200, "read: {}", v);
        answers.push((s, v));
        let (s, v) = self.call(&who, "POST", &format!("/bookings/{requested}/cancel"), "", &[]).await;
        prop_assert_eq!(s, 200, "cancel: {}", v);
        answers.push((s, v));

        // Invalid: the same values where they are refused, each answer a 4xx.
        let with_guest = |guest: Value| json!({ "guest": guest }).to_string();
        let guest_with = |k: &str, v: Value| {
            let mut b = g.body();
            b[k] = v;
            b
        };
        let invalid_confirms = [
            with_guest(guest_with("email", json!(format!("{} <{}>", g.name, g.email)))),
            with_guest(guest_with("name", json!(format!("{} http://{}.example/x", g.name, g.name_mark)))),
            with_guest(guest_with("name", json!(format!("{}\u{7}", g.name)))),
            with_guest(guest_with("phone", json!(format!("{} ext {}", g.phone, g.notes)))),
            with_guest(guest_with("notes", json!(g.notes.repeat(1 + 1001 / g.notes.chars().count().max(1))))),
            with_guest(guest_with("name", json!({ "first": g.name, "email": g.email }))),
            with_guest(guest_with("email", json!([g.email, g.phone]))),
            json!({ "guest": g.body(), "guest_email": g.email, "notes": g.notes }).to_string(),
            format!("{{\"guest\": {{\"name\": {}, \"email\": ", Value::String(g.name.clone())),
            format!(
                "{{\"guest\": {{\"name\": {}, \"name\": {}}}}}",
                Value::String(g.name.clone()),
                Value::String(g.notes.clone())
            ),
            json!({ "guest": g.body(), "pad": g.notes.repeat(20_000 / g.notes.len().max(1) + 1) }).to_string(),
        ];
        let path = format!("/holds/{hold_id}/confirm");
        for body in &invalid_confirms {
            answers.push(self.call(&who, "POST", &path, body, &[]).await);
        }
        let invalid_requests = [
            json!({ "restaurant_id": r, "party_size": g.name, "start": at(20), "guest": g.body() }),
            json!({ "restaurant_id": g.email, "party_size": 2, "start": at(20), "guest": g.body() }),
            json!({ "restaurant_id": r, "party_size": 2, "start": g.notes, "guest": g.body() }),
            json!({ "restaurant_id": r, "party_size": 2, "start": g.phone, "guest": g.body() }),
            json!({ "restaurant_id": r, "party_size": 2, "start": at(20), "guest": g.name }),
            json!({ "restaurant_id": r, "party_size": 2, "start": at(20), "guest": guest_with("email", json!(g.name)) }),
        ];
        for body in &invalid_requests {
            answers.push(self.call(&who, "POST", "/bookings", &body.to_string(), &[]).await);
        }
        for body in [json!({ "party_size": g.phone }), json!({ "start": g.name, "guest": g.body() })] {
            answers.push(self.call(&who, "PATCH", &format!("/bookings/{confirmed}"), &body.to_string(), &[]).await);
        }
        // Someone else's booking, with the guest's values in the body: 404, no echo.
        answers.push(
            self.call(
                "someone-else",
                "PATCH",
                &format!("/bookings/{confirmed}"),
                &json!({ "start": g.notes }).to_string(),
                &[],
            )
            .await,
        );
        self.answers.fetch_add(answers.len() as u32, Ordering::Relaxed);
        for (i, (status, body)) in answers.iter().enumerate() {
            let valid = i < 6;
            prop_assert!(
                valid || (400..500).contains(status),
                "invalid request {} answered {}: {}",
                i - 6,
                status,
                body
            );
            check(g, &format!("HTTP response {i} ({status})"), &body.to_string())?;
        }

        // The rest of the jobs, the queue and the sends.
        messages += self.pump(g).await?;
        prop_assert!(messages >= 4, "only {} SQS messages for a confirm, a request, a change and a cancel", messages);
        for (table, rows) in self.rows_outside_bookings().await? {
            check(g, &format!("table {table}"), &rows)?;
        }
        check(g, "the log", &log_text(logs_from))?;

        // The values did go through: the booking rows and the emails hold them.
        let c = self.db.pool.get().await.map_err(fail)?;
        let stored: i64 = c
            .fetch_one(
                "SELECT count(*) FROM bookings WHERE guest_name = $1 AND guest_email = $2 AND guest_phone = $3
                    AND guest_notes = $4",
                &[&g.name, &g.email, &g.phone, &g.notes],
            )
            .await
            .map_err(fail)?
            .get(0);
        prop_assert_eq!(stored, 2, "the two bookings hold the guest's details as sent");
        let mails: Vec<String> = self
            .provider
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(to, _)| *to == g.email)
            .map(|(_, m)| m.clone())
            .collect();
        prop_assert!(
            mails.len() >= 4,
            "{} emails to the guest (confirmed ×2, updated, cancelled expected)",
            mails.len()
        );
        prop_assert!(mails.iter().all(|m| m.contains(&g.name_mark[1..])), "the emails greet the guest by name");
        Ok(())
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

#[test]
fn no_guest_value_reaches_logs_events_metrics_queues_or_error_bodies() {
    let _ = logs();
    let cases = std::env::var("HOLDFAST_PRIVACY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let ctx = rt.block_on(Ctx::new());
    let guests: Mutex<Vec<Guest>> = Mutex::new(Vec::new());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 16, ..Config::default() };
    let started = std::time::Instant::now();
    let result = TestRunner::new(config).run(&guest(), |g| {
        guests.lock().unwrap_or_else(|p| p.into_inner()).push(g.clone());
        rt.block_on(ctx.case(&g))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let guests = guests.into_inner().unwrap_or_else(|p| p.into_inner());

    // What the aggregator would publish for everything the cases recorded (windows closed by
    // running it ahead of the database clock).
    let sink = CapturingSink::default();
    let agg = Aggregator::new(
        ctx.db.pool.clone(),
        "dev",
        Arc::new(Ctx::flags(&ctx.db, &ctx.aws, Source::MetricsAggregator)),
        vec![Box::new(sink.clone())],
        None,
        Options::default(),
    );
    let report = rt
        .block_on(async {
            let now = agg.db_now().await?;
            agg.run_once(now + Duration::minutes(10)).await
        })
        .expect("aggregator run");
    let published = sink.data.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    assert!(report.windows_closed > 0 && published.contains("EmailsSent"), "nothing published: {report:?}");
    let tables = rt.block_on(ctx.rows_outside_bookings()).expect("rows");
    let log = log_text(0);
    assert!(log.contains("outbox relay tick"), "the log capture saw the relay's own line");
    for g in &guests {
        for (sink, text) in [("a metric datum", &published), ("the log", &log)] {
            if let Some(leak) = find_leak(g, text) {
                panic!("{sink}: {leak}");
            }
        }
        for (table, rows) in &tables {
            if let Some(leak) = find_leak(g, rows) {
                panic!("table {table}: {leak}");
            }
        }
    }
    eprintln!(
        "privacy: {} guests ({cases} cases), {} HTTP answers, {} SQS messages, {} emails captured, \
         {} log bytes, {} tables, {} datums ({} bytes) checked in {:.1} s",
        guests.len(),
        ctx.answers.load(Ordering::Relaxed),
        ctx.messages.load(Ordering::Relaxed),
        ctx.provider.sent.lock().unwrap_or_else(|p| p.into_inner()).len(),
        log.len(),
        tables.len(),
        report.datums,
        published.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The leak finder itself: it finds a marker however the value was escaped, and nothing else.
#[test]
fn leaks_are_found_through_any_escaping() {
    let g = Guest {
        name: "O\"Neil Kmnopqrstu".into(),
        email: "ada.ghijklmnop@example.com".into(),
        phone: "+44 (0)20 1234 5678".into(),
        notes: "{\"seat\": 1} vwxyzghijk".into(),
        name_mark: "kmnopqrstu".into(),
        email_mark: "ghijklmnop".into(),
        notes_mark: "vwxyzghijk".into(),
        phone_digits: "4402012345678".into(),
    };
    assert_eq!(find_leak(&g, r#"{"error":{"code":"validation_failed","field":"guest.email"}}"#), None);
    assert_eq!(find_leak(&g, &format!("{:?}", uuid::Uuid::new_v4())), None);
    for leaked in [
        json!({ "msg": g.name }).to_string(),
        format!("{:?}", g.notes),
        json!({ "v": format!("{:?}", g.email) }).to_string(),
        "tel 020 1234 5678".to_string(),
        "x KMNOPQRSTU y".to_string(),
    ] {
        assert!(find_leak(&g, &leaked).is_some(), "missed {leaked}");
    }
}
