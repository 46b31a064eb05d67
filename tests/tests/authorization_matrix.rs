//! The route × caller matrix (issue 12): every HTTP route of the holds API and the flag
//! approver, driven through its real handler with every kind of caller, must answer exactly as
//! the one authorization table (`holdfast_shared::auth::authorize`) says — Allow: the route's
//! own answer; NotFound: 404 as for a resource that does not exist; Forbidden: 403; no token:
//! 401. The table itself is unit-tested cell by cell in `shared/src/auth.rs`; this proves every
//! route actually asks it.

use flag_approver::ssm::SsmFlags;
use flag_approver::FlagApprover;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::http::{apigw_v2_http_request, lambda_request};
use holdfast_shared::auth::{authorize, Action, Caller, Decision, Resource, Roles, Subject};
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::{BookingPolicy, GuestLimits};
use holdfast_tests::{response_json, TestAws, TestDb};
use holds_api::HoldsService;
use lambda_http::http::{header, HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The caller kinds, as dev tokens (`sub;groups=…`); `None` is no token.
fn kinds(here: RestaurantId) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("owner guest", Some("alice".into())),
        ("other guest", Some("mallory".into())),
        ("staff of this restaurant", Some(format!("sam;groups=restaurant:{}:staff", here.as_uuid()))),
        ("staff of another", Some(format!("tom;groups=restaurant:{}:staff", RestaurantId::new_random().as_uuid()))),
        ("ops", Some("olga;groups=holdfast-ops".into())),
        ("flag approver", Some("amir;groups=holdfast-flag-approvers".into())),
        ("no token", None),
    ]
}

/// The domain caller a dev token stands for (what the handlers parse from the claims).
fn domain_caller(token: &str) -> Caller {
    let (sub, groups) = token.split_once(";groups=").unwrap_or((token, ""));
    let groups = format!("[{}]", groups.replace(',', " "));
    Caller::new(Subject::parse(sub).expect("subject"), Roles::from_groups_claim(&groups))
}

fn request(method: &str, path: &str, body: &Value, who: Option<&str>) -> lambda_http::Request {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    lambda_request(&apigw_v2_http_request(method, path, "", &headers, &body, who)).expect("event")
}

struct Ctx {
    _db: TestDb,
    _aws: TestAws,
    holds: HoldsService,
    flags: FlagApprover,
    restaurant: RestaurantId,
    policy: BookingPolicy,
}

impl Ctx {
    async fn new() -> Ctx {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        let mut policy = BookingPolicy::demo(1);
        // Room for one fresh hold per cell of the matrix.
        policy.guest_limits = GuestLimits { max_live_holds: 100, max_confirms_per_hour: 100 };
        // Fixed dates from 2030-02-01: a booking horizon that reaches them whatever today is.
        policy.booking_horizon.max_days_ahead = 3650;
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Matrix Bistro", &policy).await.expect("publish");
        drop(c);
        let prefix = format!("/{}/dev", aws.prefix);
        let loader = FlagLoader::unrecorded(
            aws_sdk_ssm::Client::new(&aws.sdk),
            holdfast_shared::flags::Environment::Dev,
            prefix,
            Duration::from_secs(30),
        );
        let holds = HoldsService::new(db.pool.clone(), Arc::new(loader));
        let ssm = SsmFlags::new(aws_sdk_ssm::Client::new(&aws.sdk), format!("/{}", aws.prefix)).expect("root");
        let flags = FlagApprover::new(db.pool.clone(), ssm);
        Ctx { _db: db, _aws: aws, holds, flags, restaurant, policy }
    }

    async fn holds_call(&self, method: &str, path: &str, body: &Value, who: Option<&str>) -> (u16, Value) {
        response_json(holds_api::api::handle(&self.holds, request(method, path, body, who)).await)
    }

    async fn flags_call(&self, method: &str, path: &str, body: &Value, who: Option<&str>) -> (u16, Value) {
        response_json(flag_approver::api::handle(&self.flags, request(method, path, body, who)).await)
    }

