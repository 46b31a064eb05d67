//! What each use case returns when it succeeds. The field names are the response bodies'
//! (the api layer serialises them as they are), and an idempotent first response is stored as
//! this same serialisation, so a replay cannot differ from the answer it repeats.

use crate::store::StoredResponse;
use chrono::{DateTime, Utc};
use holdfast_shared::allocator::{Selection, SelectionSnapshot};
use holdfast_shared::events::StrictMode;
use holdfast_shared::hold::HoldState;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId, TableId};
use holdfast_shared::policy::PolicyHash;
use serde::Serialize;

/// A use case's answer to a request that may carry an Idempotency-Key.
#[derive(Debug)]
pub enum Reply<T> {
    /// The request ran now.
    Fresh(T),
    /// A retry: the first response, exactly as stored.
    Replayed(StoredResponse),
}

#[derive(Debug, Serialize)]
pub struct Quoted {
    pub restaurant_id: RestaurantId,
    pub party_size: u16,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub blocked_until: DateTime<Utc>,
    pub table_ids: Vec<TableId>,
    pub policy_version: i32,
    pub policy_hash: PolicyHash,
    pub selection_snapshot: SelectionSnapshot,
}

impl Quoted {
    pub fn new(restaurant_id: RestaurantId, s: Selection) -> Self {
        Self {
            restaurant_id,
            party_size: s.party.get(),
            start: s.seated.start(),
            end: s.seated.end(),
            blocked_until: s.blocked.end(),
            table_ids: s.table_ids,
            policy_version: s.policy_version,
            policy_hash: s.policy_hash,
            selection_snapshot: s.snapshot,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HoldCreated {
    pub hold_id: HoldId,
    pub restaurant_id: RestaurantId,
    pub state: HoldState,
    pub party_size: u16,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub blocked_until: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub table_ids: Vec<TableId>,
    pub strict_mode: StrictMode,
    pub policy_version: i32,
    pub policy_hash: PolicyHash,
}

#[derive(Debug, Serialize)]
pub struct Confirmed {
    pub booking_id: BookingId,
    pub hold_id: HoldId,
    /// Set when drift recovery replaced the guest's hold with a new one.
    pub replaced_hold_id: Option<HoldId>,
    pub restaurant_id: RestaurantId,
    pub status: &'static str,
    pub table_ids: Vec<TableId>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub policy_version: i32,
    pub policy_drift: DriftReport,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct DriftReport {
    pub recovered: bool,
    pub attempts: u8,
}

#[derive(Debug, Serialize)]
pub struct Released {
    pub hold_id: HoldId,
    pub state: HoldState,
}

#[derive(Debug, Serialize)]
pub struct HoldView {
    pub hold_id: HoldId,
    pub restaurant_id: RestaurantId,
    pub state: HoldState,
    pub party_size: i16,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub blocked_until: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub table_ids: Vec<TableId>,
    pub strict_mode: StrictMode,
    pub policy_version: Option<i32>,
    pub policy_hash: Option<String>,
    pub booking_id: Option<BookingId>,
    pub replaced_by: Option<HoldId>,
    pub metadata_missing: Vec<&'static str>,
}

/// A booking as its owner and the restaurant's staff see it (no guest details: those are only
/// ever read by the email sender).
#[derive(Debug, Serialize)]
pub struct BookingView {
    pub booking_id: BookingId,
    pub restaurant_id: RestaurantId,
    /// `requested` (pending a table), `confirmed` or `cancelled`.
    pub status: &'static str,
    pub party_size: i16,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Bumped by every change and by the cancellation.
    pub revision: i32,
    pub table_ids: Vec<TableId>,
}
