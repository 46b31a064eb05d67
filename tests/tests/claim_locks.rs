//! The claim locks (docs/decisions/0003-row-locks-on-restaurant-tables.md): a writer queues
//! only behind writers whose claims could conflict with its own (same table, an hour in
//! common), never behind holds for another day. Each test leaves one real hold write
//! uncommitted (`store::hold_write` in an open transaction, locks taken) and drives the handler
//! around it.

use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::auth::Subject;
use holdfast_shared::events::StrictMode;
use holdfast_shared::hold::HoldStatus;
use holdfast_shared::ids::{HoldId, RestaurantId, TableId};
use holdfast_shared::policy::{BookingPolicy, ServiceHours};
use holdfast_tests::{api_request, response_json, wait_for, TestAws, TestDb};
use holds_api::store::{self, NewHold};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Long enough for a loaded box; a writer that waits on the open transaction never finishes
/// before it commits, so running out of this is a wait, not slowness.
const NO_WAIT: Duration = Duration::from_secs(30);

struct Ctx {
    db: TestDb,
    _aws: TestAws,
    svc: Arc<HoldsService>,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

impl Ctx {
    /// The demo floor plan, open 11:00–02:00 every day (London: UTC in January), so a late
    /// seating runs past midnight.
    async fn new() -> Ctx {
        let db = TestDb::with_pool_size(8).await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        policy.booking_horizon.max_days_ahead = 3650;
        policy.service_hours =
            (0..7).map(|weekday| ServiceHours { weekday, opens_minute: 11 * 60, closes_minute: 2 * 60 }).collect();
        let c = db.pool.get().await.expect("conn");
        store::publish_policy(&c, restaurant, "Lock Bistro", &policy).await.expect("publish");
        drop(c);
        let flags = Arc::new(FlagLoader::unrecorded(
            aws_sdk_ssm::Client::new(&aws.sdk),
            holdfast_shared::flags::Environment::Dev,
            format!("/{}/dev", aws.prefix),
            Duration::from_secs(30),
        ));
        let svc = Arc::new(HoldsService::new(db.pool.clone(), flags));
        Ctx { db, _aws: aws, svc, restaurant, policy }
    }

    fn table(&self, label: &str) -> TableId {
        self.policy.tables.iter().find(|t| t.label == label).expect("demo table").id
    }

    /// POST /holds for `table` at `start` (party of 2), as guest `who`, on its own task.
    fn hold(&self, who: &str, table: &str, start: &str) -> tokio::task::JoinHandle<(u16, Value)> {
        let body = json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": start,
                           "table_ids": [self.table(table)] })
        .to_string();
        let (svc, who) = (self.svc.clone(), who.to_owned());
        tokio::spawn(async move {
            response_json(holds_api::api::handle(&svc, api_request("POST", "/holds", &body, Some(&who), &[])).await)
        })
    }

    async fn confirm(&self, who: &str, hold: &Value) -> (u16, Value) {
        let path = format!("/holds/{}/confirm", hold["hold_id"].as_str().expect("hold id"));
        let body = json!({ "guest": { "name": "Test Guest", "email": "guest@example.invalid" } }).to_string();
        response_json(holds_api::api::handle(&self.svc, api_request("POST", &path, &body, Some(who), &[])).await)
    }

    /// Backends of this database waiting for an advisory lock right now.
    async fn waiting_on_claim_locks(&self) -> i64 {
        let c = self.db.pool.get().await.expect("conn");
        c.fetch_one(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND NOT granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("pg_locks")
        .get(0)
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.pool.get().await.expect("conn").fetch_one(sql, &[]).await.expect("count").get(0)
    }
}

/// No two active exclusive claims on one table overlap (checked independently by SQL).
const OVERLAPS: &str = "SELECT count(*) FROM table_claims a JOIN table_claims b
    ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
    WHERE a.active AND b.active AND a.exclusive AND b.exclusive";

/// Hold conflicts answered after more than one attempt: a deadlock (40P01) is retried, so a
/// loser that waited on another writer's uncommitted claim instead of its lock shows here.
const RETRIED_CONFLICTS: &str = "SELECT count(*) FROM observability_events
    WHERE event_type = 'hold.conflict' AND (context->>'attempt')::int > 1";

