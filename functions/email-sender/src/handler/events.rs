//! The handler's observability events: codes and ids only, never guest data.

use super::parse::Rec;
use holdfast_shared::email::{EmailJob, MAX_RECEIVES};
use holdfast_shared::events::{Code, EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::ids::RestaurantId;

fn attempt_u8(n: u32) -> u8 {
    n.clamp(1, u32::from(holdfast_shared::events::MAX_ATTEMPT)) as u8
}

/// An `email-sender` event about record `rec`'s `job` (`None` when the record did not parse),
/// on the record's receive count and with its correlation id. `restaurant` comes from the
/// booking when the job names none.
pub(super) fn event(
    et: EventType,
    job: Option<&EmailJob>,
    restaurant: Option<uuid::Uuid>,
    rec: &Rec,
    outcome: Outcome,
    code: Option<&str>,
    duration_ms: Option<u64>,
) -> ObservabilityEvent {
    let mut ctx = EventContext::new()
        .operation(Operation::Send)
        .outcome(outcome)
        .attempt(attempt_u8(rec.receive_count))
        .max_attempts(MAX_RECEIVES as u8)
        .correlation_id(rec.correlation.clone());
    if let Some(c) = code {
        ctx = ctx.error_code_str(c);
    }
    if let Some(ms) = duration_ms {
        ctx = ctx.duration_ms(ms);
    }
    if let Some(j) = job {
        if let Ok(c) = Code::parse(j.email_type.as_str()) {
            ctx = ctx.email_type(c);
        }
        if let Some(v) = j.policy_version {
            ctx = ctx.policy_version(v);
        }
    }
    let mut ev = ObservabilityEvent::new(Source::EmailSender, et).context(ctx);
    if let Some(b) = job.and_then(|j| j.booking_id) {
        ev = ev.booking(b);
    }
    if let Some(r) = restaurant.or_else(|| job.and_then(|j| j.restaurant_id.map(|r| r.as_uuid()))) {
        ev = ev.restaurant(RestaurantId(r));
    }
    ev
}

/// A skip (nothing sent, nothing to retry): `code` says why.
pub(super) fn skipped(job: &EmailJob, rec: &Rec, code: &str) -> ObservabilityEvent {
    event(EventType::EmailSkipped, Some(job), None, rec, Outcome::Success, Some(code), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_shared::email::EmailType;
    use holdfast_shared::ids::BookingId;

    #[test]
    fn events_carry_codes_and_ids_only() {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, BookingId::new_random());
        let correlation = holdfast_shared::correlation::CorrelationId::parse("booking-0003").ok();
        let rec = Rec {
            message_id: "m-1".into(),
            receipt_handle: None,
            receive_count: 3,
            body: String::new(),
            correlation,
            span: tracing::Span::none(),
        };
        let ev =
            event(EventType::EmailRetried, Some(&job), None, &rec, Outcome::Error, Some("ses_throttled"), Some(12));
        let ctx = ev.context_json();
        assert_eq!(ctx["email_type"], "booking_confirmed");
        assert_eq!(ctx["correlation_id"], "booking-0003");
        assert_eq!(ctx["attempt"], 3);
        assert_eq!(ctx["max_attempts"], 5);
        assert_eq!(ctx["error_code"], "ses_throttled");
        assert_eq!(ev.booking_id, job.booking_id);
    }
}
