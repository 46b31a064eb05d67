//! The bake check: every open bake window of an environment against its SLO burn-rate alarms.
//! A window an alarm entered ALARM inside is decided at once: the change's old values go back
//! to SSM (audited `auto_reverted`), or, when the revert must not be written blindly, nothing is
//! written (audited `auto_revert_refused`); ops are notified either way (an event whose metric
//! has an alarm, and an error log line). A window that passed quietly is closed as `baked`.
//! The rules are `holdfast_shared::flags::{revert_trigger, plan_revert}` (pure).

use super::apply::lock_flags_of;
use super::{system, FlagApprover};
use crate::alarms::BurnAlarms;
use crate::error::ApproverError;
use crate::ssm::EnvFlags;
use crate::store::{self, AuditAction, AuditEntry, BakeOutcome, OpenBake, StoredProposal};
use chrono::{DateTime, SecondsFormat, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source};
use holdfast_shared::flags::{self, lookup, Environment, FiringAlarm};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;

/// What one bake check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BakeReport {
    /// Windows open when the check started.
    pub open: u32,
    /// Closed: passed without an alarm.
    pub baked: u32,
    pub reverted: u32,
    /// An alarm fired but the revert was not written (ops notified).
    pub refused: u32,
    /// Windows that could not be checked this time (SSM or the database failed): still open,
    /// checked again next run.
    pub failed: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// CloudWatch could not say which alarms fire: nothing was decided.
    #[error("burn-rate alarms unreadable: {0}")]
    Alarms(String),
    #[error(transparent)]
    Approver(#[from] ApproverError),
}