/// Write a hold of `table` at `start` (party of 2) in `tx` exactly as the handler does, and
/// leave it uncommitted: its claim locks stay taken until the caller commits.
async fn open_hold(t: &Ctx, tx: &deadpool_postgres::Transaction<'_>, table: &str, start: &str) {
    let start = start.parse().expect("start");
    let (seated, blocked) = t.policy.block_window(start, 2).expect("a turn time for 2");
    let owner = Subject::parse("blocker").expect("subject");
    let (hash, tables, snapshot) = (t.policy.content_hash(), [t.table(table)], json!({ "strategy": "single" }));
    let new = NewHold {
        id: HoldId::new_random(),
        restaurant: t.restaurant,
        party_size: 2,
        seated: &seated,
        blocked: &blocked,
        status: HoldStatus::Held,
        strict_mode: StrictMode::Enforced,
        ttl_secs: 300,
        expires_at: None,
        policy_version: t.policy.version,
        policy_hash: hash.as_str(),
        table_ids: &tables,
        snapshot: &snapshot,
        booking_id: None,
        owner: Some(&owner),
        correlation: None,
    };
    let written = store::hold_write(tx, &new, true, 4).await.expect("hold write");
    assert!(written.is_some(), "the blocker's hold was written");
}

/// While a hold of table M1 on Monday 19:00 is uncommitted: Tuesday's hold of M1 is taken and
/// confirmed without waiting, another table at the same time too; an overlapping hold of M1 on
/// Monday waits for the lock, then loses at once with a 409 (no deadlock, no retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_for_another_day_on_the_same_table_does_not_wait() {
    let t = Ctx::new().await;
    let mut blocker = t.db.pool.get().await.expect("conn");
    let tx = blocker.transaction().await.expect("begin");
    open_hold(&t, &tx, "M1", "2030-01-07T19:00:00Z").await;

    let (s, next_day) = tokio::time::timeout(NO_WAIT, t.hold("tue", "M1", "2030-01-08T19:00:00Z"))
        .await
        .expect("Tuesday's hold of the same table waited for Monday's")
        .expect("task");
    assert_eq!(s, 201, "{next_day}");
    let (s, v) = tokio::time::timeout(NO_WAIT, t.confirm("tue", &next_day))
        .await
        .expect("Tuesday's confirm waited for Monday's hold");
    assert_eq!(s, 200, "{v}");
    let (s, v) = tokio::time::timeout(NO_WAIT, t.hold("m2", "M2", "2030-01-07T19:00:00Z"))
        .await
        .expect("another table at the same time waited")
        .expect("task");
    assert_eq!(s, 201, "{v}");

    let same_day = t.hold("mon", "M1", "2030-01-07T19:30:00Z");
    wait_for("the overlapping hold to queue on the claim lock", NO_WAIT, || async {
        (t.waiting_on_claim_locks().await >= 1).then_some(())
    })
    .await;
    assert!(!same_day.is_finished(), "the overlapping hold must wait for the open one");
    tx.commit().await.expect("commit the blocker");
    let (s, v) = same_day.await.expect("task");
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "hold_conflict", "{v}");
    assert_eq!(t.count(RETRIED_CONFLICTS).await, 0, "the loser failed after a retry (a deadlock?)");
    assert_eq!(t.count(OVERLAPS).await, 0, "double booking!");
}

/// A window across midnight locks the hours of both days: Monday 23:30–01:15 makes Tuesday
/// 00:30 on the same table wait (then lose), while Tuesday evening and Monday evening of the
/// same table go ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_across_midnight_holds_both_days_and_nothing_else() {
    let t = Ctx::new().await;
    let mut blocker = t.db.pool.get().await.expect("conn");
    let tx = blocker.transaction().await.expect("begin");
    open_hold(&t, &tx, "M1", "2030-01-07T23:30:00Z").await;

    for (who, start) in [("tue-evening", "2030-01-08T19:00:00Z"), ("mon-evening", "2030-01-07T19:00:00Z")] {
        let (s, v) = tokio::time::timeout(NO_WAIT, t.hold(who, "M1", start))
            .await
            .unwrap_or_else(|_| panic!("{who}'s hold waited for the late-night one"))
            .expect("task");
        assert_eq!(s, 201, "{who}: {v}");
    }

    let after_midnight = t.hold("tue-early", "M1", "2030-01-08T00:30:00Z");
    wait_for("the after-midnight hold to queue on the claim lock", NO_WAIT, || async {
        (t.waiting_on_claim_locks().await >= 1).then_some(())
    })
    .await;
    assert!(!after_midnight.is_finished(), "Tuesday 00:30 overlaps Monday 23:30 and must wait");
    tx.commit().await.expect("commit the blocker");
    let (s, v) = after_midnight.await.expect("task");
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "hold_conflict", "{v}");
    assert_eq!(t.count(RETRIED_CONFLICTS).await, 0, "the loser failed after a retry (a deadlock?)");
    assert_eq!(t.count(OVERLAPS).await, 0, "double booking!");
}
