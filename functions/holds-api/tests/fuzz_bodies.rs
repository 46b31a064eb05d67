//! Fuzz target: the holds API's request bodies, through the path the handler takes
//! (`holdfast_adapters::http::parse_json` into the DTOs of `holds_api::dto`, then the DTOs'
//! domain parsing: guest text, party size, table list, start time and booking horizon).
//! Bounded by `PROPTEST_CASES`; see docs/testing.md, "Fuzzing".
//!
//! Property: nothing panics; a refusal is a `Problem` (400 malformed, 413 too large, 422 naming
//! the field) or a `HoldsError::Invalid` naming the field, and neither quotes a guest value back;
//! an accepted body satisfies the domain's invariants (party in 1..=50, a start inside the
//! booking horizon, 1..=8 distinct tables, guest text trimmed, bounded and free of control,
//! bidi and link text, a plausible email address).

#[path = "../../../shared/tests/support/hostile.rs"]
mod hostile;

use chrono::{DateTime, Duration, Utc};
use holdfast_adapters::http::{parse_json, Problem, MAX_BODY_BYTES};
use holdfast_shared::allocator::PARTY_SIZE_CEILING;
use holdfast_shared::guest::{forbidden_char, NAME_MAX_CHARS, NOTES_MAX_CHARS, PHONE_MAX_CHARS};
use holdfast_shared::local_time::StartTime;
use holdfast_shared::policy::BookingPolicy;
use holds_api::dto::{self, BookingChangeBody, BookingRequestBody, ConfirmBody, HoldBody, QuoteBody};
use holds_api::error::HoldsError;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Planted in the guest values of the seed documents: no refusal may quote it back.
const CANARY: &str = "qzvkcanary";

fn guest() -> Value {
    json!({ "name": "Ada Qzvkcanary Lovelace", "email": "ada.qzvkcanary@example.com",
            "phone": "+44 (0)20 7946 0000", "notes": "window seat\nqzvkcanary birthday" })
}

fn start() -> String {
    (Utc::now() + Duration::days(10)).format("%Y-%m-%dT19:00:00Z").to_string()
}

fn documents() -> Vec<Value> {
    let r = "5d2c1f3e-0000-4000-8000-00000000d3e0";
    let t = "0000d3e0-0000-4000-8000-000000000001";
    vec![
        json!({ "party_size": 2, "start": start() }),
        json!({ "party_size": 4, "start": "2030-01-07T19:00" }),
        json!({ "restaurant_id": r, "party_size": 2, "start": start(), "table_ids": [t],
                "policy_hash": "qzvkcanary-67c893b3885d38c16b8870b374892b75794e2e1a60c89e5bb55bffedfd55d329" }),
        json!({ "restaurant_id": r, "party_size": 3, "start": start(), "guest": guest() }),
        json!({ "start": "2030-01-07T21:00:00+01:00", "party_size": 5 }),
        json!({ "guest": guest() }),
    ]
}

fn problem_is_an_answer(p: &Problem, bytes: &[u8]) -> Result<(), TestCaseError> {
    let (status, code) = (p.status.as_u16(), p.code);
    let allowed =
        matches!((status, code), (400, "malformed_json") | (413, "payload_too_large") | (422, "validation_failed"));
    prop_assert!(allowed, "unexpected refusal {status} {code} for {}", hostile::show(bytes));
    // Named (an unknown key that is the empty string is named as itself, `""`).
    prop_assert!(p.field.is_some(), "{status} {code} names no field");
    prop_assert!(!p.message.is_empty());
    let shown = format!("{} {}", p.message, p.field.as_deref().unwrap_or_default()).to_lowercase();
    prop_assert!(!shown.contains(CANARY), "the refusal quotes a guest value: {shown:?}");
    prop_assert!(status == 413 || bytes.len() <= MAX_BODY_BYTES);
    Ok(())
}

fn invalid_names_its_field(e: HoldsError, prefix: &str) -> Result<(), TestCaseError> {
    match e {
        HoldsError::Invalid { field, message } => {
            prop_assert!(field.starts_with(prefix), "{field} for {prefix}");
            prop_assert!(!message.to_lowercase().contains(CANARY), "{message:?} quotes the value");
            Ok(())
        }
        other => Err(TestCaseError::fail(format!("refused as {other:?}, not as invalid"))),
    }
}

/// `Ok(Some(body))` when accepted, `Ok(None)` when refused as the API must refuse.
fn parsed<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, TestCaseError> {
    match parse_json::<T>(bytes) {
        Ok(b) => Ok(Some(b)),
        Err(p) => problem_is_an_answer(&p, bytes).map(|()| None),
    }
}

