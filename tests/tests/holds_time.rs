//! Time, done right (issue 13) through the holds API's real handler against real PostgreSQL:
//! the booking horizon, out-of-range timestamps, a service crossing midnight and both Europe/London
//! DST nights. Dates are computed from the real clock (the horizon is relative to now).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc, Weekday};
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::{BookingPolicy, ServiceHours};
use holdfast_tests::{api_request, response_json, TestAws, TestDb};
use holds_api::HoldsService;
use serde_json::{json, Value};
use std::sync::Arc;

struct Ctx {
    db: TestDb,
    _aws: TestAws,
    svc: HoldsService,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

impl Ctx {
    async fn new(policy: BookingPolicy) -> Ctx {
        assert_eq!(policy.validate(), Ok(()));
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Clock Bistro", &policy).await.expect("publish");
        drop(c);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let prefix = format!("/{}/dev", aws.prefix);
        let flags = FlagLoader::unrecorded(
            ssm,
            holdfast_shared::flags::Environment::Dev,
            prefix,
            std::time::Duration::from_secs(30),
        );
        let svc = HoldsService::new(db.pool.clone(), Arc::new(flags));
        Ctx { db, _aws: aws, svc, restaurant, policy }
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: &Value, h: &[(&str, &str)]) -> (u16, Value) {
        let req = api_request(method, path, &body.to_string(), Some(who), h);
        response_json(holds_api::api::handle(&self.svc, req).await)
    }

    async fn hold(&self, who: &str, start: &Value, party: u16) -> (u16, Value) {
        let body = json!({ "restaurant_id": self.restaurant, "party_size": party, "start": start });
        self.call(who, "POST", "/holds", &body, &[]).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.pool.get().await.expect("conn").fetch_one(sql, &[]).await.expect("count").get(0)
    }

