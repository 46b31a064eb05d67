//! The metrics aggregator against real PostgreSQL, the emulator's CloudWatch/SQS/SSM and a
//! local HTTP server standing in for Datadog's intake.
//!
//! Every test has its own database, its own CloudWatch namespace and SSM prefix, and its own
//! capture server; the clock is injected (`run_once(now)`), nothing sleeps. moto stores
//! datapoints and computes Sum/SampleCount but no percentiles, so latency is checked through
//! the published Values/Counts (SampleCount = number of samples, Sum = their total).

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use chrono::{DateTime, Duration, Utc};
use holdfast_adapters::config::Config;
use holdfast_adapters::sql::Sql;
use holdfast_shared::metrics::window_start_of;
use holdfast_tests::{TestAws, TestDb};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_aggregator::{Aggregator, Options, RunReport};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

const DD_KEY: &str = "dd-test-key-0123456789abcdef";

// ------------------------------------------------------------------ Datadog capture server

#[derive(Debug, Clone)]
struct Captured {
    path: String,
    api_key: Option<String>,
    status: u16,
    raw: String,
    body: Value,
}

/// (Datadog metric, tags, timestamp).
type SeriesKey = (String, Vec<String>, i64);

#[derive(Clone)]
struct Capture {
    reqs: Arc<Mutex<Vec<Captured>>>,
    status: Arc<AtomicU16>,
    url: String,
}

impl Capture {
    async fn start() -> Capture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind capture");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let cap = Capture { reqs: Arc::default(), status: Arc::new(AtomicU16::new(202)), url };
        let c = cap.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let c = c.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let raw = String::from_utf8_lossy(&bytes).to_string();
                            let status = c.status.load(Ordering::SeqCst);
                            c.reqs.lock().expect("lock").push(Captured {
                                path: parts.uri.path().to_string(),
                                api_key: parts
                                    .headers
                                    .get("dd-api-key")
                                    .and_then(|v| v.to_str().ok())
                                    .map(String::from),
                                status,
                                body: serde_json::from_str(&raw).unwrap_or(Value::Null),
                                raw,
                            });
                            let resp = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{\"errors\":[]}")))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        cap
    }

    fn all(&self) -> Vec<Captured> {
        self.reqs.lock().expect("lock").clone()
    }

    /// Requests the capture answered with 2xx (what Datadog would have accepted).
    fn accepted(&self) -> Vec<Captured> {
        self.all().into_iter().filter(|c| (200..300).contains(&c.status)).collect()
    }

    /// Accepted points per (metric, tags, timestamp): series values summed, distribution values
    /// concatenated and sorted.
    fn series(&self) -> HashMap<SeriesKey, (Value, Vec<f64>)> {
        let mut out: HashMap<SeriesKey, (Value, Vec<f64>)> = HashMap::new();
        for c in self.accepted() {
            for s in c.body["series"].as_array().cloned().unwrap_or_default() {
                let metric = s["metric"].as_str().unwrap_or_default().to_string();
                let tags: Vec<String> =
                    s["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)).collect();
                for p in s["points"].as_array().cloned().unwrap_or_default() {
                    let (ts, values): (i64, Vec<f64>) = if p.is_array() {
                        (
                            p[0].as_i64().unwrap_or_default(),
                            p[1].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect(),
                        )
                    } else {
                        (p["timestamp"].as_i64().unwrap_or_default(), vec![p["value"].as_f64().unwrap_or_default()])
                    };
                    let e = out.entry((metric.clone(), tags.clone(), ts)).or_insert((s["type"].clone(), Vec::new()));
                    e.1.extend(values);
                    e.1.sort_by(f64::total_cmp);
                }
            }
        }
        out
    }
}

// ------------------------------------------------------------------ fixture

struct Fixture {
    db: TestDb,
    aws: TestAws,
    cfg: Config,
    capture: Capture,
    namespace: String,
    cw: aws_sdk_cloudwatch::Client,
    dlq_url: String,
    /// Start of the first event window (10 minutes ago, whole minute).
    t0: DateTime<Utc>,
}

impl Fixture {
    async fn new() -> Fixture {
        Self::with_flags(&[("metrics.datadogEnabled", "true")]).await
    }

