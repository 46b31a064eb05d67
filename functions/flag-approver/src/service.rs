//! The change workflow with its IO: validate against SSM, persist proposals, apply to SSM
//! (all changes of a proposal or none), append the audit log, run break-glass and its review.
//! The rules themselves are `holdfast_shared::flags` (pure).

use crate::error::ApproverError;
use crate::ssm::{EnvFlags, SsmFlags};
use crate::store::{self, AuditAction, AuditEntry, AuditQuery, AuditRow, StoredProposal, StoredReview};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source};
use holdfast_shared::flags::{
    self, lookup, names, Actor, ApprovalOutcome, ChangeRefused, ChangeRequest, Environment, FlagDef, PlannedWrite,
    ProposalStatus, Review, WorkflowError,
};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;
use std::collections::BTreeMap;

/// Who is acting, from the API Gateway authorizer, and the request id for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub request_id: Option<String>,
}

/// The actor recorded for steps nobody took explicitly (expiry, overdue reviews).
const SYSTEM_ACTOR: &str = "system";

fn system(who: Option<&Caller>) -> Caller {
    Caller {
        actor: Actor::new(SYSTEM_ACTOR).expect("a valid constant identity"),
        request_id: who.and_then(|w| w.request_id.clone()),
    }
}

/// A proposal (or a break-glass) as asked for: one environment, one or more changes, a reason.
#[derive(Debug, Clone)]
pub struct ProposeInput {
    pub env: Environment,
    /// New values as raw strings (canonicalised by the registry).
    pub changes: Vec<ChangeRequest>,
    pub reason: String,
}

/// One change of a proposal as the API shows it (values redacted for secret flags).
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub flag: String,
    /// The SSM value when proposed; `null` when the parameter was absent (default applied).
    pub before: Option<String>,
    pub after: String,
    pub ssm_version: Option<i64>,
}

/// A break-glass review as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub proposal_id: ProposalId,
    pub environment: Environment,
    /// Who broke glass.
    pub actor: String,
    pub reason: String,
    pub opened_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `open`, `overdue` or `acknowledged`, as of now.
    pub status: &'static str,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledgement: Option<String>,
}

impl ReviewView {
    pub fn of(r: &StoredReview, now: DateTime<Utc>) -> Self {
        let status = if r.review.acknowledged_at.is_some() {
            "acknowledged"
        } else if r.review.is_overdue(now) {
            "overdue"
        } else {
            "open"
        };
        Self {
            proposal_id: r.review.proposal_id,
            environment: r.review.env,
            actor: r.review.actor.to_string(),
            reason: r.reason.clone(),
            opened_at: r.review.opened_at,
            due_at: r.review.due_at,
            status,
            acknowledged_by: r.review.acknowledged_by.as_ref().map(ToString::to_string),
            acknowledged_at: r.review.acknowledged_at,
            acknowledgement: r.acknowledgement.clone(),
        }
    }
}

/// A proposal as the API shows it. Values go through the registry's redaction.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    pub id: ProposalId,
    /// The first change's flag, before and after (the single-flag shape, kept for clients of
    /// one-change proposals); `changes` lists them all.
    pub flag: String,
    pub environment: Environment,
    pub before: Option<String>,
    pub after: String,
    pub changes: Vec<ChangeView>,
    pub reason: String,
    pub proposer: String,
    pub approvals: Vec<String>,
    pub approvals_required: u8,
    pub approvals_missing: u8,
    pub rejected_by: Option<String>,
    /// As of now (a live proposal past `expires_at` shows `expired`).
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    /// The first change's SSM version (see `changes` for each).
    pub ssm_version: Option<i64>,
    /// Code of the last failed or refused apply, e.g. `ssm_unavailable`, `stale_proposal`.
    pub last_error: Option<String>,
    /// Applied by one ops member alone (kill switch); see `review`.
    pub break_glass: bool,
    pub review: Option<ReviewView>,
}

