//! `flag_bakes`: the bake window of each applied prod change, and its outcome, decided once
//! under the row lock.

use super::env_of;
use crate::error::ApproverError;
use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::Environment;
use holdfast_shared::ids::ProposalId;
use serde::Serialize;

/// How a bake window ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BakeOutcome {
    /// The window passed without a burn-rate alarm entering ALARM: the change stays.
    Baked,
    /// An alarm entered ALARM inside the window: the old values are back in SSM.
    Reverted,
    /// An alarm entered ALARM inside the window, but the revert was not written.
    RevertRefused,
}

impl BakeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baked => "baked",
            Self::Reverted => "reverted",
            Self::RevertRefused => "revert_refused",
        }
    }
}

/// An open bake window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBake {
    pub proposal_id: ProposalId,
    pub env: Environment,
    pub applied_at: DateTime<Utc>,
    pub bake_until: DateTime<Utc>,
}

/// Opens the bake window of a change just applied (in the apply's transaction). An apply is
/// recorded once, so a second insert for one proposal is a no-op.
pub async fn insert_bake<C: Sql>(
    c: &C,
    id: ProposalId,
    env: Environment,
    applied_at: DateTime<Utc>,
    bake_until: DateTime<Utc>,
) -> Result<(), ApproverError> {
    c.run(
        "INSERT INTO flag_bakes (proposal_id, environment, applied_at, bake_until) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (proposal_id) DO NOTHING",
        &[&id.as_uuid(), &env.as_str(), &applied_at, &bake_until],
    )
    .await?;
    Ok(())
}

/// The proposals of `env` whose window is still open, newest first (reverts undo the latest
/// change first, as a stack).
pub async fn open_bakes<C: Sql>(c: &C, env: Environment) -> Result<Vec<ProposalId>, ApproverError> {
    let rows = c
        .fetch(
            "SELECT proposal_id FROM flag_bakes WHERE environment = $1 AND outcome IS NULL \
             ORDER BY applied_at DESC, proposal_id",
            &[&env.as_str()],
        )
        .await?;
    Ok(rows.iter().map(|r| ProposalId(r.get(0))).collect())
}

/// Locks an open window for the rest of the transaction; `None` when it is decided already or
/// another check holds it (that check decides it).
pub async fn lock_open_bake<C: Sql>(c: &C, id: ProposalId) -> Result<Option<OpenBake>, ApproverError> {
    let row = c
        .fetch_opt(
            "SELECT proposal_id, environment, applied_at, bake_until FROM flag_bakes \
             WHERE proposal_id = $1 AND outcome IS NULL FOR UPDATE SKIP LOCKED",
            &[&id.as_uuid()],
        )
        .await?;
    row.map(|r| {
        let env: String = r.get("environment");
        Ok(OpenBake {
            proposal_id: ProposalId(r.get("proposal_id")),
            env: env_of(&env)?,
            applied_at: r.get("applied_at"),
            bake_until: r.get("bake_until"),
        })
    })
    .transpose()
}

/// Records how a locked open window ended.
pub async fn decide_bake<C: Sql>(
    c: &C,
    id: ProposalId,
    outcome: BakeOutcome,
    at: DateTime<Utc>,
    alarm: Option<&str>,
    detail: Option<&str>,
) -> Result<(), ApproverError> {
    let n = c
        .run(
            "UPDATE flag_bakes SET outcome = $2, decided_at = $3, alarm = $4, detail = $5 \
             WHERE proposal_id = $1 AND outcome IS NULL",
            &[&id.as_uuid(), &outcome.as_str(), &at, &alarm, &detail],
        )
        .await?;
    if n != 1 {
        return Err(ApproverError::ConcurrentUpdate);
    }
    Ok(())
}

/// A bake window as read back (`outcome` `None` while open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakeRow {
    pub applied_at: DateTime<Utc>,
    pub bake_until: DateTime<Utc>,
    pub outcome: Option<String>,
    pub alarm: Option<String>,
    pub detail: Option<String>,
}

pub async fn get_bake<C: Sql>(c: &C, id: ProposalId) -> Result<Option<BakeRow>, ApproverError> {
    let row = c
        .fetch_opt(
            "SELECT applied_at, bake_until, outcome, alarm, detail FROM flag_bakes WHERE proposal_id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    Ok(row.map(|r| BakeRow {
        applied_at: r.get("applied_at"),
        bake_until: r.get("bake_until"),
        outcome: r.get("outcome"),
        alarm: r.get("alarm"),
        detail: r.get("detail"),
    }))
}
