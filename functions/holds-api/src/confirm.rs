//! Confirm: turn a live hold into a booking, atomically. If the restaurant's policy changed
//! since the hold (its hash differs), the hold is re-quoted under the new policy and replaced in
//! the same transaction (drift recovery), within `MAX_CONFIRM_ATTEMPTS` and never in a loop.
//! The booking's confirmation email is written to the outbox in that same transaction.

use crate::dto::{self, ConfirmBody, Guest};
use crate::error::HoldsError;
use crate::idempotency::{self, Idempotency, NextAction};
use crate::observe::Observed;
use crate::outcome::{Confirmed, Reply};
use crate::service::{may_act_on, no_table, settings, HoldsService};
use crate::store::{self, HoldRow, StoredResponse};
use deadpool_postgres::Transaction;
use holdfast_adapters::db::{constraints, DbFault};
use holdfast_adapters::outbox;
use holdfast_adapters::telemetry::{self, Correlation};
use holdfast_shared::allocator::{self, PartySize, QuoteRequest, Selection};
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::EmailJob;
use holdfast_shared::events::{EventType, Operation, Outcome};
use holdfast_shared::flags::FlagSet;
use holdfast_shared::hold::{Attempts, CompleteHoldMetadata, Drift, HoldState, HoldStatus};
use holdfast_shared::ids::{BookingId, HoldId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_shared::window::Window;

mod write;

/// Which way a confirm went, as far as policy drift is concerned. Once a request has met a
/// drifted policy it stays `Drifted`: its outcome is a drift recovery or a drift failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    Direct,
    Drifted,
}

impl Path {
    fn or(self, other: Path) -> Path {
        if self == Path::Drifted || other == Path::Drifted {
            Path::Drifted
        } else {
            Path::Direct
        }
    }
}

/// The locked, live, complete hold and the policy in force now.
pub(crate) struct Loaded {
    row: HoldRow,
    meta: CompleteHoldMetadata,
    policy: BookingPolicy,
    seated: Window,
    blocked: Window,
    /// The booking's correlation id: the hold's (or, for a hold from before V13, the request's).
    correlation: CorrelationId,
}

enum Load {
    Live(Box<Loaded>),
    /// A duplicate that waited on the hold's row lock: the first request's answer.
    Replay(StoredResponse),
}

/// The pure decision once the hold is loaded.
enum Plan {
    /// The policy is unchanged: book the held tables.
    Direct,
    /// The policy drifted and this selection fits under the new one.
    Requote(Box<Selection>),
    /// The policy drifted and nothing fits under it.
    NoTable(QuoteRequest),
}

/// How one attempt ended.
enum AttemptEnd {
    Committed(Confirmed, Path),
    Replayed(StoredResponse),
    Retry(Path),
    Failed(HoldsError, Path),
}

impl HoldsService {
    pub async fn confirm(
        &self,
        caller: &Caller,
        hold: HoldId,
        body: ConfirmBody,
        idem: Option<Idempotency>,
        corr: &Correlation,
    ) -> Result<Reply<Confirmed>, HoldsError> {
        let mut o = Observed::new(Operation::Confirm);
        o.hold = Some(hold);
        o.correlation = Some(corr.id());
        let (result, path) = self.confirm_inner(&mut o, (caller, corr), hold, body, idem.as_ref()).await;
        match result {
            Ok(reply) => {
                self.record(&o, EventType::HoldConfirmed, Outcome::Success, None).await;
                if path == Path::Drifted {
                    self.record(&o, EventType::PolicyDriftRecovered, Outcome::Success, None).await;
                }
                Ok(reply)
            }
            Err(e) => {
                if path == Path::Drifted {
                    self.record(&o, EventType::PolicyDriftFailed, Outcome::Conflict, Some(e.code())).await;
                    self.notify_failed_drift(&o).await;
                }
                Err(self.fail(&o, e).await)
            }
        }
    }