impl ProposalView {
    pub fn of(s: &StoredProposal, review: Option<&StoredReview>, now: DateTime<Utc>) -> Self {
        let p = &s.proposal;
        let required = p.approvals_required().unwrap_or(1);
        let have = u8::try_from(p.approvals.len()).unwrap_or(u8::MAX);
        let changes: Vec<ChangeView> = p
            .changes
            .iter()
            .enumerate()
            .map(|(i, c)| ChangeView {
                flag: c.flag.clone(),
                before: c.audit_old(),
                after: c.audit_new(),
                ssm_version: s.ssm_versions.get(i).copied().flatten(),
            })
            .collect();
        let first = changes.first().cloned().unwrap_or(ChangeView {
            flag: String::new(),
            before: None,
            after: String::new(),
            ssm_version: None,
        });
        Self {
            id: p.id,
            flag: first.flag,
            environment: p.env,
            before: first.before,
            after: first.after,
            ssm_version: first.ssm_version,
            changes,
            reason: s.reason.clone(),
            proposer: p.proposer.to_string(),
            approvals: p.approvals.iter().map(ToString::to_string).collect(),
            approvals_required: required,
            approvals_missing: required.saturating_sub(have),
            rejected_by: p.rejected_by.as_ref().map(ToString::to_string),
            status: p.status_at(now),
            created_at: p.created_at,
            expires_at: p.expires_at,
            applied_at: s.applied_at,
            last_error: s.last_error.clone(),
            break_glass: p.break_glass,
            review: review.map(|r| ReviewView::of(r, now)),
        }
    }
}

/// How an apply attempt ended. The proposal row has been updated and audited in every case.
#[derive(Debug)]
enum ApplyOutcome {
    Applied,
    /// SSM could not be read or written: nothing of the proposal is left in SSM (writes made
    /// were restored), the proposal is `apply_failed`, retriable.
    Failed,
    /// The change may no longer be written (stale base, new contradiction).
    Refused(ChangeRefused),
}

/// What one review sweep found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Unacknowledged reviews past their deadline (one `flags.review_overdue` event each).
    pub overdue: u32,
    /// Of those, found overdue for the first time (audited now).
    pub newly_overdue: u32,
}

pub struct FlagApprover {
    pool: Pool,
    ssm: SsmFlags,
}

impl FlagApprover {
    pub fn new(pool: Pool, ssm: SsmFlags) -> Self {
        Self { pool, ssm }
    }

    pub fn ssm(&self) -> &SsmFlags {
        &self.ssm
    }

