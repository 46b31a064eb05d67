//! Email sender + outbox relay against the emulator's real SQS (queue + DLQ with a real
//! redrive policy, maxReceiveCount 5) and real PostgreSQL. Handlers get real SQS event shapes
//! built from messages received from the emulator; successes are deleted as the event source
//! mapping would. Visibility timeouts are short (2 s) and the backoff is 1 s, so redeliveries
//! are quick; time-based behaviour (deferrals) moves an injected clock instead of sleeping.

use chrono::Utc;
use email_sender::clock::{Clock, ManualClock, SystemClock};
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::{EmailProvider, OutgoingEmail, Receipt, ResendProvider, SendError, SesProvider};
use email_sender::relay::OutboxRelay;
use email_sender::sqs as q;
use email_sender::store::SendStore;
use futures::future::BoxFuture;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::{Backoff, EmailJob, EmailType};
use holdfast_shared::ids::BookingId;
use holdfast_tests::{http_get, wait_for, EmailFixture, TestAws};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const VISIBILITY: u32 = 2;
const PII: &[&str] = &["Jane Doe", "jane.doe", "example.com", "+44 7700 900123", "allergic to nuts"];

/// What the provider should do on each call.
#[derive(Clone)]
enum Script {
    Ok,
    FailTransientTimes(u32),
    AlwaysTransient,
    /// Panic for this idempotency key, succeed for the rest.
    PanicFor(String),
}

struct ScriptedProvider {
    script: Script,
    calls: AtomicU32,
    sent: Mutex<Vec<String>>,
}

impl ScriptedProvider {
    fn new(script: Script) -> Arc<Self> {
        Arc::new(Self { script, calls: AtomicU32::new(0), sent: Mutex::new(vec![]) })
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn sent(&self) -> Vec<String> {
        self.sent.lock().expect("lock").clone()
    }
}

impl EmailProvider for ScriptedProvider {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            match &self.script {
                Script::FailTransientTimes(k) if n <= *k => return Err(SendError::transient("test_throttled")),
                Script::AlwaysTransient => return Err(SendError::transient("test_unavailable")),
                Script::PanicFor(key) if *key == email.idempotency_key => panic!("poisoned job"),
                _ => {}
            }
            self.sent.lock().expect("lock").push(email.idempotency_key.clone());
            Ok(Receipt { provider: "scripted", message_id: Some(format!("m-{n}")) })
        })
    }
}

/// The shared email fixture; this file's helpers hang off it.
struct H(EmailFixture);

impl std::ops::Deref for H {
    type Target = EmailFixture;
    fn deref(&self) -> &EmailFixture {
        &self.0
    }
}

impl H {
    async fn new() -> H {
        H(EmailFixture::new("Chez Test", VISIBILITY).await)
    }

    async fn booking(&self, status: &str, email: &str) -> BookingId {
        let id = BookingId::new_random();
        let c = self.db.pool.get().await.expect("conn");
        c.run(
            "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email, guest_phone, guest_notes)
             VALUES ($1, $2, $3, 2, '2030-01-07 19:00Z', '2030-01-07 21:00Z', 'Jane Doe', $4, '+44 7700 900123', 'allergic to nuts')",
            &[&id.as_uuid(), &self.restaurant.as_uuid(), &status, &email],
        )
        .await
        .expect("booking");
        id
    }

    fn settings(&self) -> Settings {
        Settings {
            queue_url: self.pair.queue_url.clone(),
            from_address: "bookings@holdfast.test".into(),
            ops_address: Some("ops@holdfast.test".into()),
            lease: chrono::Duration::seconds(3),
            backoff: Backoff { base_seconds: 1, cap_seconds: 1 },
            max_hop_delay_seconds: 1,
        }
    }

    fn sender(&self, provider: Arc<dyn EmailProvider>, clock: Arc<dyn Clock>) -> EmailSender {
        EmailSender::new(SendStore::new(self.db.pool.clone()), provider, self.sqs.clone(), clock, self.settings())
    }

    async fn send_job(&self, job: &EmailJob) -> String {
        let out = self
            .sqs
            .send_message()
            .queue_url(&self.pair.queue_url)
            .message_body(serde_json::to_string(job).expect("json"))
            .send()
            .await
            .expect("send");
        out.message_id.expect("id")
    }

    /// Wait until the queue hands out at least one message (redelivery after visibility).
    async fn receive_some(&self, what: &str, timeout: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        wait_for(what, timeout, || async {
            let m = q::receive(&self.sqs, &self.pair.queue_url, 0, None).await.expect("receive");
            (!m.is_empty()).then_some(m)
        })
        .await
    }

