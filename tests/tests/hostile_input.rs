//! Hostile input (issue 14): every input class has an answer, a 4xx JSON error naming the
//! field, never a 500, never the value echoed, and nothing written.
//!
//! Both HTTP functions are driven with real API Gateway v2 events (`apigw_v2_http_request`, as
//! `lambda_http` parses them in Lambda) against real PostgreSQL and the emulator's SSM, from a
//! table of cases: each control and bidirectional-override character in each text field, bodies
//! that are not UTF-8, out-of-range dates, oversized values, NUL in query strings and path
//! segments, hostile `Idempotency-Key`s. A few go through the real local gateway over HTTP
//! (`cli/src/gateway.rs`), byte for byte. Every hostile value carries the marker `Zq9` so an
//! echo shows; the rows of every table a request could write are counted before and after.

// The local gateway lives in the CLI binary; compiled in here to be driven over real HTTP.
#[path = "../../cli/src/gateway.rs"]
mod gateway;

use chrono::{Duration, Utc};
use flag_approver::ssm::SsmFlags;
use flag_approver::FlagApprover;
use holdfast_adapters::db::{self, DbFault};
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::http::{apigw_v2_http_request, lambda_request, MAX_BODY_BYTES};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::Environment;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use holdfast_tests::{response_json, TestAws, TestDb};
use holds_api::HoldsService;
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What an echo of a hostile value would show.
const MARKER: &str = "Zq9";

/// NUL, BEL, ESC, DEL, a C1 control, every bidirectional embedding, override and isolate, and
/// U+FFFD (what a body that was not UTF-8 becomes if anything on the way "repairs" it).
const HOSTILE: [char; 15] = [
    '\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FFFD}',
];

/// Dates no booking may have, as a date, an instant and a local wall-clock time.
const OUT_OF_RANGE: [&str; 6] = ["0001-01-01", "+10000-01-01", "9999-12-31", "2999-06-01", "2000-01-01", "-0044-03-15"];

/// Every table a request of either function can write.
const WRITTEN: [&str; 10] = [
    "holds",
    "table_claims",
    "bookings",
    "booking_assignments",
    "idempotency_keys",
    "email_outbox",
    "flag_proposals",
    "flag_proposal_changes",
    "flag_audit",
    "flag_reviews",
];

const GUEST: &str = "hostile-guest";
const OPS: &str = "olga;groups=holdfast-ops";
const APPROVER: &str = "amir;groups=holdfast-flag-approvers";

#[derive(Clone, Copy, Debug)]
enum Api {
    Holds,
    Flags,
}

/// One request and the answer it must get.
struct Case {
    what: String,
    api: Api,
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    who: &'static str,
    status: u16,
    field: String,
}

impl Case {
    fn new(
        what: impl Into<String>,
        api: Api,
        method: &'static str,
        path: impl Into<String>,
        who: &'static str,
    ) -> Case {
        Case {
            what: what.into(),
            api,
            method,
            path: path.into(),
            query: String::new(),
            headers: vec![("content-type", b"application/json".to_vec())],
            body: vec![],
            who,
            status: 422,
            field: String::new(),
        }
    }
    fn json(mut self, body: &Value) -> Case {
        self.body = body.to_string().into_bytes();
        self
    }
    fn bytes(mut self, body: Vec<u8>) -> Case {
        self.body = body;
        self
    }
    fn query(mut self, q: impl Into<String>) -> Case {
        self.query = q.into();
        self
    }
    fn header(mut self, name: &'static str, value: &[u8]) -> Case {
        self.headers.push((name, value.to_vec()));
        self
    }
    fn expect(mut self, status: u16, field: impl Into<String>) -> Case {
        self.status = status;
        self.field = field.into();
        self
    }
}

struct World {
    db: TestDb,
    _aws: TestAws,
    holds: Arc<HoldsService>,
    flags: Arc<FlagApprover>,
    restaurant: RestaurantId,
    policy: BookingPolicy,
    /// A bookable instant a week ahead (19:00 UTC), inside the default 180-day horizon.
    start: String,
    /// A live hold, a confirmed booking and a pending flag proposal: targets a hostile
    /// request could write to if a parser let it through.
    hold: String,
    booking: String,
    proposal: String,
}