    /// Validates the changes together against the target environment's flags as SSM holds
    /// them now, and opens one proposal for them. A refused change is audited (one row per
    /// registry flag named) and answered with the rule ids.
    pub async fn propose(&self, who: &Caller, input: ProposeInput) -> Result<ProposalView, ApproverError> {
        let env = input.env;
        let current = self.read_ssm(env).await?;
        let now = Utc::now();
        let result = empty_value_check(env, &input.changes).and_then(|()| {
            flags::propose_changes(
                &current.set,
                env,
                &input.changes,
                |f| current.raw_value(f).map(|r| r.value.clone()),
                who.actor.clone(),
                ProposalId::new_random(),
                now,
            )
        });
        let proposal = match result {
            Ok(p) => p,
            Err(refused) => {
                self.audit_refusal(AuditAction::ProposeRefused, who, &input, &current, &refused).await?;
                return Err(ApproverError::Refused(refused));
            }
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        store::insert_proposal(&tx, &proposal, &input.reason).await?;
        let stored = StoredProposal::new(proposal, input.reason);
        audit(&tx, &stored, AuditAction::Proposed, who, Some(&stored.reason), None).await?;
        tx.commit().await?;
        tracing::info!(proposal = %stored.proposal.id, flags = ?stored.proposal.flags(), env = %env, "flag change proposed");
        Ok(ProposalView::of(&stored, None, now))
    }

    /// Break-glass: one ops member turns kill switches off alone. Validated like a proposal
    /// (and refused unless every change is a kill switch turned off, or its reason), created
    /// approved, applied at once, audited as `break_glass`, recorded as a `flags.break_glass`
    /// event (which alarms) and opens a review that someone else must acknowledge within 24 h.
    /// The answer is the proposal (`applied`, or `apply_failed` when SSM is down: retry with
    /// `apply`), with its review.
    pub async fn break_glass(&self, who: &Caller, input: ProposeInput) -> Result<ProposalView, ApproverError> {
        let env = input.env;
        let current = self.read_ssm(env).await?;
        let now = Utc::now();
        let result = empty_value_check(env, &input.changes).and_then(|()| {
            flags::break_glass(
                &current.set,
                env,
                &input.changes,
                |f| current.raw_value(f).map(|r| r.value.clone()),
                who.actor.clone(),
                ProposalId::new_random(),
                now,
            )
        });
        let proposal = match result {
            Ok(p) => p,
            Err(refused) => {
                self.audit_refusal(AuditAction::BreakGlassRefused, who, &input, &current, &refused).await?;
                return Err(ApproverError::Refused(refused));
            }
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        store::insert_proposal(&tx, &proposal, &input.reason).await?;
        let review = Review::open(&proposal, now);
        store::insert_review(&tx, &review, &input.reason).await?;
        let mut s = StoredProposal::new(proposal, input.reason);
        audit(&tx, &s, AuditAction::BreakGlass, who, Some(&s.reason), Some("break-glass: review due in 24 h".into()))
            .await?;
        let ctx = with_request_id(EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Success), who);
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsBreakGlass).context(ctx);
        holdfast_adapters::events::record_with(&tx, &ev).await?;
        // Whatever the apply's outcome, it has been recorded: commit the break-glass with it.
        let _ = self.apply_locked(&tx, &mut s, who, now).await?;
        let stored_review = store::get_review(&tx, s.proposal.id).await?;
        tx.commit().await?;
        tracing::warn!(
            proposal = %s.proposal.id, flags = ?s.proposal.flags(), env = %env, status = %s.proposal.status,
            "BREAK-GLASS flag change by one person; review due in 24 h"
        );
        Ok(ProposalView::of(&s, stored_review.as_ref(), now))
    }

