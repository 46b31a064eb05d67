//! Proposing a change: validate it against the target environment as SSM holds it now, then
//! open one proposal that others must approve.

use super::audit::audit;
use super::{Caller, FlagApprover, ProposalView, ProposeInput};
use crate::error::ApproverError;
use crate::store::{self, AuditAction, StoredProposal};
use chrono::Utc;
use holdfast_shared::flags::{self, lookup, ChangeRefused, ChangeRequest, Environment, FlagValueError};
use holdfast_shared::ids::ProposalId;

impl FlagApprover {
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
}

/// SSM cannot store an empty string: an empty value is written by deleting the parameter,
/// which is only right when the default is empty too.
pub(super) fn empty_value_check(env: Environment, changes: &[ChangeRequest]) -> Result<(), ChangeRefused> {
    for ch in changes {
        let Some(def) = lookup(&ch.flag) else { continue }; // validation reports it
        let Ok(value) = def.parse(&ch.value) else { continue }; // the type check reports it
        if value.to_ssm_string().is_empty() && !def.default_for(env).to_ssm_string().is_empty() {
            return Err(ChangeRefused::InvalidValue(FlagValueError {
                flag: def.name,
                expected: "a non-empty value (this flag's default is not empty)".into(),
                found: "an empty value".into(),
            }));
        }
    }
    Ok(())
}
