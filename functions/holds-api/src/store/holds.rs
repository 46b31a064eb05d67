//! `holds`: the hold rows, typed on the way out, and the one-flight hold write.

use super::claims::{LOCK_CLAIMS_SQL, PRUNE_EXPIRED_SQL};
use super::{sorted_uuids, uuids};
use chrono::{DateTime, Utc};
use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::{Param, Sql};
use holdfast_shared::auth::Subject;
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::events::StrictMode;
use holdfast_shared::hold::{HoldMetadata, HoldStatus};
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId, TableId};
use holdfast_shared::window::Window;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct HoldRow {
    pub id: HoldId,
    pub restaurant_id: RestaurantId,
    pub party_size: i16,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub blocked_start: DateTime<Utc>,
    pub blocked_end: DateTime<Utc>,
    pub status: HoldStatus,
    pub strict_mode: StrictMode,
    pub expires_at: DateTime<Utc>,
    pub policy_version: Option<i32>,
    pub policy_hash: Option<String>,
    pub table_ids: Vec<TableId>,
    pub selection_snapshot: Option<Value>,
    pub booking_id: Option<BookingId>,
    pub replaced_by: Option<HoldId>,
    /// Who created the hold; `None` for holds written before owners were stored.
    pub owner: Option<Subject>,
    /// The correlation id its booking will carry; `None` for holds written before V13.
    pub correlation_id: Option<CorrelationId>,
    /// The database's clock when the row was read: expiry is judged by one clock.
    pub db_now: DateTime<Utc>,
}

impl HoldRow {
    /// The metadata as stored, for the completeness check.
    pub fn metadata(&self) -> HoldMetadata {
        HoldMetadata {
            policy_version: self.policy_version,
            policy_hash: self.policy_hash.clone(),
            table_ids: self.table_ids.clone(),
            selection_snapshot: self.selection_snapshot.clone(),
        }
    }

    /// (seated, blocked). The table's CHECKs make both non-empty; anything else is a fault.
    pub fn windows(&self) -> Result<(Window, Window), DbFault> {
        let bad = |_| DbFault::Other("bad hold window".into());
        Ok((
            Window::new(self.starts_at, self.ends_at).map_err(bad)?,
            Window::new(self.blocked_start, self.blocked_end).map_err(bad)?,
        ))
    }
}

const HOLD_COLUMNS: &str = "id, restaurant_id, party_size, starts_at, ends_at, lower(blocked), upper(blocked), status,
     strict_mode, expires_at, policy_version, policy_hash, table_ids, selection_snapshot, booking_id, replaced_by, now(), owner_subject,
     correlation_id";

fn hold_from_row(r: &tokio_postgres::Row) -> Result<HoldRow, DbFault> {
    let status: &str = r.get(7);
    let mode: &str = r.get(8);
    let table_ids: Vec<Uuid> = r.get(12);
    let owner: Option<&str> = r.get(17);
    let owner = owner.map(Subject::parse).transpose().map_err(|e| DbFault::Other(format!("stored owner: {e}")))?;
    let correlation_id = stored_correlation(r.get(18))?;
    Ok(HoldRow {
        id: HoldId(r.get(0)),
        restaurant_id: RestaurantId(r.get(1)),
        party_size: r.get(2),
        starts_at: r.get(3),
        ends_at: r.get(4),
        blocked_start: r.get(5),
        blocked_end: r.get(6),
        status: HoldStatus::parse(status).map_err(|e| DbFault::Other(e.to_string()))?,
        strict_mode: StrictMode::parse(mode).ok_or_else(|| DbFault::Other(format!("unknown strict mode {mode:?}")))?,
        expires_at: r.get(9),
        policy_version: r.get(10),
        policy_hash: r.get(11),
        table_ids: table_ids.into_iter().map(TableId).collect(),
        selection_snapshot: r.get(13),
        booking_id: r.get::<_, Option<Uuid>>(14).map(BookingId),
        replaced_by: r.get::<_, Option<Uuid>>(15).map(HoldId),
        db_now: r.get(16),
        owner,
        correlation_id,
    })
}

/// A stored correlation id, typed (the column's CHECK has the parser's shape).
pub(super) fn stored_correlation(v: Option<&str>) -> Result<Option<CorrelationId>, DbFault> {
    v.map(CorrelationId::parse).transpose().map_err(|e| DbFault::Other(format!("stored correlation id: {e}")))
}

