//! Phase 4, record: each send's outcome becomes its event, its ledger finish, its attempt's
//! outcome and, when it is to be retried, a batch item failure with its backoff; then the
//! ledger, the attempts, the events and the visibility changes are written.

use super::claim::Claimed;
use super::events::event;
use super::send::SendOutcome;
use super::{EmailSender, Tally};
use crate::provider::SendError;
use crate::store::{AttemptEnd, AttemptOutcome, Finish};
use aws_lambda_events::event::sqs::SqsBatchResponse;
use holdfast_shared::email::{Backoff, DedupeKey};
use holdfast_shared::events::{EventType, Outcome};
use uuid::Uuid;

/// The ledger finish of every claimed job, in order, and how its recorded attempt ended (none
/// when the outcome is unknown); events, failures and backoffs go to `tally`.
pub(super) fn settle(
    claimed: &[Claimed<'_>],
    outcomes: Vec<(SendOutcome, u64)>,
    backoff: &Backoff,
    tally: &mut Tally,
) -> (Vec<(DedupeKey, Finish)>, Vec<AttemptEnd>) {
    let mut finishes = Vec::with_capacity(claimed.len());
    let mut ends = Vec::with_capacity(claimed.len());
    for (c, (outcome, ms)) in claimed.iter().zip(outcomes) {
        let (finish, end) = settle_one(c, outcome, ms, backoff, tally);
        finishes.push((c.row.dedupe_key.clone(), finish));
        if let (Some(attempt_id), Some((outcome, code, message_id))) = (c.attempt, end) {
            ends.push(AttemptEnd { attempt_id, outcome, code, message_id });
        }
    }
    (finishes, ends)
}

/// How the attempt ended: outcome, code, provider message id. `None`: unknown.
type End = Option<(AttemptOutcome, Option<String>, Option<String>)>;

fn not_sent(code: &str) -> End {
    Some((AttemptOutcome::NotSent, Some(code.to_string()), None))
}

fn settle_one(c: &Claimed<'_>, outcome: SendOutcome, ms: u64, backoff: &Backoff, tally: &mut Tally) -> (Finish, End) {
    let (rec, job) = (c.rec, Some(c.job));
    // This record's lines carry its booking's correlation id.
    let _record = rec.span.enter();
    let restaurant = c.row.booking.as_ref().map(|b| b.restaurant_id);
    let n = rec.receive_count;
    let final_receive = Backoff::is_final_receive(n);
    let retried = if final_receive { EventType::EmailDeadLettered } else { EventType::EmailRetried };
    let ev = |et, outcome, code: Option<&str>| event(et, job, restaurant, rec, outcome, code, Some(ms));
    let email_type = c.job.email_type.as_str();
    let retry_later = |tally: &mut Tally| {
        tally.failures.push(rec.message_id.clone());
        if let Some(h) = &rec.receipt_handle {
            // The last receive goes straight back, for the redrive policy to dead-letter.
            let secs = if final_receive { 0 } else { backoff.visibility_after(n) };
            tally.visibility.push((h.clone(), secs));
        }
    };
    match outcome {
        SendOutcome::Sent(receipt) => {
            tracing::info!(message_id = %rec.message_id, email_type, provider = receipt.provider, duration_ms = ms, "email sent");
            tally.events.push(ev(EventType::EmailSent, Outcome::Success, None));
            let end = Some((AttemptOutcome::Accepted, None, receipt.message_id.clone()));
            (Finish::Sent { provider: receipt.provider.to_string(), message_id: receipt.message_id }, end)
        }
        SendOutcome::Skipped(reason) => {
            tracing::info!(message_id = %rec.message_id, email_type, reason, "email skipped");
            tally.events.push(ev(EventType::EmailSkipped, Outcome::Success, Some(reason)));
            (Finish::Skipped, not_sent(reason))
        }
        SendOutcome::Failed(SendError::Permanent(code)) => {
            tracing::warn!(message_id = %rec.message_id, code = %code, "email failed permanently");
            tally.events.push(ev(EventType::EmailFailed, Outcome::Rejected, Some(&code)));
            let end = not_sent(&code);
            (Finish::Permanent { code }, end)
        }
        SendOutcome::Failed(e @ (SendError::Transient(_) | SendError::Ambiguous(_))) => {
            // Ambiguous here means a provider that drops the repeat: the retry is safe.
            let ambiguous = e.is_ambiguous();
            let code = e.code().to_string();
            tracing::warn!(message_id = %rec.message_id, code = %code, receive_count = n, dead_lettered = final_receive, ambiguous, "email failed transiently");
            tally.events.push(ev(retried, Outcome::Error, Some(&code)));
            retry_later(tally);
            let end =
                if ambiguous { Some((AttemptOutcome::Ambiguous, Some(code.clone()), None)) } else { not_sent(&code) };
            (Finish::Released { code }, end)
        }
        SendOutcome::Unconfirmed(code) => {
            // SES may have delivered it: resending could give the guest two emails.
            tracing::error!(message_id = %rec.message_id, attempt_id = ?c.attempt, code = %code, "send outcome unknown; not resending (see docs/runbooks/email.md)");
            tally.events.push(ev(EventType::EmailSuppressed, Outcome::Error, Some(&code)));
            let end = Some((AttemptOutcome::Ambiguous, Some(code.clone()), None));
            (Finish::Suppressed { code }, end)
        }
        SendOutcome::Suppressed => {
            let latest = c.row.unresolved.as_ref().map(|u| u.latest);
            tracing::error!(message_id = %rec.message_id, earlier_attempt = ?latest, "an earlier attempt may have been delivered; not resending (see docs/runbooks/email.md)");
            let code = "earlier_attempt_unresolved";
            tally.events.push(ev(EventType::EmailSuppressed, Outcome::Error, Some(code)));
            (Finish::Suppressed { code: code.into() }, not_sent("suppressed"))
        }
        SendOutcome::Panicked { provider_called: true } => {
            // Unknown whether the provider accepted it: keep the lease (no resend until it
            // expires) and let the message come back; the attempt stays unresolved, so a
            // provider that cannot deduplicate will not be asked again.
            tracing::error!(message_id = %rec.message_id, "panic while sending an email; record isolated");
            tally.events.push(ev(retried, Outcome::Error, Some("panic")));
            tally.failures.push(rec.message_id.clone());
            (Finish::Hold { code: "panic".into() }, None)
        }
        SendOutcome::Panicked { provider_called: false } => {
            // Before the provider was called: certainly not sent, retried with backoff.
            tracing::error!(message_id = %rec.message_id, "panic while preparing an email; record isolated");
            tally.events.push(ev(retried, Outcome::Error, Some("panic")));
            retry_later(tally);
            (Finish::Released { code: "panic".into() }, not_sent("panic"))
        }
    }
}

impl EmailSender {
    /// Write the batch's ledger finishes, attempt outcomes and events, apply the backoffs,
    /// answer SQS.
    pub(super) async fn record(
        &self,
        finishes: &[(DedupeKey, Finish)],
        ends: &[AttemptEnd],
        token: Uuid,
        tally: Tally,
    ) -> SqsBatchResponse {
        let finish = self.store.finish_attempts(finishes, ends, token, self.clock.now(), &tally.events);
        if let Err(e) = holdfast_adapters::telemetry::timed("db.finish_sends", finish).await {
            // Sent emails stay acknowledged (no resend); their ledger rows stay in progress
            // until the lease ends and their attempts unresolved, so a redelivery of one is
            // suppressed rather than sent again (runbook: "Stuck in progress").
            tracing::error!(error = %e, "recording email outcomes failed");
        }
        self.change_visibility(&tally.visibility).await;
        tally.into_response()
    }
}