impl From<deadpool_postgres::PoolError> for BakeError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Approver(e.into())
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl FlagApprover {
    /// The bake check (scheduled; `now` is its clock) of `env`'s open windows against
    /// `alarms`. Idempotent: each window is decided once, under its row lock, so a second run
    /// (or a concurrent one) reverts nothing again. CloudWatch is asked only when a window is
    /// open.
    pub async fn check_bakes(
        &self,
        env: Environment,
        alarms: &BurnAlarms,
        now: DateTime<Utc>,
    ) -> Result<BakeReport, BakeError> {
        let open = store::open_bakes(&self.pool.get().await?, env).await?;
        let mut report = BakeReport { open: u32::try_from(open.len()).unwrap_or(u32::MAX), ..Default::default() };
        if open.is_empty() {
            return Ok(report);
        }
        let firing = alarms.firing().await.map_err(BakeError::Alarms)?;
        for id in open {
            match self.check_bake(id, &firing, now).await {
                Ok(Some(BakeOutcome::Baked)) => report.baked += 1,
                Ok(Some(BakeOutcome::Reverted)) => report.reverted += 1,
                Ok(Some(BakeOutcome::RevertRefused)) => report.refused += 1,
                Ok(None) => {}
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(proposal = %id, code = e.code(), error = %e, "bake check failed; retried next run");
                }
            }
        }
        Ok(report)
    }

    /// Decides one window, if it is due: `None` while it stays open (or another check has it).
    async fn check_bake(
        &self,
        id: ProposalId,
        firing: &[FiringAlarm],
        now: DateTime<Utc>,
    ) -> Result<Option<BakeOutcome>, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(bake) = store::lock_open_bake(&tx, id).await? else {
            return Ok(None);
        };
        let Some(alarm) = flags::revert_trigger(firing, bake.applied_at, bake.bake_until) else {
            if now <= bake.bake_until {
                return Ok(None);
            }
            store::decide_bake(&tx, id, BakeOutcome::Baked, now, None, None).await?;
            tx.commit().await?;
            tracing::info!(proposal = %id, env = %bake.env, "flag change baked; the bake window passed quietly");
            return Ok(Some(BakeOutcome::Baked));
        };
        let s = store::lock_proposal(&tx, id).await?;
        // The apply's locks: nothing else writes these flags until the decision commits.
        lock_flags_of(&tx, &s).await?;
        let current = self.ssm.read(bake.env).await.map_err(|e| {
            tracing::warn!(proposal = %id, error = %e, "bake check: SSM read failed");
            ApproverError::SsmUnavailable { status: None }
        })?;
        let stored = |f: &str| current.raw_value(f).map(|r| (r.value.clone(), r.version));
        let outcome = match flags::plan_revert(&s.proposal, &s.ssm_versions, &stored, &current.set) {
            Ok(plan) => {
                for w in plan.iter().filter(|w| !w.already) {
                    // A failed write leaves the window open (the transaction rolls back): the
                    // next check sees what is back already and finishes the revert.
                    self.ssm.restore(bake.env, w.def, w.value.as_deref()).await.map_err(|e| {
                        tracing::error!(proposal = %id, flag = w.def.name, error = %e, "automatic revert: SSM write failed");
                        ApproverError::SsmUnavailable { status: None }
                    })?;
                }
                let already = plan.iter().all(|w| w.already);
                let detail = format!(
                    "alarm {} entered ALARM at {}, inside the bake window (applied {}, until {}){}",
                    alarm.name,
                    stamp(alarm.since),
                    stamp(bake.applied_at),
                    stamp(bake.bake_until),
                    if already { "; already in SSM (earlier attempt)" } else { "" }
                );
                self.record_revert(&tx, &s, &bake, alarm, &current, Ok(&detail), now).await?;
                BakeOutcome::Reverted
            }
            Err(refused) => {
                let detail =
                    format!("{}; alarm {} entered ALARM at {}", refused.detail(), alarm.name, stamp(alarm.since));
                self.record_revert(&tx, &s, &bake, alarm, &current, Err((refused.code(), &detail)), now).await?;
                BakeOutcome::RevertRefused
            }
        };
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Decides the window, audits one row per change (actor `system`; `before` what SSM held
    /// when the alarm was acted on, `after` the value the revert puts back) and notifies ops.
    /// `result` is the revert's audit detail, or the refusal's code and detail.
    #[allow(clippy::too_many_arguments)] // private helper; each is one fact of the decision
    async fn record_revert<C: Sql>(
        &self,
        c: &C,
        s: &StoredProposal,
        bake: &OpenBake,
        alarm: &FiringAlarm,
        current: &EnvFlags,
        result: Result<&str, (&'static str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), ApproverError> {
        let (outcome, action, detail) = match result {
            Ok(d) => (BakeOutcome::Reverted, AuditAction::AutoReverted, d),
            Err((_, d)) => (BakeOutcome::RevertRefused, AuditAction::AutoRevertRefused, d),
        };
        store::decide_bake(c, s.proposal.id, outcome, now, Some(&alarm.name), Some(detail)).await?;
        let by = system(None);
        for ch in &s.proposal.changes {
            let def = lookup(&ch.flag);
            let before =
                current.raw_value(&ch.flag).map(|r| def.map_or_else(|| r.value.clone(), |d| d.display_raw(&r.value)));
            store::append_audit(
                c,
                &AuditEntry {
                    action,
                    proposal_id: Some(s.proposal.id),
                    actor: by.actor.as_str(),
                    flag: &ch.flag,
                    env: bake.env,
                    before,
                    after: ch.audit_old(),
                    reason: None,
                    request_id: None,
                    detail: Some(detail.to_owned()),
                },
            )
            .await?;
        }
        let ctx = EventContext::new().operation(Operation::FlagChange);
        let ev = match result {
            Ok(_) => ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsAutoReverted)
                .context(ctx.outcome(Outcome::Success).error_code_str("auto_reverted")),
            Err((code, _)) => ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsAutoRevertRefused)
                .severity(Severity::Error)
                .context(ctx.outcome(Outcome::Error).error_code_str(code)),
        };
        holdfast_adapters::events::record_with(c, &ev).await?;
        match result {
            Ok(_) => tracing::error!(
                proposal = %s.proposal.id, flags = ?s.proposal.flags(), env = %bake.env, alarm = %alarm.name,
                "flag change REVERTED automatically: a burn-rate alarm fired in its bake window \
                 (docs/runbooks/feature-flags.md#bake-and-automatic-revert)"
            ),
            Err((code, _)) => tracing::error!(
                proposal = %s.proposal.id, flags = ?s.proposal.flags(), env = %bake.env, alarm = %alarm.name, code,
                "automatic revert NOT written: decide by hand \
                 (docs/runbooks/feature-flags.md#bake-and-automatic-revert)"
            ),
        }
        Ok(())
    }
}