    /// Accumulate at least `n` messages (held for 30 s so they can form one batch).
    async fn receive_n(&self, n: usize, timeout: Duration) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = vec![];
        while got.len() < n {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} messages, got {}", got.len());
            let m = q::receive(&self.sqs, &self.pair.queue_url, 0, Some(30)).await.expect("receive");
            if m.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got.extend(m);
        }
        got
    }

    async fn deliver(&self, sender: &EmailSender, msgs: &[aws_sdk_sqs::types::Message]) -> q::Delivery {
        q::deliver(&self.sqs, sender, &self.pair.queue_url, &self.pair.queue_arn, &self.region, msgs)
            .await
            .expect("deliver")
    }

    async fn depth(&self, url: &str) -> (u64, u64, u64) {
        q::queue_depth(&self.sqs, url).await.expect("depth")
    }

    async fn events(&self, event_type: &str) -> Vec<serde_json::Value> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch("SELECT context FROM observability_events WHERE event_type = $1 ORDER BY id", &[&event_type])
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn ledger(&self, key: &str) -> Option<(String, i32, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_opt("SELECT state, attempts, last_error FROM email_sends WHERE dedupe_key = $1", &[&key])
            .await
            .expect("ledger")
            .map(|r| (r.get(0), r.get(1), r.get(2)))
    }
}

fn receive_count(m: &aws_sdk_sqs::types::Message) -> u32 {
    m.attributes
        .as_ref()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .expect("ApproximateReceiveCount present")
}

#[tokio::test]
async fn a_job_is_sent_once_despite_three_deliveries() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    for _ in 0..3 {
        h.send_job(&job).await;
    }
    let provider = ScriptedProvider::new(Script::Ok);
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    // Three deliveries, each its own invocation (as three consumers would see them).
    let mut delivered = 0;
    while delivered < 3 {
        let msgs = h.receive_some("the three copies", Duration::from_secs(10)).await;
        for m in msgs {
            let d = h.deliver(&sender, std::slice::from_ref(&m)).await;
            assert!(d.failed.is_empty(), "no copy should fail: {d:?}");
            delivered += 1;
        }
    }
    // And an at-least-once redelivery of an already handled event changes nothing.
    assert_eq!(provider.calls(), 1, "exactly one provider call");
    assert_eq!(provider.sent(), vec![job.dedupe_key()]);
    assert_eq!(h.ledger(&job.dedupe_key()).await.map(|l| l.0), Some("sent".into()));
    assert_eq!(h.events("email.sent").await.len(), 1);
    let skipped = h.events("email.skipped").await;
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().all(|c| c["error_code"] == "already_sent"), "{skipped:?}");
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));
}

#[tokio::test]
async fn concurrent_consumers_send_once() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::Reminder, b);
    h.send_job(&job).await;
    let msgs = h.receive_some("the job", Duration::from_secs(10)).await;
    let provider = ScriptedProvider::new(Script::Ok);
    let a = h.sender(provider.clone(), Arc::new(SystemClock));
    let b2 = h.sender(provider.clone(), Arc::new(SystemClock));
    let ev = q::sqs_event(&msgs, &h.pair.queue_arn, &h.region);
    let (ra, rb) = tokio::join!(a.handle(ev.clone()), b2.handle(ev));
    assert_eq!(provider.calls(), 1, "one send across two concurrent consumers");
    // Exactly one of them reports the message as done; the other either saw it sent or busy.
    let failures = ra.batch_item_failures.len() + rb.batch_item_failures.len();
    assert!(failures <= 1, "{ra:?} {rb:?}");
}

#[tokio::test]
async fn provider_failing_twice_then_succeeding_sends_once() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    let id = h.send_job(&job).await;
    let provider = ScriptedProvider::new(Script::FailTransientTimes(2));
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    let mut counts = vec![];
    for round in 1..=3 {
        let msgs = h.receive_some(&format!("delivery {round}"), Duration::from_secs(15)).await;
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].message_id.as_deref(), Some(id.as_str()), "the same message comes back");
        counts.push(receive_count(&msgs[0]));
        let d = h.deliver(&sender, &msgs).await;
        assert_eq!(d.failed.len(), if round < 3 { 1 } else { 0 }, "round {round}: {d:?}");
    }
    assert_eq!(counts, vec![1, 2, 3]);
    assert_eq!(provider.calls(), 3);
    assert_eq!(provider.sent().len(), 1, "sent exactly once");
    assert_eq!(h.ledger(&job.dedupe_key()).await, Some(("sent".into(), 3, None)));
    let retried = h.events("email.retried").await;
    assert_eq!(retried.len(), 2);
    assert_eq!(retried[0]["attempt"], 1);
    assert_eq!(retried[1]["attempt"], 2);
    assert_eq!(retried[0]["error_code"], "test_throttled");
    assert_eq!(h.events("email.sent").await.len(), 1);
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));
}