impl World {
    async fn new() -> World {
        let db = TestDb::new().await;
        let aws = TestAws::new().await;
        let restaurant = RestaurantId::new_random();
        // The demo policy as shipped: bookings 15 minutes to 180 days ahead.
        let policy = BookingPolicy::demo(1);
        let c = db.pool.get().await.expect("conn");
        holds_api::store::publish_policy(&c, restaurant, "Hostile Bistro", &policy).await.expect("publish");
        drop(c);
        let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
        let ttl = std::time::Duration::from_secs(30);
        let loader = FlagLoader::unrecorded(ssm.clone(), Environment::Dev, format!("/{}/dev", aws.prefix), ttl);
        let holds = Arc::new(HoldsService::new(db.pool.clone(), Arc::new(loader)));
        let flags =
            Arc::new(FlagApprover::new(db.pool.clone(), SsmFlags::new(ssm, format!("/{}", aws.prefix)).expect("root")));
        let day = (Utc::now() + Duration::days(7)).format("%Y-%m-%d");
        let mut w = World {
            db,
            _aws: aws,
            holds,
            flags,
            restaurant,
            policy,
            start: format!("{day}T19:00:00Z"),
            hold: String::new(),
            booking: String::new(),
            proposal: String::new(),
        };

        let (s, h) = w.call_json(Api::Holds, "POST", "/holds", &w.hold_body(0), GUEST).await;
        assert_eq!(s, 201, "{h}");
        let first = h["hold_id"].as_str().expect("hold id").to_string();
        let (s, b) = w
            .call_json(Api::Holds, "POST", &format!("/holds/{first}/confirm"), &guest("Ada", "ada@example.com"), GUEST)
            .await;
        assert_eq!(s, 200, "{b}");
        w.booking = b["booking_id"].as_str().expect("booking id").to_string();
        let (s, h) = w.call_json(Api::Holds, "POST", "/holds", &w.hold_body(1), GUEST).await;
        assert_eq!(s, 201, "{h}");
        w.hold = h["hold_id"].as_str().expect("hold id").to_string();
        let proposal = json!({ "environment": "dev", "flag": "holds.ttlSeconds", "value": 240, "reason": "INC-1" });
        let (s, p) = w.call_json(Api::Flags, "POST", "/flags/proposals", &proposal, OPS).await;
        assert_eq!(s, 201, "{p}");
        w.proposal = p["id"].as_str().expect("proposal id").to_string();
        w
    }

    fn hold_body(&self, table: usize) -> Value {
        json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": self.start,
                "table_ids": [self.policy.tables[table].id] })
    }

    fn request_body(&self, guest: Value) -> Value {
        json!({ "restaurant_id": self.restaurant, "party_size": 2, "start": self.start, "guest": guest })
    }

    async fn call_json(
        &self,
        api: Api,
        method: &'static str,
        path: &str,
        body: &Value,
        who: &'static str,
    ) -> (u16, Value) {
        let case = Case::new("setup", api, method, path, who).json(body);
        let (status, body) = self.send(&case).await;
        (status, serde_json::from_slice(&body).expect("JSON answer"))
    }

    /// The case as the API Gateway v2 event Lambda would receive, through the function's handler.
    async fn send(&self, case: &Case) -> (u16, Vec<u8>) {
        let mut headers = HeaderMap::new();
        for (name, value) in &case.headers {
            headers.append(HeaderName::from_static(name), HeaderValue::from_bytes(value).expect("header bytes"));
        }
        let method = Method::from_bytes(case.method.as_bytes()).expect("method");
        let event = apigw_v2_http_request(method, &case.path, &case.query, &headers, &case.body, Some(case.who));
        let req = lambda_request(&event).expect("a valid API Gateway v2 event");
        let resp = match case.api {
            Api::Holds => holds_api::api::handle(&self.holds, req).await,
            Api::Flags => flag_approver::api::handle(&self.flags, req).await,
        };
        let (status, v) = response_json(resp);
        (status, v.to_string().into_bytes())
    }

    async fn counts(&self) -> Vec<(&'static str, i64)> {
        let c = self.db.pool.get().await.expect("conn");
        let mut out = vec![];
        for table in WRITTEN {
            let n: i64 = c.fetch_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0);
            out.push((table, n));
        }
        out
    }
}

