//! The change workflow with its IO: validate against SSM, persist proposals, apply to SSM
//! (all changes of a proposal or none), append the audit log, run break-glass and its review,
//! bake applied prod changes and revert them when a burn-rate alarm fires.
//! The rules themselves are `holdfast_shared::flags` (pure). One file per use case; each reads
//! lock → domain decision → persist → audit → commit.

mod apply;
mod approve;
mod audit;
mod bake;
mod break_glass;
mod matrix;
mod propose;
mod reviews;
mod views;

pub use bake::{BakeError, BakeReport};
pub use matrix::{matrix, EnvSummary, FlagRow, Matrix, MatrixCell, ProblemView, ViolationView};
pub use reviews::SweepReport;
pub use views::{ChangeView, ProposalView, ReviewView};

use crate::error::ApproverError;
use crate::ssm::{EnvFlags, SsmFlags};
use crate::store::{self, AuditAction, AuditQuery, AuditRow, StoredProposal};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use holdfast_adapters::sql::Sql;
use holdfast_shared::events::EventContext;
use holdfast_shared::flags::{Actor, ChangeRequest, Environment};
use holdfast_shared::ids::ProposalId;

/// Who is acting, from the API Gateway authorizer, and the request id for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub request_id: Option<String>,
}

/// A proposal (or a break-glass) as asked for: one environment, one or more changes, a reason.
#[derive(Debug, Clone)]
pub struct ProposeInput {
    pub env: Environment,
    /// New values as raw strings (canonicalised by the registry).
    pub changes: Vec<ChangeRequest>,
    pub reason: String,
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

    pub async fn get(&self, id: ProposalId) -> Result<ProposalView, ApproverError> {
        let client = self.pool.get().await?;
        let s = store::get_proposal(&client, id).await?;
        let review = store::get_review(&client, id).await?;
        Ok(ProposalView::of(&s, review.as_ref(), Utc::now()))
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

    /// Persists and audits expiry of a live proposal past its deadline. Every step on a locked
    /// proposal asks this first, so an expired proposal is never approved or applied.
    async fn expire_if_due<C: Sql>(
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
        audit::audit(c, s, AuditAction::Expired, &system(Some(who)), None, Some("expired".into())).await?;
        tracing::info!(proposal = %s.proposal.id, "flag change expired");
        Ok(true)
    }
}

/// The actor recorded for steps nobody took explicitly (expiry, overdue reviews).
const SYSTEM_ACTOR: &str = "system";

fn system(who: Option<&Caller>) -> Caller {
    Caller {
        actor: Actor::new(SYSTEM_ACTOR).expect("a valid constant identity"),
        request_id: who.and_then(|w| w.request_id.clone()),
    }
}

fn with_request_id(ctx: EventContext, who: &Caller) -> EventContext {
    match who.request_id.as_deref().and_then(|r| uuid::Uuid::parse_str(r).ok()) {
        Some(id) => ctx.request_id(id),
        None => ctx,
    }
}