    async fn with_flags(flags: &[(&str, &str)]) -> Fixture {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let capture = Capture::start().await;
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let prefix = format!("/{}/holdfast", aws.prefix);
        for (k, v) in flags {
            ssm.put_parameter()
                .name(format!("{prefix}/flags/{k}"))
                .value(*v)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .send()
                .await
                .expect("put flag");
        }
        let key_param = format!("{prefix}/secrets/datadog-api-key");
        ssm.put_parameter()
            .name(&key_param)
            .value(DD_KEY)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("put datadog key");
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let dlq_url = sqs
            .create_queue()
            .queue_name(aws.name("email-dlq"))
            .send()
            .await
            .expect("create dlq")
            .queue_url
            .expect("url");
        let namespace = format!("HoldfastTest/{}", aws.prefix);
        let vars: HashMap<&str, String> = HashMap::from([
            ("HOLDFAST_ENV", "dev".to_string()),
            ("DATABASE_URL", db.url.clone()),
            ("HOLDFAST_SSM_PREFIX", prefix.clone()),
            ("METRICS_NAMESPACE", namespace.clone()),
            ("DATADOG_API_KEY_PARAM", key_param),
            ("DATADOG_API_URL", capture.url.clone()),
            ("EMAIL_DLQ_URL", dlq_url.clone()),
        ]);
        let cfg = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let cw = aws_sdk_cloudwatch::Client::new(&aws.sdk);
        let t0 = window_start_of(Utc::now() - Duration::minutes(10), Duration::minutes(1));
        Fixture { db, aws, cfg, capture, namespace, cw, dlq_url, t0 }
    }

    fn aggregator(&self) -> Aggregator {
        metrics_aggregator::build_with(&self.cfg, &self.aws.sdk, self.db.pool.clone(), Options::default())
    }

    /// A clock at which windows up to and including `t0 + last_window` minutes are closed
    /// (grace 120 s by default), but not the next one.
    fn closing(&self, last_window: i64) -> DateTime<Utc> {
        self.t0 + Duration::minutes(last_window + 1) + Duration::seconds(121)
    }

    async fn insert(&self, at: DateTime<Utc>, event_type: &str, context: Value) {
        self.insert_with_ids(at, event_type, context, None, None).await;
    }

    async fn insert_with_ids(
        &self,
        at: DateTime<Utc>,
        event_type: &str,
        context: Value,
        restaurant: Option<Uuid>,
        booking: Option<Uuid>,
    ) {
        let c = self.db.pool.get().await.expect("conn");
        c.run(
            "INSERT INTO observability_events (created_at, source, event_type, severity, restaurant_id, booking_id, context)
             VALUES ($1, 'holds-api', $2, 'info', $3, $4, $5)",
            &[&at, &event_type, &restaurant, &booking, &context],
        )
        .await
        .expect("insert event");
    }

    /// (Sum, SampleCount) of one CloudWatch series at one minute, read back from the emulator.
    async fn cw_stat(&self, metric: &str, dims: &[(&str, &str)], at: DateTime<Utc>) -> (f64, f64) {
        let mut req = self
            .cw
            .get_metric_statistics()
            .namespace(&self.namespace)
            .metric_name(metric)
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(at.timestamp()))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(at.timestamp() + 60))
            .period(60)
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount);
        for (k, v) in dims {
            req = req.dimensions(Dimension::builder().name(*k).value(*v).build());
        }
        let dps = req.send().await.expect("get metric statistics").datapoints.unwrap_or_default();
        let sum = dps.iter().filter_map(|d| d.sum).sum();
        let count = dps.iter().filter_map(|d| d.sample_count).sum();
        (sum, count)
    }

    /// Every (metric name, dimensions) the namespace holds in the emulator.
    async fn cw_series(&self) -> std::collections::BTreeSet<(String, Vec<(String, String)>)> {
        let out = self.cw.list_metrics().namespace(&self.namespace).send().await.expect("list metrics");
        out.metrics
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let dims = m
                    .dimensions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| (d.name.unwrap_or_default(), d.value.unwrap_or_default()))
                    .collect();
                (m.metric_name.unwrap_or_default(), dims)
            })
            .collect()
    }

    async fn publication_states(&self) -> Vec<(String, DateTime<Utc>, String, String, i32)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT kind, window_start, sink, status, attempts FROM metrics_publications ORDER BY kind, window_start, sink",
            &[],
        )
        .await
        .expect("publications")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    }

    /// The known event set: window t0 gets the interesting mix, window t0+1 one hold.
    async fn insert_known_set(&self) {
        let t = |s: i64| self.t0 + Duration::seconds(s);
        for (s, ms) in [(1, 100), (2, 100), (3, 250)] {
            self.insert(t(s), "hold.created", json!({"duration_ms": ms})).await;
        }
        self.insert(t(4), "hold.confirmed", json!({"duration_ms": 40})).await;
        self.insert(t(5), "hold.confirmed", json!({"duration_ms": 60})).await;
        self.insert(t(6), "hold.conflict", json!({"duration_ms": 30, "strict_mode": "enforced"})).await;
        self.insert(
            t(7),
            "hold.failed",
            json!({"operation": "confirm", "outcome": "rejected", "error_code": "hold_expired"}),
        )
        .await;
        self.insert(
            t(8),
            "hold.failed",
            json!({"operation": "hold", "error_code": "database_unavailable", "attempt": 3, "max_attempts": 3}),
        )
        .await;
        self.insert(t(9), "email.sent", json!({"email_type": "booking_confirmed", "attempt": 2, "duration_ms": 800}))
            .await;
        self.insert(t(10), "email.sent", json!({"email_type": "booking_confirmed", "duration_ms": 900})).await;
        self.insert(t(11), "hold.conflict.shadow", json!({"strict_mode": "shadow"})).await;
        self.insert(t(12), "policy.drift.recovered", json!({})).await;
        self.insert(t(13), "flags.changed", json!({})).await; // audit only: no metric
        self.insert(t(59), "no.such.event", json!({"outcome": "error"})).await; // ignored
        self.insert(t(61), "hold.created", json!({"duration_ms": 70})).await; // window t0+1
    }
}

