//! Holds: time-to-live, state, metadata completeness and policy drift at confirm.
//!
//! A hold reserves tables for a few minutes while the guest confirms. Two rules the old system
//! broke are encoded here:
//! - an expired hold is never live, whatever its stored status (the old system let expired
//!   holds block until a sweeper deleted them) — see [`HoldState::at`];
//! - confirm refuses a hold whose metadata (policy hash and version, table ids, selection
//!   snapshot) is incomplete, naming every missing field — see
//!   [`HoldMetadata::require_complete`].

use crate::allocator::Selection;
use crate::ids::TableId;
use crate::policy::PolicyHash;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How long a hold lives, in `[HoldTtl::MIN, HoldTtl::MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HoldTtl(u32);

/// Why a TTL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hold TTL of {secs} s is outside {min}..={max} s")]
pub struct HoldTtlError {
    pub secs: u32,
    pub min: u32,
    pub max: u32,
}

impl HoldTtl {
    /// Floor: shorter holds expire before a guest can realistically confirm.
    pub const MIN: HoldTtl = HoldTtl(60);
    /// Ceiling: longer holds keep tables away from other guests for too long.
    pub const MAX: HoldTtl = HoldTtl(900);
    pub const DEFAULT: HoldTtl = HoldTtl(180);

    pub fn from_secs(secs: u32) -> Result<Self, HoldTtlError> {
        if (Self::MIN.0..=Self::MAX.0).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(HoldTtlError { secs, min: Self::MIN.0, max: Self::MAX.0 })
        }
    }

    pub fn as_secs(self) -> u32 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::seconds(i64::from(self.0))
    }
}

impl Default for HoldTtl {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl<'de> Deserialize<'de> for HoldTtl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_secs(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The status column as stored. It says nothing about expiry: use [`HoldState::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldStatus {
    Held,
    Confirmed,
    Released,
}

/// An unknown hold status string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hold status {0:?}")]
pub struct HoldStatusError(pub String);

impl HoldStatus {
    pub const ALL: [HoldStatus; 3] = [Self::Held, Self::Confirmed, Self::Released];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Confirmed => "confirmed",
            Self::Released => "released",
        }
    }

    /// Exact lowercase names only.
    pub fn parse(s: &str) -> Result<Self, HoldStatusError> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| HoldStatusError(s.to_owned()))
    }
}

impl FromStr for HoldStatus {
    type Err = HoldStatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hold effectively is at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    /// Held and not yet expired: blocks its tables, may be confirmed.
    Live,
    /// Held but past `expires_at`: blocks nothing, cannot be confirmed, even if no sweeper has
    /// touched it yet.
    Expired,
    Confirmed,
    Released,
}

impl HoldState {
    /// Live iff status is `held` and `now < expires_at`. At `now == expires_at` the hold has
    /// expired — the same half-open rule as the database predicate `expires_at > now()`.
    pub fn at(status: HoldStatus, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> HoldState {
        match status {
            HoldStatus::Held if now < expires_at => Self::Live,
            HoldStatus::Held => Self::Expired,
            HoldStatus::Confirmed => Self::Confirmed,
            HoldStatus::Released => Self::Released,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Expired => "expired",
            Self::Confirmed => "confirmed",
            Self::Released => "released",
        }
    }

    pub fn is_live(self) -> bool {
        self == Self::Live
    }
}

/// Hold metadata as stored — possibly from before completeness was enforced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HoldMetadata {
    pub policy_version: Option<i32>,
    pub policy_hash: Option<String>,
    #[serde(default)]
    pub table_ids: Vec<TableId>,
    pub selection_snapshot: Option<serde_json::Value>,
}

/// Hold metadata with every field present and well-formed: the only kind confirm accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteHoldMetadata {
    pub policy_version: i32,
    pub policy_hash: PolicyHash,
    /// Sorted ascending, no duplicates.
    pub table_ids: Vec<TableId>,
    /// A non-empty JSON object.
    pub selection_snapshot: serde_json::Value,
}

/// The fields a hold is missing, in a fixed order:
/// `policy_hash`, `policy_version`, `table_ids`, `selection_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hold metadata is incomplete: missing {}", .missing.join(", "))]
pub struct IncompleteMetadata {
    pub missing: Vec<&'static str>,
}