fn check_party(n: u16, field: &'static str) -> Result<(), TestCaseError> {
    match dto::party(field, n) {
        Ok(p) => prop_assert!((1..=PARTY_SIZE_CEILING).contains(&p.get())),
        Err(e) => invalid_names_its_field(e, field)?,
    }
    Ok(())
}

/// A start as the holds API resolves it on the demo restaurant (Europe/London, 15 minutes to 180
/// days ahead): accepted only inside the horizon, and then the windows built on it exist.
fn check_start(start: StartTime, now: DateTime<Utc>) -> Result<(), TestCaseError> {
    let policy = BookingPolicy::demo(1);
    let Ok(t) = start.resolve(&policy.clock()) else { return Ok(()) };
    if policy.check_start(t, now).is_ok() {
        prop_assert!(t >= now + Duration::minutes(15) && t <= now + Duration::days(180), "{t} accepted at {now}");
        let windows = policy.block_window(t, 2);
        prop_assert!(windows.is_some(), "no window for an accepted start");
        if let Some((seated, _)) = windows {
            let _ = policy.within_service_hours(&seated);
        }
    }
    Ok(())
}

fn check_guest(body: dto::GuestBody) -> Result<(), TestCaseError> {
    match body.parse() {
        Err(e) => invalid_names_its_field(e, "guest.")?,
        Ok(g) => {
            let name = g.name.as_str();
            prop_assert!(!name.is_empty() && name == name.trim() && name.chars().count() <= NAME_MAX_CHARS);
            prop_assert!(!name.chars().any(|c| forbidden_char(c, false)), "name with a control character");
            prop_assert!(!name.to_lowercase().contains("://") && !name.to_lowercase().contains("www."));
            prop_assert!(holdfast_shared::email::plausible_address(&g.email) && g.email == g.email.trim());
            if let Some(p) = &g.phone {
                let p = p.as_str();
                prop_assert!(
                    p.len() <= PHONE_MAX_CHARS && p.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c))
                );
            }
            if let Some(n) = &g.notes {
                let n = n.as_str();
                prop_assert!(!n.is_empty() && n.chars().count() <= NOTES_MAX_CHARS);
                prop_assert!(!n.chars().any(|c| forbidden_char(c, true)), "notes with a control character");
            }
        }
    }
    Ok(())
}

fn check_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    let now = Utc::now();
    if let Some(q) = parsed::<QuoteBody>(bytes)? {
        check_party(q.party_size, "party_size")?;
        check_start(q.start, now)?;
    }
    if let Some(h) = parsed::<HoldBody>(bytes)? {
        check_party(h.party_size, "party_size")?;
        check_start(h.start, now)?;
        if let Some(ids) = h.table_ids {
            match dto::table_list(ids) {
                Ok(list) => {
                    prop_assert!((1..=8).contains(&list.len()));
                    prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "tables sorted and distinct");
                }
                Err(e) => invalid_names_its_field(e, "table_ids")?,
            }
        }
    }
    if let Some(r) = parsed::<BookingRequestBody>(bytes)? {
        check_party(r.party_size, "party_size")?;
        check_start(r.start, now)?;
        check_guest(r.guest)?;
    }
    if let Some(c) = parsed::<BookingChangeBody>(bytes)? {
        if let Some(n) = c.party_size {
            check_party(n, "party_size")?;
        }
        if let Some(s) = c.start {
            check_start(s, now)?;
        }
    }
    if let Some(c) = parsed::<ConfirmBody>(bytes)? {
        check_guest(c.guest)?;
    }
    Ok(())
}

#[test]
fn fuzz_holds_api_bodies() {
    hostile::run("holds API bodies", 6000, hostile::input(documents()), |bytes| check_body(&bytes));
}

/// The seed documents are accepted as they are (the mutations start from real requests).
#[test]
fn seed_documents_are_accepted() {
    let docs = documents();
    let bytes = |i: usize| docs[i].to_string().into_bytes();
    assert!(parse_json::<QuoteBody>(&bytes(0)).is_ok() && parse_json::<QuoteBody>(&bytes(1)).is_ok());
    assert!(parse_json::<HoldBody>(&bytes(2)).is_ok());
    let r = parse_json::<BookingRequestBody>(&bytes(3)).expect("request");
    assert!(r.guest.parse().is_ok());
    assert!(parse_json::<BookingChangeBody>(&bytes(4)).is_ok());
    assert!(parse_json::<ConfirmBody>(&bytes(5)).expect("confirm").guest.parse().is_ok());
    for i in 0..docs.len() {
        check_body(&bytes(i)).expect("the properties hold for the seeds");
    }
}