fn sent(report: &RunReport, sink: &str) -> usize {
    report.sink(sink).map(|s| s.parts_sent).unwrap_or(0)
}

const DEV: (&str, &str) = ("Environment", "dev");

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn publishes_exact_numbers_for_a_known_event_set() {
    let f = Fixture::new().await;
    f.insert_known_set().await;
    // Gauges: two DLQ messages, one due outbox row a minute old, one deferred (not lag), one
    // the relay gave up on an hour ago (dead: neither pending nor lag, counted on its own).
    let sqs = aws_sdk_sqs::Client::new(&f.aws.sdk);
    for i in 0..2 {
        sqs.send_message().queue_url(&f.dlq_url).message_body(format!("{{\"n\":{i}}}")).send().await.expect("dlq");
    }
    let now = f.closing(1);
    {
        let c = f.db.pool.get().await.expect("conn");
        for (key, due) in [("k1", now - Duration::seconds(60)), ("k2", now + Duration::minutes(30))] {
            c.run(
                "INSERT INTO email_outbox (id, dedupe_key, email_type, payload, not_before) VALUES ($1, $2, 'reminder', '{}', $3)",
                &[&Uuid::new_v4(), &key, &due],
            )
            .await
            .expect("outbox row");
        }
        c.run(
            "INSERT INTO email_outbox (id, dedupe_key, email_type, payload, not_before, attempts, last_error, dead_at)
             VALUES ($1, 'k3', 'reminder', '{}', $2, 10, 'sqs_refused', $2)",
            &[&Uuid::new_v4(), &(now - Duration::hours(1))],
        )
        .await
        .expect("dead outbox row");
    }

    let agg = f.aggregator();
    let report = agg.run_once(now).await.expect("run");
    assert_eq!(report.windows_closed, 2, "{report:?}");
    assert_eq!(report.first_window, Some(f.t0));
    assert_eq!(report.events, 15, "every row of both windows is read, unknown types included");
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    assert!(report.gauges_measured);

    let t0 = f.t0;
    let op = |o: &'static str| [DEV, ("Operation", o)];
    // Counters: Sum is the count, one datum per window (SampleCount 1).
    for (metric, dims, want) in [
        ("Requests", op("hold").to_vec(), 5.0),
        ("Successes", op("hold").to_vec(), 3.0),
        ("Errors", op("hold").to_vec(), 1.0),
        ("Cutoffs", op("hold").to_vec(), 1.0),
        ("Retries", op("hold").to_vec(), 1.0),
        ("Requests", op("confirm").to_vec(), 3.0),
        ("Successes", op("confirm").to_vec(), 2.0),
        ("Rejections", op("confirm").to_vec(), 1.0),
        ("Conflicts", vec![DEV, ("Mode", "enforced")], 1.0),
        ("Conflicts", vec![DEV, ("Mode", "shadow")], 1.0),
        ("ErrorsByCode", vec![DEV, ("ErrorCode", "hold_conflict")], 1.0),
        ("ErrorsByCode", vec![DEV, ("ErrorCode", "hold_expired")], 1.0),
        ("ErrorsByCode", vec![DEV, ("ErrorCode", "database_unavailable")], 1.0),
        ("EmailsSent", vec![DEV, ("EmailType", "booking_confirmed")], 2.0),
        ("Retries", op("send").to_vec(), 1.0),
        ("PolicyDriftRecovered", vec![DEV], 1.0),
    ] {
        assert_eq!(f.cw_stat(metric, &dims, t0).await, (want, 1.0), "{metric} {dims:?}");
    }
    // Absent counters are absent, not zero.
    assert_eq!(f.cw_stat("Errors", &op("confirm"), t0).await, (0.0, 0.0));
    assert_eq!(f.cw_stat("MetadataRejects", &[DEV], t0).await, (0.0, 0.0));
    // hold+confirm: 5 successes / (8 requests - 1 rejection).
    let (rate, n) = f.cw_stat("AssignmentSuccessRate", &[DEV], t0).await;
    assert_eq!(n, 1.0);
    assert!((rate - 500.0 / 7.0).abs() < 1e-9, "rate {rate}");
    // Latency as Values/Counts: hold 30, 100 ×2, 250; confirm 40, 60; send 800, 900.
    assert_eq!(f.cw_stat("Latency", &op("hold"), t0).await, (480.0, 4.0));
    assert_eq!(f.cw_stat("Latency", &op("confirm"), t0).await, (100.0, 2.0));
    assert_eq!(f.cw_stat("Latency", &op("send"), t0).await, (1700.0, 2.0));
    // The second window.
    let t1 = t0 + Duration::minutes(1);
    assert_eq!(f.cw_stat("Requests", &op("hold"), t1).await, (1.0, 1.0));
    assert_eq!(f.cw_stat("Latency", &op("hold"), t1).await, (70.0, 1.0));
    assert_eq!(f.cw_stat("AssignmentSuccessRate", &[DEV], t1).await, (100.0, 1.0));
    // Gauges, stamped with the run's minute.
    let minute = window_start_of(now, Duration::minutes(1));
    assert_eq!(f.cw_stat("DlqDepth", &[DEV], minute).await, (2.0, 1.0));
    assert_eq!(f.cw_stat("OutboxPending", &[DEV], minute).await, (1.0, 1.0));
    assert_eq!(f.cw_stat("OutboxLagSeconds", &[DEV], minute).await, (60.0, 1.0));
    assert_eq!(f.cw_stat("OutboxDeadRows", &[DEV], minute).await, (1.0, 1.0));
    assert_eq!(f.cw_stat("StrictRolloutPercent", &[DEV], minute).await.1, 1.0);

    // Datadog got the same numbers: names, types, tags, points.
    let caps = f.capture.accepted();
    assert!(!caps.is_empty());
    assert!(caps.iter().all(|c| c.api_key.as_deref() == Some(DD_KEY)), "key read from the SSM SecureString");
    let dd = f.capture.series();
    let ts = t0.timestamp();
    let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let get = |m: &str, t: &[&str], at: i64| dd.get(&(m.to_string(), tags(t), at)).cloned();
    assert_eq!(get("holdfast.requests", &["env:dev", "operation:hold"], ts), Some((json!(1), vec![5.0])));
    assert_eq!(
        get("holdfast.errors_by_code", &["env:dev", "error_code:database_unavailable"], ts),
        Some((json!(1), vec![1.0]))
    );
    assert_eq!(get("holdfast.conflicts", &["env:dev", "mode:shadow"], ts), Some((json!(1), vec![1.0])));
    assert_eq!(
        get("holdfast.emails_sent", &["env:dev", "email_type:booking_confirmed"], ts),
        Some((json!(1), vec![2.0]))
    );
    let (ty, rate) = get("holdfast.assignment_success_rate", &["env:dev"], ts).expect("rate");
    assert_eq!(ty, json!(3));
    assert!((rate[0] - 500.0 / 7.0).abs() < 1e-9);
    assert_eq!(
        get("holdfast.latency", &["env:dev", "operation:hold"], ts),
        Some((json!("distribution"), vec![30.0, 100.0, 100.0, 250.0]))
    );
    assert_eq!(
        get("holdfast.latency", &["env:dev", "operation:hold"], ts + 60),
        Some((json!("distribution"), vec![70.0]))
    );
    assert_eq!(get("holdfast.dlq_depth", &["env:dev"], minute.timestamp()), Some((json!(3), vec![2.0])));
    assert_eq!(get("holdfast.outbox_lag_seconds", &["env:dev"], minute.timestamp()), Some((json!(3), vec![60.0])));
    let paths: std::collections::BTreeSet<String> = caps.iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, ["/api/v1/distribution_points", "/api/v2/series"].map(String::from).into());
    // Nothing else: the Datadog series are exactly the CloudWatch series.
    let cw_count = f.cw_series().await.len();
    let dd_series: std::collections::BTreeSet<(String, Vec<String>)> =
        dd.keys().map(|(m, t, _)| (m.clone(), t.clone())).collect();
    assert_eq!(dd_series.len(), cw_count);
}

