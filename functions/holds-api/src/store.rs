//! PostgreSQL access for holds: every SQL statement the holds API runs lives here.
//! Windows are passed as two timestamptz bounds and built as half-open `tstzrange(a, b, '[)')`.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use holdfast_adapters::db::DbFault;
use holdfast_shared::allocator::Busy;
use holdfast_shared::ids::{HoldId, RestaurantId, TableId};
use holdfast_shared::policy::BookingPolicy;
use holdfast_shared::window::Window;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// The name of the constraint that makes double booking impossible.
pub const NO_OVERLAP_CONSTRAINT: &str = "table_claims_no_overlap";

#[derive(Debug, Clone)]
pub struct HoldRow {
    pub id: HoldId,
    pub restaurant_id: RestaurantId,
    pub party_size: i16,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub blocked_start: DateTime<Utc>,
    pub blocked_end: DateTime<Utc>,
    pub status: String,
    pub strict_mode: String,
    pub expires_at: DateTime<Utc>,
    pub policy_version: Option<i32>,
    pub policy_hash: Option<String>,
    pub table_ids: Vec<Uuid>,
    pub selection_snapshot: Option<Value>,
    pub booking_id: Option<Uuid>,
    pub replaced_by: Option<Uuid>,
    /// The database's clock when the row was read: expiry is judged by one clock.
    pub db_now: DateTime<Utc>,
}

const HOLD_COLUMNS: &str = "id, restaurant_id, party_size, starts_at, ends_at, lower(blocked), upper(blocked), status,
     strict_mode, expires_at, policy_version, policy_hash, table_ids, selection_snapshot, booking_id, replaced_by, now()";

fn hold_from_row(r: &tokio_postgres::Row) -> HoldRow {
    HoldRow {
        id: HoldId(r.get(0)),
        restaurant_id: RestaurantId(r.get(1)),
        party_size: r.get(2),
        starts_at: r.get(3),
        ends_at: r.get(4),
        blocked_start: r.get(5),
        blocked_end: r.get(6),
        status: r.get(7),
        strict_mode: r.get(8),
        expires_at: r.get(9),
        policy_version: r.get(10),
        policy_hash: r.get(11),
        table_ids: r.get(12),
        selection_snapshot: r.get(13),
        booking_id: r.get(14),
        replaced_by: r.get(15),
        db_now: r.get(16),
    }
}

/// The restaurant's current (highest-version) policy. Its hash is always recomputed by the
/// one hash function in holdfast-shared; the stored column is for SQL readers only.
pub async fn current_policy<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
) -> Result<Option<BookingPolicy>, DbFault> {
    let row = c
        .query_opt(
            &c.prepare_cached(
                "SELECT body FROM booking_policies WHERE restaurant_id = $1 ORDER BY version DESC LIMIT 1",
            )
            .await?,
            &[&restaurant.as_uuid()],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let body: Value = r.get(0);
            serde_json::from_value(body)
                .map(Some)
                .map_err(|e| DbFault::Other(format!("stored policy does not parse: {e}")))
        }
    }
}

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

/// Queue writers of the same tables behind each other (row locks on the floor-plan rows, in
/// id order). Without this, two transactions inserting conflicting rows under an exclusion
/// constraint can each wait on the other's uncommitted row: a deadlock PostgreSQL only breaks
/// after `deadlock_timeout` (1 s). The constraint stays the guarantee; this only makes the
/// loser fail fast with 23P01 instead of after a deadlock.
pub async fn lock_tables<C: GenericClient>(c: &C, tables: &[Uuid]) -> Result<(), DbFault> {
    c.query(
        &c.prepare_cached("SELECT id FROM restaurant_tables WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE").await?,
        &[&tables],
    )
    .await?;
    Ok(())
}

