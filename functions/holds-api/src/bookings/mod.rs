//! A booking's life after the request (issue 13): request → auto-assign (inline, then the
//! durable job) → confirmed; change; cancel. Each step writes its email to the outbox in its own
//! transaction; the email sender supersedes what a later step made moot.

mod assign;
mod cancel;
mod change;
mod request;

pub use assign::{AssignOutcome, AssignReport};

use crate::error::HoldsError;
use crate::outcome::BookingView;
use crate::service::HoldsService;
use crate::store::{self, BookingRow};
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::outbox;
use holdfast_shared::auth::{authorize, Action, Caller, Decision, Resource};
use holdfast_shared::email::{self, BookingStatus, EmailJob, EmailType};
use holdfast_shared::ids::BookingId;

pub(crate) fn view(b: &BookingRow) -> BookingView {
    BookingView {
        booking_id: b.id,
        restaurant_id: b.restaurant_id,
        status: match b.status {
            BookingStatus::Requested => "requested",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Cancelled => "cancelled",
        },
        party_size: b.party_size,
        start: b.starts_at,
        end: b.ends_at,
        revision: b.revision,
        table_ids: b.table_ids.clone(),
    }
}

/// The authorization table on a booking: anything but Allow is "no such booking".
fn may_act_on(caller: &Caller, action: Action, b: &BookingRow) -> Result<(), HoldsError> {
    let resource = Resource::Owned { restaurant: b.restaurant_id, owner: b.owner.as_ref() };
    match authorize(caller, action, &resource) {
        Decision::Allow => Ok(()),
        Decision::NotFound | Decision::Forbidden => Err(HoldsError::NotFound("booking")),
    }
}

/// The confirmed booking's emails for `revision`: `kind` (confirmed or updated) now, and the
/// reminder `lead` before the start (the policy's; none when that is already past).
async fn enqueue_confirmation<C: GenericClient>(
    c: &C,
    booking: BookingId,
    kind: EmailType,
    revision: i32,
    starts_at: DateTime<Utc>,
    lead: Duration,
) -> Result<(), DbFault> {
    let now = Utc::now();
    let job = match kind {
        EmailType::BookingConfirmed => EmailJob::for_booking(kind, booking),
        _ => EmailJob::for_revision(kind, booking, revision),
    };
    outbox::enqueue(c, &job, now).await?;
    enqueue_reminder(c, booking, revision, starts_at, lead).await
}

/// The reminder of a confirmed booking's `revision`, `lead` (the policy's
/// `reminder_hours_before`) before its start; none when that is already past. Used by every
/// path that confirms or changes a booking.
pub(crate) async fn enqueue_reminder<C: GenericClient>(
    c: &C,
    booking: BookingId,
    revision: i32,
    starts_at: DateTime<Utc>,
    lead: Duration,
) -> Result<(), DbFault> {
    if let Some(at) = email::reminder_at(starts_at, lead, Utc::now()) {
        let mut reminder = EmailJob::for_revision(EmailType::Reminder, booking, revision);
        reminder.not_before = Some(at);
        outbox::enqueue(c, &reminder, at).await?;
    }
    Ok(())
}

impl HoldsService {
    /// GET a booking: its owner and the restaurant's staff; anyone else 404.
    pub async fn booking(&self, caller: &Caller, id: BookingId) -> Result<BookingView, HoldsError> {
        let c = self.pool.get().await?;
        let b = store::get_booking(&c, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        may_act_on(caller, Action::BookingRead, &b)?;
        Ok(view(&b))
    }
}