#[tokio::test]
async fn rerunning_a_window_publishes_nothing_new() {
    let f = Fixture::new().await;
    f.insert_known_set().await;
    let agg = f.aggregator();
    let now = f.closing(1);
    let first = agg.run_once(now).await.expect("run 1");
    assert_eq!(first.windows_closed, 2);
    let dd_before = f.capture.all().len();

    // The same tick again (a retried invocation), then a fresh aggregator (a new container).
    let again = agg.run_once(now).await.expect("run 2");
    assert_eq!((again.windows_closed, sent(&again, "cloudwatch"), sent(&again, "datadog")), (0, 0, 0), "{again:?}");
    let fresh = f.aggregator().run_once(now).await.expect("run 3");
    assert_eq!((fresh.windows_closed, sent(&fresh, "cloudwatch"), sent(&fresh, "datadog")), (0, 0, 0));
    assert_eq!(f.capture.all().len(), dd_before);
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0).await, (5.0, 1.0));
    assert_eq!(f.cw_stat("Latency", &[DEV, ("Operation", "hold")], f.t0).await, (480.0, 4.0));

    // A minute later: one more (empty) window closes, only the new minute's gauges go out.
    let later = agg.run_once(now + Duration::minutes(1)).await.expect("run 4");
    assert_eq!(later.windows_closed, 1);
    assert_eq!(later.datums, 0);
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0).await, (5.0, 1.0));
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0 + Duration::minutes(1)).await, (1.0, 1.0));
    let states = f.publication_states().await;
    assert!(states.iter().all(|s| s.3 == "published"), "{states:?}");
    assert!(states.iter().filter(|s| s.2 == "cloudwatch").all(|s| s.4 == 1), "one call each: {states:?}");
}

