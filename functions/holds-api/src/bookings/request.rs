//! Request: a guest asks for a table. The pending booking, its durable auto-assign job and the
//! deferred "request received" email are written in one transaction; then one inline attempt
//! tries to confirm it at once. If the confirmation wins, the "request received" email is
//! superseded when it fires (the sender checks the booking), so the guest gets one email.

use super::view;
use crate::dto::{self, BookingRequestBody};
use crate::error::HoldsError;
use crate::idempotency::{self, Idempotency, NextAction};
use crate::outcome::{BookingView, Reply};
use crate::service::{may_book_at, resolve_start, HoldsService};
use crate::store::{self, NewBooking};
use chrono::{Duration, Utc};
use holdfast_adapters::outbox;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::allocator::{QuoteRejection, QuoteRequest};
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::booking::ASSIGN_RETRY_DELAYS;
use holdfast_shared::email::{self, BookingStatus};
use holdfast_shared::ids::BookingId;
use holdfast_shared::window::Window;

impl HoldsService {
    pub async fn request_booking(
        &self,
        caller: &Caller,
        body: BookingRequestBody,
        idem: Option<Idempotency>,
        corr: &Correlation,
    ) -> Result<Reply<BookingView>, HoldsError> {
        let restaurant = body.restaurant_id;
        may_book_at(caller, Action::BookingRequest, restaurant)?;
        let party = dto::party("party_size", body.party_size)?;
        let guest = body.guest.parse()?;
        if let NextAction::Replay(first) = idempotency::decide(&self.pool, idem.as_ref()).await? {
            return Ok(Reply::Replayed(first));
        }
        let flags = self.flags.get().await.set;
        let mut c = self.pool.get().await?;
        let policy = self.policy_of(&c, restaurant).await?;
        let req = QuoteRequest { party, start: resolve_start(&policy, body.start)? };
        // Refuse now what no retry can fix (closed then, party too large); a full house is not
        // refused: the request waits for a table.
        match self.quote_now(&c, restaurant, &policy, &flags, &req).await {
            Ok(_) | Err(HoldsError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let turn = policy
            .turn_time_for(req.party.get())
            .ok_or(HoldsError::Rejected(QuoteRejection::PartyTooLarge { max: policy.max_party_size }))?;
        let seated = req
            .start
            .checked_add_signed(turn)
            .and_then(|end| Window::new(req.start, end).ok())
            .ok_or_else(|| HoldsError::invalid("start", "is outside the range of supported times"))?;
        let id = BookingId::new_random();
        let correlation = corr.id();
        let now = Utc::now();
        let tx = c.transaction().await?;
        // Requests count against the same hourly limit as confirmations (both make bookings).
        let (made, retry_after_secs) = store::recent_confirms(&tx, restaurant, &caller.subject).await?;
        if made >= u32::from(policy.guest_limits.max_confirms_per_hour) {
            return Err(HoldsError::TooManyConfirms { retry_after_secs });
        }
        let pending = NewBooking {
            id,
            restaurant,
            party_size: req.party.get() as i16,
            seated: &seated,
            guest_name: guest.name.as_str(),
            guest_email: &guest.email,
            guest_phone: guest.phone.as_ref().map(|p| p.as_str()),
            guest_notes: guest.notes.as_ref().map(|n| n.as_str()),
            owner: Some(&caller.subject),
            correlation: Some(&correlation),
        };
        store::insert_booking(&tx, &pending, BookingStatus::Requested).await?;
        // The job is due a little later: if this function dies before its inline attempt, the
        // assigner picks the request up; if the inline attempt runs, it settles the job first.
        store::insert_assignment(&tx, id, now + ASSIGN_RETRY_DELAYS[0] + Duration::seconds(5)).await?;
        let delay = flags.request_received_delay_minutes();
        let received = email::request_received(id, now, delay);
        outbox::enqueue_correlated(&tx, &received, received.not_before.unwrap_or(now), Some(&correlation)).await?;
        let first = store::get_booking(&tx, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        idempotency::save(&tx, idem.as_ref(), &view(&first)).await?;
        tx.commit().await?;
        drop(c);

        // The inline attempt: its outcome is the job's first attempt (retried durably if needed).
        if let Err(e) = self.assign_attempt(id, 0).await {
            // The request is safely pending; the assigner retries the job.
            tracing::warn!(code = e.code(), "inline auto-assign failed; the durable job will retry");
        }
        let c = self.pool.get().await?;
        let now = store::get_booking(&c, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        Ok(Reply::Fresh(view(&now)))
    }
}
