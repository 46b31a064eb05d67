//! PostgreSQL access for holds: every SQL statement the holds API runs lives in this module.
//! Windows are passed as two timestamptz bounds and built as half-open `tstzrange(a, b, '[)')`.
//! Rows come back typed (`HoldStatus`, `StrictMode`, `TableId`, `BookingId`): a value the
//! domain does not know is a database fault, not a string to match by hand.

mod assignments;
mod bookings;
mod claims;
mod holds;
mod idempotency;
mod policy;

pub use assignments::{claim_due, finish_assignment, insert_assignment, record_attempt, DueJob};
pub use bookings::{
    deactivate_booking_claims, get_booking, insert_booking, lock_booking, recent_confirms, set_booking, BookingRow,
    NewBooking,
};
pub use claims::{busy, deactivate_hold_claims, insert_booking_claims, lock_claims, prune_expired, shadow_overlap};
pub use holds::{
    get_hold, hold_write, insert_hold, live_hold_retry_after, lock_hold, set_hold_confirmed, set_hold_released,
    HoldRow, NewHold,
};
pub use idempotency::{idempotency_lookup, idempotency_save, StoredResponse};
pub use policy::{current_policy, publish_policy, verify_enforcement};

use holdfast_shared::ids::TableId;
use uuid::Uuid;

/// Table ids as the driver binds them.
fn uuids(ids: &[TableId]) -> Vec<Uuid> {
    ids.iter().map(TableId::as_uuid).collect()
}

/// Table ids sorted: every statement that locks or claims tables takes them in id order, so
/// concurrent multi-table writers queue instead of deadlocking.
fn sorted_uuids(ids: &[TableId]) -> Vec<Uuid> {
    let mut v = uuids(ids);
    v.sort();
    v
}
