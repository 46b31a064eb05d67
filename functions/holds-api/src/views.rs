//! Views: a hold as its owner sees it, with its effective state (expiry judged by the
//! database's clock) and any metadata it lacks.

use crate::error::HoldsError;
use crate::outcome::HoldView;
use crate::service::{may_act_on, HoldsService};
use crate::store;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::hold::HoldState;
use holdfast_shared::ids::HoldId;

impl HoldsService {
    pub async fn get(&self, caller: &Caller, hold: HoldId, corr: &Correlation) -> Result<HoldView, HoldsError> {
        let c = self.pool.get().await?;
        let row = store::get_hold(&c, hold).await?.ok_or(HoldsError::NotFound("hold"))?;
        may_act_on(caller, Action::HoldRead, &row)?;
        corr.adopt(row.correlation_id.as_ref());
        let metadata_missing = row.metadata().require_complete().err().map(|m| m.missing).unwrap_or_default();
        Ok(HoldView {
            hold_id: row.id,
            restaurant_id: row.restaurant_id,
            state: HoldState::at(row.status, row.expires_at, row.db_now),
            party_size: row.party_size,
            start: row.starts_at,
            end: row.ends_at,
            blocked_until: row.blocked_end,
            expires_at: row.expires_at,
            table_ids: row.table_ids,
            strict_mode: row.strict_mode,
            policy_version: row.policy_version,
            policy_hash: row.policy_hash,
            booking_id: row.booking_id,
            replaced_by: row.replaced_by,
            metadata_missing,
        })
    }
}