/// Expired holds never block: deactivate expired hold claims overlapping what we are about to
/// claim, in the caller's transaction (no sweeper needed). Concurrent writers serialise on
/// these rows, and the exclusion constraint settles whatever remains.
pub async fn prune_expired<C: GenericClient>(c: &C, tables: &[Uuid], blocked: &Window) -> Result<u64, DbFault> {
    Ok(c.execute(
        &c.prepare_cached(
            "UPDATE table_claims SET active = false
          WHERE active AND kind = 'hold' AND expires_at <= now()
            AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')",
        )
        .await?,
        &[&tables, &blocked.start(), &blocked.end()],
    )
    .await?)
}

pub struct NewHold<'a> {
    pub id: HoldId,
    pub restaurant: RestaurantId,
    pub party_size: i16,
    pub seated: &'a Window,
    pub blocked: &'a Window,
    pub status: &'static str,
    pub strict_mode: &'static str,
    pub ttl_secs: i32,
    /// When set, the expiry is copied (drift re-hold keeps the guest's deadline).
    pub expires_at: Option<DateTime<Utc>>,
    pub policy_version: i32,
    pub policy_hash: &'a str,
    pub table_ids: &'a [Uuid],
    pub snapshot: &'a Value,
    pub booking_id: Option<Uuid>,
}

/// Insert a hold; returns its expiry (database clock).
pub async fn insert_hold<C: GenericClient>(c: &C, h: &NewHold<'_>) -> Result<DateTime<Utc>, DbFault> {
    let row = c
        .query_one(
            &c.prepare_cached(
                "INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode,
                                expires_at, policy_version, policy_hash, table_ids, selection_snapshot, booking_id)
             VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7, '[)'), $8, $9,
                     COALESCE($10, now() + make_interval(secs => $11)), $12, $13, $14, $15, $16)
             RETURNING expires_at",
            )
            .await?,
            &[
                &h.id.as_uuid(),
                &h.restaurant.as_uuid(),
                &h.party_size,
                &h.seated.start(),
                &h.seated.end(),
                &h.blocked.start(),
                &h.blocked.end(),
                &h.status,
                &h.strict_mode,
                &h.expires_at,
                &f64::from(h.ttl_secs),
                &h.policy_version,
                &h.policy_hash,
                &h.table_ids,
                &h.snapshot,
                &h.booking_id,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// The hold write path in one flight: lock the tables (id order), prune expired holds on
/// them, then insert the hold and its claims in one statement (a data-modifying CTE, so the
/// merged selection is still all-or-nothing). The three statements are pipelined on the
/// transaction's connection: prepared first, then sent in order on their first poll, so the
/// server runs them in exactly the sequential order while the client waits once instead of
/// three times (this is what lifts the handler toward pgbench's rate; BENCHMARKS.md).
/// Returns the hold's expiry (database clock). Errors are reported in statement order.
pub async fn hold_write<C: GenericClient>(c: &C, h: &NewHold<'_>, exclusive: bool) -> Result<DateTime<Utc>, DbFault> {
    let (lock, prune, insert) = tokio::try_join!(
        c.prepare_cached("SELECT id FROM restaurant_tables WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"),
        c.prepare_cached(
            "UPDATE table_claims SET active = false
              WHERE active AND kind = 'hold' AND expires_at <= now()
                AND table_id = ANY($1) AND during && tstzrange($2, $3, '[)')",
        ),
        c.prepare_cached(
            "WITH h AS (
               INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode,
                                  expires_at, policy_version, policy_hash, table_ids, selection_snapshot)
               VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7, '[)'), $8, $9,
                       now() + make_interval(secs => $10), $11, $12, $13, $14)
               RETURNING id, expires_at, blocked
             ), c AS (
               INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive)
               SELECT $2, t, 'hold', h.id, h.blocked, h.expires_at, $15
                 FROM h, unnest($16::uuid[]) WITH ORDINALITY AS u(t, n) ORDER BY n
             )
             SELECT expires_at FROM h",
        ),
    )?;
    let mut sorted = h.table_ids.to_vec();
    sorted.sort();
    let ttl = f64::from(h.ttl_secs);
    let (blocked_start, blocked_end) = (h.blocked.start(), h.blocked.end());
    // join!, not try_join!: every response is awaited, then the first error in statement order
    // wins (a later statement only fails with "transaction aborted" because of it).
    let (id, restaurant, seated_start, seated_end) =
        (h.id.as_uuid(), h.restaurant.as_uuid(), h.seated.start(), h.seated.end());
    let lock_params: [&(dyn ToSql + Sync); 1] = [&sorted];
    let prune_params: [&(dyn ToSql + Sync); 3] = [&sorted, &blocked_start, &blocked_end];
    let insert_params: [&(dyn ToSql + Sync); 16] = [
        &id,
        &restaurant,
        &h.party_size,
        &seated_start,
        &seated_end,
        &blocked_start,
        &blocked_end,
        &h.status,
        &h.strict_mode,
        &ttl,
        &h.policy_version,
        &h.policy_hash,
        &h.table_ids,
        &h.snapshot,
        &exclusive,
        &sorted,
    ];
    let (locked, pruned, inserted) = tokio::join!(
        c.query(&lock, &lock_params),
        c.execute(&prune, &prune_params),
        c.query_one(&insert, &insert_params),
    );
    locked?;
    pruned?;
    Ok(inserted?.get(0))
}

