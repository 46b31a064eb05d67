//! Retention with bounded cost (issue 15): the hourly maintenance run
//! (`metrics_aggregator::maintenance`) against real PostgreSQL, as the functions run it: the
//! runtime role, which holds no DDL and no DELETE and reaches each step only through V12's
//! SECURITY DEFINER functions. Time is simulated by writing rows with old timestamps (the
//! database clock decides what is due), nothing sleeps.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::metrics::window_start_of;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use metrics_aggregator::maintenance::{Maintenance, Options, Report, Step, StepEnd};
use serde_json::json;
use std::sync::Arc;
use tokio_postgres::error::SqlState;

fn maintenance(db: &TestDb) -> Maintenance {
    Maintenance::new(db.pool.clone(), Options::default())
}

async fn run(db: &TestDb) -> Report {
    let r = maintenance(db).run().await.expect("maintenance run");
    assert!(r.problems().is_empty(), "problems: {:?}\n{r:#?}", r.problems());
    assert!(r.steps.iter().all(|s| s.end == StepEnd::Done), "{r:#?}");
    r
}

async fn today(db: &TestDb) -> NaiveDate {
    let c = db.pool.get().await.expect("conn");
    c.fetch_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[]).await.expect("today").get(0)
}

fn part(day: NaiveDate) -> String {
    format!("observability_events_p{}", day.format("%Y%m%d"))
}

async fn partitions(db: &TestDb) -> Vec<String> {
    let c = db.pool.get().await.expect("conn");
    c.fetch("SELECT name FROM holdfast_event_partitions() ORDER BY name", &[])
        .await
        .expect("partitions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// One event at `at`, written as every function writes them (through the parent table).
async fn event_at(db: &TestDb, at: DateTime<Utc>, event_type: &str) -> i64 {
    let c = db.pool.get().await.expect("conn");
    c.fetch_one(
        "INSERT INTO observability_events (created_at, source, event_type, severity, context)
         VALUES ($1, 'holds-api', $2, 'info', '{\"duration_ms\": 3}') RETURNING id",
        &[&at, &event_type],
    )
    .await
    .expect("insert event")
    .get(0)
}

/// Which partition holds event `id` (none: it is gone).
async fn home_of(db: &TestDb, id: i64) -> Option<String> {
    let c = db.pool.get().await.expect("conn");
    c.fetch_opt("SELECT tableoid::regclass::text FROM observability_events WHERE id = $1", &[&id])
        .await
        .expect("home")
        .map(|r| r.get(0))
}

#[tokio::test]
async fn a_91_day_old_partition_is_dropped_while_a_recent_one_stays() {
    let db = TestDb::new().await;
    let today = today(&db).await;
    let noon = |d: NaiveDate| d.and_hms_opt(12, 0, 0).expect("noon").and_utc();
    let (d91, d89) = (today - Duration::days(91), today - Duration::days(89));
    // A fresh database has partitions from today on; older rows wait in the default partition.
    let old = event_at(&db, noon(d91), "hold.created").await;
    let recent = event_at(&db, noon(d89), "hold.created").await;
    let now = event_at(&db, Utc::now(), "hold.created").await;
    assert_eq!(home_of(&db, old).await.as_deref(), Some("observability_events_default"));
    assert_eq!(home_of(&db, now).await, Some(part(today)));

    let r = run(&db).await;
    // Their days got partitions (the rows moved into them), then the one wholly older than 90
    // days was dropped, with its row; the 89-day-old one stays.
    assert!(r.partitions_created.contains(&part(d91)) && r.partitions_created.contains(&part(d89)), "{r:#?}");
    assert_eq!(r.partitions_dropped, vec![part(d91)]);
    let names = partitions(&db).await;
    assert!(!names.contains(&part(d91)), "{names:?}");
    assert_eq!(home_of(&db, old).await, None, "the 91-day-old row went with its partition");
    assert_eq!(home_of(&db, recent).await, Some(part(d89)));
    assert_eq!(home_of(&db, now).await, Some(part(today)));
    // A week ahead is covered, nothing waits in the default partition.
    for d in 0..=7 {
        assert!(names.contains(&part(today + Duration::days(d))), "day +{d} missing: {names:?}");
    }
    assert_eq!((r.health.days_ahead >= 7, r.health.default_rows), (true, 0), "{:?}", r.health);

    // The partitions the run made belong to the schema owner, and the runtime role may read
    // them (it owns nothing and still has no DDL).
    let c = db.pool.get().await.expect("conn");
    let p = part(d89);
    let row = c
        .fetch_one(
            "SELECT pg_get_userbyid(relowner) <> current_user, has_table_privilege(oid, 'SELECT'),
                    has_table_privilege(oid, 'DELETE') FROM pg_class WHERE relname = $1",
            &[&p],
        )
        .await
        .expect("partition");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2)), (true, true, false));
    let e = c.batch_execute(&format!("DROP TABLE {p}")).await.expect_err("no DDL for the runtime role");
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // Idempotent: a second run finds nothing to do; the run recorded its event.
    let again = run(&db).await;
    assert!(again.partitions_created.is_empty() && again.partitions_dropped.is_empty(), "{again:#?}");
    let done: i64 = c
        .fetch_one(
            "SELECT count(*) FROM observability_events WHERE event_type = 'maintenance.completed' AND source = 'maintenance'",
            &[],
        )
        .await
        .expect("events")
        .get(0);
    assert_eq!(done, 2);
}