    /// Records an approval by someone other than the proposer; with enough approvals the
    /// changes are applied to SSM at once (same transaction, proposal row locked). The answer is
    /// the proposal: `applied`, `pending` (more approvals needed), `apply_failed` (SSM down;
    /// retry with `apply`) or `approved` with `last_error` (refused at apply, e.g. stale).
    pub async fn approve(
        &self,
        who: &Caller,
        id: ProposalId,
        reason: Option<String>,
    ) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        let outcome = match s.proposal.approve(who.actor.clone(), now) {
            Ok(o) => o,
            Err(e) => {
                audit(&tx, &s, AuditAction::ApproveRefused, who, reason.as_deref(), Some(e.code().to_string())).await?;
                tx.commit().await?;
                tracing::info!(proposal = %id, code = e.code(), "approval refused");
                return Err(ApproverError::Workflow(e));
            }
        };
        store::update_proposal(&tx, &mut s).await?;
        let detail = match outcome {
            ApprovalOutcome::NeedsMore(n) => format!("needs {n} more approval(s)"),
            ApprovalOutcome::ReadyToApply => "approved".to_string(),
        };
        audit(&tx, &s, AuditAction::Approved, who, reason.as_deref(), Some(detail)).await?;
        if outcome == ApprovalOutcome::ReadyToApply {
            // Whatever the apply's outcome, it has been recorded: commit the approval with it.
            let _ = self.apply_locked(&tx, &mut s, who, now).await?;
        }
        tx.commit().await?;
        tracing::info!(proposal = %id, status = %s.proposal.status, "flag change approved");
        Ok(ProposalView::of(&s, None, now))
    }

    /// Rejects a pending proposal or abandons an approved/failed one (stopping a change is
    /// always safe).
    pub async fn reject(&self, who: &Caller, id: ProposalId, reason: String) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        s.proposal.reject(who.actor.clone(), now).map_err(ApproverError::Workflow)?;
        store::update_proposal(&tx, &mut s).await?;
        audit(&tx, &s, AuditAction::Rejected, who, Some(&reason), None).await?;
        let review = store::get_review(&tx, id).await?;
        tx.commit().await?;
        tracing::info!(proposal = %id, "flag change rejected");
        Ok(ProposalView::of(&s, review.as_ref(), now))
    }

    /// (Re)tries writing an approved proposal to SSM: the retry path after `apply_failed`.
    pub async fn apply(&self, who: &Caller, id: ProposalId) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        let outcome = self.apply_locked(&tx, &mut s, who, now).await;
        let review = store::get_review(&tx, id).await?;
        tx.commit().await?;
        match outcome? {
            ApplyOutcome::Applied => Ok(ProposalView::of(&s, review.as_ref(), now)),
            ApplyOutcome::Failed => Err(ApproverError::SsmUnavailable { status: Some(s.proposal.status) }),
            ApplyOutcome::Refused(r) => Err(ApproverError::Refused(r)),
        }
    }

    pub async fn get(&self, id: ProposalId) -> Result<ProposalView, ApproverError> {
        let client = self.pool.get().await?;
        let s = store::get_proposal(&client, id).await?;
        let review = store::get_review(&client, id).await?;
        Ok(ProposalView::of(&s, review.as_ref(), Utc::now()))
    }

    /// Acknowledges the review of a break-glass proposal: someone other than the person who
    /// broke glass (compared as NFKC + case-folded subjects). Audited either way.
    pub async fn acknowledge(
        &self,
        who: &Caller,
        id: ProposalId,
        note: Option<String>,
    ) -> Result<ReviewView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut r = store::lock_review(&tx, id).await?;
        let s = store::get_proposal(&tx, id).await?;
        let now = Utc::now();
        if let Err(e) = r.review.acknowledge(who.actor.clone(), now) {
            audit(&tx, &s, AuditAction::AcknowledgeRefused, who, note.as_deref(), Some(e.code().to_string())).await?;
            tx.commit().await?;
            tracing::info!(proposal = %id, code = e.code(), "review acknowledgement refused");
            return Err(ApproverError::Workflow(e));
        }
        r.acknowledgement = note;
        store::acknowledge_review(&tx, &r).await?;
        let late = if r.review.due_at <= now { "acknowledged late" } else { "acknowledged" };
        audit(&tx, &s, AuditAction::ReviewAcknowledged, who, r.acknowledgement.as_deref(), Some(late.into())).await?;
        tx.commit().await?;
        tracing::info!(proposal = %id, "break-glass review acknowledged");
        Ok(ReviewView::of(&r, now))
    }

    /// Break-glass reviews, newest first (only unacknowledged ones when `open_only`).
    pub async fn reviews(&self, open_only: bool, limit: i64) -> Result<Vec<ReviewView>, ApproverError> {
        let client = self.pool.get().await?;
        let now = Utc::now();
        Ok(store::list_reviews(&client, open_only, limit).await?.iter().map(|r| ReviewView::of(r, now)).collect())
    }

    /// The review sweep (scheduled; `now` is its clock): every unacknowledged review past its
    /// deadline records a `flags.review_overdue` event, on every sweep until acknowledged, so
    /// the `FlagReviewsOverdue` metric stays non-zero and its alarm stays raised. The first time
    /// a review is found overdue is also audited (`review_overdue`).
    pub async fn sweep_reviews(&self, now: DateTime<Utc>) -> Result<SweepReport, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let overdue = store::lock_overdue_reviews(&tx, now).await?;
        let mut report = SweepReport { overdue: 0, newly_overdue: 0 };
        let by = system(None);
        for r in &overdue {
            report.overdue += 1;
            let ctx = EventContext::new()
                .operation(Operation::FlagChange)
                .outcome(Outcome::Error)
                .error_code_str("review_overdue");
            let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsReviewOverdue)
                .severity(Severity::Error)
                .context(ctx);
            holdfast_adapters::events::record_with(&tx, &ev).await?;
            if r.overdue_recorded_at.is_none() {
                report.newly_overdue += 1;
                store::mark_overdue_recorded(&tx, r.review.proposal_id, now).await?;
                let s = store::get_proposal(&tx, r.review.proposal_id).await?;
                let detail = format!("review due {} not acknowledged", r.review.due_at.format("%Y-%m-%dT%H:%M:%SZ"));
                audit(&tx, &s, AuditAction::ReviewOverdue, &by, None, Some(detail)).await?;
            }
            tracing::error!(proposal = %r.review.proposal_id, env = %r.review.env, due_at = %r.review.due_at,
                "break-glass review overdue: acknowledge it (docs/runbooks/feature-flags.md#break-glass-review-overdue)");
        }
        tx.commit().await?;
        Ok(report)
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, ApproverError> {
        let client = self.pool.get().await?;
        store::read_audit(&client, q).await
    }

    /// The effective matrix (see [`matrix`]).
    pub async fn matrix(&self) -> Matrix {
        matrix(&self.ssm).await
    }

    async fn read_ssm(&self, env: Environment) -> Result<EnvFlags, ApproverError> {
        self.ssm.read(env).await.map_err(|e| {
            tracing::warn!(env = %env, error = %e, "SSM read failed");
            ApproverError::SsmUnavailable { status: None }
        })
    }

    /// Audits a refused proposal or break-glass: one row per registry flag it names.
    async fn audit_refusal(
        &self,
        action: AuditAction,
        who: &Caller,
        input: &ProposeInput,
        current: &EnvFlags,
        refused: &ChangeRefused,
    ) -> Result<(), ApproverError> {
        let client = self.pool.get().await?;
        for ch in &input.changes {
            let Some(def) = lookup(&ch.flag) else { continue };
            let after = def.parse(&ch.value).ok().map(|v| def.display_value(&v));
            store::append_audit(
                &client,
                &AuditEntry {
                    action,
                    proposal_id: None,
                    actor: who.actor.as_str(),
                    flag: def.name,
                    env: input.env,
                    before: current.raw_value(def.name).map(|r| def.display_raw(&r.value)),
                    after,
                    reason: Some(&input.reason),
                    request_id: who.request_id.as_deref(),
                    detail: Some(refusal_detail(refused)),
                },
            )
            .await?;
        }
        tracing::info!(env = %input.env, code = refused.code(), action = action.as_str(), "flag change refused");
        Ok(())
    }

    /// Persists and audits expiry of a live proposal past its deadline.
    async fn expire_if_due<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        now: DateTime<Utc>,
        who: &Caller,
    ) -> Result<bool, ApproverError> {
        if !s.proposal.expire_if_due(now) {
            return Ok(false);
        }
        store::update_proposal(c, s).await?;
        audit(c, s, AuditAction::Expired, &system(Some(who)), None, Some("expired".into())).await?;
        tracing::info!(proposal = %s.proposal.id, "flag change expired");
        Ok(true)
    }

    /// Writes an approved proposal to SSM, all of its changes or none: after a failed write the
    /// ones already written are restored to their previous values. Runs in the caller's
    /// transaction with the proposal row locked; takes the per-flag locks (in name order) so
    /// applies touching one flag never interleave. Every outcome is persisted and audited
    /// before returning.
    async fn apply_locked<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        now: DateTime<Utc>,
    ) -> Result<ApplyOutcome, ApproverError> {
        if let Err(e) = s.proposal.check_can_apply(now) {
            audit(c, s, AuditAction::ApplyRefused, who, None, Some(e.code().to_string())).await?;
            return Err(ApproverError::Workflow(e));
        }
        let env = s.proposal.env;
        let flag_names: Vec<String> = s.proposal.changes.iter().map(|ch| ch.flag.clone()).collect();
        for f in &flag_names {
            if lookup(f).is_none() {
                return Err(ApproverError::Workflow(WorkflowError::UnknownFlag(f.clone())));
            }
        }
        let refs: Vec<&str> = flag_names.iter().map(String::as_str).collect();
        store::lock_flags(c, env, &refs).await?;
        let current = match self.ssm.read(env).await {
            Ok(cur) => cur,
            Err(e) => {
                tracing::warn!(proposal = %s.proposal.id, error = %e, "apply: SSM read failed");
                return self.apply_failed(c, s, who, "ssm read failed".into()).await;
            }
        };
        let before: Vec<Option<String>> = s
            .proposal
            .changes
            .iter()
            .map(|ch| {
                let def = lookup(&ch.flag);
                current.raw_value(&ch.flag).map(|r| def.map_or_else(|| r.value.clone(), |d| d.display_raw(&r.value)))
            })
            .collect();
        let plan = match s.proposal.plan_apply(&current.set) {
            Ok(plan) => plan,
            Err(refused) => {
                s.last_error = Some(refused.code().to_string());
                store::update_proposal(c, s).await?;
                audit_each(c, s, AuditAction::ApplyRefused, who, None, Some(refusal_detail(&refused)), &before).await?;
                tracing::info!(proposal = %s.proposal.id, code = refused.code(), "apply refused");
                return Ok(ApplyOutcome::Refused(refused));
            }
        };
        // Write in order; remember what each flag held, to restore it if a later write fails.
        let mut versions: Vec<Option<i64>> = Vec::with_capacity(plan.len());
        let mut written: Vec<(&'static FlagDef, Option<String>)> = Vec::new();
        let mut failure: Option<(String, String)> = None;
        for (w, ch) in plan.iter().zip(&s.proposal.changes) {
            let previous = current.raw_value(w.def.name).map(|r| r.value.clone());
            if w.already {
                versions.push(current.raw_value(w.def.name).map(|r| r.version));
                // Written by an earlier attempt: on failure it goes back to the proposal's "before".
                written.push((w.def, ch.old_raw.clone()));
                continue;
            }
            match self.ssm.put(env, w.def, &w.value.to_ssm_string()).await {
                Ok(v) => {
                    versions.push(v);
                    written.push((w.def, previous));
                }
                Err(e) => {
                    failure = Some((w.def.name.to_string(), e));
                    break;
                }
            }
        }
        if let Some((flag, error)) = failure {
            tracing::warn!(proposal = %s.proposal.id, flag = %flag, error = %error, "apply: SSM write failed; restoring");
            let mut unrestored = Vec::new();
            for (def, previous) in written.iter().rev() {
                if let Err(e) = self.ssm.restore(env, def, previous.as_deref()).await {
                    tracing::error!(proposal = %s.proposal.id, flag = def.name, error = %e,
                        "apply: could not restore a flag after a failed grouped write");
                    unrestored.push(def.name);
                }
            }
            let detail = if unrestored.is_empty() {
                format!("ssm write failed at {flag}; {} earlier write(s) restored", written.len())
            } else {
                format!("ssm write failed at {flag}; NOT restored: {} (retry apply)", unrestored.join(","))
            };
            return self.apply_failed(c, s, who, detail).await;
        }
        let detail = if plan.iter().all(|w| w.already) { "already in SSM (earlier attempt)" } else { "written to SSM" };
        self.applied(c, s, who, now, &plan, versions, &before, detail).await
    }

    #[allow(clippy::too_many_arguments)] // private helper; each is one fact of the audit rows
    async fn applied<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        now: DateTime<Utc>,
        plan: &[PlannedWrite],
        versions: Vec<Option<i64>>,
        before: &[Option<String>],
        detail: &str,
    ) -> Result<ApplyOutcome, ApproverError> {
        s.proposal.mark_applied().map_err(ApproverError::Workflow)?;
        s.applied_at = Some(now);
        s.ssm_versions = versions;
        s.last_error = None;
        store::update_proposal(c, s).await?;
        audit_each(c, s, AuditAction::Applied, who, None, Some(detail.to_string()), before).await?;
        let mut ctx = EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Success);
        ctx = with_request_id(ctx, who);
        if let Some(w) = plan.iter().find(|w| w.def.name == names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT) {
            if let Some(pct) = w.value.as_int() {
                ctx = ctx.rollout_percent(u8::try_from(pct).unwrap_or(100));
            }
        }
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsChanged).context(ctx);
        holdfast_adapters::events::record_with(c, &ev).await?;
        tracing::info!(proposal = %s.proposal.id, flags = ?s.proposal.flags(), env = %s.proposal.env, "flag change applied");
        Ok(ApplyOutcome::Applied)
    }

    async fn apply_failed<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        detail: String,
    ) -> Result<ApplyOutcome, ApproverError> {
        s.proposal.mark_apply_failed().map_err(ApproverError::Workflow)?;
        s.last_error = Some("ssm_unavailable".into());
        store::update_proposal(c, s).await?;
        audit(c, s, AuditAction::ApplyFailed, who, None, Some(format!("ssm_unavailable: {detail}"))).await?;
        let ctx = EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Error);
        let ctx = with_request_id(ctx.error_code_str("ssm_unavailable"), who);
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsChanged)
            .severity(Severity::Warning)
            .context(ctx);
        holdfast_adapters::events::record_with(c, &ev).await?;
        tracing::warn!(proposal = %s.proposal.id, flags = ?s.proposal.flags(), "flag change approved but not applied; retriable");
        Ok(ApplyOutcome::Failed)
    }
}

