//! Phase 2, claim: one statement claims the batch's keys (and loads what the templates need).
//! Keys this invocation did not get are settled here; the claimed ones go on to be sent.

use super::events::{event, skipped};
use super::parse::Rec;
use super::{EmailSender, Tally};
use crate::store::{ClaimRequest, ClaimRow, ClaimState, NewAttempts};
use chrono::{DateTime, Utc};
use holdfast_shared::email::EmailJob;
use holdfast_shared::events::{EventType, Outcome};
use std::collections::HashSet;
use uuid::Uuid;

/// A job whose key this invocation holds: its record, the job, the ledger row with the booking
/// data the templates need, and the attempt the claim recorded (`None`: no provider to send
/// through, nothing recorded).
pub(super) struct Claimed<'a> {
    pub rec: &'a Rec,
    pub job: &'a EmailJob,
    pub row: &'a ClaimRow,
    pub attempt: Option<Uuid>,
}

/// The same key twice in one batch: the first occurrence decides, the rest are dropped (if the
/// first fails, its own message comes back).
pub(super) fn first_of_each_key(due: Vec<(Rec, EmailJob)>, tally: &mut Tally) -> Vec<(Rec, EmailJob)> {
    let mut seen = HashSet::new();
    let mut work = Vec::new();
    for (rec, job) in due {
        if seen.insert(job.key()) {
            work.push((rec, job));
        } else {
            tally.events.push(skipped(&job, &rec, "duplicate_in_batch"));
        }
    }
    work
}

impl EmailSender {
    /// Claim every job's key in one statement, recording attempt `attempts[i]` through
    /// `provider` for each key claimed. `None` when that failed: the whole batch is retried.
    pub(super) async fn claim(
        &self,
        work: &[(Rec, EmailJob)],
        attempts: &[Uuid],
        provider: Option<&str>,
        token: Uuid,
        now: DateTime<Utc>,
        tally: &mut Tally,
    ) -> Option<Vec<ClaimRow>> {
        let reqs: Vec<ClaimRequest> = work.iter().map(|(_, job)| ClaimRequest::for_job(job)).collect();
        let new = provider.map(|provider| NewAttempts { provider, ids: attempts });
        let claim = self.store.claim_attempting(&reqs, new, token, now, now + self.settings.lease);
        match holdfast_adapters::telemetry::timed("db.claim_sends", claim).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::error!(error = %e, jobs = work.len(), "idempotency claim failed; batch will be retried");
                for (rec, job) in work {
                    let code = Some("db_unavailable");
                    tally.events.push(event(EventType::EmailRetried, Some(job), None, rec, Outcome::Error, code, None));
                    tally.failures.push(rec.message_id.clone());
                }
                None
            }
        }
    }
}

/// Settle the keys this invocation did not get (already sent or failed for good: skipped;
/// leased by another consumer: retried when that lease ends) and return the claimed jobs.
pub(super) fn settle_unclaimed<'a>(
    work: &'a [(Rec, EmailJob)],
    rows: &'a [ClaimRow],
    attempts: &[Uuid],
    recorded: bool,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    tally: &mut Tally,
) -> Vec<Claimed<'a>> {
    let mut claimed = Vec::new();
    for (((rec, job), row), attempt) in work.iter().zip(rows).zip(attempts) {
        match &row.state {
            ClaimState::Claimed { .. } => {
                claimed.push(Claimed { rec, job, row, attempt: recorded.then_some(*attempt) })
            }
            ClaimState::AlreadySent => tally.events.push(skipped(job, rec, "already_sent")),
            ClaimState::FailedPermanent => tally.events.push(skipped(job, rec, "already_failed")),
            ClaimState::Suppressed => tally.events.push(skipped(job, rec, "already_suppressed")),
            ClaimState::Busy { until } => {
                // Another consumer is sending it now (or crashed mid-send): look again when its
                // lease ends.
                let secs = until.map(|u| (u - now).num_seconds()).unwrap_or(0).clamp(1, lease.num_seconds().max(1));
                tracing::info!(parent: &rec.span, message_id = %rec.message_id, "job claimed by another consumer; retry after its lease");
                tally.failures.push(rec.message_id.clone());
                if let Some(h) = &rec.receipt_handle {
                    tally.visibility.push((h.clone(), secs as u32));
                }
            }
        }
    }
    claimed
}
