//! Phase 4, record: each send's outcome becomes its event, its ledger finish and, when it is to
//! be retried, a batch item failure with its backoff; then the ledger, the events and the
//! visibility changes are written.

use super::claim::Claimed;
use super::events::event;
use super::send::SendOutcome;
use super::{EmailSender, Tally};
use crate::provider::SendError;
use crate::store::Finish;
use aws_lambda_events::event::sqs::SqsBatchResponse;
use holdfast_shared::email::{Backoff, DedupeKey};
use holdfast_shared::events::{EventType, Outcome};
use uuid::Uuid;

/// The ledger finish of every claimed job, in order; events, failures and backoffs go to `tally`.
pub(super) fn settle(
    claimed: &[Claimed<'_>],
    outcomes: Vec<(SendOutcome, u64)>,
    backoff: &Backoff,
    tally: &mut Tally,
) -> Vec<(DedupeKey, Finish)> {
    claimed
        .iter()
        .zip(outcomes)
        .map(|(c, (outcome, ms))| (c.row.dedupe_key.clone(), settle_one(c, outcome, ms, backoff, tally)))
        .collect()
}

fn settle_one(c: &Claimed<'_>, outcome: SendOutcome, ms: u64, backoff: &Backoff, tally: &mut Tally) -> Finish {
    let (rec, job) = (c.rec, Some(c.job));
    let restaurant = c.row.booking.as_ref().map(|b| b.restaurant_id);
    let n = rec.receive_count;
    let final_receive = Backoff::is_final_receive(n);
    let retried = if final_receive { EventType::EmailDeadLettered } else { EventType::EmailRetried };
    let ev = |et, outcome, code: Option<&str>| event(et, job, restaurant, n, outcome, code, Some(ms));
    match outcome {
        SendOutcome::Sent(receipt) => {
            tally.events.push(ev(EventType::EmailSent, Outcome::Success, None));
            Finish::Sent { provider: receipt.provider.to_string(), message_id: receipt.message_id }
        }
        SendOutcome::Skipped(reason) => {
            tally.events.push(ev(EventType::EmailSkipped, Outcome::Success, Some(reason)));
            Finish::Skipped
        }
        SendOutcome::Failed(SendError::Permanent(code)) => {
            tracing::warn!(message_id = %rec.message_id, code = %code, "email failed permanently");
            tally.events.push(ev(EventType::EmailFailed, Outcome::Rejected, Some(&code)));
            Finish::Permanent { code }
        }
        SendOutcome::Failed(SendError::Transient(code)) => {
            tracing::warn!(message_id = %rec.message_id, code = %code, receive_count = n, dead_lettered = final_receive, "email failed transiently");
            tally.events.push(ev(retried, Outcome::Error, Some(&code)));
            tally.failures.push(rec.message_id.clone());
            if let Some(h) = &rec.receipt_handle {
                // The last receive goes straight back, for the redrive policy to dead-letter.
                let secs = if final_receive { 0 } else { backoff.visibility_after(n) };
                tally.visibility.push((h.clone(), secs));
            }
            Finish::Released { code }
        }
        SendOutcome::Panicked => {
            // Unknown whether the provider accepted it: keep the lease (no resend until it
            // expires) and let the message come back.
            tracing::error!(message_id = %rec.message_id, "panic while sending an email; record isolated");
            tally.events.push(ev(retried, Outcome::Error, Some("panic")));
            tally.failures.push(rec.message_id.clone());
            Finish::Hold { code: "panic".into() }
        }
    }
}

impl EmailSender {
    /// Write the batch's ledger finishes and events, apply the backoffs, answer SQS.
    pub(super) async fn record(&self, finishes: &[(DedupeKey, Finish)], token: Uuid, tally: Tally) -> SqsBatchResponse {
        if let Err(e) = self.store.finish(finishes, token, self.clock.now(), &tally.events).await {
            // Sent emails stay acknowledged (no resend); their ledger rows stay in progress
            // until the lease ends — visible in the runbook's "stuck" query.
            tracing::error!(error = %e, "recording email outcomes failed");
        }
        self.change_visibility(&tally.visibility).await;
        tally.into_response()
    }
}