pub async fn get_hold<C: Sql>(c: &C, id: HoldId) -> Result<Option<HoldRow>, DbFault> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
    c.fetch_opt(&sql, &[&id.as_uuid()]).await?.as_ref().map(hold_from_row).transpose()
}

/// Lock the hold for the rest of the transaction (confirm/release of one hold serialise).
pub async fn lock_hold<C: Sql>(c: &C, id: HoldId) -> Result<Option<HoldRow>, DbFault> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1 FOR UPDATE");
    c.fetch_opt(&sql, &[&id.as_uuid()]).await?.as_ref().map(hold_from_row).transpose()
}

pub struct NewHold<'a> {
    pub id: HoldId,
    pub restaurant: RestaurantId,
    pub party_size: i16,
    pub seated: &'a Window,
    pub blocked: &'a Window,
    pub status: HoldStatus,
    pub strict_mode: StrictMode,
    pub ttl_secs: i32,
    /// When set, the expiry is copied (drift re-hold keeps the guest's deadline).
    pub expires_at: Option<DateTime<Utc>>,
    pub policy_version: i32,
    pub policy_hash: &'a str,
    pub table_ids: &'a [TableId],
    pub snapshot: &'a Value,
    pub booking_id: Option<BookingId>,
    pub owner: Option<&'a Subject>,
    pub correlation: Option<&'a CorrelationId>,
}

/// Insert a hold row (no claims); returns its expiry (database clock).
pub async fn insert_hold<C: Sql>(c: &C, h: &NewHold<'_>) -> Result<DateTime<Utc>, DbFault> {
    let sql = "INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode,
                                expires_at, policy_version, policy_hash, table_ids, selection_snapshot, booking_id,
                                owner_subject, correlation_id)
             VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7, '[)'), $8, $9,
                     COALESCE($10, now() + make_interval(secs => $11)), $12, $13, $14, $15, $16, $17, $18)
             RETURNING expires_at";
    let (id, restaurant, tables) = (h.id.as_uuid(), h.restaurant.as_uuid(), uuids(h.table_ids));
    let (status, mode, ttl, booking) =
        (h.status.as_str(), h.strict_mode.as_str(), f64::from(h.ttl_secs), h.booking_id.map(|b| b.as_uuid()));
    let (owner, correlation) = (h.owner.map(Subject::as_str), h.correlation.map(CorrelationId::as_str));
    let params: [&dyn Param; 18] = [
        &id,
        &restaurant,
        &h.party_size,
        &h.seated.start(),
        &h.seated.end(),
        &h.blocked.start(),
        &h.blocked.end(),
        &status,
        &mode,
        &h.expires_at,
        &ttl,
        &h.policy_version,
        &h.policy_hash,
        &tables,
        &h.snapshot,
        &booking,
        &owner,
        &correlation,
    ];
    Ok(c.fetch_one(sql, &params).await?.get(0))
}

/// Serialise one guest's writes at one restaurant (transaction-scoped, so a pooler can
/// multiplex): the live-hold and confirm-rate counts that follow cannot be raced past.
pub(super) const LOCK_GUEST_SQL: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text || '|' || $2::text, 0))";