#[tokio::test]
async fn the_retention_cannot_be_set_below_its_floor_even_by_calling_the_function() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("conn");
    let e = c.fetch_one("SELECT holdfast_drop_expired_event_partition(7)", &[]).await.expect_err("floor");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    let e = c.fetch_one("SELECT holdfast_purge_idempotency_keys('1 hour', 100)", &[]).await.expect_err("floor");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    let e =
        Options::from_lookup(|k| (k == "HOLDFAST_EVENT_RETENTION_DAYS").then(|| "7".to_owned())).expect_err("floor");
    assert_eq!(e.name, "HOLDFAST_EVENT_RETENTION_DAYS");
}

#[tokio::test]
async fn a_25_hour_old_idempotency_key_is_purged_while_a_live_one_stays() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("conn");
    for (key, age) in [("old", "25 hours"), ("live", "23 hours")] {
        c.run(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response, created_at)
             VALUES ('hold:tester', $1, 'h', 201, '{}', now() - $2::text::interval)",
            &[&key, &age],
        )
        .await
        .expect("key");
    }
    // The runtime role may not delete keys itself: only through the maintenance function.
    let e = c.run("DELETE FROM idempotency_keys", &[]).await.expect_err("no DELETE");
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    let r = run(&db).await;
    assert_eq!(r.rows(Step::IdempotencyKeys), 1);
    let left: Vec<String> =
        c.fetch("SELECT key FROM idempotency_keys", &[]).await.expect("keys").iter().map(|r| r.get(0)).collect();
    assert_eq!(left, vec!["live".to_owned()]);
}

/// A restaurant with the demo floor plan and a holds service on the runtime pool.
async fn holds(db: &TestDb, aws: &TestAws) -> (Arc<holds_api::HoldsService>, RestaurantId, BookingPolicy) {
    let restaurant = RestaurantId::new_random();
    let mut policy = BookingPolicy::demo(1);
    policy.booking_horizon.max_days_ahead = 3650;
    let c = db.pool.get().await.expect("conn");
    holds_api::store::publish_policy(&c, restaurant, "Retention Bistro", &policy).await.expect("publish");
    let flags = Arc::new(FlagLoader::unrecorded(
        aws_sdk_ssm::Client::new(&aws.sdk),
        holdfast_shared::flags::Environment::Dev,
        format!("/{}/dev", aws.prefix),
        std::time::Duration::from_secs(30),
    ));
    (Arc::new(holds_api::HoldsService::new(db.pool.clone(), flags)), restaurant, policy)
}

