//! Fuzz target: restaurant policy documents (`BookingPolicy` from JSON, `validate`, the
//! canonical form and hash, and the time rules a valid policy drives). Bounded by
//! `PROPTEST_CASES`; see docs/testing.md, "Fuzzing".
//!
//! Property: parsing never panics and a refusal is a `serde_json::Error`; whatever parses can be
//! validated, canonicalised and hashed without panicking, and its canonical form parses back to
//! the same hash; a policy that validates satisfies every invariant the allocator relies on,
//! and its time rules (horizon, local start, service hours, rendering) are total on any instant.

#[path = "support/hostile.rs"]
mod hostile;

use chrono::{DateTime, NaiveDateTime, Utc};
use holdfast_shared::ids::TableId;
use holdfast_shared::policy::{
    BookingPolicy, PolicyError, PolicyHash, ServiceHours, MAX_DAYS_AHEAD_LIMIT, MAX_LEAD_MINUTES_LIMIT,
    MAX_MERGE_TABLES_LIMIT, MAX_UTC_OFFSET_MINUTES,
};
use holdfast_shared::window::Window;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::collections::HashSet;

fn valid_documents() -> Vec<Value> {
    let demo = BookingPolicy::demo(1);
    let mut legacy = serde_json::to_value(BookingPolicy::demo(3)).expect("policy");
    if let Value::Object(m) = &mut legacy {
        m.remove("time_zone");
    }
    legacy["utc_offset_minutes"] = json!(-330);
    let mut everything = serde_json::to_value(&demo).expect("policy");
    everything["guest_limits"] = json!({ "max_live_holds": 2, "max_confirms_per_hour": 3 });
    everything["booking_horizon"] = json!({ "min_lead_minutes": 0, "max_days_ahead": 3660 });
    everything["reminder_hours_before"] = json!(0);
    everything["time_zone"] = json!("Pacific/Kiritimati");
    // A period crossing midnight, Sunday into Monday.
    everything["service_hours"] = json!([{ "weekday": 6, "opens_minute": 1320, "closes_minute": 120 }]);
    vec![serde_json::to_value(&demo).expect("policy"), legacy, everything]
}

/// Instants from the edges of chrono's range to the near future.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let now = Utc::now().timestamp();
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (now - 86_400..now + 400 * 86_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        any::<i64>().prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)),
    ]
}

fn wall_clock() -> impl Strategy<Value = NaiveDateTime> {
    prop_oneof![Just(NaiveDateTime::MIN), Just(NaiveDateTime::MAX), instant().prop_map(|t| t.naive_utc())]
}

fn check_policy(bytes: &[u8], t: DateTime<Utc>, local: NaiveDateTime, party: u16) -> Result<(), TestCaseError> {
    let Ok(p) = serde_json::from_slice::<BookingPolicy>(bytes) else {
        return Ok(()); // refused with a typed serde_json::Error
    };
    let verdict = p.validate();
    let hash = p.content_hash();
    prop_assert!(PolicyHash::parse(hash.as_str()).is_ok());
    let again: BookingPolicy = serde_json::from_str(&p.canonical_json())
        .map_err(|e| TestCaseError::fail(format!("canonical form does not parse back: {e}")))?;
    prop_assert_eq!(again.content_hash(), hash, "canonical round trip changed the hash");
    let _ = p.clock();
    let errors = match verdict {
        Ok(()) => vec![],
        Err(errors) => errors,
    };
    prop_assert!(errors.iter().all(|e| !e.to_string().is_empty()));
    if !errors.is_empty() {
        return Ok(());
    }

    // Accepted: the invariants the allocator and the holds API rely on.
    prop_assert!(p.time_zone.is_some() != p.utc_offset_minutes.is_some(), "exactly one clock");
    prop_assert!(p.utc_offset_minutes.is_none_or(|o| o.abs() <= MAX_UTC_OFFSET_MINUTES));
    prop_assert!((1..=MAX_DAYS_AHEAD_LIMIT).contains(&p.booking_horizon.max_days_ahead));
    prop_assert!(p.booking_horizon.min_lead_minutes <= MAX_LEAD_MINUTES_LIMIT);
    prop_assert!(p.max_party_size >= 1 && p.slot_minutes >= 1);
    prop_assert!((1..=MAX_MERGE_TABLES_LIMIT).contains(&p.max_merge_tables));
    prop_assert!(!p.tables.is_empty());
    let ids: HashSet<TableId> = p.tables.iter().map(|t| t.id).collect();
    prop_assert_eq!(ids.len(), p.tables.len(), "table ids are unique");
    for t in &p.tables {
        prop_assert!(t.capacity >= 1 && t.min_party <= t.capacity);
        prop_assert!(t.adjacent.iter().all(|a| *a != t.id && ids.contains(a)));
    }
    for sh in &p.service_hours {
        let ServiceHours { weekday, opens_minute, closes_minute } = *sh;
        prop_assert!(weekday <= 6 && opens_minute < 1440 && closes_minute <= 1440 && opens_minute != closes_minute);
    }
    for n in 1..=p.max_party_size.min(200) {
        prop_assert!(p.turn_time_for(n).is_some_and(|d| d.num_minutes() > 0), "no turn time for a party of {n}");
    }

    // Its time rules are total: any instant, any wall-clock time, any party.
    let _ = p.check_start(t, Utc::now());
    if let Ok(start) = p.local_start(local) {
        let _ = p.check_start(start, t);
    }
    let _ = p.render_local(t);
    if let Some((seated, blocked)) = p.block_window(t, party) {
        prop_assert!(seated.start() == t && blocked.end() >= seated.end());
        let _ = p.within_service_hours(&seated);
    }
    if let Some(end) = t.checked_add_signed(chrono::Duration::minutes(90)) {
        if let Ok(w) = Window::new(t, end) {
            let _ = p.within_service_hours(&w);
        }
    }
    Ok(())
}