    async fn confirm_inner(
        &self,
        o: &mut Observed,
        (caller, corr): (&Caller, &Correlation),
        hold: HoldId,
        body: ConfirmBody,
        idem: Option<&Idempotency>,
    ) -> (Result<Reply<Confirmed>, HoldsError>, Path) {
        let guest = match self.confirm_preflight(body, idem).await {
            Ok(Ok(guest)) => guest,
            Ok(Err(first)) => return (Ok(Reply::Replayed(first)), Path::Direct),
            Err(e) => return (Err(e), Path::Direct),
        };
        let flags = self.flags.get().await.set;
        let mut path = Path::Direct;
        let mut attempts = Attempts::new();
        while let Some(attempt) = attempts.next() {
            o.attempt = attempt;
            let remaining = attempts.remaining();
            let who = (caller, corr, &guest);
            match self.confirm_attempt(o, hold, who, &flags, idem, attempt, remaining, path).await {
                AttemptEnd::Committed(confirmed, p) => return (Ok(Reply::Fresh(confirmed)), p),
                AttemptEnd::Replayed(first) => return (Ok(Reply::Replayed(first)), Path::Direct),
                AttemptEnd::Retry(p) => path = p,
                AttemptEnd::Failed(e, p) => return (Err(e), p),
            }
        }
        let exhausted = no_table("policy_drift_exhausted", "the booking policy kept changing; retry", vec![]);
        (Err(exhausted), path)
    }

    /// Ops hear about a drift that could not be recovered too (once per restaurant and policy
    /// version, like a recovered one). The confirm's transaction is gone, so this is its own;
    /// a failure to write it is logged, and the next drift of the version writes it again.
    async fn notify_failed_drift(&self, o: &Observed) {
        let (Some(restaurant), Some(version)) = (o.restaurant, o.policy_version) else { return };
        let job = EmailJob::ops_policy_drift(restaurant, version);
        let written = match self.pool.get().await {
            Ok(c) => outbox::enqueue_correlated(&c, &job, chrono::Utc::now(), o.correlation.as_ref()).await.map(|_| ()),
            Err(e) => Err(DbFault::from(e)),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not write the ops drift notice after a failed recovery");
        }
    }

    /// Parse the guest, replay a retry, refuse writes the database would not police.
    async fn confirm_preflight(
        &self,
        body: ConfirmBody,
        idem: Option<&Idempotency>,
    ) -> Result<Result<Guest, StoredResponse>, HoldsError> {
        let guest = body.guest.parse()?;
        if let NextAction::Replay(first) = idempotency::decide(&self.pool, idem).await? {
            return Ok(Err(first));
        }
        self.require_enforcement().await?;
        Ok(Ok(guest))
    }