#[tokio::test]
async fn always_failing_provider_dead_letters_after_five_receives_and_redrive_brings_it_back() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    h.send_job(&job).await;
    let failing = ScriptedProvider::new(Script::AlwaysTransient);
    let sender = h.sender(failing.clone(), Arc::new(SystemClock));
    let mut counts = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the DLQ; receives so far {counts:?}");
        let msgs = q::receive(&h.sqs, &h.pair.queue_url, 0, None).await.expect("receive");
        for m in &msgs {
            counts.push(receive_count(m));
        }
        h.deliver(&sender, &msgs).await;
        if h.depth(&h.pair.dlq_url).await.0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts, vec![1, 2, 3, 4, 5], "five receives, then the redrive policy");
    assert_eq!(failing.calls(), 5);
    assert_eq!(h.events("email.retried").await.len(), 4);
    let dead = h.events("email.dead_lettered").await;
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0]["attempt"].clone(), dead[0]["max_attempts"].clone()), (5.into(), 5.into()));
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));

    // The ops view shows it, without PII (jobs are ids only).
    let (depth, entries) = q::inspect_dlq(&h.sqs, &h.pair.dlq_url, 10).await.expect("inspect");
    assert_eq!((depth, entries.len()), (1, 1));
    let parsed: EmailJob = serde_json::from_str(&entries[0].body).expect("job body");
    assert_eq!(parsed.dedupe_key(), job.dedupe_key());

    // Redrive (receive-and-resend: the emulator lacks StartMessageMoveTask), provider fixed.
    let moved = q::redrive_resend(&h.sqs, &h.pair.dlq_url, &h.pair.queue_url, 100).await.expect("redrive");
    assert_eq!(moved, 1);
    let healthy = ScriptedProvider::new(Script::Ok);
    let fixed = h.sender(healthy.clone(), Arc::new(SystemClock));
    let msgs = h.receive_some("the redriven job", Duration::from_secs(10)).await;
    assert_eq!(receive_count(&msgs[0]), 1, "a redriven job starts a fresh receive count");
    let d = h.deliver(&fixed, &msgs).await;
    assert!(d.failed.is_empty());
    assert_eq!(healthy.sent(), vec![job.dedupe_key()]);
    assert_eq!(h.ledger(&job.dedupe_key()).await.map(|l| l.0), Some("sent".into()));
    assert_eq!(h.depth(&h.pair.dlq_url).await, (0, 0, 0));
}

#[tokio::test]
async fn a_batch_of_ten_with_one_poisoned_job_redelivers_only_that_one() {
    let h = H::new().await;
    let mut jobs = vec![];
    for _ in 0..10 {
        let b = h.booking("confirmed", "jane.doe@example.com").await;
        jobs.push(EmailJob::for_booking(EmailType::BookingConfirmed, b));
    }
    let poisoned = jobs[6].clone();
    let mut ids = vec![];
    for j in &jobs {
        ids.push(h.send_job(j).await);
    }
    let provider = ScriptedProvider::new(Script::PanicFor(poisoned.dedupe_key()));
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    let batch = h.receive_n(10, Duration::from_secs(10)).await;
    assert_eq!(batch.len(), 10);
    let d = h.deliver(&sender, &batch).await;
    assert_eq!(d.failed, vec![ids[6].clone()], "only the poisoned record is a batch item failure");
    assert_eq!(d.deleted, 9);
    let mut sent = provider.sent();
    sent.sort();
    let mut want: Vec<String> = jobs.iter().filter(|j| **j != poisoned).map(|j| j.dedupe_key()).collect();
    want.sort();
    assert_eq!(sent, want, "the other nine were sent");

    // Only the poisoned one comes back.
    let again = h.receive_some("the poisoned job's redelivery", Duration::from_secs(40)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id.as_deref(), Some(ids[6].as_str()));
    assert_eq!(receive_count(&again[0]), 2);
    let (visible, inflight, delayed) = h.depth(&h.pair.queue_url).await;
    assert_eq!(visible + inflight + delayed, 1, "nothing else is left on the queue");
    assert_eq!(h.events("email.sent").await.len(), 9);
    let retried = h.events("email.retried").await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["error_code"], "panic");
}

