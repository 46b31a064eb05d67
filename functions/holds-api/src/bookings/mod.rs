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
use holdfast_adapters::db::DbFault;
use holdfast_adapters::outbox;
use holdfast_adapters::sql::Sql;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::auth::{authorize, Action, Caller, Decision, Resource};
use holdfast_shared::correlation::CorrelationId;
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
/// reminder `lead` before the start (the policy's; none when that is already past), each with
/// the booking's correlation id.
async fn enqueue_confirmation<C: Sql>(
    c: &C,
    booking: BookingId,
    kind: EmailType,
    revision: i32,
    starts_at: DateTime<Utc>,
    lead: Duration,
    correlation: Option<&CorrelationId>,
) -> Result<(), DbFault> {
    let now = Utc::now();
    let job = match kind {
        EmailType::BookingConfirmed => EmailJob::for_booking(kind, booking),
        _ => EmailJob::for_revision(kind, booking, revision),
    };
    outbox::enqueue_correlated(c, &job, now, correlation).await?;
    enqueue_reminder(c, booking, revision, starts_at, lead, correlation).await
}

/// The reminder of a confirmed booking's `revision`, `lead` (the policy's
/// `reminder_hours_before`) before its start; none when that is already past. Used by every
/// path that confirms or changes a booking.
pub(crate) async fn enqueue_reminder<C: Sql>(
    c: &C,
    booking: BookingId,
    revision: i32,
    starts_at: DateTime<Utc>,
    lead: Duration,
    correlation: Option<&CorrelationId>,
) -> Result<(), DbFault> {
    if let Some(at) = email::reminder_at(starts_at, lead, Utc::now()) {
        let mut reminder = EmailJob::for_revision(EmailType::Reminder, booking, revision);
        reminder.not_before = Some(at);
        outbox::enqueue_correlated(c, &reminder, at, correlation).await?;
    }
    Ok(())
}

impl HoldsService {
    /// GET a booking: its owner and the restaurant's staff; anyone else 404.
    pub async fn booking(&self, caller: &Caller, id: BookingId, corr: &Correlation) -> Result<BookingView, HoldsError> {
        let c = self.pool.get().await?;
        let b = store::get_booking(&c, id).await?.ok_or(HoldsError::NotFound("booking"))?;
        may_act_on(caller, Action::BookingRead, &b)?;
        corr.adopt(b.correlation_id.as_ref());
        Ok(view(&b))
    }
}
