//! Proposing a change: validate it against the target environment as SSM holds it now, then
//! open one proposal that others must approve.

use super::audit::audit;
use super::{Caller, FlagApprover, ProposalView, ProposeInput};
use crate::error::ApproverError;
use crate::store::{self, AuditAction, StoredProposal};
use chrono::DateTime;
use chrono::Utc;
use holdfast_shared::flags::{
    self, lookup, Actor, ChangeRefused, ChangeRequest, Environment, FlagSet, FlagValueError, Proposal,
};
use holdfast_shared::ids::ProposalId;

/// A workflow rule that turns requested changes into a proposal (`flags::propose_changes`,
/// `flags::break_glass`), or refuses them.
pub(super) type Rule = fn(
    &FlagSet,
    Environment,
    &[ChangeRequest],
    &dyn Fn(&str) -> Option<String>,
    Actor,
    ProposalId,
    DateTime<Utc>,
) -> Result<Proposal, ChangeRefused>;

impl FlagApprover {
    /// Read the environment's flags as SSM holds them now and let `rule` decide on `input`. A
    /// refusal is audited as `refused` (one row per registry flag named) and answered with its
    /// rule ids. The proposal comes back with the instant it was decided at.
    pub(super) async fn decide(
        &self,
        who: &Caller,
        input: &ProposeInput,
        rule: Rule,
        refused: AuditAction,
    ) -> Result<(Proposal, DateTime<Utc>), ApproverError> {
        let (env, now) = (input.env, Utc::now());
        let current = self.read_ssm(env).await?;
        let old_raw = |f: &str| current.raw_value(f).map(|r| r.value.clone());
        let result = empty_value_check(env, &input.changes).and_then(|()| {
            rule(&current.set, env, &input.changes, &old_raw, who.actor.clone(), ProposalId::new_random(), now)
        });
        match result {
            Ok(p) => Ok((p, now)),
            Err(refusal) => {
                self.audit_refusal(refused, who, input, &current, &refusal).await?;
                Err(ApproverError::Refused(refusal))
            }
        }
    }

    /// Validates the changes together against the target environment's flags as SSM holds
    /// them now, and opens one proposal for them. A refused change is audited (one row per
    /// registry flag named) and answered with the rule ids.
    pub async fn propose(&self, who: &Caller, input: ProposeInput) -> Result<ProposalView, ApproverError> {
        let env = input.env;
        let rule: Rule = |set, env, changes, old_raw, actor, id, now| {
            flags::propose_changes(set, env, changes, old_raw, actor, id, now)
        };
        let (proposal, now) = self.decide(who, &input, rule, AuditAction::ProposeRefused).await?;
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
