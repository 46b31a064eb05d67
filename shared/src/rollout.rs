//! Staged rollout of strict conflicts (`holds.strictConflicts`) to existing restaurants.
//!
//! What the two modes mean — the old system's flag silently stopped doing anything in the
//! database; here the meaning is fixed and tested:
//! - **Enforced**: a hold is an exclusive claim on its tables from the moment it is taken. The
//!   database exclusion constraint refuses an overlapping live hold (SQLSTATE 23P01), which the
//!   API answers with 409 and alternatives.
//! - **Shadow**: a hold is advisory, not exclusive. A hold that would have conflicted is still
//!   created, and the would-be conflict is recorded as a `hold.conflict.shadow` event so the
//!   rollout can be judged before enforcing. Exclusivity is enforced at confirm instead.
//!
//! In BOTH modes a confirmed booking is exclusive in the database (its own exclusion
//! constraint), so double BOOKING is impossible whatever the flag says; the flag only decides
//! whether the conflict surfaces at hold time or at confirm time.
//!
//! Rollout: a restaurant is enforced iff the flag is on and its [`bucket`] is below the
//! rollout percentage (10 → 50 → 100). Buckets are a stable hash of the restaurant id, so a
//! restaurant enforced at 10% stays enforced at 50% and 100%. Turning the flag off is the kill
//! switch: every restaurant goes back to Shadow at once, with no deploy.

use crate::ids::RestaurantId;
use sha2::{Digest, Sha256};

/// Hash salt: the flag name, so another staged flag would bucket restaurants independently.
/// Never change it: it would reshuffle which restaurants are enforced.
pub const BUCKET_SALT: &str = "holds.strictConflicts";

/// The restaurant's rollout bucket in `0..100`:
/// `u64::from_be_bytes(sha256(BUCKET_SALT ++ uuid bytes)[..8]) % 100`.
pub fn bucket(restaurant: RestaurantId) -> u8 {
    let mut h = Sha256::new();
    h.update(BUCKET_SALT.as_bytes());
    h.update(restaurant.as_uuid().as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 2^64 mod 100 = 16, so the bias towards low buckets is ~1e-18: negligible.
    (u64::from_be_bytes(first) % 100) as u8
}

/// How conflicts are handled for one restaurant (see module docs). One enum for the rollout,
/// the hold rows and the events: defined with the event vocabulary, re-exported here.
pub use crate::events::StrictMode;

/// Enforced iff `strict_conflicts_enabled && bucket(restaurant) < rollout_percent`.
/// A percentage above 100 behaves as 100.
pub fn strict_mode(strict_conflicts_enabled: bool, rollout_percent: u8, restaurant: RestaurantId) -> StrictMode {
    if strict_conflicts_enabled && bucket(restaurant) < rollout_percent {
        StrictMode::Enforced
    } else {
        StrictMode::Shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rid(s: &str) -> RestaurantId {
        s.parse().expect("valid uuid")
    }

    #[test]
    fn buckets_are_pinned_across_releases() {
        // Values computed independently (Python: int.from_bytes(hashlib.sha256(
        // b"holds.strictConflicts" + uuid.UUID(s).bytes).digest()[:8], "big") % 100).
        let pinned = [
            ("00000000-0000-0000-0000-000000000000", 75),
            ("00000000-0000-0000-0000-000000000001", 29),
            ("0000d3e0-0000-4000-8000-000000000001", 21),
            ("7c9e6679-7425-40de-944b-e07fc1f90ae7", 91),
        ];
        for (id, expected) in pinned {
            assert_eq!(bucket(rid(id)), expected, "{id}");
        }
    }

    #[test]
    fn strict_mode_thresholds() {
        let r = rid("00000000-0000-0000-0000-000000000001"); // bucket 29
        assert_eq!(strict_mode(true, 29, r), StrictMode::Shadow);
        assert_eq!(strict_mode(true, 30, r), StrictMode::Enforced);
        assert_eq!(strict_mode(true, 100, r), StrictMode::Enforced);
        assert_eq!(strict_mode(true, 255, r), StrictMode::Enforced);
        assert_eq!(strict_mode(true, 0, r), StrictMode::Shadow);
        // Kill switch: off means Shadow whatever the percentage.
        assert_eq!(strict_mode(false, 100, r), StrictMode::Shadow);
        assert_eq!(StrictMode::Enforced.as_str(), "enforced");
        assert_eq!(StrictMode::Shadow.as_str(), "shadow");
    }

    fn random_ids(n: usize) -> Vec<RestaurantId> {
        (0..n).map(|_| RestaurantId(Uuid::new_v4())).collect()
    }

    #[test]
    fn stages_are_monotone_and_kill_switch_covers_everyone() {
        let stages = [0u8, 10, 50, 100];
        for r in random_ids(2_000) {
            let modes: Vec<StrictMode> = stages.iter().map(|&p| strict_mode(true, p, r)).collect();
            assert_eq!(modes[0], StrictMode::Shadow, "0% enforces nobody");
            assert_eq!(modes[3], StrictMode::Enforced, "100% enforces everybody");
            for w in modes.windows(2) {
                assert!(
                    !(w[0] == StrictMode::Enforced && w[1] == StrictMode::Shadow),
                    "{r} went back to shadow at a higher stage"
                );
            }
            for p in stages {
                assert_eq!(strict_mode(false, p, r), StrictMode::Shadow);
            }
            // Same input, same answer.
            assert_eq!(bucket(r), bucket(r));
        }
    }

    #[test]
    fn buckets_are_roughly_uniform() {
        let ids = random_ids(10_000);
        let mut counts = [0u32; 100];
        for r in &ids {
            let b = bucket(*r);
            assert!(b < 100);
            counts[usize::from(b)] += 1;
        }
        // Loose bounds (≥ 6 standard deviations): a real skew fails, chance never does.
        assert!(counts.iter().all(|&c| c > 0), "an empty bucket: {counts:?}");
        for decile in counts.chunks(10) {
            let n: u32 = decile.iter().sum();
            assert!((800..=1200).contains(&n), "decile of {n}: {counts:?}");
        }
        let enforced = |p| ids.iter().filter(|r| strict_mode(true, p, **r) == StrictMode::Enforced).count();
        assert!((800..=1200).contains(&enforced(10)), "{}", enforced(10));
        assert!((4_600..=5_400).contains(&enforced(50)), "{}", enforced(50));
        assert_eq!(enforced(100), 10_000);
        assert_eq!(enforced(0), 0);
    }
}