#[tokio::test]
async fn an_expired_claim_is_deactivated_and_the_constraint_still_refuses_a_live_overlap() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let (svc, restaurant, policy) = holds(&db, &aws).await;
    let table = policy.tables.iter().find(|t| t.label == "M1").expect("demo table").id;
    let hold = |start: &'static str| {
        let body = json!({ "restaurant_id": restaurant, "party_size": 2, "start": start, "table_ids": [table] });
        let svc = svc.clone();
        async move {
            response_json(
                holds_api::api::handle(&svc, api_request("POST", "/holds", &body.to_string(), Some("tester"), &[]))
                    .await,
            )
        }
    };
    let (expired_start, live_start) = ("2030-01-07T19:00:00Z", "2030-01-08T19:00:00Z");
    let (s, expired) = hold(expired_start).await;
    assert_eq!(s, 201, "{expired}");
    let (s, live) = hold(live_start).await;
    assert_eq!(s, 201, "{live}");
    // Time passes for the first hold only: its deadline is behind the database clock. Nothing
    // writes over its slot, so prune-on-write never deactivates it.
    let c = db.pool.get().await.expect("conn");
    let expired_id: uuid::Uuid = expired["hold_id"].as_str().expect("id").parse().expect("uuid");
    c.run("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = $1", &[&expired_id])
        .await
        .expect("age");
    c.run("UPDATE table_claims SET expires_at = now() - interval '1 second' WHERE hold_id = $1", &[&expired_id])
        .await
        .expect("age");
    let in_index = "SELECT count(*) FROM table_claims WHERE active AND exclusive";
    let before: i64 = c.fetch_one(in_index, &[]).await.expect("count").get(0);
    assert_eq!(before, 2, "both claims sit in the exclusion index until the sweep");

    let r = run(&db).await;
    assert_eq!(r.rows(Step::HoldClaims), 1);
    let state = "SELECT active FROM table_claims WHERE hold_id = $1";
    let live_id: uuid::Uuid = live["hold_id"].as_str().expect("id").parse().expect("uuid");
    assert!(!c.fetch_one(state, &[&expired_id]).await.expect("claim").get::<_, bool>(0));
    assert!(c.fetch_one(state, &[&live_id]).await.expect("claim").get::<_, bool>(0));
    let after: i64 = c.fetch_one(in_index, &[]).await.expect("count").get(0);
    assert_eq!(after, 1, "only the live claim is left in the exclusion index");

    // The database itself (no prune first, a raw insert): a claim over the expired slot is
    // accepted, one over the live hold's slot is refused by the exclusion constraint.
    let raw = "INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive)
               SELECT restaurant_id, table_id, 'hold', hold_id, during, now() + interval '5 minutes', true
                 FROM table_claims WHERE hold_id = $1";
    c.run(raw, &[&expired_id]).await.expect("the expired slot is free in the index");
    let e = c.run(raw, &[&live_id]).await.expect_err("the live slot is still exclusive");
    assert_eq!(e.code(), Some(&SqlState::EXCLUSION_VIOLATION));
    // And through the API: the live hold still wins its slot.
    let (s, v) = hold(live_start).await;
    assert_eq!(s, 409, "{v}");
    let overlaps: i64 = c
        .fetch_one(
            "SELECT count(*) FROM table_claims a JOIN table_claims b
               ON a.id < b.id AND a.table_id = b.table_id AND a.during && b.during
              WHERE a.active AND b.active AND a.exclusive AND b.exclusive",
            &[],
        )
        .await
        .expect("overlaps")
        .get(0);
    assert_eq!(overlaps, 0);
}