#[tokio::test]
async fn overlapping_runs_do_not_double_publish() {
    let f = Fixture::new().await;
    f.insert_known_set().await;
    let now = f.closing(1);

    // A run that finds the cursor locked (another run is closing windows) closes nothing.
    {
        let mut c = f.db.pool.get().await.expect("conn");
        let tx = c.transaction().await.expect("tx");
        tx.fetch_one("SELECT 1 FROM metrics_cursor WHERE id FOR UPDATE", &[]).await.expect("lock cursor");
        let blocked = f.aggregator().run_once(now).await.expect("blocked run");
        assert!(blocked.cursor_busy);
        assert_eq!(blocked.windows_closed, 0);
        // It still measured this minute's gauges and published them (their own batch).
        assert_eq!((sent(&blocked, "cloudwatch"), sent(&blocked, "datadog")), (1, 1));
        tx.rollback().await.expect("release");
    }

    // Four runs at once from four "containers": each window is closed once, each part sent once.
    let aggs: Vec<Aggregator> = (0..4).map(|_| f.aggregator()).collect();
    let reports = futures::future::join_all(aggs.iter().map(|a| a.run_once(now))).await;
    let reports: Vec<RunReport> = reports.into_iter().map(|r| r.expect("run")).collect();
    assert_eq!(reports.iter().map(|r| r.windows_closed).sum::<usize>(), 2, "{reports:?}");
    let cw_parts: usize = reports.iter().map(|r| sent(r, "cloudwatch")).sum();
    let dd_parts: usize = reports.iter().map(|r| sent(r, "datadog")).sum();
    // 2 event windows to CloudWatch (1 call each); Datadog: series + distribution per window.
    // The gauges went out above and are not measured or sent again this minute.
    assert_eq!(cw_parts, 2);
    assert_eq!(dd_parts, 4);
    assert_eq!(f.capture.accepted().len(), 5);
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0).await, (5.0, 1.0));
    assert_eq!(f.cw_stat("Latency", &[DEV, ("Operation", "hold")], f.t0).await, (480.0, 4.0));
    let minute = window_start_of(now, Duration::minutes(1));
    assert_eq!(f.cw_stat("OutboxPending", &[DEV], minute).await, (0.0, 1.0), "gauges measured once per minute");

    // A publication locked by a run in flight is skipped, not sent a second time.
    let later = now + Duration::minutes(1);
    f.insert(f.t0 + Duration::minutes(2) + Duration::seconds(5), "hold.created", json!({})).await;
    let first = f.aggregator();
    let mut c = f.db.pool.get().await.expect("conn");
    // Close the window without publishing: the first sink pass sees the lock below.
    let tx = c.transaction().await.expect("tx");
    let r = first.run_once_with_budget(later, std::time::Duration::ZERO).await.expect("close only");
    assert_eq!(r.windows_closed, 1);
    let locked = tx
        .fetch("SELECT sink FROM metrics_publications WHERE status = 'pending' AND kind = 'events' FOR UPDATE", &[])
        .await
        .expect("lock publications");
    assert_eq!(locked.len(), 2, "cloudwatch and datadog pending for the new window");
    let skipped = f.aggregator().run_once(later).await.expect("run beside the lock");
    assert_eq!(sent(&skipped, "cloudwatch"), 1, "only the gauges, not the locked window");
    tx.rollback().await.expect("release");
    let after = f.aggregator().run_once(later).await.expect("run after");
    assert_eq!((sent(&after, "cloudwatch"), sent(&after, "datadog")), (1, 1));
    let t2 = f.t0 + Duration::minutes(2);
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], t2).await, (1.0, 1.0));
}

