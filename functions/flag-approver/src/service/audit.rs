//! Appending the audit trail: one row per change of a proposal, or per registry flag a refused
//! request named (a refused request has no proposal, yet who tried what must still be kept).

use super::{Caller, FlagApprover, ProposeInput};
use crate::error::ApproverError;
use crate::ssm::EnvFlags;
use crate::store::{self, AuditAction, AuditEntry, StoredProposal};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::{lookup, ChangeRefused};

impl FlagApprover {
    /// Audits a refused proposal or break-glass: one row per registry flag it names.
    pub(super) async fn audit_refusal(
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
}

/// The audit `detail` of a refusal: its code, and the rule ids for contradictions.
pub(super) fn refusal_detail(r: &ChangeRefused) -> String {
    match r {
        ChangeRefused::Contradiction { rule_ids, .. } => format!("{}: {}", r.code(), rule_ids.join(",")),
        other => other.code().to_string(),
    }
}

/// One audit row per change of the proposal (`before`: the proposal's, unless given per change).
pub(super) async fn audit_each<C: Sql>(
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
pub(super) async fn audit<C: Sql>(
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
