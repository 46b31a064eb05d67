//! Backfill for holds written before metadata was required (policy hash/version, table ids,
//! selection snapshot). Confirm refuses such holds; this repairs what can be reconstructed:
//! - the policy in force when the hold was created (highest version created at or before it),
//! - the table ids from the hold's own claims,
//! - a snapshot marked `"source": "backfill"` recording what was reconstructed.
//!
//! Holds whose tables cannot be found stay incomplete (reported, never invented).

use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::Sql;
use holdfast_shared::policy::BookingPolicy;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub candidates: u64,
    pub repaired: u64,
    pub unrepairable: u64,
}

/// Repair live (`held`) holds lacking metadata. `dry_run` reports without writing.
pub async fn backfill_hold_metadata<C: Sql>(c: &C, dry_run: bool) -> Result<BackfillReport, DbFault> {
    let rows = c
        .fetch(
            "SELECT h.id, h.restaurant_id, h.created_at,
                    COALESCE(NULLIF(h.table_ids, '{}'),
                             (SELECT array_agg(DISTINCT tc.table_id) FROM table_claims tc WHERE tc.hold_id = h.id)) AS tables,
                    (SELECT p.body FROM booking_policies p
                      WHERE p.restaurant_id = h.restaurant_id AND p.created_at <= h.created_at
                      ORDER BY p.version DESC LIMIT 1) AS policy
               FROM holds h
              WHERE h.status = 'held'
                AND (h.policy_hash IS NULL OR h.policy_version IS NULL OR h.selection_snapshot IS NULL
                     OR h.selection_snapshot = '{}'::jsonb OR cardinality(h.table_ids) = 0)",
            &[],
        )
        .await?;
    let mut report = BackfillReport { candidates: rows.len() as u64, ..Default::default() };
    for r in rows {
        let id: Uuid = r.get(0);
        let tables: Option<Vec<Uuid>> = r.get(3);
        let policy: Option<serde_json::Value> = r.get(4);
        let policy: Option<BookingPolicy> = policy.and_then(|p| serde_json::from_value(p).ok());
        let (Some(tables), Some(policy)) = (tables.filter(|t| !t.is_empty()), policy) else {
            report.unrepairable += 1;
            continue;
        };
        let hash = policy.content_hash();
        let snapshot = json!({
            "source": "backfill",
            "policy_version": policy.version,
            "policy_hash": hash,
            "table_ids": tables,
        });
        if !dry_run {
            c.run(
                "UPDATE holds SET policy_version = COALESCE(policy_version, $2),
                                  policy_hash = COALESCE(policy_hash, $3),
                                  table_ids = CASE WHEN cardinality(table_ids) = 0 THEN $4 ELSE table_ids END,
                                  selection_snapshot = CASE WHEN selection_snapshot IS NULL OR selection_snapshot = '{}'::jsonb
                                                            THEN $5 ELSE selection_snapshot END,
                                  updated_at = now()
                  WHERE id = $1",
                &[&id, &policy.version, &hash.as_str(), &tables, &snapshot],
            )
            .await?;
        }
        report.repaired += 1;
    }
    Ok(report)
}
