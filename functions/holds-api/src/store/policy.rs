//! Booking policies and the floor plan they describe, and the check that the database enforces
//! the no-overlap constraint.

use holdfast_adapters::db::{constraints, DbFault};
use holdfast_adapters::sql::Sql;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use serde_json::Value;
use uuid::Uuid;

/// The restaurant's current (highest-version) policy. Its hash is always recomputed by the
/// one hash function in holdfast-shared; the stored column is for SQL readers only.
pub async fn current_policy<C: Sql>(c: &C, restaurant: RestaurantId) -> Result<Option<BookingPolicy>, DbFault> {
    let row = c
        .fetch_opt(
            "SELECT body FROM booking_policies WHERE restaurant_id = $1 ORDER BY version DESC LIMIT 1",
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

/// Does the database enforce the no-overlap guarantee? (constraint present, an exclusion
/// constraint, and validated). Checked at cold start; hold writes refuse to run without it.
pub async fn verify_enforcement<C: Sql>(c: &C) -> Result<bool, DbFault> {
    let row = c
        .fetch_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint
                             WHERE conname = $1 AND contype = 'x' AND convalidated
                               AND conrelid = to_regclass('table_claims'))",
            &[&constraints::TABLE_CLAIMS_NO_OVERLAP],
        )
        .await?;
    Ok(row.get(0))
}

/// Publish a restaurant's policy: upsert the restaurant and its floor plan, then insert the
/// policy version with its canonical hash. Used by the seed command, tests and ops tooling.
pub async fn publish_policy<C: Sql>(
    c: &C,
    restaurant: RestaurantId,
    name: &str,
    policy: &BookingPolicy,
) -> Result<(), DbFault> {
    c.run(
        "INSERT INTO restaurants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        &[&restaurant.as_uuid(), &name],
    )
    .await?;
    for t in &policy.tables {
        let adjacent: Vec<Uuid> = t.adjacent.iter().map(|a| a.as_uuid()).collect();
        c.run(
            "INSERT INTO restaurant_tables (id, restaurant_id, label, min_party, capacity, zone, mergeable, adjacent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET label = EXCLUDED.label, min_party = EXCLUDED.min_party,
                 capacity = EXCLUDED.capacity, zone = EXCLUDED.zone, mergeable = EXCLUDED.mergeable,
                 adjacent = EXCLUDED.adjacent",
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
    c.run(
        "INSERT INTO booking_policies (restaurant_id, version, content_hash, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (restaurant_id, version) DO NOTHING",
        &[&restaurant.as_uuid(), &policy.version, &policy.content_hash().as_str(), &body],
    )
    .await?;
    Ok(())
}
