//! `bookings`: the guest's reservation. Its guest columns are the only place PII is stored.

use chrono::{DateTime, Utc};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::auth::Subject;
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::BookingStatus;
use holdfast_shared::ids::{BookingId, RestaurantId, TableId};
use holdfast_shared::window::Window;

pub struct NewBooking<'a> {
    pub id: BookingId,
    pub restaurant: RestaurantId,
    pub party_size: i16,
    pub seated: &'a Window,
    pub guest_name: &'a str,
    pub guest_email: &'a str,
    pub guest_phone: Option<&'a str>,
    pub guest_notes: Option<&'a str>,
    pub owner: Option<&'a Subject>,
    pub correlation: Option<&'a CorrelationId>,
}

/// A new booking: `confirmed` (from a hold, tables claimed in the same transaction) or
/// `requested` (a pending request, no tables yet).
pub async fn insert_booking<C: Sql>(c: &C, b: &NewBooking<'_>, status: BookingStatus) -> Result<(), DbFault> {
    let (owner, status) = (b.owner.map(Subject::as_str), booking_status_str(status));
    let correlation = b.correlation.map(CorrelationId::as_str);
    let params: [&dyn Param; 12] = [
        &b.id.as_uuid(),
        &b.restaurant.as_uuid(),
        &status,
        &b.party_size,
        &b.seated.start(),
        &b.seated.end(),
        &b.guest_name,
        &b.guest_email,
        &b.guest_phone,
        &b.guest_notes,
        &owner,
        &correlation,
    ];
    c.run(
        "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at,
                               guest_name, guest_email, guest_phone, guest_notes, owner_subject, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &params,
    )
    .await?;
    Ok(())
}

/// Lock the guest at this restaurant for the rest of the transaction, then count the bookings
/// they confirmed here in the last hour. Returns the count and the seconds until the oldest of
/// them leaves the hour (when one more may be confirmed).
pub async fn recent_confirms<C: Sql>(c: &C, restaurant: RestaurantId, owner: &Subject) -> Result<(u32, u32), DbFault> {
    let key: [&dyn Param; 2] = [&restaurant.as_uuid(), &owner.as_str()];
    c.fetch(super::holds::LOCK_GUEST_SQL, &key).await?;
    let row = c
        .fetch_one(
            "SELECT count(*)::int,
                    GREATEST(1, ceil(extract(epoch FROM min(created_at) + interval '1 hour' - now())))::int
               FROM bookings
              WHERE restaurant_id = $1 AND owner_subject = $2 AND created_at > now() - interval '1 hour'",
            &key,
        )
        .await?;
    let (n, wait): (i32, Option<i32>) = (row.get(0), row.get(1));
    Ok((n.max(0) as u32, wait.map_or(1, |w| w.max(1) as u32)))
}

/// A booking as the lifecycle use cases read it (no guest PII: that stays in the row).
#[derive(Debug, Clone)]
pub struct BookingRow {
    pub id: BookingId,
    pub restaurant_id: RestaurantId,
    pub status: BookingStatus,
    pub party_size: i16,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub revision: i32,
    pub owner: Option<Subject>,
    /// Tables of its active claims, sorted (empty while pending or once cancelled).
    pub table_ids: Vec<TableId>,
    /// Its correlation id; `None` for bookings made before V13.
    pub correlation_id: Option<CorrelationId>,
}

const BOOKING_SELECT: &str = "SELECT b.id, b.restaurant_id, b.status, b.party_size, b.starts_at, b.ends_at, b.revision,
        b.owner_subject, b.correlation_id,
        coalesce((SELECT array_agg(c.table_id ORDER BY c.table_id) FROM table_claims c
                   WHERE c.booking_id = b.id AND c.kind = 'booking' AND c.active), '{}')
   FROM bookings b WHERE b.id = $1";

fn booking_from_row(r: &tokio_postgres::Row) -> Result<BookingRow, DbFault> {
    let status: &str = r.get(2);
    let owner: Option<&str> = r.get(7);
    let tables: Vec<uuid::Uuid> = r.get(9);
    Ok(BookingRow {
        id: BookingId(r.get(0)),
        restaurant_id: RestaurantId(r.get(1)),
        status: BookingStatus::parse(status)
            .ok_or_else(|| DbFault::Other(format!("unknown booking status {status:?}")))?,
        party_size: r.get(3),
        starts_at: r.get(4),
        ends_at: r.get(5),
        revision: r.get(6),
        owner: owner.map(Subject::parse).transpose().map_err(|e| DbFault::Other(format!("stored owner: {e}")))?,
        table_ids: tables.into_iter().map(TableId).collect(),
        correlation_id: super::holds::stored_correlation(r.get(8))?,
    })
}

pub async fn get_booking<C: Sql>(c: &C, id: BookingId) -> Result<Option<BookingRow>, DbFault> {
    c.fetch_opt(BOOKING_SELECT, &[&id.as_uuid()]).await?.as_ref().map(booking_from_row).transpose()
}

/// Lock the booking for the rest of the transaction (its lifecycle steps serialise on it).
pub async fn lock_booking<C: Sql>(c: &C, id: BookingId) -> Result<Option<BookingRow>, DbFault> {
    let sql = format!("{BOOKING_SELECT} FOR UPDATE OF b");
    c.fetch_opt(&sql, &[&id.as_uuid()]).await?.as_ref().map(booking_from_row).transpose()
}

/// The booking now sits in `seated` for `party_size` with status `status`; a change bumps the
/// revision (emails about older revisions are superseded). Returns the new revision.
pub async fn set_booking<C: Sql>(
    c: &C,
    id: BookingId,
    status: BookingStatus,
    party_size: i16,
    seated: &Window,
    bump_revision: bool,
) -> Result<i32, DbFault> {
    let st = booking_status_str(status);
    let row = c
        .fetch_one(
            "UPDATE bookings SET status = $2, party_size = $3, starts_at = $4, ends_at = $5,
                    revision = revision + CASE WHEN $6 THEN 1 ELSE 0 END,
                    cancelled_at = CASE WHEN $2 = 'cancelled' THEN now() END, updated_at = now()
              WHERE id = $1 RETURNING revision",
            &[&id.as_uuid(), &st, &party_size, &seated.start(), &seated.end(), &bump_revision],
        )
        .await?;
    Ok(row.get(0))
}

/// Free a booking's tables (change, cancel): its active claims stop blocking at once.
pub async fn deactivate_booking_claims<C: Sql>(c: &C, id: BookingId) -> Result<u64, DbFault> {
    Ok(c.run(
        "UPDATE table_claims SET active = false WHERE booking_id = $1 AND kind = 'booking' AND active",
        &[&id.as_uuid()],
    )
    .await?)
}

fn booking_status_str(s: BookingStatus) -> &'static str {
    match s {
        BookingStatus::Requested => "requested",
        BookingStatus::Confirmed => "confirmed",
        BookingStatus::Cancelled => "cancelled",
    }
}