#[tokio::test]
async fn a_datadog_failure_retries_only_datadog() {
    let f = Fixture::new().await;
    f.insert_known_set().await;
    let now = f.closing(1);
    f.capture.status.store(500, Ordering::SeqCst);

    let agg = f.aggregator();
    let r1 = agg.run_once(now).await.expect("run 1 (state is committed even when a sink fails)");
    assert_eq!(sent(&r1, "cloudwatch"), 3);
    let dd = r1.sink("datadog").expect("datadog report");
    assert_eq!((dd.parts_sent, dd.failures), (0, 1), "stops at the first failure");
    assert!(dd.last_error.as_deref().is_some_and(|e| e.contains("500")));
    assert_eq!(r1.problems().len(), 1);
    assert_eq!(f.capture.all().len(), 1);
    let states = f.publication_states().await;
    assert!(states.iter().filter(|s| s.2 == "cloudwatch").all(|s| s.3 == "published"));
    assert!(states.iter().filter(|s| s.2 == "datadog").all(|s| s.3 == "pending"));
    let cw_after_first = f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0).await;
    assert_eq!(cw_after_first, (5.0, 1.0));

    // Datadog recovers; the next tick (a minute later) retries only Datadog's pending windows.
    f.capture.status.store(202, Ordering::SeqCst);
    let r2 = agg.run_once(now + Duration::seconds(30)).await.expect("run 2");
    assert_eq!(sent(&r2, "cloudwatch"), 0, "CloudWatch is not re-sent");
    assert_eq!(sent(&r2, "datadog"), 5);
    assert!(r2.problems().is_empty());
    assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], f.t0).await, cw_after_first);
    assert_eq!(f.cw_stat("Latency", &[DEV, ("Operation", "hold")], f.t0).await, (480.0, 4.0));
    let dd = f.capture.series();
    let hold = dd
        .get(&("holdfast.requests".into(), vec!["env:dev".into(), "operation:hold".into()], f.t0.timestamp()))
        .expect("retried series");
    assert_eq!(hold.1, vec![5.0], "the frozen numbers, once");
    let states = f.publication_states().await;
    assert!(states.iter().all(|s| s.3 == "published"), "{states:?}");
    assert!(states.iter().filter(|s| s.2 == "cloudwatch").all(|s| s.4 == 1));
    // Window t0 on Datadog: the failed attempt, then its two parts.
    assert_eq!(states.iter().filter(|s| s.2 == "datadog").map(|s| s.4).max(), Some(3));

    // A third run sends nothing anywhere.
    let r3 = agg.run_once(now + Duration::seconds(30)).await.expect("run 3");
    assert_eq!((sent(&r3, "cloudwatch"), sent(&r3, "datadog")), (0, 0));
}

