//! Fuzz target: SQS job bodies as the domain reads them (`EmailJob` from JSON, its dedupe key,
//! the deferral plan) and the email rendered from what the sender loads. The handler's own parse
//! step (schema version, subject rules) is fuzzed in `functions/email-sender` (`handler::parse`).
//! Bounded by `PROPTEST_CASES`; see docs/testing.md, "Fuzzing".
//!
//! Property: nothing panics; whatever parses round-trips exactly; a deferral hop is within SQS's
//! 1..=900 s and never sends early; a rendered email's subject is one line without control
//! characters and its HTML carries no markup but the template's, whatever the names hold.

#[path = "support/hostile.rs"]
mod hostile;

use chrono::{DateTime, Utc};
use holdfast_shared::email::{
    plan_deferral, publish_delay_seconds, render_booking, render_drift, render_pending_attention, BookingStatus,
    BookingView, Deferral, DriftView, EmailJob, EmailType, MAX_SQS_DELAY_SECONDS,
};
use holdfast_shared::ids::{BookingId, RestaurantId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

fn valid_jobs() -> Vec<Value> {
    let b = BookingId::new_random();
    let r = RestaurantId::new_random();
    let mut deferred = EmailJob::for_revision(EmailType::Reminder, b, 3);
    deferred.not_before = Some(Utc::now() + chrono::Duration::hours(30));
    [
        EmailJob::for_booking(EmailType::BookingConfirmed, b),
        deferred,
        EmailJob::ops_policy_drift(r, 7),
        EmailJob::ops_pending_attention(r, b),
    ]
    .iter()
    .map(|j| serde_json::to_value(j).expect("job"))
    .collect()
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let now = Utc::now().timestamp();
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (now - 3_600..now + 40 * 86_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        any::<i64>().prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)),
    ]
}

#[test]
fn fuzz_email_jobs() {
    let strategy = (hostile::input(valid_jobs()), instant(), any::<u32>());
    hostile::run("email job", 6000, strategy, |(bytes, now, hop)| {
        let Ok(job) = serde_json::from_slice::<EmailJob>(&bytes) else { return Ok(()) };
        let json = serde_json::to_string(&job).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: EmailJob = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &job, "round trip of {}", hostile::show(&bytes));
        let key = job.dedupe_key();
        prop_assert!(!key.is_empty() && key.len() <= 200, "dedupe key {key:?} does not fit email_sends");
        match plan_deferral(job.not_before, now, hop) {
            Deferral::Due => prop_assert!(job.not_before.is_none_or(|nb| nb <= now), "sent early"),
            Deferral::Requeue { delay_seconds, remaining_seconds } => {
                prop_assert!((1..=MAX_SQS_DELAY_SECONDS).contains(&delay_seconds));
                prop_assert!(u64::from(delay_seconds) <= remaining_seconds);
                prop_assert!(job.not_before.is_some_and(|nb| nb > now));
            }
        }
        if let Some(nb) = job.not_before {
            prop_assert!(publish_delay_seconds(nb, now) <= MAX_SQS_DELAY_SECONDS);
        }
        Ok(())
    });
}

/// The template's own tags; anything else that looks like markup came from a value.
const TEMPLATE_TAGS: &[&str] = &[
    "<!DOCTYPE html>",
    "<html>",
    "</html>",
    "<head>",
    "</head>",
    "<meta charset=\"utf-8\">",
    "<title>",
    "</title>",
    "<body>",
    "</body>",
    "<p>",
    "</p>",
];

#[test]
fn fuzz_rendered_emails() {
    let strategy = (
        hostile::hostile_string(),
        prop::option::of(hostile::hostile_string()),
        prop::option::of(hostile::hostile_string()),
        any::<u16>(),
        instant(),
        any::<i32>(),
    );
    hostile::run("rendered email", 2000, strategy, |(restaurant, guest, local, party, at, version)| {
        let view = BookingView {
            booking_id: BookingId::new_random(),
            status: BookingStatus::Confirmed,
            restaurant_name: restaurant.clone(),
            guest_name: guest,
            guest_email: Some("guest@example.com".into()),
            party_size: party,
            starts_at: at,
            starts_at_local: local,
        };
        let mut rendered: Vec<_> = EmailType::ALL.iter().filter_map(|t| render_booking(*t, &view)).collect();
        rendered.push(render_drift(&DriftView {
            restaurant_id: RestaurantId::new_random(),
            restaurant_name: restaurant.clone(),
            policy_version: version,
        }));
        rendered.push(render_pending_attention(&restaurant, RestaurantId::new_random(), BookingId::new_random()));
        for r in rendered {
            prop_assert!(!r.subject.chars().any(char::is_control), "header injection: {:?}", r.subject);
            let mut html = r.html.clone();
            for tag in TEMPLATE_TAGS {
                html = html.replace(tag, "");
            }
            prop_assert!(!html.contains('<') && !html.contains('>'), "markup from a value: {:?}", r.html);
        }
        Ok(())
    });
}
