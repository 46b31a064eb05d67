//! Foundation: migrations, the database's exclusion guarantee, and SDK round trips against
//! the emulator through the real Rust AWS SDK clients.

use holdfast_adapters::db::{self, DbFault};
use holdfast_adapters::sql::Sql;
use holdfast_tests::{TestAws, TestDb};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let t = TestDb::new().await; // applies everything once, as the schema owner
    let owner = t.owner_pool();
    let again = db::migrate(&owner).await.expect("second run succeeds");
    assert_eq!(again, 0, "a second run must apply nothing");

    let c = owner.get().await.expect("conn");
    let applied: i64 = c.fetch_one("SELECT count(*) FROM refinery_schema_history", &[]).await.expect("history").get(0);
    assert_eq!(applied as usize, db::known_migrations().len());
    for table in ["restaurants", "restaurant_tables", "booking_policies", "bookings", "observability_events"] {
        let exists: bool = c.fetch_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.expect("regclass").get(0);
        assert!(exists, "table {table} missing after migration");
    }
    let ext: i64 =
        c.fetch_one("SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'", &[]).await.expect("ext").get(0);
    assert_eq!(ext, 1);
}

#[tokio::test]
async fn overlapping_ranges_raise_23p01_naming_the_constraint() {
    let t = TestDb::new().await;
    let owner = t.owner_pool(); // a scratch table is DDL: the owner's
    let c = owner.get().await.expect("conn");
    c.batch_execute(
        "CREATE TABLE scratch_claims (
            table_id uuid NOT NULL,
            during tstzrange NOT NULL,
            CONSTRAINT scratch_no_overlap EXCLUDE USING gist (table_id WITH =, during WITH &&)
        )",
    )
    .await
    .expect("create");
    let table = uuid::Uuid::new_v4();
    let insert =
        "INSERT INTO scratch_claims VALUES ($1, tstzrange($2::text::timestamptz, $3::text::timestamptz, '[)'))";
    c.run(insert, &[&table, &"2026-11-23 19:00Z", &"2026-11-23 21:00Z"]).await.expect("first");
    // Half-open: a window starting exactly at the end does not overlap.
    c.run(insert, &[&table, &"2026-11-23 21:00Z", &"2026-11-23 22:00Z"]).await.expect("adjacent");
    // Another table may take the same window.
    c.run(insert, &[&uuid::Uuid::new_v4(), &"2026-11-23 19:00Z", &"2026-11-23 21:00Z"]).await.expect("other table");

    let err = c
        .run(insert, &[&table, &"2026-11-23 20:59Z", &"2026-11-23 21:30Z"])
        .await
        .expect_err("overlap must be refused");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::EXCLUSION_VIOLATION));
    assert_eq!(db::classify(&err), DbFault::Exclusion { constraint: "scratch_no_overlap".into() });
}

#[tokio::test]
async fn sqs_round_trip_through_the_sdk() {
    let aws = TestAws::new().await;
    let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
    let url = sqs
        .create_queue()
        .queue_name(aws.name("roundtrip"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    sqs.send_message().queue_url(&url).message_body(r#"{"hello":"sqs"}"#).send().await.expect("send");
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body(), Some(r#"{"hello":"sqs"}"#));
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(got[0].receipt_handle().expect("handle"))
        .send()
        .await
        .expect("delete");
}

#[tokio::test]
async fn ssm_round_trip_through_the_sdk() {
    let aws = TestAws::new().await;
    let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
    let prefix = format!("/{}/flags", aws.prefix);
    for (k, v) in [("a", "1"), ("b", "true")] {
        ssm.put_parameter()
            .name(format!("{prefix}/{k}"))
            .value(v)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .expect("put");
    }
    let params = ssm
        .get_parameters_by_path()
        .path(&prefix)
        .recursive(true)
        .send()
        .await
        .expect("by path")
        .parameters
        .unwrap_or_default();
    let mut pairs: Vec<(String, String)> =
        params.into_iter().map(|p| (p.name.unwrap_or_default(), p.value.unwrap_or_default())).collect();
    pairs.sort();
    assert_eq!(pairs, vec![(format!("{prefix}/a"), "1".to_string()), (format!("{prefix}/b"), "true".to_string())]);
}

#[tokio::test]
async fn cloudwatch_round_trip_through_the_sdk() {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, Statistic};
    let aws = TestAws::new().await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws.sdk);
    let ns = format!("HoldfastTest/{}", aws.prefix);
    let now = std::time::SystemTime::now();
    cw.put_metric_data()
        .namespace(&ns)
        .metric_data(
            MetricDatum::builder()
                .metric_name("Latency")
                .dimensions(Dimension::builder().name("Environment").value("dev").build())
                .unit(StandardUnit::Milliseconds)
                .timestamp(now.into())
                .set_values(Some(vec![10.0, 20.0]))
                .set_counts(Some(vec![3.0, 1.0]))
                .build(),
        )
        .send()
        .await
        .expect("put metric data");
    let stats = cw
        .get_metric_statistics()
        .namespace(&ns)
        .metric_name("Latency")
        .dimensions(Dimension::builder().name("Environment").value("dev").build())
        .start_time((now - std::time::Duration::from_secs(600)).into())
        .end_time((now + std::time::Duration::from_secs(600)).into())
        .period(60)
        .statistics(Statistic::SampleCount)
        .statistics(Statistic::Sum)
        .send()
        .await
        .expect("get statistics");
    let dps = stats.datapoints.unwrap_or_default();
    let count: f64 = dps.iter().filter_map(|d| d.sample_count).sum();
    let sum: f64 = dps.iter().filter_map(|d| d.sum).sum();
    assert_eq!(count, 4.0, "3 + 1 samples");
    assert_eq!(sum, 50.0, "10*3 + 20*1");
}