#[tokio::test]
async fn pii_in_every_context_field_never_reaches_a_sink() {
    let f = Fixture::new().await;
    let pii = [
        "Jane Doe",
        "jane.doe@example.com",
        "+44 7700 900123",
        "07700900123",
        "4111111111111111",
        "12 Acacia Avenue",
        "allergic to nuts",
    ];
    let restaurant = Uuid::new_v4();
    let booking = Uuid::new_v4();
    // Every key the sanitiser keeps (the shared allow-list, so a key added later is covered
    // too) plus keys that only a careless caller would send.
    let extra = ["guest_name", "guest_email", "phone", "notes"];
    let keys: Vec<&str> = holdfast_shared::events::CONTEXT_KEYS.iter().copied().chain(extra).collect();
    let types = ["hold.created", "hold.failed", "hold.conflict", "email.sent", "email.failed", "quote.completed"];
    let mut n = 0;
    for (i, p) in pii.iter().enumerate() {
        for (j, et) in types.iter().enumerate() {
            let mut ctx = serde_json::Map::new();
            for k in &keys {
                ctx.insert(k.to_string(), json!(p));
            }
            // Codes that pass the code shape but name a person: bucketed to "other".
            ctx.insert("error_code".into(), json!("jane.doe"));
            ctx.insert("email_type".into(), json!("jane_doe_example_com"));
            ctx.insert("nested".into(), json!({"guest": p, "list": [p]}));
            let at = f.t0 + Duration::seconds((i * types.len() + j) as i64 % 60);
            f.insert_with_ids(at, et, Value::Object(ctx), Some(restaurant), Some(booking)).await;
            n += 1;
        }
    }
    let report = f.aggregator().run_once(f.closing(0)).await.expect("run");
    assert_eq!(report.events, n);
    assert!(report.datums > 0, "the events still count");

    let forbidden: Vec<String> = pii
        .iter()
        .map(|s| s.to_lowercase())
        .chain(["jane", "doe", "acacia", "nuts"].map(String::from))
        .chain([restaurant.to_string(), booking.to_string(), restaurant.simple().to_string()])
        .collect();
    let check = |what: &str, text: &str| {
        let lower = text.to_lowercase();
        for bad in &forbidden {
            assert!(!lower.contains(bad.as_str()), "{what} carries {bad:?}: {text}");
        }
    };
    let caps = f.capture.accepted();
    assert!(caps.len() >= 2);
    for c in &caps {
        check(&format!("Datadog body {}", c.path), &c.raw);
    }
    // CloudWatch: every series the emulator holds, and the datums we stored and sent.
    let series = f.cw_series().await;
    assert!(series.iter().any(|(m, _)| m == "ErrorsByCode"));
    check("CloudWatch series", &format!("{series:?}"));
    let c = f.db.pool.get().await.expect("conn");
    for r in c.fetch("SELECT datums::text FROM metrics_batches", &[]).await.expect("batches") {
        check("stored datums", &r.get::<_, String>(0));
    }
    // The bucketed values are what remains of the PII-shaped codes.
    assert_eq!(
        f.cw_stat("ErrorsByCode", &[DEV, ("ErrorCode", "other")], f.t0).await.0,
        (pii.len() * 3) as f64,
        "hold.failed, hold.conflict and email.failed per PII value; the code itself is never a dimension"
    );
}

#[tokio::test]
async fn late_events_are_counted_once_in_the_next_window() {
    let f = Fixture::new().await;
    f.insert(f.t0 + Duration::seconds(10), "hold.created", json!({})).await;
    let agg = f.aggregator();
    let r1 = agg.run_once(f.closing(0)).await.expect("run 1");
    assert_eq!(r1.windows_closed, 1);
    // A row for window t0 commits after t0 was published (a transaction longer than the grace).
    f.insert(f.t0 + Duration::seconds(20), "hold.created", json!({})).await;
    f.insert(f.t0 + Duration::seconds(70), "hold.created", json!({})).await;
    let r2 = agg.run_once(f.closing(1)).await.expect("run 2");
    assert_eq!((r2.windows_closed, r2.late_events, r2.events), (1, 1, 2), "{r2:?}");
    let op = [DEV, ("Operation", "hold")];
    assert_eq!(f.cw_stat("Requests", &op, f.t0).await, (1.0, 1.0), "t0 is never re-published");
    assert_eq!(f.cw_stat("Requests", &op, f.t0 + Duration::minutes(1)).await, (2.0, 1.0), "late row moved here");
    let r3 = agg.run_once(f.closing(2)).await.expect("run 3");
    assert_eq!((r3.late_events, r3.events), (0, 0), "counted once");
}

