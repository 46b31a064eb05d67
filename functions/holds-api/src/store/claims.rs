//! `table_claims`: what each table is blocked by, and the statements that keep expired holds
//! from blocking anyone (see docs/decisions).

use super::{sorted_uuids, uuids};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::allocator::Busy;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId, TableId};
use holdfast_shared::window::Window;

/// Transaction-scoped advisory locks on every (table, hour) the window touches, in key order
/// (docs/decisions/0003-row-locks-on-restaurant-tables.md). Two claims that could conflict
/// overlap, so they share a table and an hour: their writers queue, and the second one's insert
/// meets a committed row and fails fast with 23P01 instead of both waiting on each other's
/// uncommitted row (a deadlock PostgreSQL only breaks after `deadlock_timeout`). Writers of
/// other hours (other days) never wait. Keys are (hashtext(table id), hour since the epoch):
/// the two-int4 space, apart from the guest lock's int8 keys. Same parameters as
/// [`PRUNE_EXPIRED_SQL`]: tables, window start, end.
pub(super) const LOCK_CLAIMS_SQL: &str = "SELECT pg_advisory_xact_lock(k.t, k.h)
       FROM (SELECT DISTINCT hashtext(t::text) AS t, h::int AS h
               FROM unnest($1::uuid[]) AS t,
                    generate_series(floor(extract(epoch FROM $2::timestamptz) / 3600)::bigint,
                                    ceil(extract(epoch FROM $3::timestamptz) / 3600)::bigint - 1) AS h
              ORDER BY 1, 2) AS k";

/// Expired holds never block: deactivate expired hold claims overlapping what is about to be
/// claimed, in the caller's transaction (no sweeper needed). Rows are locked in id order: an
/// expired claim can overlap two windows that share no (table, hour) lock, and two such
/// writers locking several of them in scan order could deadlock.
pub(super) const PRUNE_EXPIRED_SQL: &str = "UPDATE table_claims SET active = false
      WHERE id IN (SELECT id FROM table_claims
                    WHERE active AND kind = 'hold' AND expires_at <= now()
                      AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')
                    ORDER BY id FOR NO KEY UPDATE)";

/// Windows already taken on the restaurant's tables around `around` (±3 h, enough for the
/// alternatives search): bookings and unexpired holds, shadow holds included. `ignore_hold`
/// leaves out one hold's own claims (drift re-quote). Booking claims carry no hold id, so the
/// filter must not be `hold_id IS DISTINCT FROM NULL`: that would hide every booking.
pub async fn busy<C: Sql>(
    c: &C,
    restaurant: RestaurantId,
    around: &Window,
    ignore_hold: Option<HoldId>,
) -> Result<Vec<Busy>, DbFault> {
    let from = around.start() - chrono::Duration::hours(3);
    let to = around.end() + chrono::Duration::hours(3);
    let rows = c
        .fetch(
            "SELECT table_id, lower(during), upper(during) FROM table_claims
              WHERE restaurant_id = $1 AND active AND during && tstzrange($2, $3, '[)')
                AND (kind = 'booking' OR expires_at > now())
                AND ($4::uuid IS NULL OR hold_id IS DISTINCT FROM $4)",
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

/// Queue writers whose claims could conflict behind each other ([`LOCK_CLAIMS_SQL`]): the
/// tables and blocked window about to be claimed. Call before [`prune_expired`] and the insert.
pub async fn lock_claims<C: Sql>(c: &C, tables: &[TableId], blocked: &Window) -> Result<(), DbFault> {
    c.fetch(LOCK_CLAIMS_SQL, &[&sorted_uuids(tables), &blocked.start(), &blocked.end()]).await?;
    Ok(())
}

/// [`PRUNE_EXPIRED_SQL`] for these tables and window; returns the claims deactivated.
pub async fn prune_expired<C: Sql>(c: &C, tables: &[TableId], blocked: &Window) -> Result<u64, DbFault> {
    Ok(c.run(PRUNE_EXPIRED_SQL, &[&sorted_uuids(tables), &blocked.start(), &blocked.end()]).await?)
}

/// Claim every table of a booking in one statement: a merged selection is all-or-nothing.
/// A booking claim carries no hold id (it is not a hold claim) and is always exclusive.
pub async fn insert_booking_claims<C: Sql>(
    c: &C,
    restaurant: RestaurantId,
    tables: &[TableId],
    blocked: &Window,
    booking: BookingId,
) -> Result<(), DbFault> {
    let params: [&dyn Param; 5] =
        [&restaurant.as_uuid(), &booking.as_uuid(), &blocked.start(), &blocked.end(), &sorted_uuids(tables)];
    c.run(
        "INSERT INTO table_claims (restaurant_id, table_id, kind, booking_id, during, exclusive)
         SELECT $1, t, 'booking', $2, tstzrange($3, $4, '[)'), true
           FROM unnest($5::uuid[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
        &params,
    )
    .await?;
    Ok(())
}

pub async fn deactivate_hold_claims<C: Sql>(c: &C, hold: HoldId) -> Result<(), DbFault> {
    c.run("UPDATE table_claims SET active = false WHERE hold_id = $1 AND kind = 'hold' AND active", &[&hold.as_uuid()])
        .await?;
    Ok(())
}

/// Shadow mode: would this hold have conflicted with another live claim?
pub async fn shadow_overlap<C: Sql>(
    c: &C,
    hold: HoldId,
    tables: &[TableId],
    blocked: &Window,
) -> Result<bool, DbFault> {
    let row = c
        .fetch_one(
            "SELECT EXISTS (SELECT 1 FROM table_claims
                             WHERE active AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')
                               AND hold_id IS DISTINCT FROM $4
                               AND (kind = 'booking' OR expires_at > now()))",
            &[&uuids(tables), &blocked.start(), &blocked.end(), &hold.as_uuid()],
        )
        .await?;
    Ok(row.get(0))
}
