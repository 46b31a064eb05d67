//! `bookings`: the guest's reservation. Its guest columns are the only place PII is stored.

use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
use holdfast_shared::auth::Subject;
use holdfast_shared::ids::{BookingId, RestaurantId};
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
}

pub async fn insert_booking<C: GenericClient>(c: &C, b: &NewBooking<'_>) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached(
            "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at,
                               guest_name, guest_email, guest_phone, guest_notes, owner_subject)
         VALUES ($1, $2, 'confirmed', $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?,
        &[
            &b.id.as_uuid(),
            &b.restaurant.as_uuid(),
            &b.party_size,
            &b.seated.start(),
            &b.seated.end(),
            &b.guest_name,
            &b.guest_email,
            &b.guest_phone,
            &b.guest_notes,
            &b.owner.map(Subject::as_str),
        ],
    )
    .await?;
    Ok(())
}

/// Lock the guest at this restaurant for the rest of the transaction, then count the bookings
/// they confirmed here in the last hour. Returns the count and the seconds until the oldest of
/// them leaves the hour (when one more may be confirmed).
pub async fn recent_confirms<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
    owner: &Subject,
) -> Result<(u32, u32), DbFault> {
    let lock = c.prepare_cached(super::holds::LOCK_GUEST_SQL).await?;
    c.query(&lock, &[&restaurant.as_uuid(), &owner.as_str()]).await?;
    let stmt = c
        .prepare_cached(
            "SELECT count(*)::int,
                    GREATEST(1, ceil(extract(epoch FROM min(created_at) + interval '1 hour' - now())))::int
               FROM bookings
              WHERE restaurant_id = $1 AND owner_subject = $2 AND created_at > now() - interval '1 hour'",
        )
        .await?;
    let row = c.query_one(&stmt, &[&restaurant.as_uuid(), &owner.as_str()]).await?;
    let (n, wait): (i32, Option<i32>) = (row.get(0), row.get(1));
    Ok((n.max(0) as u32, wait.map_or(1, |w| w.max(1) as u32)))
}