#[tokio::test]
async fn a_forty_minute_deferral_survives_a_consumer_restart() {
    let h = H::new().await;
    let b = h.booking("requested", "jane.doe@example.com").await;
    let t0 = Utc::now();
    let job = holdfast_shared::email::request_received(b, t0, 40);
    assert_eq!(job.not_before, Some(t0 + chrono::Duration::minutes(40)));
    let first_id = h.send_job(&job).await;
    let provider = ScriptedProvider::new(Script::Ok);

    // Consumer A at t0: re-queues (hop capped at 1 s here, 900 s in production) and acks.
    let clock_a = Arc::new(ManualClock::new(t0));
    let a = h.sender(provider.clone(), clock_a);
    let msgs = h.receive_some("the deferred job", Duration::from_secs(10)).await;
    let d = h.deliver(&a, &msgs).await;
    assert!(d.failed.is_empty() && d.deleted == 1, "{d:?}");
    drop(a); // the consumer goes away

    // A new consumer instance 20 minutes later: still not due, re-queued again.
    let clock_b = Arc::new(ManualClock::new(t0 + chrono::Duration::minutes(20)));
    let b_sender = h.sender(provider.clone(), clock_b.clone());
    let msgs = h.receive_some("the re-queued job", Duration::from_secs(10)).await;
    assert_ne!(msgs[0].message_id.as_deref(), Some(first_id.as_str()), "a re-queue is a new message");
    assert_eq!(receive_count(&msgs[0]), 1, "deferral hops do not count as receives");
    let d = h.deliver(&b_sender, &msgs).await;
    assert!(d.failed.is_empty());
    assert_eq!(provider.calls(), 0, "not sent before its time");
    drop(b_sender);

    // Another restart, after the 40 minutes: sent.
    let clock_c = Arc::new(ManualClock::new(t0 + chrono::Duration::minutes(40) + chrono::Duration::seconds(1)));
    let c = h.sender(provider.clone(), clock_c);
    let msgs = h.receive_some("the job, now due", Duration::from_secs(10)).await;
    let d = h.deliver(&c, &msgs).await;
    assert!(d.failed.is_empty());
    assert_eq!(provider.sent(), vec![job.dedupe_key()]);
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));
}

#[tokio::test]
async fn an_outbox_row_written_while_sqs_is_unreachable_is_published_when_it_returns() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    let c = h.db.pool.get().await.expect("conn");
    assert!(holdfast_adapters::outbox::enqueue(&c, &job, Utc::now()).await.expect("enqueue"));

    let dead_sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&h.aws.sdk).endpoint_url("http://127.0.0.1:9").build(),
    );
    let down = OutboxRelay::new(h.db.pool.clone(), dead_sqs, h.pair.queue_url.clone(), Arc::new(SystemClock));
    for _ in 0..3 {
        let r = down.tick().await.expect("tick");
        assert!(r.sqs_unavailable && r.published == 0, "{r:?}");
    }
    let row = c
        .fetch_one("SELECT published_at IS NULL, attempts, last_error, dead_at IS NULL FROM email_outbox WHERE dedupe_key = $1", &[&job.dedupe_key()])
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0), "not marked published while SQS is down");
    assert_eq!(row.get::<_, i32>(1), 0, "an outage does not count against the row");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("sqs_unavailable"));
    assert!(row.get::<_, bool>(3), "not dead");

    let up = OutboxRelay::new(h.db.pool.clone(), h.sqs.clone(), h.pair.queue_url.clone(), Arc::new(SystemClock));
    let r = up.tick().await.expect("tick");
    assert_eq!((r.published, r.sqs_unavailable), (1, false));
    assert_eq!(up.tick().await.expect("tick").published, 0, "published once");
    let published: bool = c
        .fetch_one("SELECT published_at IS NOT NULL FROM email_outbox WHERE dedupe_key = $1", &[&job.dedupe_key()])
        .await
        .expect("row")
        .get(0);
    assert!(published);

    let msgs = h.receive_some("the published job", Duration::from_secs(10)).await;
    let body: EmailJob = serde_json::from_str(msgs[0].body.as_deref().expect("body")).expect("job");
    assert_eq!(body, job);
    let provider = ScriptedProvider::new(Script::Ok);
    let d = h.deliver(&h.sender(provider.clone(), Arc::new(SystemClock)), &msgs).await;
    assert!(d.failed.is_empty());
    assert_eq!(provider.sent(), vec![job.dedupe_key()]);
}