    /// A booking request for its own day (cells never disturb each other).
    fn booking_body(&self, n: usize) -> Value {
        let start = chrono::DateTime::parse_from_rfc3339("2030-06-01T19:00:00Z").expect("t").to_utc()
            + chrono::Duration::days(n as i64);
        json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": start,
                "guest": { "name": "Alice", "email": "alice@example.com" } })
    }

    /// A fresh live hold of alice's, on its own day (cells never disturb each other).
    async fn fresh_hold(&self, n: usize) -> String {
        let start = chrono::DateTime::parse_from_rfc3339("2030-02-01T19:00:00Z").expect("t").to_utc()
            + chrono::Duration::days(n as i64);
        let body = json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": start,
                           "table_ids": [self.policy.tables[0].id] });
        let (s, v) = self.holds_call("POST", "/holds", &body, Some("alice")).await;
        assert_eq!(s, 201, "{v}");
        v["hold_id"].as_str().expect("id").to_string()
    }
}

/// The answer `decision` demands. An allowed call gets the route's own answer, which for a
/// flag route can be a domain 404/409 (e.g. acknowledging a proposal that opened no review):
/// never 401 or 403, and never the authorization refusal codes.
fn expect(decision: Option<Decision>, status: u16, cell: &str, body: &Value) {
    let code = body["error"]["code"].as_str().unwrap_or_default();
    match decision {
        None => assert_eq!(status, 401, "{cell}: {body}"),
        Some(Decision::NotFound) => assert_eq!(status, 404, "{cell}: {body}"),
        Some(Decision::Forbidden) => assert_eq!(status, 403, "{cell}: {body}"),
        Some(Decision::Allow) => {
            assert!(![401, 403].contains(&status), "{cell}: allowed but {status} {body}");
            assert!(!["forbidden", "unauthenticated"].contains(&code), "{cell}: {body}");
        }
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_table_says() {
    let t = Ctx::new().await;
    let alice = Subject::parse("alice").expect("subject");
    let guest = json!({ "guest": { "name": "Alice", "email": "alice@example.com" } });
    let mut n = 0;

    // Holds API: quote and hold are on the restaurant; the rest on alice's hold.
    for (who_kind, token) in kinds(t.restaurant) {
        let decide = |action: Action, resource: &Resource<'_>| {
            token.as_deref().map(|tk| authorize(&domain_caller(tk), action, resource))
        };
        let on_restaurant = Resource::Restaurant(t.restaurant);
        let on_hold = Resource::Owned { restaurant: t.restaurant, owner: Some(&alice) };

        let quote = json!({ "party_size": 2, "start": "2030-01-07T19:00:00Z" });
        let (s, v) =
            t.holds_call("POST", &format!("/restaurants/{}/quotes", t.restaurant), &quote, token.as_deref()).await;
        expect(decide(Action::Quote, &on_restaurant), s, &format!("quote by {who_kind}"), &v);
        if decide(Action::Quote, &on_restaurant) == Some(Decision::Allow) {
            assert_eq!(s, 200, "{v}");
        }

        n += 1;
        let start = format!("2031-03-{:02}T19:00:00Z", n);
        let hold = json!({ "restaurant_id": t.restaurant, "party_size": 2, "start": start });
        let (s, v) = t.holds_call("POST", "/holds", &hold, token.as_deref()).await;
        expect(decide(Action::HoldCreate, &on_restaurant), s, &format!("hold by {who_kind}"), &v);

        for (action, method, suffix, body) in [
            (Action::HoldRead, "GET", "", Value::Null),
            (Action::HoldRelease, "DELETE", "", Value::Null),
            (Action::HoldConfirm, "POST", "/confirm", guest.clone()),
        ] {
            n += 1;
            let id = t.fresh_hold(n).await;
            let (s, v) = t.holds_call(method, &format!("/holds/{id}{suffix}"), &body, token.as_deref()).await;
            let d = decide(action, &on_hold);
            expect(d, s, &format!("{action:?} by {who_kind}"), &v);
            if d == Some(Decision::Allow) {
                assert!((200..300).contains(&s), "{action:?} by {who_kind}: {s} {v}");
            }
        }
    }

    // Booking lifecycle: requesting is on the restaurant; reading, changing and cancelling are on
    // alice's booking (a fresh one per cell, each on its own day).
    for (who_kind, token) in kinds(t.restaurant) {
        let decide = |action: Action, resource: &Resource<'_>| {
            token.as_deref().map(|tk| authorize(&domain_caller(tk), action, resource))
        };
        let on_booking = Resource::Owned { restaurant: t.restaurant, owner: Some(&alice) };
        n += 1;
        let (s, v) = t.holds_call("POST", "/bookings", &t.booking_body(n), token.as_deref()).await;
        expect(
            decide(Action::BookingRequest, &Resource::Restaurant(t.restaurant)),
            s,
            &format!("request by {who_kind}"),
            &v,
        );
        for (action, method, suffix, body) in [
            (Action::BookingRead, "GET", "", Value::Null),
            (Action::BookingChange, "PATCH", "", json!({ "party_size": 1 })),
            (Action::BookingCancel, "POST", "/cancel", Value::Null),
        ] {
            n += 1;
            let (s, b) = t.holds_call("POST", "/bookings", &t.booking_body(n), Some("alice")).await;
            assert_eq!((s, b["status"].as_str()), (201, Some("confirmed")), "{b}");
            let path = format!("/bookings/{}{suffix}", b["booking_id"].as_str().expect("id"));
            let (s, v) = t.holds_call(method, &path, &body, token.as_deref()).await;
            let d = decide(action, &on_booking);
            expect(d, s, &format!("{action:?} by {who_kind}"), &v);
            if d == Some(Decision::Allow) {
                assert!((200..300).contains(&s), "{action:?} by {who_kind}: {s} {v}");
            }
        }
    }

    // Flag approver: every route is on the flags surface.
    let proposal = json!({ "flag": "email.requestReceivedDelayMinutes", "environment": "dev", "value": 7,
                           "reason": "matrix" });
    let (s, p) = t.flags_call("POST", "/flags/proposals", &proposal, Some("olga;groups=holdfast-ops")).await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().expect("proposal id").to_string();
    let routes: Vec<(Action, &str, String, Value)> = vec![
        (Action::FlagPropose, "POST", "/flags/proposals".into(), proposal.clone()),
        (Action::FlagReadProposal, "GET", format!("/flags/proposals/{pid}"), Value::Null),
        (Action::FlagApprove, "POST", format!("/flags/proposals/{pid}/approve"), Value::Null),
        (Action::FlagReject, "POST", format!("/flags/proposals/{pid}/reject"), json!({ "reason": "no" })),
        (Action::FlagApply, "POST", format!("/flags/proposals/{pid}/apply"), Value::Null),
        (Action::FlagBreakGlass, "POST", "/flags/break-glass".into(), json!({})),
        (Action::FlagReadProposal, "GET", "/flags/reviews".into(), Value::Null),
        (Action::FlagAcknowledgeReview, "POST", format!("/flags/reviews/{pid}/acknowledge"), Value::Null),
        (Action::FlagReadAudit, "GET", "/flags/audit".into(), Value::Null),
        (Action::FlagReadMatrix, "GET", "/flags/matrix".into(), Value::Null),
    ];
    for (who_kind, token) in kinds(t.restaurant) {
        for (action, method, path, body) in &routes {
            let d = token.as_deref().map(|tk| authorize(&domain_caller(tk), *action, &Resource::Flags));
            let (s, v) = t.flags_call(method, path, body, token.as_deref()).await;
            expect(d, s, &format!("{method} {path} by {who_kind}"), &v);
        }
    }
}
