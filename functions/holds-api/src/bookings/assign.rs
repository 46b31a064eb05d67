//! Auto-assign: give a pending request a table. One attempt is one transaction (lock the
//! booking → quote under the current policy → claim the tables → confirm → emails). The first
//! attempt runs inline in the request; the rest are the durable job's, run by the scheduled
//! assigner (`bin/auto-assigner.rs`, and the local runner) at the times the retry rule sets.

use super::enqueue_confirmation;
use crate::error::HoldsError;
use crate::service::HoldsService;
use crate::store;
use chrono::Utc;
use deadpool_postgres::Transaction;
use holdfast_adapters::db::{constraints, DbFault};
use holdfast_adapters::outbox;
use holdfast_adapters::telemetry;
use holdfast_shared::allocator::PartySize;
use holdfast_shared::allocator::{QuoteRequest, Selection};
use holdfast_shared::booking::{after_failure, AfterFailure, AssignFailure};
use holdfast_shared::email::{BookingStatus, EmailJob, EmailType};
use holdfast_shared::ids::BookingId;
use tracing::Instrument;

/// How one attempt ended, with the job's bookkeeping done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOutcome {
    Confirmed,
    /// The booking is no longer a pending request (confirmed or cancelled another way).
    NotPending,
    /// Failed; the job is due again later.
    Retrying(AssignFailure),
    /// Failed for the last time; the booking stays pending and ops have their notice.
    GaveUp(AssignFailure),
}

/// One attempt's own result, before the job's bookkeeping.
enum Attempt {
    Confirmed,
    NotPending,
    Failed(AssignFailure),
}

/// What one run of the assigner did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssignReport {
    pub attempted: usize,
    pub confirmed: usize,
    pub retrying: usize,
    pub gave_up: usize,
}

impl HoldsService {
    /// One attempt for `booking`, `attempts_before` attempts having been made, and the job's
    /// bookkeeping after it (retry time, or exhausted with one ops notice).
    pub async fn assign_attempt(&self, booking: BookingId, attempts_before: i32) -> Result<AssignOutcome, HoldsError> {
        let failure = match self.assign_once(booking).await {
            Ok(Attempt::Confirmed) => return Ok(AssignOutcome::Confirmed),
            Ok(Attempt::NotPending) => return Ok(AssignOutcome::NotPending),
            Ok(Attempt::Failed(f)) => f,
            Err(HoldsError::Db(f)) if f.violates(constraints::TABLE_CLAIMS_NO_OVERLAP) => {
                AssignFailure::Transient("hold_conflict")
            }
            Err(HoldsError::Db(_)) => AssignFailure::Transient("database_unavailable"),
            Err(e) => return Err(e),
        };
        Ok(match self.after_failed_attempt(booking, attempts_before + 1, failure).await? {
            AfterFailure::RetryAt(_) => AssignOutcome::Retrying(failure),
            AfterFailure::GiveUp => AssignOutcome::GaveUp(failure),
        })
    }

