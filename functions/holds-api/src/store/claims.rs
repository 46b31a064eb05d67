//! `table_claims`: what each table is blocked by, and the statements that keep expired holds
//! from blocking anyone (see docs/decisions).

use super::{sorted_uuids, uuids};
use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
use holdfast_shared::allocator::Busy;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId, TableId};
use holdfast_shared::window::Window;

/// Row locks on the floor-plan rows, in id order. Without them, two transactions inserting
/// conflicting rows under an exclusion constraint can each wait on the other's uncommitted row:
/// a deadlock PostgreSQL only breaks after `deadlock_timeout` (1 s). The constraint stays the
/// guarantee; this only makes the loser fail fast with 23P01 instead of after a deadlock.
pub(super) const LOCK_TABLES_SQL: &str =
    "SELECT id FROM restaurant_tables WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// Expired holds never block: deactivate expired hold claims overlapping what is about to be
/// claimed, in the caller's transaction (no sweeper needed).
pub(super) const PRUNE_EXPIRED_SQL: &str = "UPDATE table_claims SET active = false
      WHERE active AND kind = 'hold' AND expires_at <= now()
        AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')";

/// Windows already taken on the restaurant's tables around `around` (±3 h, enough for the
/// alternatives search): bookings and unexpired holds, shadow holds included. `ignore_hold`
/// leaves out one hold's own claims (drift re-quote). Booking claims carry no hold id, so the
/// filter must not be `hold_id IS DISTINCT FROM NULL`: that would hide every booking.
pub async fn busy<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
    around: &Window,
    ignore_hold: Option<HoldId>,
) -> Result<Vec<Busy>, DbFault> {
    let from = around.start() - chrono::Duration::hours(3);
    let to = around.end() + chrono::Duration::hours(3);
    let rows = c
        .query(
            &c.prepare_cached(
                "SELECT table_id, lower(during), upper(during) FROM table_claims
              WHERE restaurant_id = $1 AND active AND during && tstzrange($2, $3, '[)')
                AND (kind = 'booking' OR expires_at > now())
                AND ($4::uuid IS NULL OR hold_id IS DISTINCT FROM $4)",
            )
            .await?,
            &[&restaurant.as_uuid(), &from, &to, &ignore_hold.map(|h| h.as_uuid())],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let w = Window::new(r.get(1), r.get(2)).ok()?;
            Some(Busy { table_id: TableId(r.get(0)), window: w })
        })
        .collect())
}

/// Queue writers of the same tables behind each other ([`LOCK_TABLES_SQL`]).
pub async fn lock_tables<C: GenericClient>(c: &C, tables: &[TableId]) -> Result<(), DbFault> {
    c.query(&c.prepare_cached(LOCK_TABLES_SQL).await?, &[&sorted_uuids(tables)]).await?;
    Ok(())
}

/// [`PRUNE_EXPIRED_SQL`] for these tables and window; returns the claims deactivated.
pub async fn prune_expired<C: GenericClient>(c: &C, tables: &[TableId], blocked: &Window) -> Result<u64, DbFault> {
    let stmt = c.prepare_cached(PRUNE_EXPIRED_SQL).await?;
    Ok(c.execute(&stmt, &[&sorted_uuids(tables), &blocked.start(), &blocked.end()]).await?)
}

/// Claim every table of a booking in one statement: a merged selection is all-or-nothing.
/// A booking claim carries no hold id (it is not a hold claim) and is always exclusive.
pub async fn insert_booking_claims<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
    tables: &[TableId],
    blocked: &Window,
    booking: BookingId,
) -> Result<(), DbFault> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO table_claims (restaurant_id, table_id, kind, booking_id, during, exclusive)
             SELECT $1, t, 'booking', $2, tstzrange($3, $4, '[)'), true
               FROM unnest($5::uuid[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&restaurant.as_uuid(), &booking.as_uuid(), &blocked.start(), &blocked.end(), &sorted_uuids(tables)];
    c.execute(&stmt, &params).await?;
    Ok(())
}

pub async fn deactivate_hold_claims<C: GenericClient>(c: &C, hold: HoldId) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached("UPDATE table_claims SET active = false WHERE hold_id = $1 AND kind = 'hold' AND active")
            .await?,
        &[&hold.as_uuid()],
    )
    .await?;
    Ok(())
}

/// Shadow mode: would this hold have conflicted with another live claim?
pub async fn shadow_overlap<C: GenericClient>(
    c: &C,
    hold: HoldId,
    tables: &[TableId],
    blocked: &Window,
) -> Result<bool, DbFault> {
    let row = c
        .query_one(
            &c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM table_claims
                             WHERE active AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')
                               AND hold_id IS DISTINCT FROM $4
                               AND (kind = 'booking' OR expires_at > now()))",
            )
            .await?,
            &[&uuids(tables), &blocked.start(), &blocked.end(), &hold.as_uuid()],
        )
        .await?;
    Ok(row.get(0))
}
