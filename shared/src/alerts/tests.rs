use super::*;
use crate::metrics::{aggregate_window, gauge, EventRow, Gauge};
use serde_json::json;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-05T00:00:00Z").map(|d| d.with_timezone(&Utc)).expect("valid")
}

/// `n` minutes from t0, each with the metrics `f(minute_index)` returns.
fn series(n: usize, f: impl Fn(usize) -> Vec<(&'static str, f64)>) -> Vec<MinuteSample> {
    (0..n)
        .map(|i| MinuteSample {
            minute: t0() + Duration::minutes(i as i64),
            metrics: f(i).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
        .collect()
}

fn rule_by_id(id: &str) -> AlertRule {
    *rule(id).expect("rule exists")
}

#[test]
fn rules_are_well_formed() {
    let mut ids = std::collections::BTreeSet::new();
    for r in ALERT_RULES {
        assert!(ids.insert(r.id), "duplicate id {}", r.id);
        let (file, anchor) = r.runbook.split_once('#').expect("runbook has an anchor");
        assert!(RUNBOOK_FILES.contains(&file), "{}: runbook {file}", r.id);
        assert!(!anchor.is_empty());
        // Hysteresis: a lower clear threshold, or (for 0/1 signals) several clean minutes.
        assert!(r.clear_at_or_below <= r.fire_above, "{}: clear above fire", r.id);
        assert!(r.clear_at_or_below < r.fire_above || r.minutes_to_clear >= 5, "{}: no hysteresis", r.id);
        assert!(r.datapoints_to_fire >= 1 && r.datapoints_to_fire <= r.evaluation_minutes);
        assert!(r.minutes_to_clear >= 1);
        for k in r.signal.keys().into_iter().chain(r.volume_gate.map(|g| g.key)) {
            assert!(SERIES_KEYS.contains(&k), "{}: unknown key {k}", r.id);
        }
    }
    let fast = rule_by_id("holds-slo-fast-burn");
    assert_eq!(fast.severity, AlertSeverity::Page);
    assert!(matches!(fast.signal, Signal::BurnRate { long_minutes: 60, short_minutes: 5, slo, .. } if slo == 0.995));
    assert_eq!(fast.fire_above, 14.4);
    let slow = rule_by_id("holds-slo-slow-burn");
    assert!(matches!(slow.signal, Signal::BurnRate { long_minutes: 360, short_minutes: 30, .. }));
    assert_eq!(slow.fire_above, 6.0);
}

#[test]
fn noisy_latency_around_threshold_fires_once_without_flapping() {
    let pattern = [820.0, 790.0, 830.0, 780.0, 810.0, 795.0];
    let s = series(120, |i| {
        let p95 = if (20..80).contains(&i) { pattern[(i - 20) % pattern.len()] } else { 500.0 };
        vec![(keys::LATENCY_P95_HOLD, p95), (keys::REQUESTS_HOLD, 20.0)]
    });
    let r = rule_by_id("hold-latency-p95");
    let report = backtest(&r, &s);
    assert_eq!((report.fired, report.flaps), (1, 0), "{report:?}");
    // Fires at minute 24 (third breach of 20..24), clears at 84 (fifth minute under 600).
    assert_eq!(
        report.transitions,
        vec![
            Transition { minute: t0() + Duration::minutes(24), firing: true },
            Transition { minute: t0() + Duration::minutes(84), firing: false },
        ]
    );
    assert_eq!(report.minutes_firing, 60);

    // Without hysteresis the same series flaps: this is what the rule's design prevents.
    let naive = AlertRule {
        clear_at_or_below: r.fire_above,
        datapoints_to_fire: 1,
        evaluation_minutes: 1,
        minutes_to_clear: 1,
        ..r
    };
    let naive_report = backtest(&naive, &s);
    assert!(naive_report.flaps >= 10, "{naive_report:?}");

    // Too few requests per minute: a p95 of noise, gated out.
    let quiet = series(120, |_| vec![(keys::LATENCY_P95_HOLD, 2000.0), (keys::REQUESTS_HOLD, 2.0)]);
    assert_eq!(backtest(&r, &quiet).fired, 0);
}

#[test]
fn dlq_needs_two_consecutive_minutes_and_gaps_are_minutes() {
    let r = rule_by_id("email-dlq-not-empty");
    let blips = series(60, |i| vec![(keys::DLQ_DEPTH, if i % 3 == 0 { 1.0 } else { 0.0 })]);
    assert_eq!(backtest(&r, &blips).fired, 0);

    let real = series(60, |i| vec![(keys::DLQ_DEPTH, if (10..20).contains(&i) { 4.0 } else { 0.0 })]);
    let report = backtest(&r, &real);
    assert_eq!((report.fired, report.flaps), (1, 0));
    assert_eq!(report.transitions[0].minute, t0() + Duration::minutes(11));
    assert_eq!(report.transitions[1].minute, t0() + Duration::minutes(24));
    assert_eq!(report.minutes_firing, 13);

    // Two non-empty samples ten minutes apart are not "2 of 2 minutes".
    let sparse = vec![
        MinuteSample { minute: t0(), metrics: [(keys::DLQ_DEPTH.to_owned(), 1.0)].into() },
        MinuteSample { minute: t0() + Duration::minutes(10), metrics: [(keys::DLQ_DEPTH.to_owned(), 1.0)].into() },
    ];
    assert_eq!(backtest(&r, &sparse).fired, 0);
}

#[test]
fn dead_outbox_rows_ticket_at_once_and_clear_when_handled() {
    let r = rule_by_id("outbox-dead-rows");
    assert_eq!(r.severity, AlertSeverity::Ticket);
    // A row dies at minute 10 and stays dead until an operator revives it at minute 40.
    let s = series(60, |i| vec![(keys::OUTBOX_DEAD_ROWS, if (10..40).contains(&i) { 1.0 } else { 0.0 })]);
    let report = backtest(&r, &s);
    assert_eq!((report.fired, report.flaps), (1, 0), "{report:?}");
    assert_eq!(report.transitions[0], Transition { minute: t0() + Duration::minutes(10), firing: true });
    // Cleared after five minutes with none left (40..44).
    assert_eq!(report.transitions[1], Transition { minute: t0() + Duration::minutes(44), firing: false });
    // No dead row ever: silent, however long the series.
    assert_eq!(backtest(&r, &series(600, |_| vec![(keys::OUTBOX_DEAD_ROWS, 0.0)])).fired, 0);
}

fn traffic(n: usize, errors: impl Fn(usize) -> f64) -> Vec<MinuteSample> {
    series(n, |i| vec![(keys::REQUESTS_HOLD_CONFIRM, 200.0), (keys::ERRORS_HOLD_CONFIRM, errors(i))])
}

#[test]
fn real_outage_pages_once_and_clears() {
    // 400 quiet minutes, then 30 minutes with 20 % server errors, then quiet again.
    let s = traffic(520, |i| if (400..430).contains(&i) { 40.0 } else { 0.0 });
    let fast = backtest(&rule_by_id("holds-slo-fast-burn"), &s);
    assert_eq!((fast.fired, fast.flaps), (1, 0), "{fast:?}");
    // The 1 h window reaches 14.4x (7.2 % errors = 864) after 22 minutes of outage.
    assert_eq!(fast.transitions[0].minute, t0() + Duration::minutes(421));
    // Errors stop at 430; from 433 the 5 m window burns < 10x (4 %); 5 recovering minutes.
    assert_eq!(fast.transitions[1].minute, t0() + Duration::minutes(437));
    // 30 minutes at 20 % is ~3x over 6 h: not a slow burn.
    assert_eq!(backtest(&rule_by_id("holds-slo-slow-burn"), &s).fired, 0);

    // A sustained 4 % error rate is a slow burn (8x) but not a fast one.
    let sustained = traffic(520, |i| if i >= 100 { 8.0 } else { 0.0 });
    assert_eq!(backtest(&rule_by_id("holds-slo-fast-burn"), &sustained).fired, 0);
    let slow = backtest(&rule_by_id("holds-slo-slow-burn"), &sustained);
    assert_eq!((slow.fired, slow.flaps), (1, 0));
}

#[test]
fn five_minute_blip_does_not_page() {
    // 50 % errors for five minutes: the 5 m window burns at 100x, the 1 h window at ~8x.
    let s = traffic(180, |i| if (100..105).contains(&i) { 100.0 } else { 0.0 });
    let fast = rule_by_id("holds-slo-fast-burn");
    assert_eq!(backtest(&fast, &s).fired, 0);
    // The same series would page on the short window alone: the long window is what stops it.
    let short_only = AlertRule { signal: burn(5, 5, 50.0), ..fast };
    assert_eq!(backtest(&short_only, &s).fired, 1);
}

#[test]
fn low_traffic_does_not_page() {
    // One failure in three requests an hour is 33 % errors but not an outage.
    let s = series(240, |i| {
        if i % 20 == 0 {
            vec![(keys::REQUESTS_HOLD_CONFIRM, 1.0), (keys::ERRORS_HOLD_CONFIRM, if i % 60 == 0 { 1.0 } else { 0.0 })]
        } else {
            vec![]
        }
    });
    assert_eq!(backtest(&rule_by_id("holds-slo-fast-burn"), &s).fired, 0);
    assert_eq!(backtest(&rule_by_id("holds-slo-slow-burn"), &s).fired, 0);
}

#[test]
fn one_off_events_fire_once() {
    let s = series(120, |i| vec![(keys::STRICT_CONSTRAINT_MISSING, if i == 10 || i == 12 { 1.0 } else { 0.0 })]);
    let report = backtest(&rule_by_id("strict-constraint-missing"), &s);
    assert_eq!((report.fired, report.flaps), (1, 0), "{report:?}");
    assert!(backtest_all(&s).iter().any(|(id, r)| *id == "strict-constraint-missing" && r.fired == 1));
    assert_eq!(backtest(&rule_by_id("outbox-lag"), &[]), BacktestReport::default());
}

#[test]
fn loader_accepts_documented_format_and_rejects_mistakes() {
    let ok = r#"{"version": 1, "samples": [
        {"minute": "2025-11-05T10:01:00Z", "metrics": {"DlqDepth": 1}},
        {"minute": "2025-11-05T10:00:00Z", "metrics": {"Requests:hold+confirm": 120, "Errors:hold+confirm": 2}},
        {"minute": "2025-11-05T10:02:00Z"}
    ]}"#;
    let s = load_series(ok).expect("valid");
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].minute, DateTime::parse_from_rfc3339("2025-11-05T10:00:00Z").expect("ts"));
    assert_eq!(s[0].metrics.get(keys::REQUESTS_HOLD_CONFIRM), Some(&120.0));
    assert!(s[2].metrics.is_empty());

    let bad = |json: &str| load_series(json).expect_err("should be rejected");
    assert!(matches!(bad("{"), SeriesError::Json(_)));
    assert_eq!(bad(r#"{"version": 2, "samples": []}"#), SeriesError::Version(2));
    assert!(matches!(
        bad(r#"{"version":1,"samples":[{"minute":"2025-11-05T10:00:30Z","metrics":{}}]}"#),
        SeriesError::NotAligned(_)
    ));
    assert!(matches!(
        bad(r#"{"version":1,"samples":[{"minute":"2025-11-05T10:00:00Z"},{"minute":"2025-11-05T10:00:00Z"}]}"#),
        SeriesError::Duplicate(_)
    ));
    assert!(matches!(
        bad(r#"{"version":1,"samples":[{"minute":"2025-11-05T10:00:00Z","metrics":{"Requests":5}}]}"#),
        SeriesError::UnknownKey { .. }
    ));
    assert!(matches!(
        bad(r#"{"version":1,"samples":[{"minute":"2025-11-05T10:00:00Z","metrics":{"DlqDepth":-1}}]}"#),
        SeriesError::Negative { .. }
    ));
}

#[test]
fn minute_sample_from_aggregated_data() {
    let at = t0() + Duration::seconds(5);
    let row = |id, et: &str, ctx| EventRow {
        id,
        created_at: at,
        source: "holds-api".into(),
        event_type: et.into(),
        context: ctx,
    };
    let mut rows: Vec<EventRow> = (0..19).map(|i| row(i, "hold.created", json!({"duration_ms": 100 + i}))).collect();
    rows.push(row(19, "hold.created", json!({"duration_ms": 5000})));
    rows.push(row(20, "hold.failed", json!({"operation": "confirm", "outcome": "error"})));
    rows.push(row(21, "hold.confirmed", json!({})));
    rows.push(row(22, "quote.completed", json!({})));
    rows.push(row(23, "strict.verify.failed", json!({})));
    let mut data = aggregate_window("prod", t0(), Duration::minutes(1), &rows);
    data.push(gauge("prod", Gauge::DlqDepth, 2.0, t0()));
    data.push(gauge("prod", Gauge::OutboxDeadRows, 3.0, t0()));
    let s = minute_sample_from_data(t0(), &data);
    let expected: BTreeMap<String, f64> = [
        (keys::REQUESTS_HOLD_CONFIRM, 22.0),
        (keys::ERRORS_HOLD_CONFIRM, 1.0),
        (keys::REQUESTS_HOLD, 20.0),
        // nearest rank 19 of 20 → the 19th smallest: 118 ms.
        (keys::LATENCY_P95_HOLD, 118.0),
        (keys::DLQ_DEPTH, 2.0),
        (keys::OUTBOX_DEAD_ROWS, 3.0),
        (keys::STRICT_CONSTRAINT_MISSING, 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(s.metrics, expected);
    // What the aggregator records is loadable as a series.
    let file = SeriesFile { version: SERIES_FORMAT_VERSION, samples: vec![s.clone()] };
    let json = serde_json::to_string(&file).expect("serialise");
    assert_eq!(load_series(&json).expect("loads"), vec![s]);
}

#[test]
fn docs_and_monitors_name_every_rule_and_runbook() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let monitors = std::fs::read_to_string(root.join("dashboards/datadog/monitors.json")).expect("monitors.json");
    let monitors: serde_json::Value = serde_json::from_str(&monitors).expect("valid JSON");
    let monitors = monitors.as_array().expect("an array of monitors");
    for r in ALERT_RULES {
        assert!(doc.contains(&format!("| `{}` |", r.id)), "docs lack {}", r.id);
        assert!(doc.contains(r.runbook), "docs lack {}", r.runbook);
        let m = monitors
            .iter()
            .find(|m| m["name"].as_str().is_some_and(|n| n.contains(r.id)))
            .unwrap_or_else(|| panic!("no Datadog monitor for {}", r.id));
        let message = m["message"].as_str().unwrap_or_default();
        assert!(message.contains(r.runbook), "{}: monitor message lacks its runbook", r.id);
        let tags = m["tags"].to_string();
        assert!(tags.contains(&format!("severity:{}", r.severity.as_str())), "{}", r.id);
    }
}