    /// Claim the due jobs and make one attempt for each (the scheduled assigner's one step).
    pub async fn run_due_assignments(&self, limit: i64) -> Result<AssignReport, HoldsError> {
        let due = store::claim_due(&self.pool.get().await?, limit).await?;
        let mut report = AssignReport { attempted: due.len(), ..AssignReport::default() };
        for (booking, attempts, correlation) in due {
            // The attempt's lines carry its booking's correlation id.
            let span = telemetry::correlated("assignment", correlation.as_ref());
            // One job's fault must not hold back the others claimed with it (their lease would
            // push their retries back a minute): it is counted as retrying, its lease expires.
            let outcome = match self.assign_attempt(booking, attempts).instrument(span.clone()).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(parent: &span, code = e.code(), "auto-assign attempt failed; retried after its lease");
                    report.retrying += 1;
                    continue;
                }
            };
            match outcome {
                AssignOutcome::Confirmed => report.confirmed += 1,
                AssignOutcome::NotPending => {}
                AssignOutcome::Retrying(_) => report.retrying += 1,
                AssignOutcome::GaveUp(_) => report.gave_up += 1,
            }
        }
        Ok(report)
    }

    async fn assign_once(&self, booking: BookingId) -> Result<Attempt, HoldsError> {
        let flags = self.flags.get().await.set;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let Some(b) = store::lock_booking(&tx, booking).await? else { return Ok(Attempt::NotPending) };
        if b.status != BookingStatus::Requested {
            store::finish_assignment(&tx, booking).await?;
            tx.commit().await?;
            return Ok(Attempt::NotPending);
        }
        let policy = self.policy_of(&tx, b.restaurant_id).await?;
        let party = PartySize::new(b.party_size as u16)
            .map_err(|_| HoldsError::invalid("party_size", "stored party size is not bookable"))?;
        let req = QuoteRequest { party, start: b.starts_at };
        let sel = match self.quote_now(&tx, b.restaurant_id, &policy, &flags, &req).await {
            Ok(sel) => sel,
            // Every table busy now: one may free up (a release, an expiry, a cancellation), so
            // this is worth retrying. "No table fits" at all (party too large, closed) is hard.
            Err(HoldsError::Conflict { code, .. }) => return Ok(Attempt::Failed(AssignFailure::Transient(code))),
            Err(HoldsError::Rejected(r)) => return Ok(Attempt::Failed(AssignFailure::Hard(r.code()))),
            Err(HoldsError::Invalid { .. }) => return Ok(Attempt::Failed(AssignFailure::Hard("invalid_start"))),
            Err(e) => return Err(e),
        };
        telemetry::timed("db.assign_write", confirm_with(&tx, &b, &sel, policy.reminder_lead())).await?;
        tx.commit().await?;
        Ok(Attempt::Confirmed)
    }

    /// Retry later, or give up: the job is exhausted and ops get one notice (same transaction).
    async fn after_failed_attempt(
        &self,
        booking: BookingId,
        attempts: i32,
        f: AssignFailure,
    ) -> Result<AfterFailure, HoldsError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let Some(b) = store::lock_booking(&tx, booking).await? else { return Ok(AfterFailure::GiveUp) };
        let now = Utc::now();
        let next = after_failure(attempts.max(0) as u32, f, now, b.starts_at);
        match next {
            AfterFailure::RetryAt(at) => {
                store::record_attempt(&tx, booking, "pending", attempts, Some(at), Some(f.code())).await?;
            }
            AfterFailure::GiveUp => {
                store::record_attempt(&tx, booking, "exhausted", attempts, None, Some(f.code())).await?;
                if b.status == BookingStatus::Requested {
                    let notice = EmailJob::ops_pending_attention(b.restaurant_id, booking);
                    outbox::enqueue_correlated(&tx, &notice, now, b.correlation_id.as_ref()).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(next)
    }
}

/// Claim the selection's tables for the (locked) booking and confirm it, with its emails.
async fn confirm_with(
    tx: &Transaction<'_>,
    b: &store::BookingRow,
    sel: &Selection,
    reminder_lead: chrono::Duration,
) -> Result<(), DbFault> {
    store::lock_claims(tx, &sel.table_ids, &sel.blocked).await?;
    store::prune_expired(tx, &sel.table_ids, &sel.blocked).await?;
    store::insert_booking_claims(tx, b.restaurant_id, &sel.table_ids, &sel.blocked, b.id).await?;
    let party = sel.party.get() as i16;
    let revision = store::set_booking(tx, b.id, BookingStatus::Confirmed, party, &sel.seated, false).await?;
    store::finish_assignment(tx, b.id).await?;
    let (kind, at, corr) = (EmailType::BookingConfirmed, sel.seated.start(), b.correlation_id.as_ref());
    enqueue_confirmation(tx, b.id, kind, revision, at, reminder_lead, corr).await
}
