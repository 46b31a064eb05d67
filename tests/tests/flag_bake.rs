//! Flag bake and automatic revert against real PostgreSQL (fresh database per test), the
//! emulator's SSM (a unique SSM root per test) and its CloudWatch alarms (PutMetricAlarm,
//! SetAlarmState, DescribeAlarms). A prod change is applied through the approver's handler as an
//! operator would; the burn-rate alarm is raised on the emulator; the bake check is the one the
//! scheduled `flag-review-sweep` runs.

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use chrono::{TimeDelta, Utc};
use flag_approver::alarms::BurnAlarms;
use flag_approver::service::BakeReport;
use flag_approver::ssm::SsmFlags;
use flag_approver::FlagApprover;
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::{names, ssm_parameter_name, Environment};
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use serde_json::{json, Value};

const PROD: Environment = Environment::Prod;

struct Ctx {
    db: TestDb,
    aws: TestAws,
    svc: FlagApprover,
    cw: aws_sdk_cloudwatch::Client,
    /// The burn-rate alarms the check watches: a fast and a slow one, as the template lists.
    fast: String,
    alarms: BurnAlarms,
}

impl Ctx {
    async fn new() -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let ssm = SsmFlags::new(aws_sdk_ssm::Client::new(&aws.sdk), format!("/{}", aws.prefix)).expect("valid root");
        let svc = FlagApprover::new(db.pool.clone(), ssm);
        let cw = aws_sdk_cloudwatch::Client::new(&aws.sdk);
        let (fast, slow) = (aws.name("holds-slo-fast-burn"), aws.name("holds-slo-slow-burn"));
        for name in [&fast, &slow] {
            cw.put_metric_alarm()
                .alarm_name(name)
                .namespace("Holdfast")
                .metric_name("Errors")
                .statistic(Statistic::Sum)
                .period(60)
                .evaluation_periods(1)
                .threshold(0.0)
                .comparison_operator(ComparisonOperator::GreaterThanThreshold)
                .send()
                .await
                .expect("put alarm");
        }
        let alarms = BurnAlarms::new(cw.clone(), &format!("{fast},{slow}"));
        Ctx { db, aws, svc, cw, fast, alarms }
    }

    async fn set_alarm(&self, state: StateValue) {
        self.cw
            .set_alarm_state()
            .alarm_name(&self.fast)
            .state_value(state)
            .state_reason("test: burn rate above threshold")
            .send()
            .await
            .expect("set alarm state");
    }

    fn prefix(&self) -> String {
        format!("/{}/{}", self.aws.prefix, PROD.as_str())
    }

    /// Writes SSM around the approver (an out-of-band edit).
    async fn set_ssm(&self, flag: &str, value: &str) {
        aws_sdk_ssm::Client::new(&self.aws.sdk)
            .put_parameter()
            .name(ssm_parameter_name(&self.prefix(), flag))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .expect("put parameter");
    }

    async fn ssm_value(&self, flag: &str) -> Option<(String, i64)> {
        let ssm = aws_sdk_ssm::Client::new(&self.aws.sdk);
        match ssm.get_parameter().name(ssm_parameter_name(&self.prefix(), flag)).send().await {
            Ok(out) => out.parameter.map(|p| (p.value.unwrap_or_default(), p.version)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => None,
            Err(e) => panic!("get_parameter: {e:?}"),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value, who: &str) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        response_json(flag_approver::api::handle(&self.svc, api_request(method, path, &body, Some(who), &[])).await)
    }

    /// Proposes and approves a one-flag prod change of an operational flag (one approver);
    /// returns the proposal id once applied.
    async fn apply(&self, flag: &str, value: Value) -> String {
        let body = json!({ "flag": flag, "environment": "prod", "value": value, "reason": "INC-7 tune" });
        let (s, p) = self.call("POST", "/flags/proposals", body, "olga;groups=holdfast-ops").await;
        assert_eq!(s, 201, "{p}");
        let id = p["id"].as_str().expect("id").to_string();
        let (s, p) = self
            .call("POST", &format!("/flags/proposals/{id}/approve"), Value::Null, "amir;groups=holdfast-flag-approvers")
            .await;
        assert_eq!((s, p["status"].clone()), (200, json!("applied")), "{p}");
        id
    }

    async fn check(&self, at: chrono::DateTime<Utc>) -> BakeReport {
        self.svc.check_bakes(PROD, &self.alarms, at).await.expect("bake check")
    }

    /// The bake row: (outcome, alarm, minutes between apply and the window's end).
    async fn bake(&self, id: &str) -> (Option<String>, Option<String>, i64) {
        let c = self.db.pool.get().await.expect("conn");
        let r = c
            .fetch_one(
                "SELECT outcome, alarm, extract(epoch FROM bake_until - applied_at)::bigint / 60 FROM flag_bakes \
                 WHERE proposal_id = $1",
                &[&id.parse::<uuid::Uuid>().expect("uuid")],
            )
            .await
            .expect("a bake row");
        (r.get(0), r.get(1), r.get(2))
    }

    /// Audit rows of the proposal with `action`: (actor, before, after, detail).
    async fn audit(&self, id: &str, action: &str) -> Vec<(String, Option<String>, Option<String>, Option<String>)> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT actor, before_value, after_value, detail FROM flag_audit WHERE proposal_id = $1 AND action = $2 \
             ORDER BY id",
            &[&id.parse::<uuid::Uuid>().expect("uuid"), &action],
        )
        .await
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }

    async fn events(&self, event_type: &str) -> Vec<Value> {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch(
            "SELECT context FROM observability_events WHERE event_type = $1 AND source = 'flag-approver' ORDER BY id",
            &[&event_type],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
    }
}