#[test]
fn fuzz_policy_documents() {
    let strategy = (hostile::input(valid_documents()), instant(), wall_clock(), any::<u16>());
    hostile::run("policy", 5000, strategy, |(bytes, t, local, party)| {
        check_policy(&bytes, t, local, party)
            .map_err(|e| TestCaseError::fail(format!("{e}; input {}", hostile::show(&bytes))))
    });
}

#[test]
fn fuzz_policy_hashes() {
    hostile::run("policy hash", 10000, hostile::hostile_string(), |s| {
        if let Ok(h) = PolicyHash::parse(&s) {
            prop_assert!(s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            let back: PolicyHash =
                serde_json::from_value(json!(h.as_str())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, h);
        }
        Ok(())
    });
}

/// The valid documents themselves are accepted (the mutations start from real policies).
#[test]
fn seed_documents_are_valid_policies() {
    for doc in valid_documents() {
        let p: BookingPolicy = serde_json::from_value(doc.clone()).expect("a policy");
        assert_eq!(p.validate(), Ok(()), "{doc}");
    }
}

/// Found by `fuzz_policy_documents` (minimal input: the demo policy with Tuesday opening at
/// minute 32767): measuring a period that opens past midnight for the overlap check underflowed,
/// so `validate` panicked (debug) or reported nonsense overlaps (release) instead of refusing it.
#[test]
fn regression_a_period_opening_past_midnight_is_refused_not_a_panic() {
    let mut doc = serde_json::to_value(BookingPolicy::demo(1)).expect("policy");
    doc["service_hours"][1]["opens_minute"] = json!(32767);
    let p: BookingPolicy = serde_json::from_value(doc).expect("parses: a u16");
    let errors = p.validate().expect_err("refused");
    assert_eq!(errors, vec![PolicyError::OpensAfterMidnight { index: 1, opens: 32767 }]);
}

/// Found by `fuzz_policy_documents` (a legacy policy with `utc_offset_minutes: -2147483648`):
/// the range check took the offset's absolute value, which overflows for `i32::MIN`, so
/// `validate` panicked (debug) or accepted the offset (release: `abs` wraps to a negative).
#[test]
fn regression_the_most_negative_utc_offset_is_refused_not_a_panic() {
    let mut doc = serde_json::to_value(BookingPolicy::demo(1)).expect("policy");
    if let Value::Object(m) = &mut doc {
        m.remove("time_zone");
    }
    doc["utc_offset_minutes"] = json!(i32::MIN);
    let p: BookingPolicy = serde_json::from_value(doc).expect("parses: an i32");
    assert_eq!(p.validate(), Err(vec![PolicyError::UtcOffsetOutOfRange(i32::MIN)]));
}
