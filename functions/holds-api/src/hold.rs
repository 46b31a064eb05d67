//! Hold: reserve the quoted tables for a few minutes while the guest confirms. The exclusion
//! constraint decides races; a lost race is a 409 with alternatives, or the first response when
//! the winner was this request's own duplicate (same Idempotency-Key).

use crate::dto::{self, HoldBody};
use crate::error::HoldsError;
use crate::idempotency::{self, Idempotency, NextAction};
use crate::observe::Observed;
use crate::outcome::{HoldCreated, Reply};
use crate::service::{may_book_at, no_table, resolve_start, settings, HoldsService};
use crate::store::{self, NewHold};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use holdfast_adapters::db::{constraints, DbFault};
use holdfast_adapters::telemetry::{self, Correlation};
use holdfast_shared::allocator::{self, QuoteRejection, QuoteRequest, Selection};
use holdfast_shared::auth::{Action, Caller, Subject};
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::events::{EventType, Operation, Outcome, StrictMode};
use holdfast_shared::flags::FlagSet;
use holdfast_shared::hold::{HoldState, HoldStatus, HoldTtl};
use holdfast_shared::ids::{HoldId, RestaurantId, TableId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_shared::rollout;
use std::sync::Arc;

/// Serialization failures/deadlocks are retried this many times before answering 409.
const MAX_SERIALIZATION_RETRIES: u8 = 3;

/// Everything a hold attempt needs, decided once per request.
struct HoldPlan {
    restaurant: RestaurantId,
    owner: Subject,
    req: QuoteRequest,
    requested: Option<Vec<TableId>>,
    flags: Arc<FlagSet>,
    mode: StrictMode,
    ttl: HoldTtl,
    /// The request's "now", for the booking horizon and the alternatives offered.
    now: DateTime<Utc>,
    /// The request's correlation id: the hold keeps it for its booking.
    correlation: CorrelationId,
}

/// How one attempt ended: an answer, or a serialization failure worth another try.
enum Step {
    Done(Reply<HoldCreated>),
    Retry,
}

impl HoldsService {
    pub async fn hold(
        &self,
        caller: &Caller,
        body: HoldBody,
        idem: Option<Idempotency>,
        corr: &Correlation,
    ) -> Result<Reply<HoldCreated>, HoldsError> {
        let mut o = Observed::new(Operation::Hold);
        o.correlation = Some(corr.id());
        o.restaurant = Some(body.restaurant_id);
        o.party = Some(body.party_size);
        let result = match may_book_at(caller, Action::HoldCreate, body.restaurant_id) {
            Ok(()) => self.hold_inner(&mut o, caller, body, idem.as_ref()).await,
            Err(e) => Err(e),
        };
        self.finish(&o, EventType::HoldCreated, result).await
    }

    async fn hold_inner(
        &self,
        o: &mut Observed,
        caller: &Caller,
        body: HoldBody,
        idem: Option<&Idempotency>,
    ) -> Result<Reply<HoldCreated>, HoldsError> {
        let party = dto::party("party_size", body.party_size)?;
        let start = match body.start.instant() {
            Some(t) => t,
            // A wall-clock start needs the restaurant's clock (one extra read, local starts only).
            None => resolve_start(&self.policy_of(&self.pool.get().await?, body.restaurant_id).await?, body.start)?,
        };
        let req = QuoteRequest { party, start };
        let requested = body.table_ids.map(dto::table_list).transpose()?;
        if let NextAction::Replay(first) = idempotency::decide(&self.pool, idem).await? {
            return Ok(Reply::Replayed(first));
        }
        self.require_enforcement().await?;
        let flags = self.flags.get().await.set;
        let mode = rollout::strict_mode(flags.strict_conflicts(), flags.strict_rollout_percent(), body.restaurant_id);
        o.mode = Some(mode);
        let ttl = HoldTtl::from_secs(flags.hold_ttl_seconds()).unwrap_or(HoldTtl::DEFAULT);
        let owner = caller.subject.clone();
        let now = Utc::now();
        let correlation = o.correlation.clone().unwrap_or_else(CorrelationId::mint);
        let plan =
            HoldPlan { restaurant: body.restaurant_id, owner, req, requested, flags, mode, ttl, now, correlation };
        let mut attempt = 0;
        loop {
            attempt += 1;
            o.attempt = attempt;
            // Bounded: only an attempt below MAX_SERIALIZATION_RETRIES asks for a retry.
            if let Step::Done(reply) = self.hold_attempt(o, &plan, idem, attempt).await? {
                return Ok(reply);
            }
        }
    }

    /// Load the policy, choose the tables (pure), write the hold and its claims, commit.
    async fn hold_attempt(
        &self,
        o: &mut Observed,
        plan: &HoldPlan,
        idem: Option<&Idempotency>,
        attempt: u8,
    ) -> Result<Step, HoldsError> {
        let mut c = self.pool.get().await?;
        let policy = self.policy_of(&c, plan.restaurant).await?;
        o.policy_version = Some(policy.version);
        // Past, too soon or beyond the horizon: 422 naming `start`, nothing written.
        policy.check_start(plan.req.start, plan.now)?;
        let selection = match &plan.requested {
            Some(tables) => select_requested(&policy, plan, tables)?,
            None => self.quote_now_at(&c, plan.restaurant, &policy, &plan.flags, &plan.req, plan.now).await?,
        };
        o.tables = Some(selection.table_ids.len());
        let hold_id = HoldId::new_random();
        o.hold = Some(hold_id);
        let tx = c.transaction().await?;
        let max_live = policy.guest_limits.max_live_holds;
        match telemetry::timed("db.hold_write", write_hold(&tx, plan, hold_id, &selection, idem, max_live)).await {
            Ok(Some((held, shadow_conflict))) => {
                tx.commit().await?;
                if shadow_conflict {
                    self.record_shadow_conflict(plan, hold_id).await;
                }
                Ok(Step::Done(Reply::Fresh(held)))
            }
            Ok(None) => {
                drop(tx);
                let retry_after_secs = store::live_hold_retry_after(&c, plan.restaurant, &plan.owner).await?;
                Err(HoldsError::TooManyHolds { retry_after_secs })
            }
            Err(fault) => {
                drop(tx);
                drop(c);
                self.hold_lost(plan, &policy, &selection, idem, fault, attempt).await
            }
        }
    }

    /// A failed write: a duplicate's answer, another try, or a conflict with alternatives.
    async fn hold_lost(
        &self,
        plan: &HoldPlan,
        policy: &BookingPolicy,
        selection: &Selection,
        idem: Option<&Idempotency>,
        fault: DbFault,
        attempt: u8,
    ) -> Result<Step, HoldsError> {
        let retriable = matches!(fault, DbFault::Serialization) && attempt < MAX_SERIALIZATION_RETRIES;
        let raced = fault.violates(constraints::TABLE_CLAIMS_NO_OVERLAP)
            || fault.violates(constraints::IDEMPOTENCY_KEYS_PKEY)
            || matches!(fault, DbFault::Serialization);
        if retriable {
            return Ok(Step::Retry);
        }
        if !raced {
            return Err(fault.into());
        }
        // A concurrent duplicate (same Idempotency-Key) that committed first: its answer.
        if let Some(first) = idempotency::race_winner(&self.pool, idem).await? {
            return Ok(Step::Done(Reply::Replayed(first)));
        }
        if fault.violates(constraints::IDEMPOTENCY_KEYS_PKEY) {
            return Err(HoldsError::Db(DbFault::Serialization));
        }
        let alternatives = match fault {
            DbFault::Serialization => vec![],
            _ => {
                let exclude = &selection.table_ids;
                self.alternatives(plan.restaurant, policy, &plan.flags, &plan.req, exclude, &selection.seated).await
            }
        };
        let message = match fault {
            DbFault::Serialization => "the tables are contended; try another table or time",
            _ => "those tables are already held or booked for that time",
        };
        Err(no_table("hold_conflict", message, alternatives))
    }

    async fn record_shadow_conflict(&self, plan: &HoldPlan, hold: HoldId) {
        let mut so = Observed::new(Operation::Hold);
        so.restaurant = Some(plan.restaurant);
        so.hold = Some(hold);
        so.mode = Some(plan.mode);
        self.record(&so, EventType::HoldConflictShadow, Outcome::Conflict, Some("hold_conflict")).await;
    }
}

/// The tables a client's quote chose, checked against the current policy (pure).
fn select_requested(policy: &BookingPolicy, plan: &HoldPlan, tables: &[TableId]) -> Result<Selection, HoldsError> {
    allocator::select_tables(policy, settings(&plan.flags), &plan.req, tables).map_err(|e| match e {
        QuoteRejection::NoTableAvailable => {
            HoldsError::invalid("table_ids", "these tables cannot seat this party under the current policy")
        }
        other => HoldsError::Rejected(other),
    })
}

/// The hold, its claims and (with a key) its first response, in the caller's transaction.
/// Returns the answer and whether a shadow-mode hold overlapped another live claim.
async fn write_hold(
    tx: &Transaction<'_>,
    plan: &HoldPlan,
    hold_id: HoldId,
    selection: &Selection,
    idem: Option<&Idempotency>,
    max_live_holds: u8,
) -> Result<Option<(HoldCreated, bool)>, DbFault> {
    let snapshot = selection.snapshot_json();
    let new = NewHold {
        id: hold_id,
        restaurant: plan.restaurant,
        party_size: selection.party.get() as i16,
        seated: &selection.seated,
        blocked: &selection.blocked,
        status: HoldStatus::Held,
        strict_mode: plan.mode,
        ttl_secs: plan.ttl.as_secs() as i32,
        expires_at: None,
        policy_version: selection.policy_version,
        policy_hash: selection.policy_hash.as_str(),
        table_ids: &selection.table_ids,
        snapshot: &snapshot,
        booking_id: None,
        owner: Some(&plan.owner),
        correlation: Some(&plan.correlation),
    };
    let Some(expires_at) = store::hold_write(tx, &new, plan.mode == StrictMode::Enforced, max_live_holds).await? else {
        return Ok(None);
    };
    let shadow_conflict = plan.mode == StrictMode::Shadow
        && store::shadow_overlap(tx, hold_id, &selection.table_ids, &selection.blocked).await?;
    let held = HoldCreated {
        hold_id,
        restaurant_id: plan.restaurant,
        state: HoldState::Live,
        party_size: selection.party.get(),
        start: selection.seated.start(),
        end: selection.seated.end(),
        blocked_until: selection.blocked.end(),
        expires_at,
        table_ids: selection.table_ids.clone(),
        strict_mode: plan.mode,
        policy_version: selection.policy_version,
        policy_hash: selection.policy_hash.clone(),
    };
    idempotency::save(tx, idem, &held).await?;
    Ok(Some((held, shadow_conflict)))
}