#[tokio::test]
async fn a_burn_rate_alarm_in_the_bake_window_reverts_the_change_once() {
    let t = Ctx::new().await;
    t.set_ssm(names::HOLDS_TTL_SECONDS, "300").await;
    let id = t.apply(names::HOLDS_TTL_SECONDS, json!(240)).await;
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("240".into(), 2)));
    assert_eq!(t.bake(&id).await, (None, None, 10), "holds.ttlSeconds bakes 10 min in prod");

    // The alarm is OK: the change stays and its window stays open.
    let r = t.check(Utc::now()).await;
    assert_eq!(r, BakeReport { open: 1, ..Default::default() });
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("240".into(), 2)));

    // The fast-burn alarm fires inside the window: the old value is written back.
    t.set_alarm(StateValue::Alarm).await;
    let r = t.check(Utc::now()).await;
    assert_eq!(r, BakeReport { open: 1, reverted: 1, ..Default::default() });
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 3)));
    let (outcome, alarm, _) = t.bake(&id).await;
    assert_eq!((outcome.as_deref(), alarm.as_deref()), (Some("reverted"), Some(t.fast.as_str())));
    let rows = t.audit(&id, "auto_reverted").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (actor, before, after, detail) = &rows[0];
    assert_eq!((actor.as_str(), before.as_deref(), after.as_deref()), ("system", Some("240"), Some("300")));
    let detail = detail.as_deref().unwrap_or_default();
    assert!(detail.contains(&format!("alarm {} entered ALARM", t.fast)) && detail.contains("bake window"), "{detail}");
    let events = t.events("flags.auto_reverted").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["error_code"], "auto_reverted");

    // Run again (the alarm still firing): nothing is reverted twice.
    let r = t.check(Utc::now()).await;
    assert_eq!(r, BakeReport::default());
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("300".into(), 3)));
    assert_eq!(t.audit(&id, "auto_reverted").await.len(), 1);
    assert_eq!(t.events("flags.auto_reverted").await.len(), 1);

    // Ops are notified: the event feeds FlagAutoReverts, which the template alarms on.
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).expect("template");
    let alarm = template.split("FlagAutoRevertedAlarm:").nth(1).expect("the auto-revert alarm exists");
    let alarm = alarm.split("\n\n").next().unwrap_or_default();
    assert!(alarm.contains("MetricName: FlagAutoReverts") && alarm.contains("Threshold: 0"), "{alarm}");
}

#[tokio::test]
async fn a_window_that_passed_or_an_alarm_that_was_already_firing_leaves_the_change() {
    let t = Ctx::new().await;
    // Already in ALARM when the change goes out (e.g. the incident it answers): not its doing.
    t.set_alarm(StateValue::Alarm).await;
    let id = t.apply(names::HOLDS_TTL_SECONDS, json!(240)).await;
    assert_eq!(t.check(Utc::now()).await, BakeReport { open: 1, ..Default::default() });
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("240".into(), 1)));
    // Its window passes: closed as baked, the change stays.
    let later = Utc::now() + TimeDelta::minutes(11);
    assert_eq!(t.check(later).await, BakeReport { open: 1, baked: 1, ..Default::default() });
    assert_eq!(t.bake(&id).await.0.as_deref(), Some("baked"));

    // A second change whose window has passed when the alarm fires: left alone too.
    t.set_alarm(StateValue::Ok).await;
    let id = t.apply(names::ALLOCATOR_MERGES_ENABLED, json!(false)).await;
    let c = t.db.pool.get().await.expect("conn");
    c.run(
        "UPDATE flag_bakes SET applied_at = now() - interval '20 minutes', bake_until = now() - interval '10 minutes' \
         WHERE proposal_id = $1",
        &[&id.parse::<uuid::Uuid>().expect("uuid")],
    )
    .await
    .expect("age the window");
    t.set_alarm(StateValue::Alarm).await;
    assert_eq!(t.check(Utc::now()).await, BakeReport { open: 1, baked: 1, ..Default::default() });
    assert_eq!(t.ssm_value(names::ALLOCATOR_MERGES_ENABLED).await.map(|v| v.0), Some("false".into()));
    assert!(t.audit(&id, "auto_reverted").await.is_empty());
    assert!(t.events("flags.auto_reverted").await.is_empty());
}

