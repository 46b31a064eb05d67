//! Release: the guest lets a hold go; its tables are free at once. Releasing twice is a no-op;
//! a confirmed hold cannot be released (its booking is cancelled instead).

use crate::error::HoldsError;
use crate::observe::Observed;
use crate::outcome::Released;
use crate::service::{may_act_on, HoldsService};
use crate::store;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::events::{EventType, Operation};
use holdfast_shared::hold::{HoldState, HoldStatus};
use holdfast_shared::ids::HoldId;

impl HoldsService {
    pub async fn release(&self, caller: &Caller, hold: HoldId, corr: &Correlation) -> Result<Released, HoldsError> {
        let mut o = Observed::new(Operation::Release);
        o.hold = Some(hold);
        o.correlation = Some(corr.id());
        let result = self.release_inner(&mut o, caller, hold, corr).await;
        self.finish(&o, EventType::HoldReleased, result).await
    }

    async fn release_inner(
        &self,
        o: &mut Observed,
        caller: &Caller,
        hold: HoldId,
        corr: &Correlation,
    ) -> Result<Released, HoldsError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = store::lock_hold(&tx, hold).await?.ok_or(HoldsError::NotFound("hold"))?;
        may_act_on(caller, Action::HoldRelease, &row)?;
        corr.adopt(row.correlation_id.as_ref());
        o.correlation = Some(corr.id());
        o.restaurant = Some(row.restaurant_id);
        match row.status {
            HoldStatus::Confirmed => {
                return Err(HoldsError::HoldNotLive { state: HoldState::Confirmed, booking_id: row.booking_id });
            }
            HoldStatus::Released => {}
            HoldStatus::Held => {
                store::deactivate_hold_claims(&tx, hold).await?;
                store::set_hold_released(&tx, hold, None).await?;
            }
        }
        tx.commit().await?;
        Ok(Released { hold_id: hold, state: HoldState::Released })
    }
}
