//! The holds use cases: quote, hold, confirm (with policy-drift recovery), release, get.
//! Each records exactly one outcome event through the shared recorder.

use crate::dto::{self, ConfirmBody, HoldBody, QuoteBody};
use crate::error::HoldsError;
use crate::store::{self, ClaimKind, HoldRow, NewBooking, NewHold};
use chrono::Utc;
use deadpool_postgres::{GenericClient, Pool, Transaction};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::outbox;
use holdfast_shared::allocator::{self, AllocatorSettings, QuoteRejection, QuoteRequest, Selection};
use holdfast_shared::email::{EmailJob, EmailType};
use holdfast_shared::events::{
    EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source, StrictMode as EvMode,
};
use holdfast_shared::flags::FlagSet;
use holdfast_shared::hold::{Attempts, Drift, HoldMetadata, HoldState, HoldStatus, HoldTtl, MAX_CONFIRM_ATTEMPTS};
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId, TableId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_shared::rollout::{self, StrictMode};
use holdfast_shared::window::Window;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Serialization failures/deadlocks are retried this many times before answering 409.
const MAX_SERIALIZATION_RETRIES: u8 = 3;
const MAX_ALTERNATIVES: usize = 5;

/// A retried POST with the same key gets the first response.
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// A successful answer: HTTP status and JSON body.
pub type Answer = (u16, Value);

pub struct HoldsService {
    pool: Pool,
    recorder: EventRecorder,
    flags: Arc<FlagLoader>,
    enforcement: OnceCell<bool>,
}

struct Observed {
    op: Operation,
    restaurant: Option<RestaurantId>,
    booking: Option<BookingId>,
    hold: Option<HoldId>,
    attempt: u8,
    mode: Option<StrictMode>,
    policy_version: Option<i32>,
    tables: Option<usize>,
    party: Option<u16>,
    started: Instant,
}

impl Observed {
    fn new(op: Operation) -> Self {
        Self {
            op,
            restaurant: None,
            booking: None,
            hold: None,
            attempt: 1,
            mode: None,
            policy_version: None,
            tables: None,
            party: None,
            started: Instant::now(),
        }
    }
}

fn ev_mode(m: StrictMode) -> EvMode {
    match m {
        StrictMode::Enforced => EvMode::Enforced,
        StrictMode::Shadow => EvMode::Shadow,
    }
}

/// The stored first response for this Idempotency-Key, read through `c` (a transaction that
/// holds the relevant lock, or a fresh connection).
async fn replay_on<C: GenericClient>(c: &C, idem: Option<&Idempotency>) -> Result<Option<Answer>, HoldsError> {
    let Some(i) = idem else { return Ok(None) };
    match store::idempotency_lookup(c, &i.scope, &i.key).await? {
        None => Ok(None),
        Some((hash, _, _)) if hash != i.request_hash => Err(HoldsError::IdempotencyMismatch),
        Some((_, status, body)) => Ok(Some((status as u16, body))),
    }
}

fn settings(flags: &FlagSet) -> AllocatorSettings {
    AllocatorSettings { merges_enabled: flags.merges_enabled(), require_adjacency: flags.require_adjacency() }
}

fn uuids(ids: &[TableId]) -> Vec<Uuid> {
    ids.iter().map(|t| t.as_uuid()).collect()
}

