//! Cancel: the booking's tables are freed in the same transaction; idempotent (a second cancel
//! answers like the first); one "cancelled" email. Pending emails of the booking (reminder,
//! request received) are skipped by the sender once it sees the status.

use super::{may_act_on, view};
use crate::error::HoldsError;
use crate::outcome::BookingView;
use crate::service::HoldsService;
use crate::store;
use chrono::Utc;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::outbox;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::email::{BookingStatus, EmailJob, EmailType};
use holdfast_shared::ids::BookingId;
use holdfast_shared::window::Window;

impl HoldsService {
    pub async fn cancel_booking(
        &self,
        caller: &Caller,
        id: BookingId,
        corr: &Correlation,
    ) -> Result<BookingView, HoldsError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let b = store::lock_booking(&tx, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        may_act_on(caller, Action::BookingCancel, &b)?;
        corr.adopt(b.correlation_id.as_ref());
        if b.status != BookingStatus::Cancelled {
            let window =
                Window::new(b.starts_at, b.ends_at).map_err(|_| DbFault::Other("bad booking window".into()))?;
            store::deactivate_booking_claims(&tx, id).await?;
            store::set_booking(&tx, id, BookingStatus::Cancelled, b.party_size, &window, true).await?;
            store::finish_assignment(&tx, id).await?;
            let cancelled = EmailJob::for_booking(EmailType::BookingCancelled, id);
            outbox::enqueue_correlated(&tx, &cancelled, Utc::now(), Some(&corr.id())).await?;
        }
        let now = store::get_booking(&tx, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        tx.commit().await?;
        Ok(view(&now))
    }
}
