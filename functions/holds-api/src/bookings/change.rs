//! Change: a new time and/or party size for a confirmed booking. The old claims are released
//! and the new ones written in ONE transaction, or nothing changes (409 with alternatives, the
//! old booking kept). One "updated" email per change, and the reminder moves with the booking.

use super::{enqueue_confirmation, may_act_on, view};
use crate::dto::{self, BookingChangeBody};
use crate::error::HoldsError;
use crate::outcome::BookingView;
use crate::service::{no_table, resolve_start, HoldsService};
use crate::store;
use holdfast_adapters::db::{constraints, DbFault};
use holdfast_adapters::telemetry::{self, Correlation};
use holdfast_shared::allocator::QuoteRequest;
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::email::{BookingStatus, EmailType};
use holdfast_shared::ids::BookingId;

impl HoldsService {
    pub async fn change_booking(
        &self,
        caller: &Caller,
        id: BookingId,
        body: BookingChangeBody,
        corr: &Correlation,
    ) -> Result<BookingView, HoldsError> {
        if body.start.is_none() && body.party_size.is_none() {
            return Err(HoldsError::invalid("start", "give a new start, a new party_size, or both"));
        }
        let party = body.party_size.map(|p| dto::party("party_size", p)).transpose()?;
        let flags = self.flags.get().await.set;
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let b = store::lock_booking(&tx, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        may_act_on(caller, Action::BookingChange, &b)?;
        corr.adopt(b.correlation_id.as_ref());
        let correlation = corr.id();
        if b.status != BookingStatus::Confirmed {
            return Err(HoldsError::BookingNotConfirmed { status: view(&b).status });
        }
        let party = match party {
            Some(p) => p,
            None => dto::party("party_size", b.party_size as u16)?,
        };
        let policy = self.policy_of(&tx, b.restaurant_id).await?;
        let start = match body.start {
            Some(s) => resolve_start(&policy, s)?,
            None => b.starts_at,
        };
        let req = QuoteRequest { party, start };
        // Free the old tables inside this transaction: the quote sees them free, and if
        // anything below fails the rollback puts them back.
        store::deactivate_booking_claims(&tx, id).await?;
        let sel = self.quote_now(&tx, b.restaurant_id, &policy, &flags, &req).await?;
        let written = telemetry::timed("db.change_write", async {
            store::lock_claims(&tx, &sel.table_ids, &sel.blocked).await?;
            store::prune_expired(&tx, &sel.table_ids, &sel.blocked).await?;
            store::insert_booking_claims(&tx, b.restaurant_id, &sel.table_ids, &sel.blocked, id).await?;
            let party = sel.party.get() as i16;
            let rev = store::set_booking(&tx, id, BookingStatus::Confirmed, party, &sel.seated, true).await?;
            let lead = policy.reminder_lead();
            let (kind, at, corr) = (EmailType::BookingUpdated, sel.seated.start(), Some(&correlation));
            enqueue_confirmation(&tx, id, kind, rev, at, lead, corr).await?;
            Ok::<(), DbFault>(())
        })
        .await;
        match written {
            Ok(()) => tx.commit().await?,
            Err(f) if f.violates(constraints::TABLE_CLAIMS_NO_OVERLAP) || f == DbFault::Serialization => {
                drop(tx);
                let msg = "the new tables were taken; the booking is unchanged";
                let alternatives =
                    self.alternatives(b.restaurant_id, &policy, &flags, &req, &sel.table_ids, &sel.seated).await;
                return Err(no_table("hold_conflict", msg, alternatives));
            }
            Err(f) => return Err(f.into()),
        }
        drop(c);
        let c = self.pool.get().await?;
        Ok(view(&store::get_booking(&c, id).await?.ok_or(HoldsError::NotFound("booking"))?))
    }
}
