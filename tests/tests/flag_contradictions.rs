//! Every function that loads flags records a contradictory set it reads, built the way it is
//! deployed: its own `build(&Config)` from a `Config` (a test database, a test SSM prefix on the
//! emulator), then one invocation through its Lambda entry point. The contradiction is written to
//! SSM out of band, as someone bypassing the flag approver would, and the `flags.contradiction`
//! row must reach `observability_events` with that function's source: the `FlagContradictions`
//! metric, and so its alarm, is counted from those rows.
//!
//! The flag approver is not here: it never loads flags through the cached loader (it reads SSM
//! afresh for every change and shows contradictions in `GET /flags/matrix`).

use holdfast_adapters::config::Config;
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::{names, ssm_parameter_name, Environment};
use holdfast_shared::ids::{BookingId, RestaurantId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use serde_json::json;
use std::collections::HashMap;

struct Deployed {
    db: TestDb,
    aws: TestAws,
}

impl Deployed {
    /// A fresh database and SSM prefix with FR001 broken in prod: `allocator.requireAdjacency`
    /// written `false` around the approver while merges stay on (the default).
    async fn with_contradiction() -> Deployed {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let d = Deployed { db, aws };
        aws_sdk_ssm::Client::new(&d.aws.sdk)
            .put_parameter()
            .name(ssm_parameter_name(&d.prefix(), names::ALLOCATOR_REQUIRE_ADJACENCY))
            .value("false")
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("out-of-band flag write");
        d
    }

    fn prefix(&self) -> String {
        format!("/{}/{}", self.aws.prefix, Environment::Prod.as_str())
    }

    /// The configuration a prod stack gives its functions, from environment variables, pointing
    /// at the test database (as the runtime role, with the harness's TLS settings) and the test
    /// SSM prefix.
    fn config(&self, extra: &[(&str, String)]) -> Config {
        // Prod requires TLS when the URL names no `sslmode`; a cluster without TLS says so.
        let url = if self.db.url.contains("sslmode=") {
            self.db.url.clone()
        } else {
            format!("{}{}sslmode=disable", self.db.url, if self.db.url.contains('?') { '&' } else { '?' })
        };
        let mut vars: HashMap<String, String> = HashMap::from([
            ("HOLDFAST_ENV".into(), "prod".into()),
            ("DATABASE_URL".into(), url),
            ("DATABASE_POOL_SIZE".into(), "2".into()),
            ("HOLDFAST_SSM_PREFIX".into(), self.prefix()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Config::from_lookup(|k| vars.get(k).cloned()).expect("valid config")
    }

    /// The `flags.contradiction` rows recorded by `source`, as their error codes.
    async fn contradiction_codes(&self, source: &str) -> Vec<String> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT context->>'error_code' FROM observability_events \
             WHERE event_type = 'flags.contradiction' AND source = $1 ORDER BY id",
            &[&source],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
    }
}

#[tokio::test]
async fn holds_api_records_a_contradiction_it_reads() {
    let d = Deployed::with_contradiction().await;
    let restaurant = RestaurantId::new_random();
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = 3650; // the fixed 2030 date below
    let c = d.db.pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, restaurant, "Test Bistro", &policy).await.expect("publish");
    drop(c);
    assert!(d.contradiction_codes("holds-api").await.is_empty());

    let svc = holds_api::build(&d.config(&[])).await.expect("build as main.rs does");
    let body = json!({ "party_size": 2, "start": "2030-01-07T19:00:00Z" }).to_string();
    let req = api_request("POST", &format!("/restaurants/{restaurant}/quotes"), &body, Some("guest"), &[]);
    let (status, v) = response_json(holds_api::api::handle(&svc, req).await);
    assert_eq!(status, 200, "{v}");
    assert_eq!(d.contradiction_codes("holds-api").await, ["fr001"]);
}

#[tokio::test]
async fn email_sender_records_a_contradiction_it_reads() {
    let d = Deployed::with_contradiction().await;
    let sqs = aws_sdk_sqs::Client::new(&d.aws.sdk);
    let pair = email_sender::sqs::create_queue_pair(&sqs, &d.aws.name("email"), &d.aws.name("email-dlq"), 30)
        .await
        .expect("queues");
    let from = "bookings@holdfast.test";
    email_sender::ensure_ses_identity(&d.aws.sdk, from).await.expect("SES identity");
    let (restaurant, booking) = (RestaurantId::new_random(), BookingId::new_random());
    let c = d.db.pool.get().await.expect("conn");
    c.run("INSERT INTO restaurants (id, name) VALUES ($1, 'Chez Test')", &[&restaurant.as_uuid()])
        .await
        .expect("restaurant");
    c.run(
        "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email) \
         VALUES ($1, $2, 'confirmed', 2, '2030-01-07 19:00Z', '2030-01-07 21:00Z', 'Guest', $3)",
        &[&booking.as_uuid(), &restaurant.as_uuid(), &format!("guest+{}@example.com", d.aws.prefix)],
    )
    .await
    .expect("booking");
    drop(c);
    let job =
        holdfast_shared::email::EmailJob::for_booking(holdfast_shared::email::EmailType::BookingConfirmed, booking);
    sqs.send_message()
        .queue_url(&pair.queue_url)
        .message_body(serde_json::to_string(&job).expect("job json"))
        .send()
        .await
        .expect("enqueue");

    let cfg = d.config(&[("EMAIL_QUEUE_URL", pair.queue_url.clone()), ("SES_FROM_ADDRESS", from.into())]);
    let sender = email_sender::build_sender(&cfg).await.expect("build as main.rs does");
    let msgs = holdfast_tests::wait_for("the job on the queue", std::time::Duration::from_secs(10), || async {
        let m = email_sender::sqs::receive(&sqs, &pair.queue_url, 0, None).await.expect("receive");
        (!m.is_empty()).then_some(m)
    })
    .await;
    let region = d.aws.sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
    // One invocation with the SQS event shape the event source mapping delivers.
    let resp = sender.handle(email_sender::sqs::sqs_event(&msgs, &pair.queue_arn, &region)).await;
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(d.contradiction_codes("email-sender").await, ["fr001"]);
}

#[tokio::test]
async fn metrics_aggregator_records_a_contradiction_it_reads() {
    let d = Deployed::with_contradiction().await;
    let agg = metrics_aggregator::build(&d.config(&[])).await.expect("build as main.rs does");
    let mut ctx = lambda_runtime::Context::default();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    ctx.deadline = deadline.duration_since(std::time::UNIX_EPOCH).expect("after the epoch").as_millis() as u64;
    let tick: aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value> = serde_json::from_value(json!({
        "version": "0", "id": "t", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2030-01-07T19:00:00Z", "region": "eu-west-1",
        "resources": [], "detail": {}
    }))
    .expect("a scheduled event");
    metrics_aggregator::handle(&agg, lambda_runtime::LambdaEvent::new(tick, ctx)).await.expect("one run");
    assert_eq!(d.contradiction_codes("metrics-aggregator").await, ["fr001"]);
}