    /// Lock and load the hold → decide (pure) → write → commit, or say why not.
    #[allow(clippy::too_many_arguments)]
    async fn confirm_attempt(
        &self,
        o: &mut Observed,
        hold: HoldId,
        (caller, corr, guest): (&Caller, &Correlation, &Guest),
        flags: &FlagSet,
        idem: Option<&Idempotency>,
        attempt: u8,
        remaining: u8,
        so_far: Path,
    ) -> AttemptEnd {
        let mut c = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => return AttemptEnd::Failed(e.into(), so_far),
        };
        let tx = match c.transaction().await {
            Ok(tx) => tx,
            Err(e) => return AttemptEnd::Failed(e.into(), so_far),
        };
        let loaded = match self.load_live_hold(o, &tx, hold, (caller, corr), idem).await {
            Ok(Load::Live(l)) => l,
            Ok(Load::Replay(first)) => return AttemptEnd::Replayed(first),
            Err(e) => return AttemptEnd::Failed(e, so_far),
        };
        let plan = match self.plan(&tx, &loaded, flags).await {
            Ok(plan) => plan,
            Err(e) => return AttemptEnd::Failed(e, so_far.or(Path::Drifted)),
        };
        let path = so_far.or(if matches!(plan, Plan::Direct) { Path::Direct } else { Path::Drifted });
        let booking = BookingId::new_random();
        let written = match &plan {
            Plan::Direct => {
                o.tables = Some(loaded.row.table_ids.len());
                let write = write::book_held_tables(&tx, &loaded, booking, guest, idem, attempt);
                telemetry::timed("db.confirm_write", write).await
            }
            Plan::Requote(sel) => {
                o.tables = Some(sel.table_ids.len());
                let write = write::requote_and_book(&tx, &loaded, booking, sel, guest, idem, attempt);
                telemetry::timed("db.requote_write", write).await
            }
            Plan::NoTable(req) => {
                drop(tx);
                drop(c);
                let (l, seated) = (&loaded, &loaded.seated);
                let alts = self.alternatives(l.row.restaurant_id, &l.policy, flags, req, &[], seated).await;
                let msg = "the booking policy changed and no table fits under the new policy";
                return AttemptEnd::Failed(no_table("policy_drift_no_table", msg, alts), path);
            }
        };
        let committed = match written {
            Ok(confirmed) => write::commit(tx, &loaded, path == Path::Drifted).await.map(|_| confirmed),
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        match committed {
            Ok(confirmed) => {
                // Only now does the booking exist: failure events never name a rolled-back id.
                o.booking = Some(booking);
                AttemptEnd::Committed(confirmed, path)
            }
            Err(fault) => {
                drop(c);
                self.confirm_lost(&loaded, flags, idem, fault, path, remaining).await
            }
        }
    }

    /// Lock the hold (duplicates of this confirm queue here), then require it live and complete.
    async fn load_live_hold(
        &self,
        o: &mut Observed,
        tx: &Transaction<'_>,
        hold: HoldId,
        (caller, corr): (&Caller, &Correlation),
        idem: Option<&Idempotency>,
    ) -> Result<Load, HoldsError> {
        let row = store::lock_hold(tx, hold).await?.ok_or(HoldsError::NotFound("hold"))?;
        may_act_on(caller, Action::HoldConfirm, &row)?;
        // One id per booking: the hold's, from here on (the request's own if the hold has none).
        corr.adopt(row.correlation_id.as_ref());
        let correlation = corr.id();
        o.correlation = Some(correlation.clone());
        // The row lock serialises duplicates: one that waited here for a first request with
        // the same Idempotency-Key to commit answers with that request's response.
        if let NextAction::Replay(first) = idempotency::try_processing(tx, idem).await? {
            return Ok(Load::Replay(first));
        }
        o.restaurant = Some(row.restaurant_id);
        o.party = Some(row.party_size as u16);
        o.mode = Some(row.strict_mode);
        if let Some(booked) = replacement_booking(tx, &row).await? {
            // A retry of a confirm whose drift recovery replaced this hold: the answer is the
            // booking that recovery made, as for any retry of a confirmed hold.
            return Err(HoldsError::HoldNotLive { state: HoldState::Confirmed, booking_id: Some(booked) });
        }
        check_live(&row)?;
        let meta =
            row.metadata().require_complete().map_err(|m| HoldsError::MetadataIncomplete { missing: m.missing })?;
        let policy = self.policy_of(tx, row.restaurant_id).await?;
        o.policy_version = Some(policy.version);
        if let Some(owner) = &row.owner {
            let (confirmed, retry_after_secs) = store::recent_confirms(tx, row.restaurant_id, owner).await?;
            if confirmed >= u32::from(policy.guest_limits.max_confirms_per_hour) {
                return Err(HoldsError::TooManyConfirms { retry_after_secs });
            }
        }
        let (seated, blocked) = row.windows()?;
        Ok(Load::Live(Box::new(Loaded { row, meta, policy, seated, blocked, correlation })))
    }