impl IncompleteMetadata {
    /// Stable code for the 4xx response and the rejection event.
    pub fn code(&self) -> &'static str {
        "hold_metadata_incomplete"
    }
}

impl HoldMetadata {
    /// Complete metadata, or the list of every missing field. A hash that does not parse, an
    /// empty table list, and a snapshot that is not a non-empty JSON object (null, `{}`, a
    /// string…) all count as missing: none of them lets confirm check drift or explain the
    /// choice.
    pub fn require_complete(self) -> Result<CompleteHoldMetadata, IncompleteMetadata> {
        let hash = self.policy_hash.as_deref().and_then(|h| PolicyHash::parse(h).ok());
        let snapshot = self.selection_snapshot.filter(|v| v.as_object().is_some_and(|o| !o.is_empty()));

        let mut missing = Vec::new();
        if hash.is_none() {
            missing.push("policy_hash");
        }
        if self.policy_version.is_none() {
            missing.push("policy_version");
        }
        if self.table_ids.is_empty() {
            missing.push("table_ids");
        }
        if snapshot.is_none() {
            missing.push("selection_snapshot");
        }
        match (hash, self.policy_version, snapshot) {
            (Some(policy_hash), Some(policy_version), Some(selection_snapshot)) if missing.is_empty() => {
                let mut table_ids = self.table_ids;
                table_ids.sort_unstable();
                table_ids.dedup();
                Ok(CompleteHoldMetadata { policy_version, policy_hash, table_ids, selection_snapshot })
            }
            _ => Err(IncompleteMetadata { missing }),
        }
    }
}

impl From<&Selection> for CompleteHoldMetadata {
    /// The metadata a new hold is written with.
    fn from(sel: &Selection) -> Self {
        CompleteHoldMetadata {
            policy_version: sel.policy_version,
            policy_hash: sel.policy_hash.clone(),
            table_ids: sel.table_ids.clone(),
            selection_snapshot: sel.snapshot_json(),
        }
    }
}

impl From<CompleteHoldMetadata> for HoldMetadata {
    fn from(c: CompleteHoldMetadata) -> Self {
        HoldMetadata {
            policy_version: Some(c.policy_version),
            policy_hash: Some(c.policy_hash.as_str().to_owned()),
            table_ids: c.table_ids,
            selection_snapshot: Some(c.selection_snapshot),
        }
    }
}

/// How many confirm attempts one confirm request may make: the original hold, then one
/// re-quote under the new policy after drift. Never a loop.
pub const MAX_CONFIRM_ATTEMPTS: u8 = 2;

/// Whether the policy changed between hold and confirm. Drift is detected in exactly one way
/// (hash comparison) and reported under one code, [`Drift::CODE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    None,
    Drifted,
}

impl Drift {
    /// The one code for policy drift, in events, metrics and API responses.
    pub const CODE: &'static str = "policy_drift";

    pub fn check(hold_hash: &PolicyHash, current: &PolicyHash) -> Drift {
        if hold_hash == current {
            Drift::None
        } else {
            Drift::Drifted
        }
    }

    pub fn is_drifted(self) -> bool {
        self == Drift::Drifted
    }
}

/// Counts confirm attempts; cannot hand out more than [`MAX_CONFIRM_ATTEMPTS`].
///
/// ```
/// use holdfast_shared::hold::Attempts;
/// let mut attempts = Attempts::new();
/// assert_eq!(attempts.next(), Some(1));
/// assert_eq!(attempts.next(), Some(2));
/// assert_eq!(attempts.next(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    used: u8,
}

impl Attempts {
    pub fn new() -> Self {
        Self { used: 0 }
    }

    /// The 1-based number of the attempt about to be made, or `None` once the budget is spent.
    #[allow(clippy::should_implement_trait)] // Not an iterator on purpose: no adaptors, no loops.
    pub fn next(&mut self) -> Option<u8> {
        if self.used >= MAX_CONFIRM_ATTEMPTS {
            return None;
        }
        self.used += 1;
        Some(self.used)
    }

    pub fn used(self) -> u8 {
        self.used
    }

