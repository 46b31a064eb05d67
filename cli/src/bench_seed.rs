//! Restaurants for the load benchmarks (`holdfast holds seed-restaurants`, the multi-restaurant
//! rush, the reservation drop): the demo floor plan and policy, with table ids of their own
//! (a table belongs to one restaurant: `publish_policy` upserts tables by id).

use crate::Res;
use holdfast_shared::ids::{RestaurantId, TableId};
use holdfast_shared::policy::BookingPolicy;
use uuid::Uuid;

/// Seeded restaurant `k` (0-based): `5d2c1f3e-0000-4000-8000-5eed0000xxxx`, the same on every
/// run, so the rush can address the restaurants the seed command made.
pub fn seeded_restaurant(k: usize) -> RestaurantId {
    RestaurantId(Uuid::from_u128(0x5d2c_1f3e_0000_4000_8000_5eed_0000_0000 | k as u128))
}

/// The demo policy (8 tables, service 11:00–23:00 Europe/London) repeated `groups` times (8 ×
/// `groups` tables, adjacency within each group), every table id minted by `table_id(g, n)`.
pub fn policy_with_ids(groups: usize, table_id: impl Fn(usize, usize) -> TableId) -> BookingPolicy {
    let demo = BookingPolicy::demo(1);
    let index = |id: TableId| demo.tables.iter().position(|t| t.id == id).expect("demo adjacency is a demo table");
    let mut policy = demo.clone();
    policy.tables = (0..groups.max(1))
        .flat_map(|g| {
            let table_id = &table_id;
            demo.tables.iter().enumerate().map(move |(n, t)| {
                let mut t = t.clone();
                t.id = table_id(g, n);
                t.adjacent = t.adjacent.iter().map(|&a| table_id(g, index(a))).collect();
                if g > 0 {
                    t.label = format!("{}-{g}", t.label);
                }
                t
            })
        })
        .collect();
    policy
}

/// Seeded restaurant `k`'s policy: table ids `5eedtttt-kkkk-4000-8000-0000000000nn`-shaped,
/// derived from `k`, the group and the table.
pub fn seeded_policy(k: usize, groups: usize) -> BookingPolicy {
    policy_with_ids(groups, |g, n| {
        TableId(Uuid::from_u128(
            0x5eed_0000_0000_4000_8000_0000_0000_0000 | ((k as u128) << 80) | ((g as u128) << 8) | n as u128,
        ))
    })
}

/// Publish restaurants `0..count` (idempotent: a second run changes nothing).
pub async fn seed(pool: &deadpool_postgres::Pool, count: usize, groups: usize) -> Res<Vec<RestaurantId>> {
    let c = pool.get().await?;
    let mut ids = Vec::with_capacity(count);
    for k in 0..count {
        let id = seeded_restaurant(k);
        holds_api::store::publish_policy(&c, id, &format!("Bench Bistro {k}"), &seeded_policy(k, groups)).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// A restaurant of its own for one benchmark run: random ids, the demo policy × `groups`.
pub async fn fresh(pool: &deadpool_postgres::Pool, name: &str, groups: usize) -> Res<RestaurantId> {
    let id = RestaurantId::new_random();
    let per_group = BookingPolicy::demo(1).tables.len();
    let ids: Vec<TableId> = (0..groups.max(1) * per_group).map(|_| TableId::new_random()).collect();
    let policy = policy_with_ids(groups, |g, n| ids[g * per_group + n]);
    holds_api::store::publish_policy(&pool.get().await?, id, name, &policy).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_policies_are_valid_and_share_no_table() {
        let (a, b) = (seeded_policy(0, 2), seeded_policy(49, 2));
        assert!(a.validate().is_ok(), "{:?}", a.validate());
        assert_eq!(a.tables.len(), 16);
        let mut ids: Vec<_> = a.tables.iter().chain(&b.tables).map(|t| t.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 32, "table ids are unique across restaurants and groups");
        for t in &a.tables {
            assert!(t.adjacent.iter().all(|x| a.table(*x).is_some()), "adjacency stays inside the restaurant");
        }
        assert_ne!(seeded_restaurant(0), seeded_restaurant(1));
        assert_eq!(seeded_restaurant(7), seeded_restaurant(7));
    }
}