/// The hold write path in one flight: lock the guest, lock the (table, hour)s the window touches
/// (key order), prune expired holds on them, then insert the hold and its claims in one statement (a data-modifying CTE,
/// so the merged selection is still all-or-nothing) unless the guest already has
/// `max_live_holds` live holds here. The statements are pipelined on the transaction's
/// connection, each as the unnamed statement (parse, bind and execute in one message: nothing
/// outlives the transaction, so a pooler may multiplex it), sent in order on their first poll,
/// so the server runs them in exactly the sequential order while the client waits once
/// (BENCHMARKS.md).
/// Returns the hold's expiry (database clock), or `None` when the guest is at the limit.
/// Errors are reported in statement order.
pub async fn hold_write<C: Sql>(
    c: &C,
    h: &NewHold<'_>,
    exclusive: bool,
    max_live_holds: u8,
) -> Result<Option<DateTime<Utc>>, DbFault> {
    let insert = "WITH h AS (
               INSERT INTO holds (id, restaurant_id, party_size, starts_at, ends_at, blocked, status, strict_mode,
                                  expires_at, policy_version, policy_hash, table_ids, selection_snapshot, owner_subject,
                                  correlation_id)
               SELECT $1::uuid, $2::uuid, $3::smallint, $4::timestamptz, $5::timestamptz,
                      tstzrange($6::timestamptz, $7::timestamptz, '[)'), $8::text, $9::text,
                      now() + make_interval(secs => $10::float8), $11::int, $12::text, $13::uuid[], $14::jsonb, $17::text,
                      $19::text
                WHERE $17::text IS NULL
                   OR (SELECT count(*) FROM holds
                        WHERE restaurant_id = $2 AND owner_subject = $17 AND status = 'held' AND expires_at > now())
                      < $18::int
               RETURNING id, expires_at, blocked
             ), c AS (
               INSERT INTO table_claims (restaurant_id, table_id, kind, hold_id, during, expires_at, exclusive)
               SELECT $2, t, 'hold', h.id, h.blocked, h.expires_at, $15
                 FROM h, unnest($16::uuid[]) WITH ORDINALITY AS u(t, n) ORDER BY n
             )
             SELECT expires_at FROM h";
    let sorted = sorted_uuids(h.table_ids);
    let tables = uuids(h.table_ids);
    let ttl = f64::from(h.ttl_secs);
    let (status, mode) = (h.status.as_str(), h.strict_mode.as_str());
    let (blocked_start, blocked_end) = (h.blocked.start(), h.blocked.end());
    let (id, restaurant, seated_start, seated_end) =
        (h.id.as_uuid(), h.restaurant.as_uuid(), h.seated.start(), h.seated.end());
    let (owner, max) = (h.owner.map(Subject::as_str), i32::from(max_live_holds));
    let correlation = h.correlation.map(CorrelationId::as_str);
    let guest_key = owner.unwrap_or("");
    let guest_params: [&dyn Param; 2] = [&restaurant, &guest_key];
    // The claim locks and the prune take the same parameters: the tables and the window.
    let prune_params: [&dyn Param; 3] = [&sorted, &blocked_start, &blocked_end];
    let insert_params: [&dyn Param; 19] = [
        &id,
        &restaurant,
        &h.party_size,
        &seated_start,
        &seated_end,
        &blocked_start,
        &blocked_end,
        &status,
        &mode,
        &ttl,
        &h.policy_version,
        &h.policy_hash,
        &tables,
        &h.snapshot,
        &exclusive,
        &sorted,
        &owner,
        &max,
        &correlation,
    ];
    // join!, not try_join!: every response is awaited, then the first error in statement order
    // wins (a later statement only fails with "transaction aborted" because of it).
    let (guest_locked, locked, pruned, inserted) = tokio::join!(
        c.fetch(LOCK_GUEST_SQL, &guest_params),
        c.fetch(LOCK_CLAIMS_SQL, &prune_params),
        c.run(PRUNE_EXPIRED_SQL, &prune_params),
        c.fetch_opt(insert, &insert_params),
    );
    guest_locked?;
    locked?;
    pruned?;
    Ok(inserted?.map(|r| r.get(0)))
}

/// Seconds until the guest's earliest live hold here expires (when a new one may be taken).
pub async fn live_hold_retry_after<C: Sql>(c: &C, restaurant: RestaurantId, owner: &Subject) -> Result<u32, DbFault> {
    let sql = "SELECT GREATEST(1, ceil(extract(epoch FROM min(expires_at) - now())))::int FROM holds
              WHERE restaurant_id = $1 AND owner_subject = $2 AND status = 'held' AND expires_at > now()";
    let secs: Option<i32> = c.fetch_one(sql, &[&restaurant.as_uuid(), &owner.as_str()]).await?.get(0);
    Ok(secs.map_or(1, |s| s.max(1) as u32))
}

pub async fn set_hold_confirmed<C: Sql>(c: &C, hold: HoldId, booking: BookingId) -> Result<(), DbFault> {
    c.run(
        "UPDATE holds SET status = 'confirmed', booking_id = $2, updated_at = now() WHERE id = $1",
        &[&hold.as_uuid(), &booking.as_uuid()],
    )
    .await?;
    Ok(())
}

pub async fn set_hold_released<C: Sql>(c: &C, hold: HoldId, replaced_by: Option<HoldId>) -> Result<(), DbFault> {
    c.run(
        "UPDATE holds SET status = 'released', replaced_by = $2, updated_at = now() WHERE id = $1",
        &[&hold.as_uuid(), &replaced_by.map(|h| h.as_uuid())],
    )
    .await?;
    Ok(())
}