fn guest(name: &str, email: &str) -> Value {
    json!({ "guest": { "name": name, "email": email } })
}

/// The guest object with `field` set to `value` (the others valid).
fn guest_with(field: &str, value: &str) -> Value {
    let mut g = json!({ "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000",
                        "notes": "window seat" });
    g[field] = json!(value);
    g
}

/// A valid value of a guest field with `c` inside it, and the marker.
fn hostile_guest_value(field: &str, c: char) -> String {
    match field {
        "name" => format!("{MARKER} Ada{c}Lovelace"),
        "email" => format!("{MARKER}{c}ada@example.com"),
        "phone" => format!("+44 20{c} 7946"),
        _ => format!("{MARKER} window{c}seat"),
    }
}

/// `c` as a query-string value: its UTF-8 bytes percent-encoded.
fn percent(c: char) -> String {
    c.to_string().bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Every case, by input class.
fn cases(w: &World) -> Vec<Case> {
    let (hold, booking, proposal) = (&w.hold, &w.booking, &w.proposal);
    let confirm = format!("/holds/{hold}/confirm");
    let change = format!("/bookings/{booking}");
    let quote = format!("/restaurants/{}/quotes", w.restaurant);
    let mut out = vec![];

    // 1. Each hostile character in each text field.
    for c in HOSTILE {
        for field in ["name", "email", "phone", "notes"] {
            let value = hostile_guest_value(field, c);
            out.push(
                Case::new(format!("confirm guest.{field} {c:?}"), Api::Holds, "POST", &confirm, GUEST)
                    .json(&json!({ "guest": guest_with(field, &value) }))
                    .expect(422, format!("guest.{field}")),
            );
            out.push(
                Case::new(format!("request guest.{field} {c:?}"), Api::Holds, "POST", "/bookings", GUEST)
                    .json(&w.request_body(guest_with(field, &value)))
                    .expect(422, format!("guest.{field}")),
            );
        }
        let start = format!("{}{c}", w.start);
        out.push(
            Case::new(format!("quote start {c:?}"), Api::Holds, "POST", &quote, GUEST)
                .json(&json!({ "party_size": 2, "start": start }))
                .expect(422, "start"),
        );
        let mut hold_body = w.hold_body(2);
        hold_body["policy_hash"] = json!(format!("{MARKER}{c}"));
        out.push(
            Case::new(format!("hold policy_hash {c:?}"), Api::Holds, "POST", "/holds", GUEST)
                .json(&hold_body)
                .expect(422, "policy_hash"),
        );
        out.push(
            Case::new(format!("change start {c:?}"), Api::Holds, "PATCH", &change, GUEST)
                .json(&json!({ "start": start }))
                .expect(422, "start"),
        );
        out.push(
            Case::new(format!("cancel body {c:?}"), Api::Holds, "POST", format!("{change}/cancel"), GUEST)
                .json(&json!({ "reason": format!("{MARKER}{c}") }))
                .expect(422, "reason"),
        );

        let text = format!("{MARKER} INC{c}1");
        for (path, who) in [("/flags/proposals", OPS), ("/flags/break-glass", OPS)] {
            let single = json!({ "environment": "dev", "flag": "holds.ttlSeconds", "value": 300, "reason": "INC-1" });
            for field in ["flag", "value", "reason"] {
                let mut body = single.clone();
                body[field] = json!(text);
                out.push(
                    Case::new(format!("{path} {field} {c:?}"), Api::Flags, "POST", path, who)
                        .json(&body)
                        .expect(422, field),
                );
            }
            for field in ["flag", "value"] {
                let mut change = json!({ "flag": "holds.ttlSeconds", "value": 300 });
                change[field] = json!(text);
                let body = json!({ "environment": "dev", "changes": [change], "reason": "INC-1" });
                out.push(
                    Case::new(format!("{path} changes[0].{field} {c:?}"), Api::Flags, "POST", path, who)
                        .json(&body)
                        .expect(422, format!("changes[0].{field}")),
                );
            }
        }
        for (action, who) in [("approve", APPROVER), ("reject", OPS)] {
            out.push(
                Case::new(
                    format!("{action} reason {c:?}"),
                    Api::Flags,
                    "POST",
                    format!("/flags/proposals/{proposal}/{action}"),
                    who,
                )
                .json(&json!({ "reason": text }))
                .expect(422, "reason"),
            );
        }
        out.push(
            Case::new(
                format!("acknowledge note {c:?}"),
                Api::Flags,
                "POST",
                format!("/flags/reviews/{proposal}/acknowledge"),
                OPS,
            )
            .json(&json!({ "reason": text }))
            .expect(422, "reason"),
        );

        // 2. The same characters in query strings and path segments.
        for param in ["flag", "environment", "proposal", "before", "limit"] {
            out.push(
                Case::new(format!("audit ?{param} {c:?}"), Api::Flags, "GET", "/flags/audit", OPS)
                    .query(format!("{param}={MARKER}{}", percent(c)))
                    .expect(422, param),
            );
        }
        out.push(
            Case::new(format!("reviews ?all {c:?}"), Api::Flags, "GET", "/flags/reviews", OPS)
                .query(format!("all={}", percent(c)))
                .expect(422, "all"),
        );
        for segment in [percent(c), c.to_string()] {
            for (method, path, field) in [
                ("GET", format!("/holds/{MARKER}{segment}"), "hold_id"),
                ("DELETE", format!("/holds/{MARKER}{segment}"), "hold_id"),
                ("POST", format!("/holds/{MARKER}{segment}/confirm"), "hold_id"),
                ("GET", format!("/bookings/{MARKER}{segment}"), "booking_id"),
                ("POST", format!("/bookings/{MARKER}{segment}/cancel"), "booking_id"),
                ("POST", format!("/restaurants/{MARKER}{segment}/quotes"), "restaurant_id"),
            ] {
                out.push(
                    Case::new(format!("{method} {path:?}"), Api::Holds, method, path, GUEST)
                        .json(&guest("Ada", "ada@example.com"))
                        .expect(400, field),
                );
            }
            for path in
                [format!("/flags/proposals/{MARKER}{segment}"), format!("/flags/proposals/{MARKER}{segment}/approve")]
            {
                let (method, who) = if path.ends_with("approve") { ("POST", APPROVER) } else { ("GET", OPS) };
                out.push(Case::new(format!("{method} {path:?}"), Api::Flags, method, path, who).expect(404, "id"));
            }
        }
    }

    // 3. Idempotency-Key: not ASCII (UTF-8 "clé", a bidi override), a tab, too long.
    let long_key = "k".repeat(201);
    for key in ["clé".as_bytes(), "k\u{202E}x".as_bytes(), b"k\tx", long_key.as_bytes()] {
        for (path, body) in [
            ("/holds".to_string(), w.hold_body(2)),
            (confirm.clone(), guest("Ada", "ada@example.com")),
            ("/bookings".to_string(), w.request_body(guest_with("name", "Ada"))),
        ] {
            out.push(
                Case::new(
                    format!("Idempotency-Key {:?} on {path}", String::from_utf8_lossy(key)),
                    Api::Holds,
                    "POST",
                    path,
                    GUEST,
                )
                .json(&body)
                .header("idempotency-key", key)
                .expect(422, "Idempotency-Key"),
            );
        }
    }

    // 4. Bodies that are not UTF-8 (sent as application/json, as a client would).
    let not_utf8 = |prefix: &str| {
        let mut b = format!("{{\"guest\":{{\"name\":\"{MARKER}").into_bytes();
        b.extend_from_slice(b"\xff\xfe");
        b.extend_from_slice(format!("{prefix}\",\"email\":\"ada@example.com\"}}}}").as_bytes());
        b
    };
    let holds_routes = [
        ("POST", quote.clone()),
        ("POST", "/holds".into()),
        ("POST", confirm.clone()),
        ("POST", "/bookings".into()),
        ("PATCH", change.clone()),
        ("POST", format!("{change}/cancel")),
    ];
    for (method, path) in holds_routes {
        out.push(
            Case::new(format!("not UTF-8 {method} {path}"), Api::Holds, method, path, GUEST)
                .bytes(not_utf8(""))
                .expect(400, "body"),
        );
    }
    for (path, who) in [
        ("/flags/proposals".to_string(), OPS),
        ("/flags/break-glass".into(), OPS),
        (format!("/flags/proposals/{proposal}/approve"), APPROVER),
        (format!("/flags/proposals/{proposal}/reject"), OPS),
        (format!("/flags/proposals/{proposal}/apply"), OPS),
        (format!("/flags/reviews/{proposal}/acknowledge"), OPS),
    ] {
        out.push(
            Case::new(format!("not UTF-8 POST {path}"), Api::Flags, "POST", path, who)
                .bytes(not_utf8("x"))
                .expect(400, "body"),
        );
    }

    // 5. Out-of-range dates wherever a date is taken (the flag API takes none).
    for date in OUT_OF_RANGE {
        for start in [date.to_string(), format!("{date}T19:00:00Z"), format!("{date}T19:00")] {
            for (method, path, body) in [
                ("POST", quote.clone(), json!({ "party_size": 2, "start": start })),
                ("POST", "/holds".to_string(), {
                    let mut b = w.hold_body(2);
                    b["start"] = json!(start);
                    b
                }),
                ("POST", "/bookings".to_string(), {
                    let mut b = w.request_body(guest_with("name", "Ada"));
                    b["start"] = json!(start);
                    b
                }),
                ("PATCH", change.clone(), json!({ "start": start })),
            ] {
                out.push(
                    Case::new(format!("start {start} {method} {path}"), Api::Holds, method, path, GUEST)
                        .json(&body)
                        .expect(422, "start"),
                );
            }
        }
    }

    // 6. Oversized values.
    let long = |n: usize| format!("{MARKER}{}", "a".repeat(n));
    for (field, value) in [
        ("name", long(200)),
        ("notes", long(1000)),
        ("phone", "1".repeat(33)),
        ("email", format!("{}@example.com", long(300))),
    ] {
        out.push(
            Case::new(format!("oversized guest.{field}"), Api::Holds, "POST", &confirm, GUEST)
                .json(&json!({ "guest": guest_with(field, &value) }))
                .expect(422, format!("guest.{field}")),
        );
    }
    let mut big = w.request_body(guest_with("name", "Ada"));
    big["guest"]["notes"] = json!(long(MAX_BODY_BYTES));
    out.push(Case::new("body over the limit", Api::Holds, "POST", "/bookings", GUEST).json(&big).expect(413, "body"));
    for party in [0, 1000, 70000] {
        let mut b = w.hold_body(2);
        b["party_size"] = json!(party);
        out.push(
            Case::new(format!("party_size {party}"), Api::Holds, "POST", "/holds", GUEST)
                .json(&b)
                .expect(422, "party_size"),
        );
    }
    let mut b = w.hold_body(2);
    b["table_ids"] =
        json!(w.policy.tables.iter().map(|t| t.id).chain(w.policy.tables.iter().map(|t| t.id)).collect::<Vec<_>>());
    out.push(Case::new("nine and more tables", Api::Holds, "POST", "/holds", GUEST).json(&b).expect(422, "table_ids"));
    let reason = json!({ "environment": "dev", "flag": "holds.ttlSeconds", "value": 300, "reason": long(500) });
    out.push(
        Case::new("oversized reason", Api::Flags, "POST", "/flags/proposals", OPS).json(&reason).expect(422, "reason"),
    );
    let flag = json!({ "environment": "dev", "flag": long(200), "value": 300, "reason": "INC-1" });
    out.push(Case::new("oversized flag", Api::Flags, "POST", "/flags/proposals", OPS).json(&flag).expect(422, "flag"));
    for (param, value) in [("limit", "1000000"), ("before", "99999999999999999999"), ("flag", &long(200))] {
        out.push(
            Case::new(format!("oversized ?{param}"), Api::Flags, "GET", "/flags/audit", OPS)
                .query(format!("{param}={value}"))
                .expect(422, param),
        );
    }
    out
}

fn error_of(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).map(|v| v["error"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_hostile_input_is_a_4xx_naming_the_field_and_writes_nothing() {
    let w = World::new().await;
    let before = w.counts().await;
    let cases = cases(&w);
    let mut failures = vec![];
    for case in &cases {
        let (status, body) = w.send(case).await;
        let text = String::from_utf8_lossy(&body);
        let err = error_of(&body);
        if status != case.status || err["field"] != json!(case.field) || text.contains(MARKER) {
            failures.push(format!("{}: want {} {:?}, got {status} {text}", case.what, case.status, case.field));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(w.counts().await, before, "a refused request wrote nothing");
    println!("{} hostile requests, each a 4xx naming its field, nothing written", cases.len());

    // The targets are as they were: the hold live, the booking confirmed, the proposal pending.
    let (s, h) = w.call_json(Api::Holds, "GET", &format!("/holds/{}", w.hold), &Value::Null, GUEST).await;
    assert_eq!((s, h["state"].as_str()), (200, Some("live")), "{h}");
    let (s, b) = w.call_json(Api::Holds, "GET", &format!("/bookings/{}", w.booking), &Value::Null, GUEST).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("confirmed")), "{b}");
    let (s, p) = w.call_json(Api::Flags, "GET", &format!("/flags/proposals/{}", w.proposal), &Value::Null, OPS).await;
    assert_eq!((s, p["status"].as_str()), (200, Some("pending")), "{p}");
}

/// Request headers as raw bytes.
type Head<'a> = Vec<(&'a str, &'a [u8])>;

/// One HTTP/1.1 request written byte for byte to the local gateway: status and body.
async fn raw_http(addr: SocketAddr, request_line: &str, headers: &[(&str, &[u8])], body: &[u8]) -> (u16, Vec<u8>) {
    let mut raw = format!("{request_line} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: ").as_bytes());
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    raw.extend_from_slice(body);
    let mut stream =
        holdfast_tests::wait_for("the local gateway to listen", std::time::Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(addr).await.ok()
        })
        .await;
    stream.write_all(&raw).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP head");
    let status = std::str::from_utf8(&answer[9..12]).ok().and_then(|s| s.parse().ok()).expect("a status");
    (status, answer[split + 4..].to_vec())
}

#[tokio::test]
async fn the_local_gateway_passes_hostile_bytes_through_and_the_functions_refuse_them() {
    let w = World::new().await;
    let holds = w.holds.clone();
    let holds_handler: gateway::Handler = Arc::new(move |req| {
        let holds = holds.clone();
        Box::pin(async move { holds_api::api::handle(&holds, req).await })
    });
    let flags = w.flags.clone();
    let flags_handler: gateway::Handler = Arc::new(move |req| {
        let flags = flags.clone();
        Box::pin(async move { flag_approver::api::handle(&flags, req).await })
    });
    let routes = gateway::Routes {
        routes: vec![
            ("/restaurants", holds_handler.clone()),
            ("/holds", holds_handler.clone()),
            ("/bookings", holds_handler),
            ("/flags", flags_handler),
        ],
    };
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let server = tokio::spawn(gateway::serve(addr, Arc::new(routes)));
    let before = w.counts().await;

    let json_ct: (&str, &[u8]) = ("content-type", b"application/json");
    let bearer = |who: &str| format!("Bearer dev:{who}").into_bytes();
    let (guest_auth, ops_auth) = (bearer(GUEST), bearer(OPS));
    let guest_token: (&str, &[u8]) = ("authorization", &guest_auth);
    let ops_token: (&str, &[u8]) = ("authorization", &ops_auth);

    // Routing works: the owner reads the live hold.
    let (s, body) = raw_http(addr, &format!("GET /holds/{}", w.hold), &[guest_token], b"").await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));

    let mut not_utf8 = format!("{{\"guest\":{{\"name\":\"{MARKER}Ada").into_bytes();
    not_utf8.extend_from_slice(b"\xff\",\"email\":\"ada@example.com\"}}");
    let cle_utf8 = "clé".as_bytes();
    let hold_body = w.hold_body(2).to_string().into_bytes();
    let nul_name = json!({ "guest": { "name": format!("{MARKER}Ada\u{0}"), "email": "ada@example.com" } });
    let request = w.request_body(json!({ "name": format!("{MARKER}Ada\u{0}"), "email": "ada@example.com" }));
    let cases: Vec<(String, Head, Vec<u8>, u16, &str)> = vec![
        // Was a 200: the gateway replaced \xff with U+FFFD and the confirm went through.
        (format!("POST /holds/{}/confirm", w.hold), vec![guest_token, json_ct], not_utf8.clone(), 400, "body"),
        // Was ignored: the gateway dropped the header and the hold was made without a key.
        (
            "POST /holds".into(),
            vec![guest_token, json_ct, ("idempotency-key", cle_utf8)],
            hold_body,
            422,
            "Idempotency-Key",
        ),
        (
            format!("POST /holds/{}/confirm", w.hold),
            vec![guest_token, json_ct],
            nul_name.to_string().into_bytes(),
            422,
            "guest.name",
        ),
        ("POST /bookings".into(), vec![guest_token, json_ct], request.to_string().into_bytes(), 422, "guest.name"),
        // Was a 500: PostgreSQL 22021 on the NUL.
        ("GET /flags/audit?flag=%00".into(), vec![ops_token], vec![], 422, "flag"),
        (format!("GET /holds/{MARKER}%00"), vec![guest_token], vec![], 400, "hold_id"),
        ("POST /flags/proposals".into(), vec![ops_token, json_ct], not_utf8, 400, "body"),
    ];
    for (line, headers, body, status, field) in cases {
        let (s, answer) = raw_http(addr, &line, &headers, &body).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!((s, error_of(&answer)["field"].clone()), (status, json!(field)), "{line}: {text}");
        assert!(!text.contains(MARKER), "{line} echoed the value: {text}");
    }
    assert_eq!(w.counts().await, before, "a refused request wrote nothing");
    server.abort();
}