#[tokio::test]
async fn the_outbox_the_email_ledger_and_metric_batches_keep_what_the_policy_says() {
    let db = TestDb::new().await;
    let owner = db.owner_pool();
    let o = owner.get().await.expect("owner");
    // Outbox: published 31 days ago (purged), published 29 days ago (kept), dead (kept until an
    // operator acts), pending (kept), published but its send is suppressed (kept: the resend
    // procedure re-publishes it).
    o.batch_execute(
        "INSERT INTO email_outbox (id, dedupe_key, email_type, payload, published_at, dead_at) VALUES
           (gen_random_uuid(), 'k:old', 'reminder', '{}', now() - interval '31 days', NULL),
           (gen_random_uuid(), 'k:recent', 'reminder', '{}', now() - interval '29 days', NULL),
           (gen_random_uuid(), 'k:dead', 'reminder', '{}', NULL, now() - interval '60 days'),
           (gen_random_uuid(), 'k:pending', 'reminder', '{}', NULL, NULL),
           (gen_random_uuid(), 'k:suppressed', 'reminder', '{}', now() - interval '60 days', NULL);
         INSERT INTO email_sends (dedupe_key, email_type, state, claimed_until, sent_at, updated_at) VALUES
           ('k:old', 'reminder', 'sent', NULL, now() - interval '91 days', now() - interval '91 days'),
           ('k:recent', 'reminder', 'sent', NULL, now() - interval '29 days', now() - interval '29 days'),
           ('k:suppressed', 'reminder', 'suppressed_ambiguous', NULL, NULL, now() - interval '120 days');
         INSERT INTO email_send_attempts (attempt_id, dedupe_key, provider, started_at, outcome, finished_at) VALUES
           (gen_random_uuid(), 'k:old', 'ses', now() - interval '91 days', 'accepted', now() - interval '91 days'),
           (gen_random_uuid(), 'k:suppressed', 'ses', now() - interval '120 days', NULL, NULL);
         INSERT INTO metrics_batches (kind, window_start, datums, datum_count) VALUES
           ('events', now() - interval '31 days', '[]', 0), ('events', now() - interval '10 days', '[]', 0);
         INSERT INTO metrics_publications (kind, window_start, sink)
           SELECT kind, window_start, 'datadog' FROM metrics_batches;",
    )
    .await
    .expect("seed");
    let r = run(&db).await;
    assert_eq!(
        (r.rows(Step::EmailOutbox), r.rows(Step::EmailSends), r.rows(Step::MetricsBatches)),
        (1, 1, 1),
        "{r:#?}"
    );
    let keys = |sql: &'static str| {
        let o = &o;
        async move { o.fetch(sql, &[]).await.expect("keys").iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>() }
    };
    assert_eq!(
        keys("SELECT dedupe_key FROM email_outbox ORDER BY 1").await,
        ["k:dead", "k:pending", "k:recent", "k:suppressed"]
    );
    assert_eq!(keys("SELECT dedupe_key FROM email_sends ORDER BY 1").await, ["k:recent", "k:suppressed"]);
    assert_eq!(keys("SELECT dedupe_key FROM email_send_attempts ORDER BY 1").await, ["k:suppressed"]);
    let batches: i64 = o.fetch_one("SELECT count(*) FROM metrics_batches", &[]).await.expect("b").get(0);
    let pubs: i64 = o.fetch_one("SELECT count(*) FROM metrics_publications", &[]).await.expect("p").get(0);
    assert_eq!((batches, pubs), (1, 1), "the stale pending batch went with its publication");
}

#[tokio::test]
async fn two_runs_at_once_share_the_work_and_neither_fails() {
    let db = TestDb::new().await;
    let today = today(&db).await;
    for d in [95, 94, 93] {
        event_at(&db, (today - Duration::days(d)).and_hms_opt(1, 0, 0).expect("t").and_utc(), "quote.completed").await;
    }
    let (a, b) = (maintenance(&db), maintenance(&db));
    let (ra, rb) = tokio::join!(a.run(), b.run());
    let (ra, rb) = (ra.expect("run a"), rb.expect("run b"));
    for r in [&ra, &rb] {
        assert!(r.problems().is_empty(), "{r:#?}");
        assert!(r.steps.iter().all(|s| !matches!(s.end, StepEnd::Failed(_))), "{r:#?}");
    }
    // Whatever the interleaving, each day was created once and dropped once, by one of them.
    let mut dropped: Vec<String> = ra.partitions_dropped.iter().chain(&rb.partitions_dropped).cloned().collect();
    dropped.sort();
    let mut created: Vec<String> = ra.partitions_created.iter().chain(&rb.partitions_created).cloned().collect();
    created.sort();
    created.dedup();
    assert_eq!(created.len(), ra.partitions_created.len() + rb.partitions_created.len(), "a day created twice");
    // A run that found the other holding the lock stopped; finish with one more run.
    let last = run(&db).await;
    dropped.extend(last.partitions_dropped);
    dropped.sort();
    assert_eq!(dropped, [95, 94, 93].map(|d| part(today - Duration::days(d))));
    let names = partitions(&db).await;
    assert!(names.iter().all(|n| !dropped.contains(n)));
}