/// The effective value of every flag in every environment, with defaults, where each value
/// comes from, and the rules each environment's set breaks. An environment whose SSM read
/// fails is reported as unavailable (the others are still shown).
pub async fn matrix(ssm: &SsmFlags) -> Matrix {
    let (dev, staging, prod) =
        tokio::join!(ssm.read(Environment::Dev), ssm.read(Environment::Staging), ssm.read(Environment::Prod));
    let reads = [(Environment::Dev, dev), (Environment::Staging, staging), (Environment::Prod, prod)];
    let mut environments = Vec::new();
    let mut cells: BTreeMap<&'static str, BTreeMap<Environment, MatrixCell>> = BTreeMap::new();
    for (env, read) in reads {
        match read {
            Ok(current) => {
                environments.push(EnvSummary {
                    environment: env,
                    prefix: ssm.prefix(env),
                    ssm: "ok",
                    violations: flags::check(&current.set, env)
                        .into_iter()
                        .map(|v| ViolationView { rule_id: v.rule_id, severity: v.severity.as_str(), title: v.title })
                        .collect(),
                    problems: current
                        .problems
                        .iter()
                        .map(|p| ProblemView { code: p.code(), message: p.to_string() })
                        .collect(),
                });
                for (def, value) in current.set.iter() {
                    let source = match current.raw_value(def.name) {
                        None => "default",
                        Some(r) if def.parse(&r.value).is_ok() => "ssm",
                        Some(_) => "invalid",
                    };
                    cells.entry(def.name).or_default().insert(
                        env,
                        MatrixCell {
                            value: Some(def.display_value(value)),
                            default: def.display_value(&def.default_for(env)),
                            source,
                        },
                    );
                }
            }
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "matrix: SSM read failed");
                environments.push(EnvSummary {
                    environment: env,
                    prefix: ssm.prefix(env),
                    ssm: "unavailable",
                    violations: vec![],
                    problems: vec![],
                });
                for def in flags::REGISTRY {
                    cells.entry(def.name).or_default().insert(
                        env,
                        MatrixCell {
                            value: None,
                            default: def.display_value(&def.default_for(env)),
                            source: "unavailable",
                        },
                    );
                }
            }
        }
    }
    let flags = flags::REGISTRY
        .iter()
        .map(|def| FlagRow {
            name: def.name,
            r#type: def.ty.describe(),
            safety: def.safety.as_str(),
            owner: def.owner,
            secret: def.is_secret(),
            values: cells.remove(def.name).unwrap_or_default(),
        })
        .collect();
    Matrix { generated_at: Utc::now(), environments, flags }
}

