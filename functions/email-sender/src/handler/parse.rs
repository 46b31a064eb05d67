//! Phase 1, parse: each SQS record becomes a job due now, a deferral to re-queue, or a fault
//! (an invalid job is dropped and recorded; a newer schema is kept for retry).

use super::events::event;
use super::Tally;
use crate::relay::CORRELATION_ATTRIBUTE;
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use holdfast_adapters::telemetry;
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::{plan_deferral, Deferral, EmailJob, EmailType, JOB_SCHEMA_VERSION};
use holdfast_shared::events::{EventType, Outcome};
use std::panic::AssertUnwindSafe;

/// One record of the batch, as far as the handler cares.
pub(super) struct Rec {
    pub message_id: String,
    pub receipt_handle: Option<String>,
    pub receive_count: u32,
    pub body: String,
    /// The booking's correlation id, from the message attribute the relay set (`None`: absent
    /// or not an id; the record then correlates as the invocation).
    pub correlation: Option<CorrelationId>,
    /// The span of this record's lines: they carry its correlation id.
    pub span: tracing::Span,
}

pub(super) enum ParseFault {
    /// Not a job we could ever send (bad JSON, unknown fields, no subject): drop, recorded.
    Invalid,
    /// A newer schema than this build knows: keep it (retry → DLQ) until a deploy catches up.
    Unsupported,
}

/// The batch's parsed records, by what happens to them next.
#[derive(Default)]
pub(super) struct Parsed {
    pub due: Vec<(Rec, EmailJob)>,
    /// Not due yet: re-queue with this delay (one hop, in seconds).
    pub deferred: Vec<(Rec, u32)>,
}

pub(super) fn parse_job(body: &str) -> Result<EmailJob, ParseFault> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u16,
    }
    match serde_json::from_str::<Version>(body) {
        Ok(v) if v.schema_version > JOB_SCHEMA_VERSION => return Err(ParseFault::Unsupported),
        Ok(_) => {}
        Err(_) => return Err(ParseFault::Invalid),
    }
    let job: EmailJob = serde_json::from_str(body).map_err(|_| ParseFault::Invalid)?;
    let subject_ok = match job.email_type {
        EmailType::OpsPolicyDrift => job.restaurant_id.is_some() && job.policy_version.is_some(),
        EmailType::OpsPendingAttention => job.restaurant_id.is_some() && job.booking_id.is_some(),
        _ => job.booking_id.is_some(),
    };
    if subject_ok {
        Ok(job)
    } else {
        Err(ParseFault::Invalid)
    }
}

fn rec(msg: SqsMessage) -> Option<Rec> {
    let Some(message_id) = msg.message_id else {
        tracing::warn!("SQS record without a message id ignored");
        return None;
    };
    let receive_count = msg.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
    let correlation = msg
        .message_attributes
        .get(CORRELATION_ATTRIBUTE)
        .and_then(|a| a.string_value.as_deref())
        .and_then(|v| CorrelationId::parse(v).ok());
    let span = telemetry::correlated("sqs_record", correlation.as_ref());
    let body = msg.body.unwrap_or_default();
    Some(Rec { message_id, receipt_handle: msg.receipt_handle, receive_count, body, correlation, span })
}

/// Parse every record and plan its deferral (at most `max_hop` seconds per hop). A panic while
/// parsing is isolated to its record, which is retried.
pub(super) fn parse_batch(records: Vec<SqsMessage>, now: DateTime<Utc>, max_hop: u32, tally: &mut Tally) -> Parsed {
    let mut parsed = Parsed::default();
    for rec in records.into_iter().filter_map(rec) {
        let planned = std::panic::catch_unwind(AssertUnwindSafe(|| {
            parse_job(&rec.body).map(|job| {
                let plan = plan_deferral(job.not_before, now, max_hop);
                (job, plan)
            })
        }));
        match planned {
            Err(_) => {
                tracing::error!(parent: &rec.span, message_id = %rec.message_id, "panic while parsing an email job");
                tally.failures.push(rec.message_id);
            }
            Ok(Err(ParseFault::Invalid)) => {
                tracing::error!(parent: &rec.span, message_id = %rec.message_id, "invalid email job dropped");
                let code = Some("invalid_job");
                tally.events.push(event(EventType::EmailFailed, None, None, &rec, Outcome::Rejected, code, None));
            }
            Ok(Err(ParseFault::Unsupported)) => {
                tracing::warn!(parent: &rec.span, message_id = %rec.message_id, "email job schema newer than this build; kept for retry");
                let code = Some("schema_unsupported");
                tally.events.push(event(EventType::EmailRetried, None, None, &rec, Outcome::Error, code, None));
                tally.failures.push(rec.message_id);
            }
            Ok(Ok((job, Deferral::Due))) => parsed.due.push((rec, job)),
            Ok(Ok((_, Deferral::Requeue { delay_seconds, .. }))) => parsed.deferred.push((rec, delay_seconds)),
        }
    }
    parsed
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_shared::ids::BookingId;

    #[test]
    fn parse_refuses_invalid_and_keeps_newer_schemas() {
        let b = BookingId::new_random();
        let ok = serde_json::to_string(&EmailJob::for_booking(EmailType::Reminder, b)).expect("json");
        assert!(parse_job(&ok).is_ok());
        assert!(matches!(parse_job("not json"), Err(ParseFault::Invalid)));
        assert!(matches!(parse_job(r#"{"schema_version":1,"email_type":"reminder"}"#), Err(ParseFault::Invalid)));
        assert!(matches!(
            parse_job(
                r#"{"schema_version":1,"email_type":"ops_policy_drift","restaurant_id":"6b0b8a3e-7c43-4a4e-9a39-3e0f9d6f2f10"}"#
            ),
            Err(ParseFault::Invalid)
        ));
        assert!(matches!(parse_job(r#"{"schema_version":99,"email_type":"x","new":1}"#), Err(ParseFault::Unsupported)));
    }
}