    pub fn remaining(self) -> u8 {
        MAX_CONFIRM_ATTEMPTS - self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::{quote, AllocatorSettings, PartySize, QuoteRequest};
    use crate::policy::BookingPolicy;
    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 13, 19, 0, 0).single().expect("valid time")
    }

    fn hash() -> PolicyHash {
        BookingPolicy::demo(1).content_hash()
    }

    fn complete() -> HoldMetadata {
        HoldMetadata {
            policy_version: Some(3),
            policy_hash: Some(hash().as_str().to_owned()),
            table_ids: vec![TableId(Uuid::from_u128(2)), TableId(Uuid::from_u128(1))],
            selection_snapshot: Some(json!({"strategy": "single"})),
        }
    }

    #[test]
    fn ttl_bounds_and_default() {
        assert!(HoldTtl::from_secs(59).is_err());
        assert_eq!(HoldTtl::from_secs(60), Ok(HoldTtl::MIN));
        assert_eq!(HoldTtl::from_secs(900), Ok(HoldTtl::MAX));
        assert_eq!(HoldTtl::from_secs(901), Err(HoldTtlError { secs: 901, min: 60, max: 900 }));
        assert!(HoldTtl::from_secs(0).is_err());
        assert_eq!(HoldTtl::DEFAULT.as_secs(), 180);
        assert_eq!(HoldTtl::default(), HoldTtl::DEFAULT);
        assert_eq!(HoldTtl::DEFAULT.as_duration(), Duration::minutes(3));
        assert_eq!(serde_json::from_str::<HoldTtl>("120").map(HoldTtl::as_secs).ok(), Some(120));
        assert!(serde_json::from_str::<HoldTtl>("30").is_err());
    }

    #[test]
    fn status_round_trips_and_rejects_unknown() {
        for st in HoldStatus::ALL {
            assert_eq!(HoldStatus::parse(st.as_str()), Ok(st));
            assert_eq!(st.to_string().parse::<HoldStatus>(), Ok(st));
            assert_eq!(serde_json::to_value(st).ok(), Some(serde_json::Value::String(st.as_str().into())));
        }
        assert_eq!(HoldStatus::Held.as_str(), "held");
        assert_eq!(HoldStatus::Confirmed.as_str(), "confirmed");
        assert_eq!(HoldStatus::Released.as_str(), "released");
        for bad in ["", "Held", "HELD", "expired", "live", " held"] {
            assert_eq!(HoldStatus::parse(bad), Err(HoldStatusError(bad.into())));
        }
    }

    #[test]
    fn an_expired_hold_is_never_live() {
        let exp = t0();
        let second = Duration::seconds(1);
        let nano = Duration::nanoseconds(1);
        assert_eq!(HoldState::at(HoldStatus::Held, exp, exp - nano), HoldState::Live);
        assert_eq!(HoldState::at(HoldStatus::Held, exp, exp), HoldState::Expired);
        assert_eq!(HoldState::at(HoldStatus::Held, exp, exp + second), HoldState::Expired);
        // Years later, no sweeper ever ran: still just expired.
        assert_eq!(HoldState::at(HoldStatus::Held, exp, exp + Duration::days(400)), HoldState::Expired);
        assert!(!HoldState::at(HoldStatus::Held, exp, exp).is_live());
        assert!(HoldState::at(HoldStatus::Held, exp, exp - second).is_live());
    }

    #[test]
    fn final_statuses_ignore_the_clock() {
        let exp = t0();
        for now in [exp - Duration::minutes(1), exp, exp + Duration::minutes(1)] {
            assert_eq!(HoldState::at(HoldStatus::Confirmed, exp, now), HoldState::Confirmed);
            assert_eq!(HoldState::at(HoldStatus::Released, exp, now), HoldState::Released);
        }
        assert_eq!(HoldState::Expired.as_str(), "expired");
        assert_eq!(HoldState::Live.as_str(), "live");
    }

    #[test]
    fn complete_metadata_passes_sorted_and_deduplicated() {
        let mut m = complete();
        m.table_ids.push(TableId(Uuid::from_u128(1)));
        let c = m.require_complete().expect("complete");
        assert_eq!(c.policy_version, 3);
        assert_eq!(c.policy_hash, hash());
        assert_eq!(c.table_ids, vec![TableId(Uuid::from_u128(1)), TableId(Uuid::from_u128(2))]);
        assert_eq!(c.selection_snapshot, json!({"strategy": "single"}));
    }

    #[test]
    fn every_missing_field_is_named_in_a_fixed_order() {
        let err = HoldMetadata::default().require_complete().expect_err("empty");
        assert_eq!(err.missing, ["policy_hash", "policy_version", "table_ids", "selection_snapshot"]);
        assert_eq!(err.code(), "hold_metadata_incomplete");
        assert_eq!(
            err.to_string(),
            "hold metadata is incomplete: missing policy_hash, policy_version, table_ids, \
             selection_snapshot"
        );

        type Case = (fn(&mut HoldMetadata), &'static [&'static str]);
        let cases: [Case; 10] = [
            (|m| m.policy_hash = None, &["policy_hash"]),
            (|m| m.policy_hash = Some("abc".into()), &["policy_hash"]),
            (|m| m.policy_hash = m.policy_hash.as_ref().map(|h| h.to_uppercase()), &["policy_hash"]),
            (|m| m.policy_version = None, &["policy_version"]),
            (|m| m.table_ids.clear(), &["table_ids"]),
            (|m| m.selection_snapshot = None, &["selection_snapshot"]),
            (|m| m.selection_snapshot = Some(serde_json::Value::Null), &["selection_snapshot"]),
            (|m| m.selection_snapshot = Some(json!({})), &["selection_snapshot"]),
            (|m| m.selection_snapshot = Some(json!("snapshot")), &["selection_snapshot"]),
            (
                |m| {
                    m.table_ids.clear();
                    m.policy_version = None;
                },
                &["policy_version", "table_ids"],
            ),
        ];
        for (mutate, expected) in cases {
            let mut m = complete();
            mutate(&mut m);
            let err = m.require_complete().expect_err("incomplete");
            assert_eq!(err.missing, expected);
        }
    }

    #[test]
    fn stored_legacy_json_with_absent_fields_deserialises_as_incomplete() {
        let legacy: HoldMetadata = serde_json::from_value(json!({"policy_version": 2})).expect("legacy shape");
        let err = legacy.require_complete().expect_err("incomplete");
        assert_eq!(err.missing, ["policy_hash", "table_ids", "selection_snapshot"]);
    }

    #[test]
    fn metadata_from_a_selection_is_complete() {
        let p = BookingPolicy::demo(5);
        let settings = AllocatorSettings { merges_enabled: true, require_adjacency: true };
        let req = QuoteRequest { party: PartySize::new(7).expect("valid"), start: t0() };
        let sel = quote(&p, settings, &req, &[]).expect("selection");
        let meta = CompleteHoldMetadata::from(&sel);
        assert_eq!(meta.policy_version, 5);
        assert_eq!(meta.policy_hash, p.content_hash());
        assert_eq!(meta.table_ids, sel.table_ids);
        // Stored and read back, it passes the confirm-time check unchanged.
        let stored = HoldMetadata::from(meta.clone());
        assert_eq!(stored.require_complete(), Ok(meta));
    }

    #[test]
    fn drift_is_a_hash_comparison() {
        let a = BookingPolicy::demo(1).content_hash();
        let b = BookingPolicy::demo(2).content_hash();
        assert_eq!(Drift::check(&a, &a.clone()), Drift::None);
        assert_eq!(Drift::check(&a, &b), Drift::Drifted);
        assert!(Drift::check(&b, &a).is_drifted());
        assert!(!Drift::None.is_drifted());
        assert_eq!(Drift::CODE, "policy_drift");
    }

    #[test]
    fn attempts_never_exceed_the_maximum() {
        assert_eq!(MAX_CONFIRM_ATTEMPTS, 2);
        let mut a = Attempts::new();
        assert_eq!(a.remaining(), 2);
        assert_eq!(a.next(), Some(1));
        assert_eq!(a.used(), 1);
        assert_eq!(a.next(), Some(2));
        assert_eq!(a.remaining(), 0);
        for _ in 0..10 {
            assert_eq!(a.next(), None);
        }
        assert_eq!(a.used(), 2);
        // A drift loop driven by the counter stops after two attempts.
        let mut b = Attempts::default();
        let mut made = 0;
        while b.next().is_some() {
            made += 1;
        }
        assert_eq!(made, 2);
    }
}