#[tokio::test]
async fn cancelled_bookings_skip_pending_emails_and_unknown_bookings_fail_permanently() {
    let h = H::new().await;
    let b = h.booking("cancelled", "jane.doe@example.com").await;
    let pending = EmailJob::for_booking(EmailType::Reminder, b);
    let notice = EmailJob::for_booking(EmailType::BookingCancelled, b);
    let unknown = EmailJob::for_booking(EmailType::BookingConfirmed, BookingId::new_random());
    for j in [&pending, &notice, &unknown] {
        h.send_job(j).await;
    }
    let provider = ScriptedProvider::new(Script::Ok);
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    let got = h.receive_n(3, Duration::from_secs(10)).await;
    let d = h.deliver(&sender, &got).await;
    assert!(d.failed.is_empty(), "skips and permanent failures are acknowledged: {d:?}");
    assert_eq!(provider.sent(), vec![notice.dedupe_key()], "only the cancellation notice goes out");
    assert_eq!(h.ledger(&pending.dedupe_key()).await, None, "a skip leaves no claim behind");
    assert_eq!(
        h.ledger(&unknown.dedupe_key()).await,
        Some(("failed_permanent".into(), 1, Some("unknown_booking".into())))
    );
    let skipped = h.events("email.skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["error_code"], "booking_cancelled");
    assert_eq!(h.events("email.failed").await.len(), 1);
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));
}

#[tokio::test]
async fn ses_path_really_sends_through_the_emulator_with_no_pii_in_events() {
    let h = H::new().await;
    let address = format!("jane.doe+{}@example.com", h.aws.prefix);
    let b = h.booking("confirmed", &address).await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    h.send_job(&job).await;
    email_sender::ensure_ses_identity(&h.aws.sdk, "bookings@holdfast.test").await.expect("identity");
    let ses = Arc::new(SesProvider::new(aws_sdk_sesv2::Client::new(&h.aws.sdk)));
    let sender = h.sender(ses, Arc::new(SystemClock));
    let msgs = h.receive_some("the job", Duration::from_secs(10)).await;
    assert!(!PII.iter().any(|p| msgs[0].body.as_deref().unwrap_or("").contains(p)), "queue message carries ids only");
    let d = h.deliver(&sender, &msgs).await;
    assert!(d.failed.is_empty(), "{d:?}");

    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("endpoint");
    let data: serde_json::Value =
        serde_json::from_str(&http_get(&endpoint, "/moto-api/data.json").await).expect("moto data");
    let ses_json = data["ses"].to_string();
    assert!(ses_json.contains(&address), "moto recorded a message to the guest");
    assert!(ses_json.contains("Your table at Chez Test is confirmed"), "subject rendered");
    assert!(ses_json.contains("Hello Jane Doe"), "body rendered from the booking");

    let (state, _, _) = h.ledger(&job.dedupe_key()).await.expect("ledger row");
    assert_eq!(state, "sent");
    let c = h.db.pool.get().await.expect("conn");
    let provider_id: Option<String> = c
        .fetch_one("SELECT provider_message_id FROM email_sends WHERE dedupe_key = $1", &[&job.dedupe_key()])
        .await
        .expect("row")
        .get(0);
    assert!(provider_id.is_some_and(|s| !s.is_empty()), "SES message id recorded");
    let all: Vec<String> = c
        .fetch("SELECT row_to_json(e)::text FROM observability_events e", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!all.is_empty());
    let ledger: String =
        c.fetch_one("SELECT row_to_json(s)::text FROM email_sends s", &[]).await.expect("ledger").get(0);
    for text in all.iter().chain(std::iter::once(&ledger)) {
        for p in PII {
            assert!(!text.contains(p), "PII {p:?} in {text}");
        }
    }
}