#[tokio::test]
async fn a_value_only_the_database_refuses_is_a_data_exception_never_an_unknown_fault() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.expect("conn");
    // A NUL in text (22021), text that is not a number (22P02), out of range (22003, 22008).
    let nul = format!("{MARKER}\u{0}");
    let refused: Vec<(&str, tokio_postgres::Error)> = vec![
        ("22021", c.fetch_one("SELECT $1::text", &[&nul]).await.expect_err("NUL")),
        ("22P02", c.fetch_one("SELECT $1::text::int", &[&MARKER]).await.expect_err("not a number")),
        ("22003", c.fetch_one("SELECT 2147483647::int + $1::int", &[&1i32]).await.expect_err("overflow")),
        (
            "22008",
            c.fetch_one("SELECT '294277-01-01'::timestamptz + $1::interval", &[&"1 day"]).await.expect_err("range"),
        ),
    ];
    for (sqlstate, e) in refused {
        let fault = db::classify(&e);
        assert_eq!(fault, DbFault::DataException { sqlstate: sqlstate.into() }, "{e}");
        assert!(!fault.is_retriable());
        assert!(!fault.to_string().contains(MARKER), "the value stays out of the fault: {fault}");
        let holds = holds_api::error::HoldsError::Db(fault.clone());
        assert_eq!(holds.code(), "invalid_input");
        assert!(!holds.is_fault(), "an answer to the caller, not an SLO fault");
        assert_eq!(flag_approver::ApproverError::Db(fault).code(), "invalid_input");
    }
}