impl HoldsService {
    pub fn new(pool: Pool, flags: Arc<FlagLoader>) -> Self {
        let recorder = EventRecorder::new(pool.clone());
        Self { pool, recorder, flags, enforcement: OnceCell::new() }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Cold-start check that the database enforces the no-overlap constraint. A database that
    /// is down is not "unenforced": the check is retried on the next write.
    pub async fn verify_enforcement(&self) -> Result<bool, HoldsError> {
        let v = self
            .enforcement
            .get_or_try_init(|| async {
                let c = self.pool.get().await.map_err(DbFault::from)?;
                let ok = store::verify_enforcement(&c).await?;
                if !ok {
                    tracing::error!(
                        constraint = store::NO_OVERLAP_CONSTRAINT,
                        "database does not enforce table conflicts; hold writes refused"
                    );
                    self.recorder
                        .record(
                            &ObservabilityEvent::new(Source::HoldsApi, EventType::StrictVerifyFailed)
                                .severity(Severity::Error)
                                .context(EventContext::new().error_code_str("strict_constraint_missing")),
                        )
                        .await;
                }
                Ok::<bool, HoldsError>(ok)
            })
            .await?;
        Ok(*v)
    }

    async fn require_enforcement(&self) -> Result<(), HoldsError> {
        if self.verify_enforcement().await? {
            Ok(())
        } else {
            Err(HoldsError::EnforcementUnverified)
        }
    }

    async fn record(&self, o: &Observed, event: EventType, outcome: Outcome, code: Option<&str>) {
        let mut ctx = EventContext::new()
            .operation(o.op)
            .outcome(outcome)
            .duration_ms(o.started.elapsed().as_millis() as u64)
            .attempt(o.attempt);
        if o.op == Operation::Confirm {
            // Lets the aggregator count cutoffs (attempt == max_attempts and failed).
            ctx = ctx.max_attempts(MAX_CONFIRM_ATTEMPTS);
        }
        if let Some(c) = code {
            ctx = ctx.error_code_str(c);
        }
        if let Some(m) = o.mode {
            ctx = ctx.strict_mode(ev_mode(m));
        }
        if let Some(v) = o.policy_version {
            ctx = ctx.policy_version(v);
        }
        if let Some(n) = o.tables {
            ctx = ctx.table_count(n as u16);
        }
        if let Some(p) = o.party {
            ctx = ctx.party_size(p);
        }
        if let Some(h) = o.hold {
            ctx = ctx.hold_id(h);
        }
        let severity = match outcome {
            Outcome::Error => Severity::Error,
            Outcome::Conflict | Outcome::Rejected => Severity::Warning,
            Outcome::Success => Severity::Info,
        };
        let mut ev = ObservabilityEvent::new(Source::HoldsApi, event).severity(severity).context(ctx);
        if let Some(r) = o.restaurant {
            ev = ev.restaurant(r);
        }
        if let Some(b) = o.booking {
            ev = ev.booking(b);
        }
        self.recorder.record(&ev).await;
    }

    /// Record the failure event matching `err` and hand the error back.
    async fn fail(&self, o: &Observed, err: HoldsError) -> HoldsError {
        let (event, outcome) = match &err {
            HoldsError::Conflict { .. } => (EventType::HoldConflict, Outcome::Conflict),
            HoldsError::MetadataIncomplete { .. } => (EventType::HoldMetadataRejected, Outcome::Rejected),
            e if e.is_fault() => (EventType::HoldFailed, Outcome::Error),
            _ => (EventType::HoldFailed, Outcome::Rejected),
        };
        if err.is_fault() {
            tracing::warn!(operation = ?o.op, code = err.code(), error = %err, "request failed");
        }
        self.record(o, event, outcome, Some(err.code())).await;
        err
    }

    async fn policy_of(
        &self,
        c: &impl deadpool_postgres::GenericClient,
        r: RestaurantId,
    ) -> Result<BookingPolicy, HoldsError> {
        store::current_policy(c, r).await?.ok_or(HoldsError::NotFound("restaurant"))
    }

    async fn alternatives(
        &self,
        restaurant: RestaurantId,
        policy: &BookingPolicy,
        flags: &FlagSet,
        req: &QuoteRequest,
        exclude: &[TableId],
        seated: Option<&Window>,
    ) -> Vec<allocator::Alternative> {
        let window = match seated {
            Some(w) => *w,
            None => match Window::new(req.start, req.start + chrono::Duration::hours(2)) {
                Ok(w) => w,
                Err(_) => return vec![],
            },
        };
        let busy = match self.pool.get().await {
            Ok(c) => store::busy(&c, restaurant, &window, None).await.unwrap_or_default(),
            Err(_) => vec![],
        };
        allocator::alternatives(policy, settings(flags), req, &busy, exclude, MAX_ALTERNATIVES)
    }

    // ------------------------------------------------------------------ quote
    pub async fn quote(&self, restaurant: RestaurantId, body: QuoteBody) -> Result<Answer, HoldsError> {
        let mut o = Observed::new(Operation::Quote);
        o.restaurant = Some(restaurant);
        o.party = Some(body.party_size);
        let r = self.quote_inner(&mut o, restaurant, body).await;
        match r {
            Ok(a) => {
                self.record(&o, EventType::QuoteCompleted, Outcome::Success, None).await;
                Ok(a)
            }
            Err(e) => Err(self.fail(&o, e).await),
        }
    }

    async fn quote_inner(
        &self,
        o: &mut Observed,
        restaurant: RestaurantId,
        body: QuoteBody,
    ) -> Result<Answer, HoldsError> {
        let party = dto::party("party_size", body.party_size).map_err(HoldsError::Invalid)?;
        let flags = self.flags.get().await.set;
        let c = self.pool.get().await.map_err(DbFault::from)?;
        let policy = self.policy_of(&c, restaurant).await?;
        o.policy_version = Some(policy.version);
        let req = QuoteRequest { party, start: body.start };
        let probe = Window::new(body.start, body.start + chrono::Duration::hours(4))
            .map_err(|_| HoldsError::NotFound("window"))?;
        let busy = store::busy(&c, restaurant, &probe, None).await?;
        drop(c);
        match allocator::quote(&policy, settings(&flags), &req, &busy) {
            Ok(sel) => {
                o.tables = Some(sel.table_ids.len());
                Ok((200, selection_json(restaurant, &sel)))
            }
            Err(QuoteRejection::NoTableAvailable) => {
                let alternatives =
                    allocator::alternatives(&policy, settings(&flags), &req, &busy, &[], MAX_ALTERNATIVES);
                Err(HoldsError::Conflict {
                    code: "no_table_available",
                    message: "no table fits this party at that time".into(),
                    alternatives,
                })
            }
            Err(rej) => Err(HoldsError::Rejected(rej)),
        }
    }

    // ------------------------------------------------------------------ hold
    pub async fn hold(&self, body: HoldBody, idem: Option<Idempotency>) -> Result<Answer, HoldsError> {
        let mut o = Observed::new(Operation::Hold);
        o.restaurant = Some(body.restaurant_id);
        o.party = Some(body.party_size);
        match self.hold_inner(&mut o, body, idem.as_ref()).await {
            Ok(a) => {
                self.record(&o, EventType::HoldCreated, Outcome::Success, None).await;
                Ok(a)
            }
            Err(e) => Err(self.fail(&o, e).await),
        }
    }

    async fn hold_inner(
        &self,
        o: &mut Observed,
        body: HoldBody,
        idem: Option<&Idempotency>,
    ) -> Result<Answer, HoldsError> {
        let party = dto::party("party_size", body.party_size).map_err(HoldsError::Invalid)?;
        let requested = body.table_ids.map(dto::table_list).transpose().map_err(HoldsError::Invalid)?;
        if let Some(replay) = self.replay(idem).await? {
            return Ok(replay);
        }
        self.require_enforcement().await?;
        let restaurant = body.restaurant_id;
        let flags = self.flags.get().await.set;
        let mode = rollout::strict_mode(flags.strict_conflicts(), flags.strict_rollout_percent(), restaurant);
        o.mode = Some(mode);
        let ttl = HoldTtl::from_secs(flags.hold_ttl_seconds()).unwrap_or(HoldTtl::DEFAULT);
        let req = QuoteRequest { party, start: body.start };

        let mut attempt = 0u8;
        loop {
            attempt += 1;
            o.attempt = attempt;
            let mut c = self.pool.get().await.map_err(DbFault::from)?;
            let policy = self.policy_of(&c, restaurant).await?;
            o.policy_version = Some(policy.version);
            let selection = match &requested {
                Some(tables) => {
                    allocator::select_tables(&policy, settings(&flags), &req, tables).map_err(|e| match e {
                        QuoteRejection::NoTableAvailable => {
                            HoldsError::Invalid(holdfast_adapters::http::Problem::validation(
                                "table_ids",
                                "these tables cannot seat this party under the current policy",
                            ))
                        }
                        other => HoldsError::Rejected(other),
                    })?
                }
                None => {
                    let probe = Window::new(req.start, req.start + chrono::Duration::hours(4))
                        .map_err(|_| HoldsError::NotFound("window"))?;
                    let busy = store::busy(&c, restaurant, &probe, None).await?;
                    match allocator::quote(&policy, settings(&flags), &req, &busy) {
                        Ok(s) => s,
                        Err(QuoteRejection::NoTableAvailable) => {
                            let alternatives =
                                allocator::alternatives(&policy, settings(&flags), &req, &busy, &[], MAX_ALTERNATIVES);
                            return Err(HoldsError::Conflict {
                                code: "no_table_available",
                                message: "no table fits this party at that time".into(),
                                alternatives,
                            });
                        }
                        Err(rej) => return Err(HoldsError::Rejected(rej)),
                    }
                }
            };
            o.tables = Some(selection.table_ids.len());
            let hold_id = HoldId::new_random();
            o.hold = Some(hold_id);
            let tables = uuids(&selection.table_ids);
            let snapshot = serde_json::to_value(&selection.snapshot).unwrap_or(Value::Null);

            let tx = c.transaction().await.map_err(DbFault::from)?;
            let result: Result<(Answer, bool), DbFault> = async {
                let expires_at = store::hold_write(
                    &tx,
                    &NewHold {
                        id: hold_id,
                        restaurant,
                        party_size: party.get() as i16,
                        seated: &selection.seated,
                        blocked: &selection.blocked,
                        status: HoldStatus::Held.as_str(),
                        strict_mode: mode.as_str(),
                        ttl_secs: ttl.as_secs() as i32,
                        expires_at: None,
                        policy_version: policy.version,
                        policy_hash: selection.policy_hash.as_str(),
                        table_ids: &tables,
                        snapshot: &snapshot,
                        booking_id: None,
                    },
                    mode == StrictMode::Enforced,
                )
                .await?;
                let shadow_conflict = mode == StrictMode::Shadow
                    && store::shadow_overlap(&tx, hold_id, &tables, &selection.blocked).await?;
                let answer = (201, hold_json(hold_id, restaurant, &selection, expires_at, mode));
                if let Some(i) = idem {
                    store::idempotency_save(&tx, &i.scope, &i.key, &i.request_hash, answer.0 as i16, &answer.1).await?;
                }
                Ok((answer, shadow_conflict))
            }
            .await;
            match result {
                Ok((answer, shadow_conflict)) => {
                    tx.commit().await.map_err(DbFault::from)?;
                    if shadow_conflict {
                        let mut so = Observed::new(Operation::Hold);
                        so.restaurant = Some(restaurant);
                        so.hold = Some(hold_id);
                        so.mode = Some(mode);
                        self.record(&so, EventType::HoldConflictShadow, Outcome::Conflict, Some("hold_conflict")).await;
                    }
                    return Ok(answer);
                }
                Err(DbFault::Exclusion { .. }) => {
                    drop(tx);
                    drop(c);
                    // A concurrent duplicate (same Idempotency-Key) that committed first took
                    // these tables: the retry gets the first response, not a conflict.
                    if let Some(first) = self.replay(idem).await? {
                        return Ok(first);
                    }
                    let alternatives = self
                        .alternatives(restaurant, &policy, &flags, &req, &selection.table_ids, Some(&selection.seated))
                        .await;
                    return Err(HoldsError::Conflict {
                        code: "hold_conflict",
                        message: "those tables are already held or booked for that time".into(),
                        alternatives,
                    });
                }
                Err(DbFault::Unique { constraint }) if constraint == "idempotency_keys_pkey" => {
                    drop(tx);
                    drop(c);
                    // A concurrent duplicate won; answer with its response.
                    return self.replay(idem).await?.ok_or(HoldsError::Db(DbFault::Serialization));
                }
                Err(DbFault::Serialization) if attempt < MAX_SERIALIZATION_RETRIES => continue,
                Err(DbFault::Serialization) => {
                    drop(tx);
                    drop(c);
                    if let Some(first) = self.replay(idem).await? {
                        return Ok(first);
                    }
                    return Err(HoldsError::Conflict {
                        code: "hold_conflict",
                        message: "the tables are contended; try another table or time".into(),
                        alternatives: vec![],
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn replay(&self, idem: Option<&Idempotency>) -> Result<Option<Answer>, HoldsError> {
        if idem.is_none() {
            return Ok(None);
        }
        let c = self.pool.get().await.map_err(DbFault::from)?;
        replay_on(&c, idem).await
    }

    // ------------------------------------------------------------------ confirm
    pub async fn confirm(
        &self,
        hold: HoldId,
        body: ConfirmBody,
        idem: Option<Idempotency>,
    ) -> Result<Answer, HoldsError> {
        let mut o = Observed::new(Operation::Confirm);
        o.hold = Some(hold);
        let r = self.confirm_inner(&mut o, hold, body, idem.as_ref()).await;
        match r {
            Ok((a, drift)) => {
                self.record(&o, EventType::HoldConfirmed, Outcome::Success, None).await;
                if drift {
                    self.record(&o, EventType::PolicyDriftRecovered, Outcome::Success, None).await;
                }
                Ok(a)
            }
            Err((e, drift)) => {
                if drift {
                    self.record(&o, EventType::PolicyDriftFailed, Outcome::Conflict, Some(e.code())).await;
                }
                Err(self.fail(&o, e).await)
            }
        }
    }

    /// Ok((answer, drift_recovered)) / Err((error, drift_failed)).
    async fn confirm_inner(
        &self,
        o: &mut Observed,
        hold_id: HoldId,
        body: ConfirmBody,
        idem: Option<&Idempotency>,
    ) -> Result<(Answer, bool), (HoldsError, bool)> {
        let guest = body.guest.parse().map_err(|p| (HoldsError::Invalid(p), false))?;
        if let Some(replay) = self.replay(idem).await.map_err(|e| (e, false))? {
            return Ok((replay, false));
        }
        self.require_enforcement().await.map_err(|e| (e, false))?;
        let flags = self.flags.get().await.set;
        let mut drifted = false;

        let mut attempts = Attempts::new();
        while let Some(attempt) = attempts.next() {
            o.attempt = attempt;
            let mut c = self.pool.get().await.map_err(|e| (DbFault::from(e).into(), drifted))?;
            let tx = c.transaction().await.map_err(|e| (DbFault::from(e).into(), drifted))?;
            let row = match store::lock_hold(&tx, hold_id).await {
                Ok(Some(r)) => r,
                Ok(None) => return Err((HoldsError::NotFound("hold"), false)),
                Err(e) => return Err((e.into(), drifted)),
            };
            // The row lock serialises duplicates: one that waited here for a first request with
            // the same Idempotency-Key to commit answers with that request's response.
            if let Some(first) = replay_on(&tx, idem).await.map_err(|e| (e, false))? {
                return Ok((first, false));
            }
            o.restaurant = Some(row.restaurant_id);
            o.party = Some(row.party_size as u16);
            o.mode = match row.strict_mode.as_str() {
                "shadow" => Some(StrictMode::Shadow),
                _ => Some(StrictMode::Enforced),
            };
            check_live(&row).map_err(|e| (e, drifted))?;
            let meta = HoldMetadata {
                policy_version: row.policy_version,
                policy_hash: row.policy_hash.clone(),
                table_ids: row.table_ids.iter().map(|u| TableId(*u)).collect(),
                selection_snapshot: row.selection_snapshot.clone(),
            };
            let meta =
                meta.require_complete().map_err(|m| (HoldsError::MetadataIncomplete { missing: m.missing }, false))?;
            let policy = self.policy_of(&tx, row.restaurant_id).await.map_err(|e| (e, drifted))?;
            o.policy_version = Some(policy.version);
            let current = policy.content_hash();
            let seated = Window::new(row.starts_at, row.ends_at)
                .map_err(|_| (HoldsError::Db(DbFault::Other("bad hold window".into())), false))?;
            let blocked = Window::new(row.blocked_start, row.blocked_end)
                .map_err(|_| (HoldsError::Db(DbFault::Other("bad hold window".into())), false))?;
            let booking = Uuid::new_v4();

            let outcome: Result<Answer, DbFault> = match Drift::check(&meta.policy_hash, &current) {
                Drift::None => {
                    o.tables = Some(row.table_ids.len());
                    async {
                        store::lock_tables(&tx, &row.table_ids).await?;
                        store::prune_expired(&tx, &row.table_ids, &blocked).await?;
                        store::deactivate_hold_claims(&tx, hold_id).await?;
                        self.write_booking(&tx, &row, booking, &seated, &guest).await?;
                        store::insert_claims(
                            &tx,
                            row.restaurant_id,
                            &row.table_ids,
                            &blocked,
                            ClaimKind::Booking { booking, hold: hold_id },
                        )
                        .await?;
                        store::set_hold_confirmed(&tx, hold_id, booking).await?;
                        outbox::enqueue(
                            &tx,
                            &EmailJob::for_booking(EmailType::BookingConfirmed, BookingId(booking)),
                            Utc::now(),
                        )
                        .await?;
                        let answer = (
                            200,
                            confirm_json(
                                booking,
                                hold_id,
                                None,
                                row.restaurant_id,
                                &row.table_ids,
                                &seated,
                                meta.policy_version,
                                false,
                                attempt,
                            ),
                        );
                        if let Some(i) = idem {
                            store::idempotency_save(&tx, &i.scope, &i.key, &i.request_hash, 200, &answer.1).await?;
                        }
                        Ok(answer)
                    }
                    .await
                }
                Drift::Drifted => {
                    drifted = true;
                    let party = match allocator::PartySize::new(row.party_size as u16) {
                        Ok(p) => p,
                        Err(_) => return Err((HoldsError::MetadataIncomplete { missing: vec!["party_size"] }, true)),
                    };
                    let req = QuoteRequest { party, start: row.starts_at };
                    let busy = match store::busy(&tx, row.restaurant_id, &seated, Some(hold_id)).await {
                        Ok(b) => b,
                        Err(e) => return Err((e.into(), true)),
                    };
                    match allocator::quote(&policy, settings(&flags), &req, &busy) {
                        Err(rej) => {
                            drop(tx);
                            drop(c);
                            let alternatives =
                                self.alternatives(row.restaurant_id, &policy, &flags, &req, &[], Some(&seated)).await;
                            let _ = rej;
                            return Err((
                                HoldsError::Conflict {
                                    code: "policy_drift_no_table",
                                    message: "the booking policy changed and no table fits under the new policy".into(),
                                    alternatives,
                                },
                                true,
                            ));
                        }
                        Ok(sel) => {
                            o.tables = Some(sel.table_ids.len());
                            self.requote_and_confirm(&tx, &row, booking, &sel, &policy, &guest, idem, attempt).await
                        }
                    }
                }
            };
            match outcome {
                Ok(answer) => {
                    if drifted {
                        // Ops hear about a drifted policy once per restaurant and version: the
                        // outbox's dedupe key absorbs every later drift of the same version, and
                        // writing it in this transaction means it cannot be lost.
                        let job = EmailJob::ops_policy_drift(row.restaurant_id, policy.version);
                        outbox::enqueue(&tx, &job, Utc::now()).await.map_err(|e| (e.into(), drifted))?;
                    }
                    tx.commit().await.map_err(|e| (DbFault::from(e).into(), drifted))?;
                    // Only now does the booking exist: failure events never name a rolled-back id.
                    o.booking = Some(BookingId(booking));
                    return Ok((answer, drifted));
                }
                Err(DbFault::Exclusion { .. }) if drifted && attempts.remaining() > 0 => continue,
                // A deadlock or serialization failure is retried within the same budget.
                Err(DbFault::Serialization) if attempts.remaining() > 0 => continue,
                Err(DbFault::Exclusion { .. }) | Err(DbFault::Serialization) => {
                    drop(tx);
                    drop(c);
                    let req = QuoteRequest {
                        party: dto::party("party_size", row.party_size as u16)
                            .map_err(|p| (HoldsError::Invalid(p), drifted))?,
                        start: row.starts_at,
                    };
                    let exclude: Vec<TableId> = row.table_ids.iter().map(|u| TableId(*u)).collect();
                    let alternatives =
                        self.alternatives(row.restaurant_id, &policy, &flags, &req, &exclude, Some(&seated)).await;
                    let code = if drifted { "policy_drift_exhausted" } else { "hold_conflict" };
                    return Err((
                        HoldsError::Conflict {
                            code,
                            message: "the tables were taken before the hold could be confirmed".into(),
                            alternatives,
                        },
                        drifted,
                    ));
                }
                Err(DbFault::Unique { constraint }) if constraint == "idempotency_keys_pkey" => {
                    drop(tx);
                    drop(c);
                    return self
                        .replay(idem)
                        .await
                        .map_err(|e| (e, false))?
                        .map(|a| (a, false))
                        .ok_or((HoldsError::Db(DbFault::Serialization), false));
                }
                Err(e) => return Err((e.into(), drifted)),
            }
        }
        Err((
            HoldsError::Conflict {
                code: "policy_drift_exhausted",
                message: "the booking policy kept changing; retry".into(),
                alternatives: vec![],
            },
            drifted,
        ))
    }

    async fn write_booking(
        &self,
        tx: &Transaction<'_>,
        row: &HoldRow,
        booking: Uuid,
        seated: &Window,
        guest: &dto::Guest,
    ) -> Result<(), DbFault> {
        store::insert_booking(
            tx,
            &NewBooking {
                id: booking,
                restaurant: row.restaurant_id,
                party_size: row.party_size,
                seated,
                guest_name: &guest.name,
                guest_email: &guest.email,
                guest_phone: guest.phone.as_deref(),
                guest_notes: guest.notes.as_deref(),
            },
        )
        .await
    }

    /// Drift recovery inside ONE transaction: the old hold is released and the new selection
    /// is booked together, so the guest never has two holds, nor none, and the old and new
    /// claims can never double-book.
    #[allow(clippy::too_many_arguments)]
    async fn requote_and_confirm(
        &self,
        tx: &Transaction<'_>,
        row: &HoldRow,
        booking: Uuid,
        sel: &Selection,
        policy: &BookingPolicy,
        guest: &dto::Guest,
        idem: Option<&Idempotency>,
        attempt: u8,
    ) -> Result<Answer, DbFault> {
        let new_hold = HoldId::new_random();
        let tables = uuids(&sel.table_ids);
        let snapshot = serde_json::to_value(&sel.snapshot).unwrap_or(Value::Null);
        store::lock_tables(tx, &tables).await?;
        store::deactivate_hold_claims(tx, row.id).await?;
        store::prune_expired(tx, &tables, &sel.blocked).await?;
        self.write_booking(tx, row, booking, &sel.seated, guest).await?;
        store::insert_hold(
            tx,
            &NewHold {
                id: new_hold,
                restaurant: row.restaurant_id,
                party_size: row.party_size,
                seated: &sel.seated,
                blocked: &sel.blocked,
                status: HoldStatus::Confirmed.as_str(),
                strict_mode: if row.strict_mode == "shadow" { "shadow" } else { "enforced" },
                ttl_secs: 0,
                expires_at: Some(row.expires_at),
                policy_version: policy.version,
                policy_hash: sel.policy_hash.as_str(),
                table_ids: &tables,
                snapshot: &snapshot,
                booking_id: Some(booking),
            },
        )
        .await?;
        store::set_hold_released(tx, row.id, Some(new_hold)).await?;
        store::insert_claims(
            tx,
            row.restaurant_id,
            &tables,
            &sel.blocked,
            ClaimKind::Booking { booking, hold: new_hold },
        )
        .await?;
        outbox::enqueue(tx, &EmailJob::for_booking(EmailType::BookingConfirmed, BookingId(booking)), Utc::now())
            .await?;
        let answer = (
            200,
            confirm_json(
                booking,
                new_hold,
                Some(row.id),
                row.restaurant_id,
                &tables,
                &sel.seated,
                policy.version,
                true,
                attempt,
            ),
        );
        if let Some(i) = idem {
            store::idempotency_save(tx, &i.scope, &i.key, &i.request_hash, 200, &answer.1).await?;
        }
        Ok(answer)
    }

    // ------------------------------------------------------------------ release
    pub async fn release(&self, hold: HoldId) -> Result<Answer, HoldsError> {
        let mut o = Observed::new(Operation::Release);
        o.hold = Some(hold);
        match self.release_inner(&mut o, hold).await {
            Ok(a) => {
                self.record(&o, EventType::HoldReleased, Outcome::Success, None).await;
                Ok(a)
            }
            Err(e) => Err(self.fail(&o, e).await),
        }
    }

    async fn release_inner(&self, o: &mut Observed, hold: HoldId) -> Result<Answer, HoldsError> {
        let mut c = self.pool.get().await.map_err(DbFault::from)?;
        let tx = c.transaction().await.map_err(DbFault::from)?;
        let row = store::lock_hold(&tx, hold).await?.ok_or(HoldsError::NotFound("hold"))?;
        o.restaurant = Some(row.restaurant_id);
        match HoldStatus::parse(&row.status).ok() {
            Some(HoldStatus::Confirmed) => {
                return Err(HoldsError::HoldNotLive { state: "confirmed", booking_id: row.booking_id });
            }
            Some(HoldStatus::Released) => {} // releasing twice is a no-op
            _ => {
                store::deactivate_hold_claims(&tx, hold).await?;
                store::set_hold_released(&tx, hold, None).await?;
            }
        }
        tx.commit().await.map_err(DbFault::from)?;
        Ok((200, json!({ "hold_id": hold, "state": "released" })))
    }

    // ------------------------------------------------------------------ get
    pub async fn get(&self, hold: HoldId) -> Result<Answer, HoldsError> {
        let c = self.pool.get().await.map_err(DbFault::from)?;
        let row = store::get_hold(&c, hold).await?.ok_or(HoldsError::NotFound("hold"))?;
        let state = HoldStatus::parse(&row.status)
            .ok()
            .map(|s| HoldState::at(s, row.expires_at, row.db_now))
            .map(HoldState::as_str)
            .unwrap_or("unknown");
        let missing = HoldMetadata {
            policy_version: row.policy_version,
            policy_hash: row.policy_hash.clone(),
            table_ids: row.table_ids.iter().map(|u| TableId(*u)).collect(),
            selection_snapshot: row.selection_snapshot.clone(),
        }
        .require_complete()
        .err()
        .map(|m| m.missing)
        .unwrap_or_default();
        Ok((
            200,
            json!({
                "hold_id": row.id,
                "restaurant_id": row.restaurant_id,
                "state": state,
                "party_size": row.party_size,
                "start": row.starts_at,
                "end": row.ends_at,
                "blocked_until": row.blocked_end,
                "expires_at": row.expires_at,
                "table_ids": row.table_ids,
                "strict_mode": row.strict_mode,
                "policy_version": row.policy_version,
                "policy_hash": row.policy_hash,
                "booking_id": row.booking_id,
                "replaced_by": row.replaced_by,
                "metadata_missing": missing,
            }),
        ))
    }
}

fn check_live(row: &HoldRow) -> Result<(), HoldsError> {
    let status =
        HoldStatus::parse(&row.status).ok().ok_or(HoldsError::Db(DbFault::Other("unknown hold status".into())))?;
    match HoldState::at(status, row.expires_at, row.db_now) {
        HoldState::Live => Ok(()),
        HoldState::Expired => Err(HoldsError::HoldExpired),
        HoldState::Confirmed => Err(HoldsError::HoldNotLive { state: "confirmed", booking_id: row.booking_id }),
        HoldState::Released => Err(HoldsError::HoldNotLive { state: "released", booking_id: None }),
    }
}

fn selection_json(restaurant: RestaurantId, s: &Selection) -> Value {
    json!({
        "restaurant_id": restaurant,
        "party_size": s.party.get(),
        "start": s.seated.start(),
        "end": s.seated.end(),
        "blocked_until": s.blocked.end(),
        "table_ids": s.table_ids,
        "policy_version": s.policy_version,
        "policy_hash": s.policy_hash,
        "selection_snapshot": s.snapshot,
    })
}

fn hold_json(
    hold: HoldId,
    restaurant: RestaurantId,
    s: &Selection,
    expires_at: chrono::DateTime<Utc>,
    mode: StrictMode,
) -> Value {
    json!({
        "hold_id": hold,
        "restaurant_id": restaurant,
        "state": "live",
        "party_size": s.party.get(),
        "start": s.seated.start(),
        "end": s.seated.end(),
        "blocked_until": s.blocked.end(),
        "expires_at": expires_at,
        "table_ids": s.table_ids,
        "strict_mode": mode.as_str(),
        "policy_version": s.policy_version,
        "policy_hash": s.policy_hash,
    })
}

#[allow(clippy::too_many_arguments)]
fn confirm_json(
    booking: Uuid,
    hold: HoldId,
    replaced: Option<HoldId>,
    restaurant: RestaurantId,
    tables: &[Uuid],
    seated: &Window,
    policy_version: i32,
    drift: bool,
    attempts: u8,
) -> Value {
    json!({
        "booking_id": booking,
        "hold_id": hold,
        "replaced_hold_id": replaced,
        "restaurant_id": restaurant,
        "status": "confirmed",
        "table_ids": tables,
        "start": seated.start(),
        "end": seated.end(),
        "policy_version": policy_version,
        "policy_drift": { "recovered": drift, "attempts": attempts },
    })
}