fn with_request_id(ctx: EventContext, who: &Caller) -> EventContext {
    match who.request_id.as_deref().and_then(|r| uuid::Uuid::parse_str(r).ok()) {
        Some(id) => ctx.request_id(id),
        None => ctx,
    }
}

/// SSM cannot store an empty string: an empty value is written by deleting the parameter,
/// which is only right when the default is empty too.
fn empty_value_check(env: Environment, changes: &[ChangeRequest]) -> Result<(), ChangeRefused> {
    for ch in changes {
        let Some(def) = lookup(&ch.flag) else { continue }; // validation reports it
        let Ok(value) = def.parse(&ch.value) else { continue }; // the type check reports it
        if value.to_ssm_string().is_empty() && !def.default_for(env).to_ssm_string().is_empty() {
            return Err(ChangeRefused::InvalidValue(holdfast_shared::flags::FlagValueError {
                flag: def.name,
                expected: "a non-empty value (this flag's default is not empty)".into(),
                found: "an empty value".into(),
            }));
        }
    }
    Ok(())
}

/// The audit `detail` of a refusal: its code, and the rule ids for contradictions.
fn refusal_detail(r: &ChangeRefused) -> String {
    match r {
        ChangeRefused::Contradiction { rule_ids, .. } => format!("{}: {}", r.code(), rule_ids.join(",")),
        other => other.code().to_string(),
    }
}