#[tokio::test]
async fn the_aggregator_reads_events_across_partitions() {
    let db = TestDb::new().await;
    let aws = TestAws::new().await;
    let today = today(&db).await;
    let midnight = today.and_time(chrono::NaiveTime::MIN).and_utc();
    // Two windows either side of midnight UTC, so in two daily partitions: yesterday's rows
    // wait in the default partition until maintenance makes yesterday's partition and moves
    // them there; one more arrives after that, straight into the new partition.
    let before = midnight - Duration::seconds(30);
    event_at(&db, before, "hold.created").await;
    event_at(&db, midnight + Duration::seconds(10), "hold.created").await;
    event_at(&db, midnight + Duration::seconds(20), "quote.completed").await;
    run(&db).await;
    let moved = event_at(&db, before + Duration::seconds(5), "hold.created").await;
    assert_eq!(home_of(&db, moved).await, Some(part(today - Duration::days(1))));

    let cfg = holdfast_adapters::config::Config::from_lookup(|k| match k {
        "HOLDFAST_ENV" => Some("dev".into()),
        "DATABASE_URL" => Some(db.url.clone()),
        "HOLDFAST_SSM_PREFIX" => Some(format!("/{}/holdfast", aws.prefix)),
        "METRICS_NAMESPACE" => Some(format!("HoldfastTest/{}", aws.prefix)),
        _ => None,
    })
    .expect("config");
    let options = metrics_aggregator::Options { initial_backfill: Duration::hours(2), ..Default::default() };
    let agg = metrics_aggregator::build_with(&cfg, &aws.sdk, db.pool.clone(), options);
    // Both windows closed (grace 120 s), read through the parent across the two partitions.
    let now = midnight + Duration::minutes(1) + Duration::seconds(121);
    let report = agg.run_once(now).await.expect("aggregator run");
    assert_eq!(report.events, 4, "{report:?}");
    let c = db.pool.get().await.expect("conn");
    let counts: Vec<(DateTime<Utc>, i64)> = c
        .fetch("SELECT window_start, event_count FROM metrics_batches WHERE kind = 'events' ORDER BY 1", &[])
        .await
        .expect("batches")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let w = |t: DateTime<Utc>| window_start_of(t, Duration::minutes(1));
    assert_eq!(counts, vec![(w(before), 2), (w(midnight), 2)]);

    // A row committed after its window closed (late), in yesterday's partition: found by id
    // across partitions and counted in the next window closed, not lost and not double-counted.
    let late = event_at(&db, before + Duration::seconds(7), "hold.created").await;
    assert!(late > moved);
    let report = agg.run_once(now + Duration::minutes(1)).await.expect("second run");
    assert_eq!((report.late_events, report.events), (1, 1), "{report:?}");
}

#[tokio::test]
async fn a_row_no_partition_may_take_is_reported_and_holds_nothing_back() {
    let db = TestDb::new().await;
    let today = today(&db).await;
    // A clock gone wrong: a year ahead is beyond the 60 days a partition is made for.
    let stray = event_at(&db, Utc::now() + Duration::days(400), "hold.created").await;
    let past =
        event_at(&db, (today - Duration::days(3)).and_hms_opt(8, 0, 0).expect("t").and_utc(), "hold.created").await;
    let r = maintenance(&db).run().await.expect("run");
    // Everything else was done: the 3-day-old row got its partition.
    assert!(r.steps.iter().all(|s| s.end == StepEnd::Done), "{r:#?}");
    assert_eq!(home_of(&db, past).await, Some(part(today - Duration::days(3))));
    assert_eq!(home_of(&db, stray).await.as_deref(), Some("observability_events_default"));
    // The run fails (so the function's Errors metric and its alarm see it), and says why.
    let problems = r.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("default partition"), "{problems:?}");
    let c = db.pool.get().await.expect("conn");
    let row = c
        .fetch_one(
            "SELECT severity, context->>'error_code' FROM observability_events WHERE event_type = 'maintenance.failed'",
            &[],
        )
        .await
        .expect("the failure is recorded");
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("error".to_owned(), "health".to_owned()));
}