/// A one-shot capture server: answers each request with the next scripted status and keeps
/// the request's head and body.
async fn capture_server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(vec![]));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        for status in statuses {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            seen2.lock().expect("lock").push(String::from_utf8_lossy(&buf).to_string());
            let body = if status == 200 { r#"{"id":"re_123"}"# } else { r#"{"name":"error"}"# };
            let resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn resend_reads_its_key_from_ssm_sends_the_idempotency_key_and_classifies_errors() {
    let aws = TestAws::new().await;
    let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
    let param = format!("/{}/secrets/resend-api-key", aws.prefix);
    ssm.put_parameter()
        .name(&param)
        .value("re_test_key_123")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put key");
    let (base, seen) = capture_server(vec![200, 503, 422]).await;
    let resend = ResendProvider::from_ssm(&ssm, &param, &base).await.expect("provider");
    assert!(!format!("{resend:?}").contains("re_test_key_123"), "the key is never printed");
    let email = OutgoingEmail {
        to: "jane.doe@example.com".into(),
        from: "bookings@holdfast.test".into(),
        subject: "Your table".into(),
        text: "Hello".into(),
        html: "<p>Hello</p>".into(),
        idempotency_key: "booking:abc:booking_confirmed".into(),
        attempt_id: uuid::Uuid::new_v4(),
    };
    let ok = resend.send(&email).await.expect("200 accepted");
    assert_eq!(ok.message_id.as_deref(), Some("re_123"));
    // A 5xx may follow acceptance: ambiguous (safe to retry here, the key deduplicates).
    assert_eq!(resend.send(&email).await, Err(SendError::Ambiguous("resend_http_503".into())));
    assert_eq!(resend.send(&email).await, Err(SendError::Permanent("resend_http_422".into())));
    let reqs = seen.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 3);
    let first = reqs[0].to_ascii_lowercase();
    assert!(first.starts_with("post /emails "), "{first}");
    assert!(first.contains("idempotency-key: booking:abc:booking_confirmed"));
    assert!(first.contains("authorization: bearer re_test_key_123"));
    let body: serde_json::Value = serde_json::from_str(reqs[0].split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(body["to"], serde_json::json!(["jane.doe@example.com"]));
    assert_eq!((body["text"].as_str(), body["html"].as_str()), (Some("Hello"), Some("<p>Hello</p>")));

    // Nothing listening: transient.
    let nobody = ResendProvider::new("http://127.0.0.1:9", email_sender::provider::ApiKey::new("k")).expect("client");
    assert!(nobody.send(&email).await.is_err_and(|e| e.is_transient()));
}

#[tokio::test]
async fn one_claim_statement_per_batch() {
    let h = H::new().await;
    let mut msgs_jobs = vec![];
    for _ in 0..10 {
        let b = h.booking("confirmed", "jane.doe@example.com").await;
        let j = EmailJob::for_booking(EmailType::BookingConfirmed, b);
        h.send_job(&j).await;
        msgs_jobs.push(j);
    }
    let provider = ScriptedProvider::new(Script::Ok);
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    let batch = h.receive_n(10, Duration::from_secs(10)).await;
    let before = sender.store().statements();
    let d = h.deliver(&sender, &batch).await;
    assert!(d.failed.is_empty());
    // claim (1) + outcomes (1) + events (1), whatever the batch size.
    assert_eq!(sender.store().statements() - before, 3);
    assert_eq!(provider.sent().len(), 10);
}

#[tokio::test]
async fn a_panic_inside_the_provider_call_is_not_resent_after_its_lease() {
    let h = H::new().await;
    let b = h.booking("confirmed", "jane.doe@example.com").await;
    let job = EmailJob::for_booking(EmailType::BookingConfirmed, b);
    h.send_job(&job).await;
    // The provider may have accepted it before panicking: the outcome is unknown.
    let provider = ScriptedProvider::new(Script::PanicFor(job.dedupe_key()));
    let sender = h.sender(provider.clone(), Arc::new(SystemClock));
    let d = h.deliver(&sender, &h.receive_some("the job", Duration::from_secs(10)).await).await;
    assert_eq!(d.failed.len(), 1, "retried: {d:?}");
    // Busy while the lease (3 s) lasts; then the unresolved attempt stops a second call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        let d = h.deliver(&sender, &h.receive_some("a redelivery", Duration::from_secs(20)).await).await;
        if d.failed.is_empty() {
            break;
        }
    }
    assert_eq!(provider.calls(), 1, "the provider is not asked again");
    assert_eq!(
        h.ledger(&job.dedupe_key()).await.map(|l| (l.0, l.2)),
        Some(("suppressed_ambiguous".into(), Some("earlier_attempt_unresolved".into())))
    );
    let suppressed = h.events("email.suppressed").await;
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0]["error_code"], "earlier_attempt_unresolved");
    assert_eq!(h.depth(&h.pair.queue_url).await, (0, 0, 0));
}