pub enum ClaimKind {
    Hold { hold: HoldId, expires_at: DateTime<Utc>, exclusive: bool },
    Booking { booking: Uuid, hold: HoldId },
}

/// Claim every table of a selection in one statement: a merged selection is all-or-nothing.
/// Tables are inserted in id order so concurrent multi-table claims queue rather than deadlock.
pub async fn insert_claims<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
    tables: &[Uuid],
    blocked: &Window,
    kind: ClaimKind,
) -> Result<(), DbFault> {
    let mut sorted = tables.to_vec();
    sorted.sort();
    let (kind_s, hold, booking, expires, exclusive) = match kind {
        ClaimKind::Hold { hold, expires_at, exclusive } => {
            ("hold", Some(hold.as_uuid()), None, Some(expires_at), exclusive)
        }
        ClaimKind::Booking { booking, hold } => ("booking", Some(hold.as_uuid()), Some(booking), None, true),
    };
    // A booking claim keeps its hold id for traceability but is not a hold claim.
    let hold_for_row = if kind_s == "hold" { hold } else { None };
    let _ = hold;
    c.execute(&c.prepare_cached("INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, booking_id, during, expires_at, exclusive)
         SELECT $1, t, $2, $3, $4, tstzrange($5, $6, '[)'), $7, $8
           FROM unnest($9::uuid[]) WITH ORDINALITY AS u(t, n) ORDER BY n").await?,
        &[
            &restaurant.as_uuid(),
            &kind_s,
            &hold_for_row,
            &booking,
            &blocked.start(),
            &blocked.end(),
            &expires,
            &exclusive,
            &sorted,
        ],
    )
    .await?;
    Ok(())
}

/// Shadow mode: would this hold have conflicted with another live claim?
pub async fn shadow_overlap<C: GenericClient>(
    c: &C,
    hold: HoldId,
    tables: &[Uuid],
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
            &[&tables, &blocked.start(), &blocked.end(), &hold.as_uuid()],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn get_hold<C: GenericClient>(c: &C, id: HoldId) -> Result<Option<HoldRow>, DbFault> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
    Ok(c.query_opt(&c.prepare_cached(&sql).await?, &[&id.as_uuid()]).await?.as_ref().map(hold_from_row))
}

/// Lock the hold for the rest of the transaction (confirm/release of one hold serialise).
pub async fn lock_hold<C: GenericClient>(c: &C, id: HoldId) -> Result<Option<HoldRow>, DbFault> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 FOR UPDATE");
    Ok(c.query_opt(&c.prepare_cached(&sql).await?, &[&id.as_uuid()]).await?.as_ref().map(hold_from_row))
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

pub struct NewBooking<'a> {
    pub id: Uuid,
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
            &b.id,
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

pub async fn set_hold_confirmed<C: GenericClient>(c: &C, hold: HoldId, booking: Uuid) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached("UPDATE holds SET status = 'confirmed', booking_id = $2, updated_at = now() WHERE id = $1")
            .await?,
        &[&hold.as_uuid(), &booking],
    )
    .await?;
    Ok(())
}