/// One audit row per change of the proposal (`before`: the proposal's, unless given per change).
async fn audit_each<C: GenericClient>(
    c: &C,
    s: &StoredProposal,
    action: AuditAction,
    who: &Caller,
    reason: Option<&str>,
    detail: Option<String>,
    before: &[Option<String>],
) -> Result<(), ApproverError> {
    let p = &s.proposal;
    for (i, ch) in p.changes.iter().enumerate() {
        store::append_audit(
            c,
            &AuditEntry {
                action,
                proposal_id: Some(p.id),
                actor: who.actor.as_str(),
                flag: &ch.flag,
                env: p.env,
                before: before.get(i).cloned().unwrap_or_else(|| ch.audit_old()),
                after: Some(ch.audit_new()),
                reason,
                request_id: who.request_id.as_deref(),
                detail: detail.clone(),
            },
        )
        .await?;
    }
    Ok(())
}

/// One audit row per change, with the proposal's own before/after.
async fn audit<C: GenericClient>(
    c: &C,
    s: &StoredProposal,
    action: AuditAction,
    who: &Caller,
    reason: Option<&str>,
    detail: Option<String>,
) -> Result<(), ApproverError> {
    let before: Vec<Option<String>> = s.proposal.changes.iter().map(|ch| ch.audit_old()).collect();
    audit_each(c, s, action, who, reason, detail, &before).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub generated_at: DateTime<Utc>,
    pub environments: Vec<EnvSummary>,
    pub flags: Vec<FlagRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvSummary {
    pub environment: Environment,
    pub prefix: String,
    /// `ok` or `unavailable`.
    pub ssm: &'static str,
    pub violations: Vec<ViolationView>,
    pub problems: Vec<ProblemView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationView {
    pub rule_id: &'static str,
    pub severity: &'static str,
    pub title: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemView {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagRow {
    pub name: &'static str,
    pub r#type: String,
    pub safety: &'static str,
    pub owner: &'static str,
    pub secret: bool,
    pub values: BTreeMap<Environment, MatrixCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    /// The effective value (redacted for secret flags); `null` when SSM was unavailable.
    pub value: Option<String>,
    pub default: String,
    /// `ssm` (set and valid), `default` (not set), `invalid` (set but invalid: the default
    /// applies) or `unavailable`.
    pub source: &'static str,
}
