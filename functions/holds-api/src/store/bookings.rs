//! `bookings`: the guest's reservation. Its guest columns are the only place PII is stored.

use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
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
}

pub async fn insert_booking<C: GenericClient>(c: &C, b: &NewBooking<'_>) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached(
            "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at,
                               guest_name, guest_email, guest_phone, guest_notes)
         VALUES ($1, $2, 'confirmed', $3, $4, $5, $6, $7, $8, $9)",
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
        ],
    )
    .await?;
    Ok(())
}
