//! Applying an approved proposal to SSM, all of its changes or none. SSM has no transactions or
//! conditional writes, so the all-or-nothing is ours: per-flag locks, a staleness check against
//! what SSM holds now, writes in order, and on a failed write the earlier ones restored.

use super::audit::{audit, audit_each, refusal_detail};
use super::{with_request_id, Caller, FlagApprover, ProposalView};
use crate::error::ApproverError;
use crate::ssm::EnvFlags;
use crate::store::{self, AuditAction, StoredProposal};
use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source};
use holdfast_shared::flags::{self, lookup, names, ChangeRefused, Environment, FlagDef, PlannedWrite, WorkflowError};
use holdfast_shared::ids::ProposalId;

/// How an apply attempt ended. The proposal row has been updated and audited in every case.
#[derive(Debug)]
pub(super) enum ApplyOutcome {
    Applied,
    /// SSM could not be read or written: nothing of the proposal is left in SSM (writes made
    /// were restored), the proposal is `apply_failed`, retriable.
    Failed,
    /// The change may no longer be written (stale base, new contradiction).
    Refused(ChangeRefused),
}

impl FlagApprover {
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

    /// Writes an approved proposal to SSM, all of its changes or none: after a failed write the
    /// ones already written are restored to their previous values. Runs in the caller's
    /// transaction with the proposal row locked; takes the per-flag locks (in name order) so
    /// applies touching one flag never interleave. Every outcome is persisted and audited
    /// before returning.
    pub(super) async fn apply_locked<C: Sql>(
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
        lock_flags_of(c, s).await?;
        // Read under the locks: the staleness check must see what SSM holds now.
        let current = match self.ssm.read(env).await {
            Ok(cur) => cur,
            Err(e) => {
                tracing::warn!(proposal = %s.proposal.id, error = %e, "apply: SSM read failed");
                return self.apply_failed(c, s, who, "ssm read failed".into()).await;
            }
        };
        let before = before_values(s, &current);
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
        match self.write_all(env, s, &plan, &current).await {
            Ok(versions) => {
                let detail =
                    if plan.iter().all(|w| w.already) { "already in SSM (earlier attempt)" } else { "written to SSM" };
                self.applied(c, s, who, now, &plan, versions, &before, detail).await
            }
            Err(detail) => self.apply_failed(c, s, who, detail).await,
        }
    }

    /// Writes the plan in order and returns each change's SSM version. On a failed write the
    /// earlier ones are restored and the error is the audit detail.
    async fn write_all(
        &self,
        env: Environment,
        s: &StoredProposal,
        plan: &[PlannedWrite],
        current: &EnvFlags,
    ) -> Result<Vec<Option<i64>>, String> {
        let mut versions: Vec<Option<i64>> = Vec::with_capacity(plan.len());
        // What each written flag held before, to restore it if a later write fails.
        let mut written: Vec<(&'static FlagDef, Option<String>)> = Vec::new();
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
                Err(e) => return Err(self.restore(env, s.proposal.id, w.def.name, &e, &written).await),
            }
        }
        Ok(versions)
    }

    /// Puts back what the `written` flags held, newest first, after the write of `flag` failed.
    /// Returns the audit detail (naming any flag that could not be restored).
    async fn restore(
        &self,
        env: Environment,
        id: ProposalId,
        flag: &str,
        error: &str,
        written: &[(&'static FlagDef, Option<String>)],
    ) -> String {
        tracing::warn!(proposal = %id, flag = %flag, error = %error, "apply: SSM write failed; restoring");
        let mut unrestored = Vec::new();
        for (def, previous) in written.iter().rev() {
            if let Err(e) = self.ssm.restore(env, def, previous.as_deref()).await {
                tracing::error!(proposal = %id, flag = def.name, error = %e,
                    "apply: could not restore a flag after a failed grouped write");
                unrestored.push(def.name);
            }
        }
        if unrestored.is_empty() {
            format!("ssm write failed at {flag}; {} earlier write(s) restored", written.len())
        } else {
            format!("ssm write failed at {flag}; NOT restored: {} (retry apply)", unrestored.join(","))
        }
    }

    #[allow(clippy::too_many_arguments)] // private helper; each is one fact of the audit rows
    async fn applied<C: Sql>(
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
        // A prod change bakes: a burn-rate alarm entering ALARM inside its window reverts it
        // (the scheduled `check_bakes`).
        if let Some(window) = flags::bake_window(&s.proposal) {
            store::insert_bake(c, s.proposal.id, s.proposal.env, now, now + window).await?;
        }
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

    async fn apply_failed<C: Sql>(
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

/// Takes the per-flag locks of every change (refusing a flag the registry no longer knows).
pub(super) async fn lock_flags_of<C: Sql>(c: &C, s: &StoredProposal) -> Result<(), ApproverError> {
    let flag_names: Vec<String> = s.proposal.changes.iter().map(|ch| ch.flag.clone()).collect();
    for f in &flag_names {
        if lookup(f).is_none() {
            return Err(ApproverError::Workflow(WorkflowError::UnknownFlag(f.clone())));
        }
    }
    let refs: Vec<&str> = flag_names.iter().map(String::as_str).collect();
    store::lock_flags(c, s.proposal.env, &refs).await
}

/// What SSM holds now for each change (redacted), for the audit rows' `before`.
fn before_values(s: &StoredProposal, current: &EnvFlags) -> Vec<Option<String>> {
    s.proposal
        .changes
        .iter()
        .map(|ch| {
            let def = lookup(&ch.flag);
            current.raw_value(&ch.flag).map(|r| def.map_or_else(|| r.value.clone(), |d| d.display_raw(&r.value)))
        })
        .collect()
}