#[tokio::test]
async fn a_revert_is_not_written_blindly() {
    let t = Ctx::new().await;
    // 1. The flag was changed again since the apply (here around the approver): the revert
    //    would undo that change, so it is refused, audited and notified.
    let id = t.apply(names::HOLDS_TTL_SECONDS, json!(240)).await;
    t.set_ssm(names::HOLDS_TTL_SECONDS, "600").await;
    // 2. Merges turned off, then adjacency dropped around the approver: putting merges back on
    //    would break FR001.
    let merges = t.apply(names::ALLOCATOR_MERGES_ENABLED, json!(false)).await;
    t.set_ssm(names::ALLOCATOR_REQUIRE_ADJACENCY, "false").await;

    t.set_alarm(StateValue::Alarm).await;
    assert_eq!(t.check(Utc::now()).await, BakeReport { open: 2, refused: 2, ..Default::default() });
    assert_eq!(t.ssm_value(names::HOLDS_TTL_SECONDS).await, Some(("600".into(), 2)), "not written");
    assert_eq!(t.ssm_value(names::ALLOCATOR_MERGES_ENABLED).await.map(|v| v.0), Some("false".into()));
    let rows = t.audit(&id, "auto_revert_refused").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_deref()), ("system", Some("600")));
    assert!(rows[0].3.as_deref().is_some_and(|d| d.starts_with("changed_since: holds.ttlSeconds; alarm ")), "{rows:?}");
    let rows = t.audit(&merges, "auto_revert_refused").await;
    assert!(rows[0].3.as_deref().is_some_and(|d| d.starts_with("contradiction: FR001; alarm ")), "{rows:?}");
    let codes: Vec<Value> =
        t.events("flags.auto_revert_refused").await.iter().map(|c| c["error_code"].clone()).collect();
    assert_eq!(codes.len(), 2);
    assert!(codes.contains(&json!("changed_since")) && codes.contains(&json!("contradiction")), "{codes:?}");
    assert_eq!(t.bake(&id).await.0.as_deref(), Some("revert_refused"));
    // Decided once: the next run does nothing.
    assert_eq!(t.check(Utc::now()).await, BakeReport::default());
}

#[tokio::test]
async fn break_glass_bakes_and_staging_does_not() {
    let t = Ctx::new().await;
    let body = json!({ "environment": "prod", "reason": "INC-9 false 409s", "changes": [
        { "flag": names::HOLDS_STRICT_CONFLICTS, "value": false },
        { "flag": names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "value": "INC-9 false 409s" }] });
    let (s, p) = t.call("POST", "/flags/break-glass", body, "olga;groups=holdfast-ops").await;
    assert_eq!((s, p["status"].clone()), (201, json!("applied")), "{p}");
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(t.bake(&id).await, (None, None, 15), "the kill switch is critical: 15 min");

    let body = json!({ "flag": names::HOLDS_TTL_SECONDS, "environment": "staging", "value": 240, "reason": "try" });
    let (_, p) = t.call("POST", "/flags/proposals", body, "olga;groups=holdfast-ops").await;
    let staging = p["id"].as_str().expect("id").to_string();
    let (_, p) = t
        .call(
            "POST",
            &format!("/flags/proposals/{staging}/approve"),
            Value::Null,
            "amir;groups=holdfast-flag-approvers",
        )
        .await;
    assert_eq!(p["status"], "applied", "{p}");
    let c = t.db.pool.get().await.expect("conn");
    let n: i64 = c
        .fetch_one(
            "SELECT count(*) FROM flag_bakes WHERE proposal_id = $1",
            &[&staging.parse::<uuid::Uuid>().expect("uuid")],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "only prod changes bake");
}