pub async fn set_hold_released<C: GenericClient>(
    c: &C,
    hold: HoldId,
    replaced_by: Option<HoldId>,
) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached("UPDATE holds SET status = 'released', replaced_by = $2, updated_at = now() WHERE id = $1")
            .await?,
        &[&hold.as_uuid(), &replaced_by.map(|h| h.as_uuid())],
    )
    .await?;
    Ok(())
}

/// Does the database enforce the no-overlap guarantee? (constraint present, an exclusion
/// constraint, and validated). Checked at cold start; hold writes refuse to run without it.
pub async fn verify_enforcement<C: GenericClient>(c: &C) -> Result<bool, DbFault> {
    let row = c
        .query_one(
            &c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint
                             WHERE conname = $1 AND contype = 'x' AND convalidated
                               AND conrelid = to_regclass('table_claims'))",
            )
            .await?,
            &[&NO_OVERLAP_CONSTRAINT],
        )
        .await?;
    Ok(row.get(0))
}

/// Publish a restaurant's policy: upsert the restaurant and its floor plan, then insert the
/// policy version with its canonical hash. Used by the seed command, tests and ops tooling.
pub async fn publish_policy<C: GenericClient>(
    c: &C,
    restaurant: RestaurantId,
    name: &str,
    policy: &BookingPolicy,
) -> Result<(), DbFault> {
    c.execute(
        &c.prepare_cached(
            "INSERT INTO restaurants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        )
        .await?,
        &[&restaurant.as_uuid(), &name],
    )
    .await?;
    for t in &policy.tables {
        let adjacent: Vec<Uuid> = t.adjacent.iter().map(|a| a.as_uuid()).collect();
        c.execute(&c.prepare_cached("INSERT INTO restaurant_tables (id, restaurant_id, label, min_party, capacity, zone, mergeable, adjacent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET label = EXCLUDED.label, min_party = EXCLUDED.min_party,
                 capacity = EXCLUDED.capacity, zone = EXCLUDED.zone, mergeable = EXCLUDED.mergeable,
                 adjacent = EXCLUDED.adjacent").await?,
            &[
                &t.id.as_uuid(),
                &restaurant.as_uuid(),
                &t.label,
                &(t.min_party as i16),
                &(t.capacity as i16),
                &t.zone,
                &t.mergeable,
                &adjacent,
            ],
        )
        .await?;
    }
    let body = serde_json::to_value(policy).map_err(|e| DbFault::Other(e.to_string()))?;
    c.execute(
        &c.prepare_cached(
            "INSERT INTO booking_policies (restaurant_id, version, content_hash, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (restaurant_id, version) DO NOTHING",
        )
        .await?,
        &[&restaurant.as_uuid(), &policy.version, &policy.content_hash().as_str(), &body],
    )
    .await?;
    Ok(())
}

/// Idempotency: the stored first response for (scope, key), if any.
pub async fn idempotency_lookup<C: GenericClient>(
    c: &C,
    scope: &str,
    key: &str,
) -> Result<Option<(String, i16, Value)>, DbFault> {
    Ok(c.query_opt(
        &c.prepare_cached(
            "SELECT request_hash, status_code, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .await?,
        &[&scope, &key],
    )
    .await?
    .map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// Store the response in the write's own transaction. A concurrent duplicate blocks on the
/// primary key until the first commits, then fails with a unique violation (caller replays).
pub async fn idempotency_save<C: GenericClient>(
    c: &C,
    scope: &str,
    key: &str,
    hash: &str,
    status: i16,
    body: &Value,
) -> Result<(), DbFault> {
    c.execute(&c.prepare_cached("INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response) VALUES ($1, $2, $3, $4, $5)").await?,
        &[&scope, &key, &hash, &status, body],
    )
    .await?;
    Ok(())
}