    /// Direct if the policy is the one the hold was made under; otherwise re-quote the party
    /// under the new policy, ignoring the hold's own claims.
    async fn plan(&self, tx: &Transaction<'_>, l: &Loaded, flags: &FlagSet) -> Result<Plan, HoldsError> {
        if Drift::check(&l.meta.policy_hash, &l.policy.content_hash()) == Drift::None {
            return Ok(Plan::Direct);
        }
        let party = PartySize::new(l.row.party_size as u16)
            .map_err(|_| HoldsError::MetadataIncomplete { missing: vec!["party_size"] })?;
        let req = QuoteRequest { party, start: l.row.starts_at };
        let busy = store::busy(tx, l.row.restaurant_id, &l.seated, Some(l.row.id)).await?;
        Ok(match allocator::quote(&l.policy, settings(flags), &req, &busy) {
            Ok(sel) => Plan::Requote(Box::new(sel)),
            Err(_) => Plan::NoTable(req),
        })
    }

    /// A failed write: retry within the budget, a duplicate's answer, or a conflict.
    async fn confirm_lost(
        &self,
        l: &Loaded,
        flags: &FlagSet,
        idem: Option<&Idempotency>,
        fault: DbFault,
        path: Path,
        remaining: u8,
    ) -> AttemptEnd {
        let overlap = fault.violates(constraints::TABLE_CLAIMS_NO_OVERLAP);
        let serialization = fault == DbFault::Serialization;
        if remaining > 0 && ((overlap && path == Path::Drifted) || serialization) {
            return AttemptEnd::Retry(path);
        }
        if fault.violates(constraints::IDEMPOTENCY_KEYS_PKEY) {
            return match idempotency::race_winner(&self.pool, idem).await {
                Ok(Some(first)) => AttemptEnd::Replayed(first),
                Ok(None) => AttemptEnd::Failed(HoldsError::Db(DbFault::Serialization), Path::Direct),
                Err(e) => AttemptEnd::Failed(e, Path::Direct),
            };
        }
        if !(overlap || serialization) {
            return AttemptEnd::Failed(fault.into(), path);
        }
        let req = match dto::party("party_size", l.row.party_size as u16) {
            Ok(party) => QuoteRequest { party, start: l.row.starts_at },
            Err(e) => return AttemptEnd::Failed(e, path),
        };
        let (restaurant, exclude) = (l.row.restaurant_id, &l.row.table_ids);
        let alternatives = self.alternatives(restaurant, &l.policy, flags, &req, exclude, &l.seated).await;
        let code = if path == Path::Drifted { "policy_drift_exhausted" } else { "hold_conflict" };
        let msg = "the tables were taken before the hold could be confirmed";
        AttemptEnd::Failed(no_table(code, msg, alternatives), path)
    }
}

/// The booking of the hold that replaced `row` in a drift recovery, if it was confirmed.
async fn replacement_booking(tx: &Transaction<'_>, row: &HoldRow) -> Result<Option<BookingId>, HoldsError> {
    let Some(next) = row.replaced_by.filter(|_| row.status == HoldStatus::Released) else { return Ok(None) };
    let replacement = store::get_hold(tx, next).await?;
    Ok(replacement.filter(|h| h.status == HoldStatus::Confirmed).and_then(|h| h.booking_id))
}

fn check_live(row: &HoldRow) -> Result<(), HoldsError> {
    match HoldState::at(row.status, row.expires_at, row.db_now) {
        HoldState::Live => Ok(()),
        HoldState::Expired => Err(HoldsError::HoldExpired),
        HoldState::Confirmed => {
            Err(HoldsError::HoldNotLive { state: HoldState::Confirmed, booking_id: row.booking_id })
        }
        HoldState::Released => Err(HoldsError::HoldNotLive { state: HoldState::Released, booking_id: None }),
    }
}

/// The ops notice for a drifted policy, once per restaurant and version.
fn drift_notice(l: &Loaded) -> EmailJob {
    EmailJob::ops_policy_drift(l.row.restaurant_id, l.policy.version)
}