    /// The instant of a London wall-clock time (the policy's own conversion: first occurrence
    /// of a repeated time, a skipped one refused).
    fn local(&self, t: NaiveDateTime) -> DateTime<Utc> {
        self.policy.local_start(t).expect("a real local time")
    }
}

fn naive(d: NaiveDate, h: u32, m: u32) -> NaiveDateTime {
    d.and_hms_opt(h, m, 0).expect("valid wall time")
}

/// The last Sunday of `month` (London's DST changes: March and October) in the next year.
fn last_sunday_next_year(month: u32) -> NaiveDate {
    let year = Utc::now().year() + 1;
    (25..=31)
        .rev()
        .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
        .find(|d| d.weekday() == Weekday::Sun)
        .expect("a last Sunday")
}

/// The next Friday at least a week away.
fn a_friday_ahead() -> NaiveDate {
    let mut d = Utc::now().date_naive() + Duration::days(7);
    while d.weekday() != Weekday::Fri {
        d += Duration::days(1);
    }
    d
}

/// Demo floor plan in Europe/London, open Friday and Saturday 22:00 – 02:00 (crossing
/// midnight), with a horizon that reaches next year's DST nights.
fn late_night() -> BookingPolicy {
    let mut p = BookingPolicy::demo(1);
    p.booking_horizon.max_days_ahead = 800;
    p.service_hours = vec![
        ServiceHours { weekday: 4, opens_minute: 22 * 60, closes_minute: 2 * 60 },
        ServiceHours { weekday: 5, opens_minute: 22 * 60, closes_minute: 2 * 60 },
    ];
    p
}

fn rfc3339(t: DateTime<Utc>) -> Value {
    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[tokio::test]
async fn starts_outside_the_horizon_or_range_are_422_naming_start_and_write_nothing() {
    let t = Ctx::new(BookingPolicy::demo(1)).await; // default horizon: 15 minutes .. 180 days
    let now = Utc::now();
    let quotes = format!("/restaurants/{}/quotes", t.restaurant.as_uuid());
    let starts = [
        rfc3339(now - Duration::days(1)),
        rfc3339(now + Duration::minutes(5)),
        rfc3339(now + Duration::days(181)),
        json!("+262143-12-31T22:00:00Z"),
        json!("+262142-12-31T22:00:00Z"),
        json!("0001-01-01T00:00:00Z"),
        json!("9999-12-31T00:00:00Z"),
        json!("-4714-11-24T00:00:00Z"),
        json!("2001-01-01T19:00:00Z"),
    ];
    let table = t.policy.tables[0].id;
    for (i, start) in starts.iter().enumerate() {
        let key = format!("time-{i}");
        let bodies = [
            ("POST", quotes.clone(), json!({ "party_size": 2, "start": start })),
            ("POST", "/holds".to_string(), json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": start })),
            (
                "POST",
                "/holds".to_string(),
                json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": start, "table_ids": [table] }),
            ),
        ];
        for (method, path, body) in bodies {
            let (s, v) = t.call("alice", method, &path, &body, &[("Idempotency-Key", key.as_str())]).await;
            assert_eq!((s, v["error"]["field"].as_str()), (422, Some("start")), "{start} {path}: {v}");
            assert_eq!(v["error"]["code"], "validation_failed", "{v}");
        }
    }
    // The messages say what is wrong.
    let (_, v) = t.hold("alice", &starts[0], 2).await;
    assert_eq!(v["error"]["message"], "is in the past", "{v}");
    let (_, v) = t.hold("alice", &starts[1], 2).await;
    assert_eq!(v["error"]["message"], "must be at least 15 minutes from now", "{v}");
    let (_, v) = t.hold("alice", &starts[2], 2).await;
    assert_eq!(v["error"]["message"], "must be at most 180 days ahead", "{v}");

    for table in ["holds", "table_claims", "idempotency_keys", "bookings"] {
        assert_eq!(t.count(&format!("SELECT count(*) FROM {table}")).await, 0, "{table} written");
    }
    // Inside the horizon, the same restaurant books as usual.
    let day = (now + Duration::days(3)).date_naive();
    let ok = t.local(naive(day, 19, 0));
    let (s, v) = t.hold("alice", &rfc3339(ok), 2).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn a_seating_after_midnight_belongs_to_the_previous_evenings_service() {
    let t = Ctx::new(late_night()).await;
    let friday = a_friday_ahead();
    let saturday = friday + Duration::days(1);
    // Saturday 00:30 local is in Friday's 22:00 – 02:00 service: party of 2 sits 90 minutes.
    let (s, v) = t.hold("alice", &rfc3339(t.local(naive(saturday, 0, 30))), 2).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["end"], rfc3339(t.local(naive(saturday, 2, 0))));
    // One minute later it would run past the 02:00 close.
    let (s, v) = t.hold("bob", &rfc3339(t.local(naive(saturday, 0, 31))), 2).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
    // Thursday night has no service.
    let (s, v) = t.hold("bob", &rfc3339(t.local(naive(friday, 0, 30))), 2).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
    // The quote agrees.
    let quotes = format!("/restaurants/{}/quotes", t.restaurant.as_uuid());
    let body = json!({ "party_size": 2, "start": rfc3339(t.local(naive(saturday, 0, 15))) });
    let (s, v) = t.call("carol", "POST", &quotes, &body, &[]).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn spring_forward_night_is_an_hour_shorter_and_its_gap_is_never_seated() {
    let t = Ctx::new(late_night()).await;
    let sunday = last_sunday_next_year(3);
    let saturday = sunday - Duration::days(1);
    // London: 01:00 GMT → 02:00 BST. Saturday's service runs 22:00 GMT .. 02:00 BST = 3 hours.
    let opens = t.local(naive(saturday, 22, 0));
    let closes = t.local(naive(sunday, 2, 0));
    assert_eq!(closes - opens, Duration::hours(3));
    // The wall time 01:30 does not exist that night: the domain refuses to turn it into a start,
    // and so does the API when a guest sends it as the restaurant's wall-clock time.
    assert!(t.policy.local_start(naive(sunday, 1, 30)).is_err());
    let wall = json!(format!("{sunday}T01:30:00"));
    for (method, path, body) in [
        ("POST", "/holds".to_string(), json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": wall })),
        ("POST", format!("/restaurants/{}/quotes", t.restaurant), json!({ "party_size": 2, "start": wall })),
    ] {
        let (s, v) = t.call("alice", method, &path, &body, &[]).await;
        assert_eq!((s, v["error"]["field"].as_str()), (422, Some("start")), "{path}: {v}");
    }
    // A wall-clock start that exists is the instant the restaurant's clock says.
    let (s, v) = t.hold("alice", &json!(format!("{saturday}T23:30")), 2).await;
    assert_eq!((s, v["start"].clone()), (201, rfc3339(t.local(naive(saturday, 23, 30)))), "{v}");
    // (Resetting deletes rows, which the functions' runtime role may not: the owner does it.)
    let owner = t.db.owner_pool();
    let c = owner.get().await.expect("owner conn");
    c.run("DELETE FROM table_claims", &[]).await.expect("reset");
    c.run("DELETE FROM holds", &[]).await.expect("reset");
    // Its instant read as GMT (01:30Z) is 02:30 BST: after close, so a 422 and nothing held.
    let gap_as_gmt = naive(sunday, 1, 30).and_utc();
    let (s, v) = t.hold("alice", &rfc3339(gap_as_gmt), 2).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
    // Read as BST (00:30Z) it is 00:30 GMT, and 90 minutes from then is 03:00 BST: too late too.
    let (s, v) = t.hold("alice", &rfc3339(gap_as_gmt - Duration::hours(1)), 2).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
    assert_eq!(t.count("SELECT count(*) FROM holds").await, 0);
    // The last seating that fits ends exactly at 02:00 BST.
    let last = closes - Duration::minutes(90);
    assert_eq!(last, t.local(naive(saturday, 23, 30)));
    let (s, v) = t.hold("alice", &rfc3339(last), 2).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["end"], rfc3339(closes));
    // The guest reads it in local time with the zone's abbreviation.
    let start: DateTime<Utc> = v["start"].as_str().expect("start").parse().expect("instant");
    assert!(t.policy.render_local(start).ends_with("23:30 GMT"), "{}", t.policy.render_local(start));
    assert!(t.policy.render_local(closes).ends_with("02:00 BST"));
}

#[tokio::test]
async fn fall_back_night_closes_at_the_first_of_two_ambiguous_times() {
    // Saturday service 22:00 – 01:30: on fallback night 01:30 happens twice (BST, then GMT).
    // The stated rule: a boundary is the first instant the clock shows it, so the service
    // closes at 01:30 BST and the repeated hour is closed.
    let mut p = late_night();
    p.service_hours[1].closes_minute = 90;
    let t = Ctx::new(p).await;
    let sunday = last_sunday_next_year(10);
    let first_0130 = t.local(naive(sunday, 1, 30));
    assert_eq!(first_0130.hour(), 0, "01:30 BST is 00:30 UTC");
    let second_0100 = naive(sunday, 1, 0).and_utc(); // 01:00 GMT, the second 01:00
    assert!(t.policy.render_local(second_0100).ends_with("01:00 GMT"));

    // Midnight + 90 minutes ends at the first 01:30: seated.
    let (s, v) = t.hold("alice", &rfc3339(t.local(naive(sunday, 0, 0))), 2).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["end"], rfc3339(first_0130));
    // 00:15 BST + 105 minutes (party of 3) ends at 01:00 GMT: after the first 01:30 (before
    // the second, which a "last occurrence" rule would have allowed).
    let (s, v) = t.hold("bob", &rfc3339(t.local(naive(sunday, 0, 15))), 3).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
    // The second time round, 01:00 GMT is after close.
    let (s, v) = t.hold("bob", &rfc3339(second_0100), 1).await;
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("outside_service_hours")), "{v}");
}

#[tokio::test]
async fn alternatives_offered_with_a_409_are_never_in_the_past() {
    // Open round the clock except one minute, the boundary twelve hours from now (so the
    // test never straddles it), so that "now" is inside service hours whenever the test runs.
    let mut p = BookingPolicy::demo(1);
    let now = Utc::now();
    let local_now = p.clock().local(now).expect("local now");
    let boundary = ((local_now.hour() * 60 + local_now.minute() + 12 * 60) % 1440) as u16;
    p.service_hours = (0..7)
        .map(|weekday| ServiceHours { weekday, opens_minute: boundary, closes_minute: (boundary + 1439) % 1440 })
        .collect();
    let t = Ctx::new(p).await;
    // Every table held at a start 45–60 minutes from now (on the 15-minute grid).
    let grid = 15 * 60;
    let start = DateTime::from_timestamp((now.timestamp() / grid + 4) * grid, 0).expect("start");
    for (i, table) in t.policy.tables.iter().enumerate() {
        let body = json!({ "restaurant_id": t.restaurant, "party_size": table.min_party, "start": rfc3339(start),
                           "table_ids": [table.id] });
        let (s, v) = t.call(&format!("guest{i}"), "POST", "/holds", &body, &[]).await;
        assert_eq!(s, 201, "{v}");
    }
    let quotes = format!("/restaurants/{}/quotes", t.restaurant.as_uuid());
    let (s, v) = t.call("late", "POST", &quotes, &json!({ "party_size": 2, "start": rfc3339(start) }), &[]).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("no_table_available")), "{v}");
    let alts = v["error"]["alternatives"].as_array().expect("alternatives");
    assert!(!alts.is_empty(), "{v}");
    let earliest = Utc::now() + Duration::minutes(15) - Duration::seconds(30);
    for a in alts {
        let at: DateTime<Utc> = a["start"].as_str().expect("start").parse().expect("instant");
        // Free tables exist 105+ minutes before `start` too, but that is in the past.
        assert!(at >= earliest, "{a} is before now + lead time");
        assert!(at > start, "{a}");
    }
}
