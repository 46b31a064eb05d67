//! Fuzz target: SQS job bodies through the email sender's own parse step (`parse_job`: schema
//! version, then the job, then its subject rule) and the batch parser (`parse_batch`: message
//! ids, receive counts, deferral plans). A `#[cfg(test)]` module because both are private to the
//! handler. Bounded by `PROPTEST_CASES`; see docs/testing.md, "Fuzzing".
//!
//! Property: nothing panics (a panic here would be isolated to its record, so it is checked for
//! directly); a job is accepted only with a known schema version and a subject; a newer version
//! is kept for retry, anything else dropped as invalid; every record of a batch ends in exactly
//! one place (due, re-queued within SQS's delay limit, retried, or dropped and recorded).

#[path = "../../../../../shared/tests/support/hostile.rs"]
mod hostile;

use super::{parse_batch, parse_job, ParseFault};
use crate::handler::Tally;
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use holdfast_shared::email::{EmailJob, EmailType, JOB_SCHEMA_VERSION, MAX_SQS_DELAY_SECONDS};
use holdfast_shared::events::EventType;
use holdfast_shared::ids::{BookingId, RestaurantId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

fn jobs() -> Vec<Value> {
    let (b, r) = (BookingId::new_random(), RestaurantId::new_random());
    let mut later = EmailJob::for_revision(EmailType::BookingUpdated, b, 2);
    later.not_before = Some(Utc::now() + chrono::Duration::minutes(40));
    let mut newer = serde_json::to_value(EmailJob::for_booking(EmailType::Reminder, b)).expect("job");
    newer["schema_version"] = Value::from(JOB_SCHEMA_VERSION + 1);
    let mut all: Vec<Value> = [
        EmailJob::for_booking(EmailType::BookingConfirmed, b),
        later,
        EmailJob::ops_policy_drift(r, 3),
        EmailJob::ops_pending_attention(r, b),
    ]
    .iter()
    .map(|j| serde_json::to_value(j).expect("job"))
    .collect();
    all.push(newer);
    all
}

fn check_job(body: &str) -> Result<(), TestCaseError> {
    // What a sender of any version can read of any job: its schema version.
    #[derive(serde::Deserialize)]
    struct Versioned {
        schema_version: u16,
    }
    let version = serde_json::from_str::<Versioned>(body).ok().map(|v| v.schema_version);
    match parse_job(body) {
        Ok(job) => {
            prop_assert!(job.schema_version <= JOB_SCHEMA_VERSION, "unknown schema accepted");
            let subject = match job.email_type {
                EmailType::OpsPolicyDrift => job.restaurant_id.is_some() && job.policy_version.is_some(),
                EmailType::OpsPendingAttention => job.restaurant_id.is_some() && job.booking_id.is_some(),
                _ => job.booking_id.is_some(),
            };
            prop_assert!(subject, "a job without its subject accepted");
            let again = serde_json::to_string(&job).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(parse_job(&again).is_ok_and(|j| j == job), "round trip");
        }
        Err(ParseFault::Unsupported) => {
            prop_assert!(version.is_some_and(|v| v > JOB_SCHEMA_VERSION), "kept for retry: {version:?}");
        }
        Err(ParseFault::Invalid) => {}
    }
    Ok(())
}

#[test]
fn fuzz_email_sender_job_bodies() {
    hostile::run("email sender job bodies", 6000, hostile::input(jobs()), |bytes| {
        // SQS bodies are text: what is not UTF-8 arrives as its lossy decoding at most.
        check_job(&String::from_utf8_lossy(&bytes))
    });
}

fn record() -> impl Strategy<Value = SqsMessage> {
    let receive_count =
        prop_oneof![Just(None), (0u32..8).prop_map(|n| Some(n.to_string())), hostile::hostile_string().prop_map(Some),];
    (prop::option::weighted(0.9, "[a-z0-9-]{1,12}"), receive_count, hostile::input(jobs())).prop_map(
        |(id, count, body)| {
            let mut m = SqsMessage::default();
            m.message_id = id;
            m.receipt_handle = Some("rh".into());
            if let Some(c) = count {
                m.attributes.insert("ApproximateReceiveCount".into(), c);
            }
            m.body = Some(String::from_utf8_lossy(&body).into_owned());
            m
        },
    )
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(Utc::now()),
        any::<i64>().prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
    ]
}

#[test]
fn fuzz_email_sender_batches() {
    let strategy = (prop::collection::vec(record(), 0..10), instant(), any::<u32>());
    hostile::run("email sender batches", 1500, strategy, |(records, now, max_hop)| {
        let with_id = records.iter().filter(|r| r.message_id.is_some()).count();
        let mut tally = Tally::default();
        let parsed = parse_batch(records, now, max_hop, &mut tally);
        let dropped = tally.events.iter().filter(|e| e.event_type == EventType::EmailFailed).count();
        let placed = parsed.due.len() + parsed.deferred.len() + tally.failures.len() + dropped;
        prop_assert_eq!(placed, with_id, "a record was lost or counted twice");
        let hop = max_hop.clamp(1, MAX_SQS_DELAY_SECONDS);
        for (_, delay) in &parsed.deferred {
            prop_assert!((1..=hop).contains(delay), "re-queue delay {delay} (hop {hop})");
        }
        Ok(())
    });
}
