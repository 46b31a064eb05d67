//! The confirm transaction's writes: the booking, its claims, the hold's new state, the
//! confirmation email in the outbox and the idempotent first response, all or nothing.

use super::{drift_notice, Loaded};
use crate::bookings::enqueue_reminder;
use crate::dto::Guest;
use crate::idempotency::{self, Idempotency};
use crate::outcome::{Confirmed, DriftReport};
use crate::store::{self, NewBooking, NewHold};
use chrono::Utc;
use deadpool_postgres::Transaction;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::outbox;
use holdfast_shared::allocator::Selection;
use holdfast_shared::email::{BookingStatus, EmailJob, EmailType};
use holdfast_shared::hold::HoldStatus;
use holdfast_shared::ids::{BookingId, HoldId};
use holdfast_shared::window::Window;

/// The policy is unchanged: the hold's own claims become the booking's.
pub(super) async fn book_held_tables(
    tx: &Transaction<'_>,
    l: &Loaded,
    booking: BookingId,
    guest: &Guest,
    idem: Option<&Idempotency>,
    attempt: u8,
) -> Result<Confirmed, DbFault> {
    let (row, tables) = (&l.row, &l.row.table_ids);
    store::lock_claims(tx, tables, &l.blocked).await?;
    store::prune_expired(tx, tables, &l.blocked).await?;
    store::deactivate_hold_claims(tx, row.id).await?;
    insert_booking(tx, l, booking, &l.seated, guest).await?;
    store::insert_booking_claims(tx, row.restaurant_id, tables, &l.blocked, booking).await?;
    store::set_hold_confirmed(tx, row.id, booking).await?;
    let corr = Some(&l.correlation);
    let confirmed_email = EmailJob::for_booking(EmailType::BookingConfirmed, booking);
    outbox::enqueue_correlated(tx, &confirmed_email, Utc::now(), corr).await?;
    // A new booking is at revision 1 (V8's default).
    enqueue_reminder(tx, booking, 1, l.seated.start(), l.policy.reminder_lead(), corr).await?;
    let confirmed = Confirmed {
        booking_id: booking,
        hold_id: row.id,
        replaced_hold_id: None,
        restaurant_id: row.restaurant_id,
        status: "confirmed",
        table_ids: tables.clone(),
        start: l.seated.start(),
        end: l.seated.end(),
        policy_version: l.meta.policy_version,
        policy_drift: DriftReport { recovered: false, attempts: attempt },
    };
    idempotency::save(tx, idem, &confirmed).await?;
    Ok(confirmed)
}

/// Drift recovery inside ONE transaction: the old hold is released and the new selection
/// is booked together, so the guest never has two holds, nor none, and the old and new
/// claims can never double-book.
pub(super) async fn requote_and_book(
    tx: &Transaction<'_>,
    l: &Loaded,
    booking: BookingId,
    sel: &Selection,
    guest: &Guest,
    idem: Option<&Idempotency>,
    attempt: u8,
) -> Result<Confirmed, DbFault> {
    let row = &l.row;
    let new_hold = HoldId::new_random();
    let snapshot = sel.snapshot_json();
    store::lock_claims(tx, &sel.table_ids, &sel.blocked).await?;
    store::deactivate_hold_claims(tx, row.id).await?;
    store::prune_expired(tx, &sel.table_ids, &sel.blocked).await?;
    insert_booking(tx, l, booking, &sel.seated, guest).await?;
    let replacement = NewHold {
        id: new_hold,
        restaurant: row.restaurant_id,
        party_size: row.party_size,
        seated: &sel.seated,
        blocked: &sel.blocked,
        status: HoldStatus::Confirmed,
        strict_mode: row.strict_mode,
        ttl_secs: 0,
        expires_at: Some(row.expires_at),
        policy_version: l.policy.version,
        policy_hash: sel.policy_hash.as_str(),
        table_ids: &sel.table_ids,
        snapshot: &snapshot,
        booking_id: Some(booking),
        owner: row.owner.as_ref(),
        correlation: Some(&l.correlation),
    };
    store::insert_hold(tx, &replacement).await?;
    store::set_hold_released(tx, row.id, Some(new_hold)).await?;
    store::insert_booking_claims(tx, row.restaurant_id, &sel.table_ids, &sel.blocked, booking).await?;
    let corr = Some(&l.correlation);
    let confirmed_email = EmailJob::for_booking(EmailType::BookingConfirmed, booking);
    outbox::enqueue_correlated(tx, &confirmed_email, Utc::now(), corr).await?;
    enqueue_reminder(tx, booking, 1, sel.seated.start(), l.policy.reminder_lead(), corr).await?;
    let confirmed = Confirmed {
        booking_id: booking,
        hold_id: new_hold,
        replaced_hold_id: Some(row.id),
        restaurant_id: row.restaurant_id,
        status: "confirmed",
        table_ids: sel.table_ids.clone(),
        start: sel.seated.start(),
        end: sel.seated.end(),
        policy_version: l.policy.version,
        policy_drift: DriftReport { recovered: true, attempts: attempt },
    };
    idempotency::save(tx, idem, &confirmed).await?;
    Ok(confirmed)
}

/// Commit, with the ops drift notice when the policy drifted. Ops hear about a drifted policy
/// once per restaurant and version: the outbox's dedupe key absorbs every later drift of the
/// same version, and writing it in this transaction means it cannot be lost.
pub(super) async fn commit(tx: Transaction<'_>, l: &Loaded, drifted: bool) -> Result<(), DbFault> {
    if drifted {
        outbox::enqueue_correlated(&tx, &drift_notice(l), Utc::now(), Some(&l.correlation)).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_booking(
    tx: &Transaction<'_>,
    l: &Loaded,
    booking: BookingId,
    seated: &Window,
    guest: &Guest,
) -> Result<(), DbFault> {
    let b = NewBooking {
        id: booking,
        restaurant: l.row.restaurant_id,
        party_size: l.row.party_size,
        seated,
        guest_name: guest.name.as_str(),
        guest_email: &guest.email,
        guest_phone: guest.phone.as_ref().map(|p| p.as_str()),
        guest_notes: guest.notes.as_ref().map(|n| n.as_str()),
        owner: l.row.owner.as_ref(),
        correlation: Some(&l.correlation),
    };
    store::insert_booking(tx, &b, BookingStatus::Confirmed).await
}