/// A row whose transaction is still open when a later row commits: its id is below the
/// high-water mark, so closing its window then would lose it for good. The window waits for
/// the transaction, and the row is counted once.
#[tokio::test]
async fn a_window_waits_for_a_transaction_that_began_inside_it() {
    let f = Fixture::new().await;
    let agg = f.aggregator();
    let first = agg.run_once(Utc::now()).await.expect("first run sets the cursor at this minute");
    assert_eq!(first.windows_closed, 0);

    let insert = "INSERT INTO observability_events (source, event_type, severity, context)
                  VALUES ('holds-api', 'hold.created', 'info', '{}')";
    let mut slow = f.db.pool.get().await.expect("conn");
    let tx = slow.transaction().await.expect("tx");
    tx.run(insert, &[]).await.expect("slow row (id n, uncommitted)");
    f.db.pool.get().await.expect("conn").run(insert, &[]).await.expect("quick row (id n+1, committed)");

    let later = Utc::now() + Duration::minutes(5);
    let held = agg.run_once(later).await.expect("run while the transaction is open");
    assert_eq!((held.windows_closed, held.events), (0, 0), "{held:?}");

    tx.commit().await.expect("slow row commits");
    let closed = agg.run_once(later).await.expect("run after");
    assert!(closed.windows_closed >= 1, "{closed:?}");
    let c = f.db.pool.get().await.expect("conn");
    let counted: i64 = c
        .fetch_one("SELECT COALESCE(sum(event_count), 0)::bigint FROM metrics_batches WHERE kind = 'events'", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(counted, 2, "both rows counted, once each");
    let again = agg.run_once(later + Duration::minutes(1)).await.expect("run again");
    assert_eq!(again.events, 0, "nothing counted twice");
}

#[tokio::test]
async fn datadog_disabled_by_flag_gets_nothing_and_cloudwatch_still_works() {
    let f = Fixture::with_flags(&[("metrics.datadogEnabled", "false")]).await;
    f.insert_known_set().await;
    let r = f.aggregator().run_once(f.closing(1)).await.expect("run");
    assert!(r.sink("datadog").is_none());
    assert_eq!(sent(&r, "cloudwatch"), 3);
    assert!(f.capture.all().is_empty());
    assert!(f.publication_states().await.iter().all(|s| s.2 == "cloudwatch"));
}

#[tokio::test]
async fn a_batch_too_old_for_datadog_expires_instead_of_being_sent() {
    let f = Fixture::new().await;
    f.insert_known_set().await;
    f.capture.status.store(503, Ordering::SeqCst);
    let agg = f.aggregator();
    agg.run_once(f.closing(1)).await.expect("run 1");
    f.capture.status.store(202, Ordering::SeqCst);
    // Datadog stays down for over an hour: its intake would drop those points, so they expire.
    let r = agg.run_once(f.closing(1) + Duration::minutes(70)).await.expect("run 2");
    let dd = r.sink("datadog").expect("datadog");
    assert_eq!(dd.batches_expired, 3, "{r:?}");
    assert!(r.problems().iter().any(|p| p.contains("expired")));
    let states = f.publication_states().await;
    assert_eq!(states.iter().filter(|s| s.2 == "datadog" && s.3 == "expired").count(), 3);
}

#[tokio::test]
async fn large_windows_stream_in_batches_and_stay_exact() {
    let f = Fixture::new().await;
    // 50 001 holds over three windows (more than one fetch batch), 100 distinct durations.
    let n: i64 = 50_001;
    {
        let c = f.db.pool.get().await.expect("conn");
        c.run(
            "INSERT INTO observability_events (created_at, source, event_type, severity, context)
             SELECT $1::timestamptz + (i * 180000.0 / $2::float8) * interval '1 millisecond', 'holds-api',
                    'hold.created', 'info', jsonb_build_object('duration_ms', i % 100)
               FROM generate_series(0, $3::bigint - 1) AS i",
            &[&f.t0, &(n as f64), &n],
        )
        .await
        .expect("generate");
    }
    let report = f.aggregator().run_once(f.closing(2)).await.expect("run");
    assert_eq!((report.windows_closed, report.events), (3, n as u64));
    let c = f.db.pool.get().await.expect("conn");
    let mut total = 0.0;
    for w in 0..3 {
        let at = f.t0 + Duration::minutes(w);
        let row = c
            .fetch_one(
                "SELECT count(*)::float8, COALESCE(sum((context->>'duration_ms')::int), 0)::float8
                   FROM observability_events WHERE created_at >= $1 AND created_at < $1 + interval '1 minute'",
                &[&at],
            )
            .await
            .expect("expected");
        let (count, sum): (f64, f64) = (row.get(0), row.get(1));
        assert_eq!(f.cw_stat("Requests", &[DEV, ("Operation", "hold")], at).await, (count, 1.0), "window {w}");
        assert_eq!(f.cw_stat("Latency", &[DEV, ("Operation", "hold")], at).await, (sum, count), "window {w}");
        total += count;
    }
    assert_eq!(total, n as f64);
}
