//! The quote: which table(s) a party gets at a time, under a booking policy and what is
//! already taken — and, after a conflict, which alternatives to offer.
//!
//! Deterministic: the same policy, settings, request and busy list always give the same answer
//! (whatever the order of tables in the policy), so a re-quote after drift is reproducible.
//!
//! Choice:
//! 1. the best-fitting free single table: smallest capacity with `min_party <= party <=
//!    capacity`; ties by label, then id;
//! 2. otherwise, when merges are enabled and `max_merge_tables > 1`, the free `mergeable`
//!    combination of 2..=`max_merge_tables` tables with the smallest total capacity that seats
//!    the party (`sum(min_party) <= party <= sum(capacity)`, so two 4-tops are not pushed
//!    together for 3 guests); with `require_adjacency` the tables must be connected through
//!    `adjacent` links (treated as symmetric). Ties: fewer tables, then labels, then ids.
//!
//! A table is free when the new blocked window (seated + buffer) does not overlap any busy
//! window of that table; busy windows are blocked windows too, so buffers are respected on
//! both sides.
//!
//! Search bound: the merge search is a depth-first enumeration of combinations of free
//! mergeable tables in ascending capacity, pruned when the capacity exceeds the best found so
//! far, when `sum(min_party)` exceeds the party, and when the remaining slots cannot reach the
//! party. `max_merge_tables` is at most [`MAX_MERGE_TABLES_LIMIT`] (= 4, enforced by policy
//! validation and clamped here), so without pruning there are at most C(n,2)+C(n,3)+C(n,4)
//! combinations — 251,125 for n = 50 free mergeable tables. [`MERGE_SEARCH_BUDGET`] caps the
//! visited combinations at 300,000, which keeps the search exhaustive up to 50 tables; larger
//! floor plans get the best combination found within the budget (still deterministic).

use crate::ids::TableId;
use crate::policy::{BookingPolicy, PolicyHash, TableSpec, MAX_MERGE_TABLES_LIMIT};
use crate::window::Window;
use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;
use std::fmt;

/// Absolute ceiling on a party, whatever a policy says.
pub const PARTY_SIZE_CEILING: u16 = 50;

/// Maximum number of merge combinations visited per quote (see module docs).
pub const MERGE_SEARCH_BUDGET: u32 = 300_000;

/// How far from the requested time alternatives are searched, each way.
pub const ALTERNATIVES_HORIZON: Duration = Duration::hours(2);

/// Why a party size is refused before any policy is consulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartySizeError {
    #[error("a party has at least one guest")]
    Zero,
    #[error("a party of {got} is above the ceiling of {PARTY_SIZE_CEILING}")]
    AboveCeiling { got: u16 },
}

/// A number of guests in `1..=PARTY_SIZE_CEILING`. Serialised as a bare number; deserialising
/// validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PartySize(u16);

impl PartySize {
    pub fn new(n: u16) -> Result<Self, PartySizeError> {
        match n {
            0 => Err(PartySizeError::Zero),
            n if n > PARTY_SIZE_CEILING => Err(PartySizeError::AboveCeiling { got: n }),
            n => Ok(Self(n)),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for PartySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for PartySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(u16::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Allocator switches, read from the `allocator.mergesEnabled` and
/// `allocator.requireAdjacency` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorSettings {
    pub merges_enabled: bool,
    pub require_adjacency: bool,
}

/// A party at a start time; the duration comes from the policy's turn time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub party: PartySize,
    pub start: DateTime<Utc>,
}

/// A blocked window already taken on a table (live hold or booking, buffer included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Busy {
    pub table_id: TableId,
    pub window: Window,
}

/// Why no selection could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteRejection {
    #[error("the party is larger than this restaurant seats (max {max})")]
    PartyTooLarge { max: u16 },
    #[error("the requested time is outside service hours")]
    OutsideServiceHours,
    #[error("no table is available for this party at this time")]
    NoTableAvailable,
}

impl QuoteRejection {
    /// Stable machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PartyTooLarge { .. } => "party_too_large",
            Self::OutsideServiceHours => "outside_service_hours",
            Self::NoTableAvailable => "no_table_available",
        }
    }
}

/// Single table or merged tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Single,
    Merged,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Merged => "merged",
        }
    }
}

/// A chosen table as the quote saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTable {
    pub id: TableId,
    pub label: String,
    pub capacity: u16,
    pub min_party: u16,
    pub zone: String,
}

/// What the quote saw and chose, stored with the hold. Floor-plan and policy data only:
/// no guest data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionSnapshot {
    /// Shape version of this snapshot, for readers of old holds.
    pub snapshot_version: u8,
    pub policy_version: i32,
    pub policy_hash: PolicyHash,
    pub strategy: Strategy,
    pub party: u16,
    pub seated: Window,
    pub blocked: Window,
    /// Sorted by id, like `Selection::table_ids`.
    pub tables: Vec<SnapshotTable>,
    pub total_capacity: u32,
    /// Search effort: free single tables that fit plus merge combinations visited.
    pub candidates_considered: u32,
    /// Tables of the policy that were busy during the blocked window.
    pub busy_tables_count: u32,
    pub settings: AllocatorSettings,
}

/// Current [`SelectionSnapshot::snapshot_version`].
pub const SNAPSHOT_VERSION: u8 = 1;

/// The quote's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Sorted ascending.
    pub table_ids: Vec<TableId>,
    pub seated: Window,
    /// Seated + buffer: what the hold/booking row must block in the database.
    pub blocked: Window,
    pub party: PartySize,
    pub policy_version: i32,
    pub policy_hash: PolicyHash,
    pub snapshot: SelectionSnapshot,
}

impl Selection {
    /// The snapshot as JSON, for the hold's `selection_snapshot` column.
    pub fn snapshot_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.snapshot).expect("SelectionSnapshot serialises: plain structs with string keys")
    }
}

/// Another option offered after a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alternative {
    pub start: DateTime<Utc>,
    /// Sorted ascending.
    pub table_ids: Vec<TableId>,
}

/// Picks table(s) for `req`. Assumes a validated policy (see [`BookingPolicy::validate`]).
pub fn quote(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
) -> Result<Selection, QuoteRejection> {
    quote_with(policy, &policy.content_hash(), settings, req, busy, &[])
}

/// The selection for tables a client chose from an earlier quote: the best fit among exactly
/// those tables under the current policy (never a table outside them). Availability is not
/// checked here: the database's exclusion constraint decides, atomically, at hold time.
pub fn select_tables(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    tables: &[TableId],
) -> Result<Selection, QuoteRejection> {
    if tables.iter().any(|t| policy.table(*t).is_none()) {
        return Err(QuoteRejection::NoTableAvailable);
    }
    let others: Vec<TableId> = policy.tables.iter().map(|t| t.id).filter(|id| !tables.contains(id)).collect();
    quote_with(policy, &policy.content_hash(), settings, req, &[], &others)
}

/// Alternatives after a conflict, earliest-closest first, at most `max`:
/// 1. other tables at the same time, not using `exclude_tables` (the conflicting ones);
/// 2. instants within ±[`ALTERNATIVES_HORIZON`] whose restaurant-local wall-clock time is on
///    the policy's slot grid (anchored at each local midnight), closest first, the earlier
///    first on equal distance; each must be within service hours and have free table(s). On
///    DST-change days this is local time: a skipped wall time is never offered, a repeated one
///    may be offered at either of its instants.
///
/// One alternative per time. Times in the past or beyond the booking horizon are not filtered
/// here; use [`alternatives_bookable`] with `now` for that.
pub fn alternatives(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
    exclude_tables: &[TableId],
    max: usize,
) -> Vec<Alternative> {
    alternatives_between(
        policy,
        settings,
        req,
        busy,
        exclude_tables,
        max,
        (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
    )
}

/// [`alternatives`], leaving out any start earlier than `not_before` (pass `now`).
pub fn alternatives_not_before(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
    exclude_tables: &[TableId],
    max: usize,
    not_before: DateTime<Utc>,
) -> Vec<Alternative> {
    alternatives_between(policy, settings, req, busy, exclude_tables, max, (not_before, DateTime::<Utc>::MAX_UTC))
}

/// [`alternatives`] a guest can book at `now`: only starts the policy's booking horizon
/// accepts (never in the past, within the lead time, or beyond the maximum days ahead).
pub fn alternatives_bookable(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
    exclude_tables: &[TableId],
    max: usize,
    now: DateTime<Utc>,
) -> Vec<Alternative> {
    match policy.booking_horizon.range(now) {
        Some(range) => alternatives_between(policy, settings, req, busy, exclude_tables, max, range),
        None => Vec::new(),
    }
}

/// [`alternatives`] with starts in `[range.0, range.1]` only.
fn alternatives_between(
    policy: &BookingPolicy,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
    exclude_tables: &[TableId],
    max: usize,
    (earliest, latest): (DateTime<Utc>, DateTime<Utc>),
) -> Vec<Alternative> {
    let mut out = Vec::new();
    if max == 0 {
        return out;
    }
    let hash = policy.content_hash();
    let starts =
        std::iter::once((req.start, exclude_tables)).chain(candidate_times(policy, req.start).map(|t| (t, &[][..])));
    for (start, exclude) in starts {
        if start < earliest || start > latest {
            continue;
        }
        let r = QuoteRequest { party: req.party, start };
        match quote_with(policy, &hash, settings, &r, busy, exclude) {
            Ok(sel) => {
                out.push(Alternative { start, table_ids: sel.table_ids });
                if out.len() >= max {
                    break;
                }
            }
            // No other time can seat a party the restaurant cannot seat at all.
            Err(QuoteRejection::PartyTooLarge { .. }) => break,
            Err(QuoteRejection::OutsideServiceHours | QuoteRejection::NoTableAvailable) => {}
        }
    }
    out
}

/// Instants within the horizon around `start` (excluding `start`) whose local wall-clock time
/// is on the slot grid, closest first, earlier first on a tie. Walks whole UTC minutes and
/// reads each one's local time, so DST changes inside the horizon are handled by the clock.
fn candidate_times(policy: &BookingPolicy, start: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> {
    let slot = i64::from(policy.slot_minutes);
    let mut times = Vec::new();
    let clock = policy.clock();
    let bounds = start.checked_sub_signed(ALTERNATIVES_HORIZON).zip(start.checked_add_signed(ALTERNATIVES_HORIZON));
    if let (true, Some((from, to))) = (slot > 0, bounds) {
        // The first whole minute at or after `from`.
        let secs = from.timestamp();
        let first = if secs.rem_euclid(60) == 0 && from.timestamp_subsec_nanos() == 0 {
            Some(from)
        } else {
            DateTime::from_timestamp(secs - secs.rem_euclid(60) + 60, 0)
        };
        let minutes = std::iter::successors(first, |t| t.checked_add_signed(Duration::minutes(1)));
        for t in minutes.take_while(|t| *t <= to) {
            let on_grid = clock.local(t).is_some_and(|l| {
                let minute_of_day = i64::from(l.hour() * 60 + l.minute());
                l.second() == 0 && l.nanosecond() == 0 && minute_of_day % slot == 0
            });
            if on_grid && t != start {
                times.push(t);
            }
        }
        times.sort_by_key(|t| ((*t - start).abs(), *t));
    }
    times.into_iter()
}

fn quote_with(
    policy: &BookingPolicy,
    policy_hash: &PolicyHash,
    settings: AllocatorSettings,
    req: &QuoteRequest,
    busy: &[Busy],
    exclude: &[TableId],
) -> Result<Selection, QuoteRejection> {
    let party = req.party.get();
    if party > policy.max_party_size {
        return Err(QuoteRejection::PartyTooLarge { max: policy.max_party_size });
    }
    let Some((seated, blocked)) = policy.block_window(req.start, party) else {
        // Only an invalid policy (turn times not covering max_party_size) gets here.
        let covered = policy.turn_times.iter().map(|t| t.max_party).max();
        return Err(QuoteRejection::PartyTooLarge { max: covered.unwrap_or(0).min(policy.max_party_size) });
    };
    if !policy.within_service_hours(&seated) {
        return Err(QuoteRejection::OutsideServiceHours);
    }

    let busy_ids: HashSet<TableId> = busy.iter().filter(|b| b.window.overlaps(&blocked)).map(|b| b.table_id).collect();
    let busy_tables_count = policy.tables.iter().filter(|t| busy_ids.contains(&t.id)).count();
    let free: Vec<&TableSpec> =
        policy.tables.iter().filter(|t| !busy_ids.contains(&t.id) && !exclude.contains(&t.id)).collect();

    let singles: Vec<&TableSpec> =
        free.iter().copied().filter(|t| t.min_party <= party && party <= t.capacity).collect();
    let mut considered = singles.len() as u32;
    let best_single =
        singles.into_iter().min_by(|a, b| (a.capacity, &a.label, a.id).cmp(&(b.capacity, &b.label, b.id)));

    let (strategy, mut chosen) = if let Some(t) = best_single {
        (Strategy::Single, vec![t])
    } else if settings.merges_enabled && policy.max_merge_tables > 1 {
        let max_tables = policy.max_merge_tables.min(MAX_MERGE_TABLES_LIMIT) as usize;
        let (best, visited) = best_merge(policy, &free, party, max_tables, settings);
        considered = considered.saturating_add(visited);
        match best {
            Some(tables) => (Strategy::Merged, tables),
            None => return Err(QuoteRejection::NoTableAvailable),
        }
    } else {
        return Err(QuoteRejection::NoTableAvailable);
    };
    chosen.sort_by_key(|t| t.id);

    let snapshot = SelectionSnapshot {
        snapshot_version: SNAPSHOT_VERSION,
        policy_version: policy.version,
        policy_hash: policy_hash.clone(),
        strategy,
        party,
        seated,
        blocked,
        tables: chosen
            .iter()
            .map(|t| SnapshotTable {
                id: t.id,
                label: t.label.clone(),
                capacity: t.capacity,
                min_party: t.min_party,
                zone: t.zone.clone(),
            })
            .collect(),
        total_capacity: chosen.iter().map(|t| u32::from(t.capacity)).sum(),
        candidates_considered: considered,
        busy_tables_count: busy_tables_count as u32,
        settings,
    };
    Ok(Selection {
        table_ids: chosen.iter().map(|t| t.id).collect(),
        seated,
        blocked,
        party: req.party,
        policy_version: policy.version,
        policy_hash: policy_hash.clone(),
        snapshot,
    })
}

/// Ordering key of a merge candidate: smaller is better.
type MergeKey<'a> = (u32, usize, Vec<&'a str>, Vec<TableId>);

fn merge_key<'a>(tables: &[&'a TableSpec]) -> MergeKey<'a> {
    let mut labels: Vec<&str> = tables.iter().map(|t| t.label.as_str()).collect();
    labels.sort_unstable();
    let mut ids: Vec<TableId> = tables.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    let cap = tables.iter().map(|t| u32::from(t.capacity)).sum();
    (cap, tables.len(), labels, ids)
}

struct MergeSearch<'a> {
    pool: Vec<&'a TableSpec>,
    party: u32,
    max_tables: usize,
    /// Symmetric adjacency pairs; `None` when adjacency is not required.
    adjacency: Option<HashSet<(TableId, TableId)>>,
    max_capacity: u32,
    visited: u32,
    best: Option<(MergeKey<'a>, Vec<&'a TableSpec>)>,
}

/// Best merged combination among `free` tables and the number of combinations visited.
fn best_merge<'a>(
    policy: &BookingPolicy,
    free: &[&'a TableSpec],
    party: u16,
    max_tables: usize,
    settings: AllocatorSettings,
) -> (Option<Vec<&'a TableSpec>>, u32) {
    let adjacency = settings.require_adjacency.then(|| {
        let mut pairs = HashSet::new();
        for t in &policy.tables {
            for a in &t.adjacent {
                pairs.insert((t.id, *a));
                pairs.insert((*a, t.id));
            }
        }
        pairs
    });
    let mut pool: Vec<&TableSpec> = free.iter().copied().filter(|t| t.mergeable).collect();
    if let Some(adj) = &adjacency {
        // A table with no free mergeable neighbour can never be part of a connected merge.
        let ids: HashSet<TableId> = pool.iter().map(|t| t.id).collect();
        pool.retain(|t| ids.iter().any(|o| adj.contains(&(t.id, *o))));
    }
    // Ascending capacity lets the search stop early (see `MergeSearch::dfs`).
    pool.sort_by(|a, b| (a.capacity, &a.label, a.id).cmp(&(b.capacity, &b.label, b.id)));
    let max_capacity = pool.last().map_or(0, |t| u32::from(t.capacity));
    let mut search =
        MergeSearch { pool, party: u32::from(party), max_tables, adjacency, max_capacity, visited: 0, best: None };
    search.dfs(0, &mut Vec::new(), 0, 0);
    (search.best.map(|(_, tables)| tables), search.visited)
}

impl<'a> MergeSearch<'a> {
    fn dfs(&mut self, from: usize, chosen: &mut Vec<&'a TableSpec>, cap: u32, min: u32) {
        // Even filling every remaining slot with the largest table cannot seat the party.
        let slots_left = (self.max_tables - chosen.len()) as u32;
        if cap + slots_left * self.max_capacity < self.party {
            return;
        }
        for i in from..self.pool.len() {
            if self.visited >= MERGE_SEARCH_BUDGET {
                return;
            }
            let t = self.pool[i];
            let new_cap = cap + u32::from(t.capacity);
            if let Some((best_key, _)) = &self.best {
                // Later tables are at least as large, and deeper sets only bigger: nothing
                // further here can beat the best on (capacity, table count).
                if (new_cap, chosen.len() + 1) > (best_key.0, best_key.1) {
                    break;
                }
            }
            let new_min = min + u32::from(t.min_party);
            if new_min > self.party {
                // Adding tables only raises the minimum; a later table may have a lower one.
                continue;
            }
            self.visited += 1;
            chosen.push(t);
            if new_cap >= self.party && chosen.len() >= 2 && self.connected(chosen) {
                // Labels and ids are only compared (and allocated) on a (capacity, count) tie.
                let better = match &self.best {
                    None => true,
                    Some((b, _)) if (new_cap, chosen.len()) != (b.0, b.1) => true,
                    Some((b, _)) => merge_key(chosen) < *b,
                };
                if better {
                    self.best = Some((merge_key(chosen), chosen.clone()));
                }
                // A superset has more capacity and more tables: never better.
            } else if chosen.len() < self.max_tables {
                // Not seated yet, or not connected yet (another table may join them up).
                self.dfs(i + 1, chosen, new_cap, new_min);
            }
            chosen.pop();
        }
    }

    fn connected(&self, tables: &[&TableSpec]) -> bool {
        let Some(adj) = &self.adjacency else {
            return true;
        };
        // Flood fill from the first table; at most MAX_MERGE_TABLES_LIMIT nodes.
        let mut reached = vec![false; tables.len()];
        reached[0] = true;
        let mut stack = vec![0];
        while let Some(i) = stack.pop() {
            for j in 0..tables.len() {
                if !reached[j] && adj.contains(&(tables[i].id, tables[j].id)) {
                    reached[j] = true;
                    stack.push(j);
                }
            }
        }
        reached.into_iter().all(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::demo_table_id;
    use chrono::TimeZone;
    use std::collections::BTreeSet;
    use uuid::Uuid;

    const ADJACENT: AllocatorSettings = AllocatorSettings { merges_enabled: true, require_adjacency: true };
    const ANY_MERGE: AllocatorSettings = AllocatorSettings { merges_enabled: true, require_adjacency: false };
    const NO_MERGE: AllocatorSettings = AllocatorSettings { merges_enabled: false, require_adjacency: true };

    /// Friday 2025-01-10 at h:m UTC (the demo policy is Europe/London, open 11:00–23:00; in
    /// January London is on UTC).
    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 10, h, m, 0).single().expect("valid time")
    }

    fn req(party: u16, start: DateTime<Utc>) -> QuoteRequest {
        QuoteRequest { party: PartySize::new(party).expect("valid party"), start }
    }

    fn busy(table: u8, from: DateTime<Utc>, to: DateTime<Utc>) -> Busy {
        Busy { table_id: demo_table_id(table), window: Window::new(from, to).expect("valid window") }
    }

    fn labels(policy: &BookingPolicy, ids: &[TableId]) -> Vec<String> {
        let mut l: Vec<String> = ids.iter().map(|id| policy.table(*id).expect("known table").label.clone()).collect();
        l.sort();
        l
    }

    fn chosen(policy: &BookingPolicy, settings: AllocatorSettings, r: &QuoteRequest, b: &[Busy]) -> Vec<String> {
        let sel = quote(policy, settings, r, b).expect("a selection");
        labels(policy, &sel.table_ids)
    }

    #[test]
    fn party_size_bounds() {
        assert_eq!(PartySize::new(0), Err(PartySizeError::Zero));
        assert_eq!(PartySize::new(1).map(PartySize::get), Ok(1));
        assert_eq!(PartySize::new(50).map(PartySize::get), Ok(50));
        assert_eq!(PartySize::new(51), Err(PartySizeError::AboveCeiling { got: 51 }));
        assert_eq!(serde_json::from_str::<PartySize>("4").map(PartySize::get).ok(), Some(4));
        assert!(serde_json::from_str::<PartySize>("0").is_err());
        assert!(serde_json::from_str::<PartySize>("51").is_err());
        assert_eq!(serde_json::to_string(&PartySize(7)).ok().as_deref(), Some("7"));
    }

    #[test]
    fn rejection_codes_are_stable() {
        assert_eq!(QuoteRejection::PartyTooLarge { max: 10 }.code(), "party_too_large");
        assert_eq!(QuoteRejection::OutsideServiceHours.code(), "outside_service_hours");
        assert_eq!(QuoteRejection::NoTableAvailable.code(), "no_table_available");
        assert_eq!(Strategy::Single.as_str(), "single");
        assert_eq!(Strategy::Merged.as_str(), "merged");
    }

    #[test]
    fn best_fitting_single_table() {
        let p = BookingPolicy::demo(1);
        let r = |n| req(n, at(19, 0));
        // Smallest capacity wins; ties by label (M1 < M2 < P1).
        assert_eq!(chosen(&p, ADJACENT, &r(1), &[]), ["M1"]);
        assert_eq!(chosen(&p, ADJACENT, &r(2), &[]), ["M1"]);
        assert_eq!(chosen(&p, ADJACENT, &r(3), &[]), ["M3"]);
        assert_eq!(chosen(&p, ADJACENT, &r(4), &[]), ["M3"]);
        // M5 (6 seats, min 3) is the only single for 5 and 6.
        assert_eq!(chosen(&p, ADJACENT, &r(5), &[]), ["M5"]);
        assert_eq!(chosen(&p, ADJACENT, &r(6), &[]), ["M5"]);
    }

    #[test]
    fn min_party_keeps_small_parties_off_big_tables() {
        let p = BookingPolicy::demo(1);
        // Every 2-top busy: a party of 2 may take a 4-top (min 2), never the 6-top (min 3).
        let b = [busy(1, at(18, 0), at(22, 0)), busy(2, at(18, 0), at(22, 0)), busy(6, at(18, 0), at(22, 0))];
        assert_eq!(chosen(&p, NO_MERGE, &req(2, at(19, 0)), &b), ["M3"]);
        // A party of 1 cannot take a 4-top (min 2) either: nothing left.
        assert_eq!(quote(&p, NO_MERGE, &req(1, at(19, 0)), &b), Err(QuoteRejection::NoTableAvailable));
    }

    #[test]
    fn busy_windows_are_half_open_and_per_table() {
        let p = BookingPolicy::demo(1);
        let r = req(2, at(19, 0)); // blocked 19:00–20:45 (90 + 15)
                                   // Ends exactly when we start, or starts exactly when our buffer ends: free.
        let touching = [busy(1, at(17, 0), at(19, 0)), busy(1, at(20, 45), at(22, 0))];
        assert_eq!(chosen(&p, ADJACENT, &r, &touching), ["M1"]);
        // One minute into our buffer: M1 is taken, M2 is next.
        let into_buffer = [busy(1, at(20, 44), at(22, 0))];
        assert_eq!(chosen(&p, ADJACENT, &r, &into_buffer), ["M2"]);
        // One minute before we start: taken too.
        let before = [busy(1, at(17, 0), at(19, 1))];
        assert_eq!(chosen(&p, ADJACENT, &r, &before), ["M2"]);
        // Busy windows of other tables or other times do not matter.
        let elsewhere = [busy(3, at(19, 0), at(21, 0)), busy(1, at(12, 0), at(13, 0))];
        assert_eq!(chosen(&p, ADJACENT, &r, &elsewhere), ["M1"]);
        // Busy ids that are not in the policy are ignored, not counted.
        let ghost = [Busy {
            table_id: TableId(Uuid::from_u128(0xabc)),
            window: Window::new(at(19, 0), at(20, 0)).expect("valid"),
        }];
        let sel = quote(&p, ADJACENT, &r, &ghost).expect("selection");
        assert_eq!(sel.snapshot.busy_tables_count, 0);
    }

    #[test]
    fn merges_pick_smallest_total_capacity_then_fewest_tables_then_labels() {
        let p = BookingPolicy::demo(1);
        // 7 guests: candidates of 8 seats are M3+M4, P2+P3 (2 tables) and M1+M2+M3 (3 tables).
        assert_eq!(chosen(&p, ADJACENT, &req(7, at(19, 0)), &[]), ["M3", "M4"]);
        let m4_busy = [busy(4, at(18, 0), at(22, 0))];
        assert_eq!(chosen(&p, ADJACENT, &req(7, at(19, 0)), &m4_busy), ["P2", "P3"]);
        // Both 2-table pairs gone: the 3-table chain M1+M2+M3 (8 seats) beats M2+M3+M4's 10.
        let pairs_busy = [busy(4, at(18, 0), at(22, 0)), busy(8, at(18, 0), at(22, 0))];
        assert_eq!(chosen(&p, ADJACENT, &req(7, at(19, 0)), &pairs_busy), ["M1", "M2", "M3"]);
        // 10 guests need three tables: M2+M3+M4 and P1+P2+P3 both give 10; labels decide.
        assert_eq!(chosen(&p, ADJACENT, &req(10, at(19, 0)), &[]), ["M2", "M3", "M4"]);
    }

    #[test]
    fn adjacency_requirement_is_enforced_and_symmetric() {
        let p = BookingPolicy::demo(1);
        let m4_busy = [busy(4, at(18, 0), at(22, 0))];
        // Without adjacency, M3 (main) + P2 (patio) is a legal 8-seat pair and sorts first.
        assert_eq!(chosen(&p, ANY_MERGE, &req(7, at(19, 0)), &m4_busy), ["M3", "P2"]);
        // With adjacency, links declared on one side only still count.
        let mut one_sided = p.clone();
        for t in &mut one_sided.tables {
            t.adjacent.retain(|a| *a > t.id);
        }
        assert_eq!(chosen(&one_sided, ADJACENT, &req(7, at(19, 0)), &[]), ["M3", "M4"]);
        // No links at all: adjacency-required merges are impossible.
        let mut unlinked = p.clone();
        for t in &mut unlinked.tables {
            t.adjacent.clear();
        }
        assert_eq!(quote(&unlinked, ADJACENT, &req(7, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
        assert_eq!(chosen(&unlinked, ANY_MERGE, &req(7, at(19, 0)), &[]), ["M3", "M4"]);
    }

    #[test]
    fn a_merge_may_need_a_connecting_table() {
        let p = BookingPolicy::demo(1);
        // Party 5; 2-tops and M5 busy. M3+M4 (8, connected) is best.
        // Busy M4 too: options are M2+M3 (6, connected) — found even though M1+M3 (6, not
        // connected) sorts before it.
        let b = [busy(4, at(18, 0), at(22, 0)), busy(5, at(18, 0), at(22, 0)), busy(7, at(18, 0), at(22, 0))];
        assert_eq!(chosen(&p, ADJACENT, &req(5, at(19, 0)), &b), ["M2", "M3"]);
        // M1 and M3 only connect through M2: with M2 busy, M1+M3 is not allowed and the
        // patio has only P1+P3 left (not adjacent either), so nothing fits.
        let b2 = [
            busy(2, at(18, 0), at(22, 0)),
            busy(4, at(18, 0), at(22, 0)),
            busy(5, at(18, 0), at(22, 0)),
            busy(7, at(18, 0), at(22, 0)),
        ];
        assert_eq!(quote(&p, ADJACENT, &req(5, at(19, 0)), &b2), Err(QuoteRejection::NoTableAvailable));
        // A (3) and C (3) seat 6 but are not adjacent; B (1) joins them up.
        let mut abc = p.clone();
        let a = abc.tables[0].id;
        let b_ = abc.tables[1].id;
        let c = abc.tables[2].id;
        abc.tables.truncate(3);
        for (t, label, cap, adj) in [(0, "A", 3, vec![b_]), (1, "B", 1, vec![a, c]), (2, "C", 3, vec![b_])] {
            let spec = &mut abc.tables[t];
            spec.label = label.into();
            spec.capacity = cap;
            spec.min_party = 1;
            spec.adjacent = adj;
        }
        assert_eq!(abc.validate(), Ok(()));
        assert_eq!(chosen(&abc, ADJACENT, &req(6, at(19, 0)), &[]), ["A", "B", "C"]);
        assert_eq!(chosen(&abc, ANY_MERGE, &req(6, at(19, 0)), &[]), ["A", "C"]);
    }

    #[test]
    fn merges_respect_min_party_sum_and_mergeable_flag() {
        let p = BookingPolicy::demo(1);
        // Party 3 with every 4-top and M5 busy: M1+M2 (4 seats, min 2) is fine.
        let b = [
            busy(3, at(18, 0), at(22, 0)),
            busy(4, at(18, 0), at(22, 0)),
            busy(5, at(18, 0), at(22, 0)),
            busy(7, at(18, 0), at(22, 0)),
            busy(8, at(18, 0), at(22, 0)),
        ];
        assert_eq!(chosen(&p, ADJACENT, &req(3, at(19, 0)), &b), ["M1", "M2"]);
        // Two 4-tops are never pushed together for 3 guests: with the 4-tops' min_party
        // raised to 4 (no single fits) and the 2-tops busy, a 4+4 merge has min 8 > 3.
        let mut strict = p.clone();
        for t in &mut strict.tables {
            if t.capacity == 4 {
                t.min_party = 4;
            }
        }
        let twos_busy = [
            busy(1, at(18, 0), at(22, 0)),
            busy(2, at(18, 0), at(22, 0)),
            busy(5, at(18, 0), at(22, 0)),
            busy(6, at(18, 0), at(22, 0)),
        ];
        assert_eq!(quote(&strict, ANY_MERGE, &req(3, at(19, 0)), &twos_busy), Err(QuoteRejection::NoTableAvailable));
        // Non-mergeable tables never join a merge.
        let mut booth_only = p.clone();
        for t in &mut booth_only.tables {
            t.mergeable = t.label == "M5";
        }
        assert_eq!(quote(&booth_only, ANY_MERGE, &req(7, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
    }

    #[test]
    fn merges_off_or_limited_to_one_table() {
        let p = BookingPolicy::demo(1);
        assert_eq!(quote(&p, NO_MERGE, &req(7, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
        let mut single_only = p.clone();
        single_only.max_merge_tables = 1;
        assert_eq!(quote(&single_only, ADJACENT, &req(7, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
        // Two tables at most: 10 guests cannot be seated (best pair has 8).
        let mut pairs = p.clone();
        pairs.max_merge_tables = 2;
        assert_eq!(quote(&pairs, ADJACENT, &req(10, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
        assert_eq!(chosen(&pairs, ADJACENT, &req(8, at(19, 0)), &[]), ["M3", "M4"]);
    }

    #[test]
    fn party_and_service_hour_rejections() {
        let p = BookingPolicy::demo(1);
        assert_eq!(quote(&p, ADJACENT, &req(11, at(19, 0)), &[]), Err(QuoteRejection::PartyTooLarge { max: 10 }));
        // Seated 90 minutes for 2: 21:30 ends at close, 21:31 does not.
        assert!(quote(&p, ADJACENT, &req(2, at(21, 30)), &[]).is_ok());
        assert_eq!(quote(&p, ADJACENT, &req(2, at(21, 31)), &[]), Err(QuoteRejection::OutsideServiceHours));
        assert_eq!(quote(&p, ADJACENT, &req(2, at(10, 59)), &[]), Err(QuoteRejection::OutsideServiceHours));
        // The turn time is by party: 21:30 is too late for 10 (150 minutes).
        assert_eq!(quote(&p, ADJACENT, &req(10, at(21, 30)), &[]), Err(QuoteRejection::OutsideServiceHours));
        // Party size is checked before hours: the more useful answer.
        assert_eq!(quote(&p, ADJACENT, &req(11, at(3, 0)), &[]), Err(QuoteRejection::PartyTooLarge { max: 10 }));
    }

    #[test]
    fn selection_carries_windows_policy_identity_and_snapshot() {
        let p = BookingPolicy::demo(4);
        let b = [busy(4, at(18, 0), at(22, 0)), busy(1, at(20, 0), at(21, 0))];
        let sel = quote(&p, ADJACENT, &req(7, at(19, 0)), &b).expect("selection");
        assert_eq!(sel.table_ids, vec![demo_table_id(7), demo_table_id(8)]);
        assert_eq!(sel.seated, Window::new(at(19, 0), at(21, 30)).expect("w"));
        assert_eq!(sel.blocked, Window::new(at(19, 0), at(21, 45)).expect("w"));
        assert_eq!(sel.party.get(), 7);
        assert_eq!(sel.policy_version, 4);
        assert_eq!(sel.policy_hash, p.content_hash());

        let s = &sel.snapshot;
        assert_eq!(s.snapshot_version, SNAPSHOT_VERSION);
        assert_eq!(s.policy_version, 4);
        assert_eq!(s.policy_hash, p.content_hash());
        assert_eq!(s.strategy, Strategy::Merged);
        assert_eq!(s.party, 7);
        assert_eq!((s.seated, s.blocked), (sel.seated, sel.blocked));
        assert_eq!(s.tables.iter().map(|t| t.id).collect::<Vec<_>>(), sel.table_ids);
        assert_eq!(
            s.tables.iter().map(|t| (t.label.as_str(), t.capacity, t.min_party, t.zone.as_str())).collect::<Vec<_>>(),
            [("P2", 4, 2, "patio"), ("P3", 4, 2, "patio")]
        );
        assert_eq!(s.total_capacity, 8);
        assert_eq!(s.busy_tables_count, 2);
        assert!(s.candidates_considered >= 1);
        assert_eq!(s.settings, ADJACENT);

        let single = quote(&p, ADJACENT, &req(2, at(12, 0)), &[]).expect("selection");
        assert_eq!(single.snapshot.strategy, Strategy::Single);
        // M1, M2, P1 fit a party of 2; M3, M4, P2, P3 (min 2) too; M5 (min 3) does not.
        assert_eq!(single.snapshot.candidates_considered, 7);
        assert_eq!(single.snapshot.busy_tables_count, 0);
    }

    #[test]
    fn snapshot_json_has_exactly_the_documented_keys() {
        // A deliberate list: a new snapshot field must be reviewed for guest data.
        let p = BookingPolicy::demo(1);
        let sel = quote(&p, ADJACENT, &req(7, at(19, 0)), &[]).expect("selection");
        let v = sel.snapshot_json();
        let keys: BTreeSet<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        let expected = BTreeSet::from([
            "snapshot_version",
            "policy_version",
            "policy_hash",
            "strategy",
            "party",
            "seated",
            "blocked",
            "tables",
            "total_capacity",
            "candidates_considered",
            "busy_tables_count",
            "settings",
        ]);
        assert_eq!(keys, expected);
        let table_keys: BTreeSet<&str> =
            v["tables"][0].as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(table_keys, BTreeSet::from(["id", "label", "capacity", "min_party", "zone"]));
        assert_eq!(v["strategy"], "merged");
        assert_eq!(v["policy_hash"], p.content_hash().as_str());
        let back: SelectionSnapshot = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, sel.snapshot);
    }

    #[test]
    fn choice_does_not_depend_on_table_order() {
        let p = BookingPolicy::demo(1);
        let mut shuffled = p.clone();
        shuffled.tables.reverse();
        shuffled.tables.swap(1, 5);
        let b = [busy(4, at(18, 0), at(22, 0))];
        for party in 1..=10 {
            for settings in [ADJACENT, ANY_MERGE, NO_MERGE] {
                let a = quote(&p, settings, &req(party, at(19, 0)), &b).map(|s| s.table_ids);
                let c = quote(&shuffled, settings, &req(party, at(19, 0)), &b).map(|s| s.table_ids);
                assert_eq!(a, c, "party {party}, {settings:?}");
            }
        }
    }

    /// A small deterministic PRNG for property tests (no extra dependencies).
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Reference answer by brute force over every subset of up to `max_tables` tables.
    fn brute_force(
        p: &BookingPolicy,
        settings: AllocatorSettings,
        party: u16,
        free: &[&TableSpec],
    ) -> Option<Vec<TableId>> {
        let single = free
            .iter()
            .filter(|t| t.min_party <= party && party <= t.capacity)
            .min_by(|a, b| (a.capacity, &a.label, a.id).cmp(&(b.capacity, &b.label, b.id)));
        if let Some(t) = single {
            return Some(vec![t.id]);
        }
        if !settings.merges_enabled || p.max_merge_tables < 2 {
            return None;
        }
        let linked = |a: &TableSpec, b: &TableSpec| a.adjacent.contains(&b.id) || b.adjacent.contains(&a.id);
        let mergeable: Vec<&TableSpec> = free.iter().copied().filter(|t| t.mergeable).collect();
        let mut best: Option<MergeKey> = None;
        for mask in 1u32..(1 << mergeable.len()) {
            let size = mask.count_ones() as usize;
            if size < 2 || size > usize::from(p.max_merge_tables) {
                continue;
            }
            let members = || (0..mergeable.len()).filter(move |i| mask & (1 << i) != 0);
            let cap: u32 = members().map(|i| u32::from(mergeable[i].capacity)).sum();
            let min: u32 = members().map(|i| u32::from(mergeable[i].min_party)).sum();
            if cap < u32::from(party) || min > u32::from(party) {
                continue;
            }
            let set: Vec<&TableSpec> = members().map(|i| mergeable[i]).collect();
            if settings.require_adjacency {
                let mut reached = vec![0usize];
                let mut grew = true;
                while grew {
                    grew = false;
                    for j in 0..set.len() {
                        if !reached.contains(&j) && reached.iter().any(|&i| linked(set[i], set[j])) {
                            reached.push(j);
                            grew = true;
                        }
                    }
                }
                if reached.len() != set.len() {
                    continue;
                }
            }
            let key = merge_key(&set);
            if best.as_ref().is_none_or(|b| key < *b) {
                best = Some(key);
            }
        }
        best.map(|k| k.3)
    }

    #[test]
    fn search_matches_brute_force_on_random_floor_plans() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let start = at(19, 0);
        let mut merged_answers = 0;
        for round in 0..100 {
            let mut p = BookingPolicy::demo(1);
            let n = 3 + rng.below(8) as usize;
            p.max_merge_tables = 2 + rng.below(3) as u8; // 2..=4
            p.max_party_size = 20;
            p.turn_times.push(crate::policy::TurnTime { max_party: 20, minutes: 180 });
            p.tables = (0..n)
                .map(|i| {
                    let capacity = 1 + rng.below(6) as u16;
                    TableSpec {
                        id: TableId(Uuid::from_u128(0x1000 + rng.below(1 << 20) as u128 * 64 + i as u128)),
                        // Few distinct labels so that label ties are exercised too.
                        label: format!("T{}", rng.below(4)),
                        min_party: 1 + rng.below(u64::from(capacity)) as u16,
                        capacity,
                        zone: "main".into(),
                        adjacent: Vec::new(),
                        mergeable: rng.below(5) != 0,
                    }
                })
                .collect();
            let ids: Vec<TableId> = p.tables.iter().map(|t| t.id).collect();
            for t in &mut p.tables {
                for other in &ids {
                    if *other != t.id && rng.below(4) == 0 {
                        t.adjacent.push(*other);
                    }
                }
            }
            let busy: Vec<Busy> = ids
                .iter()
                .filter(|_| rng.below(4) == 0)
                .map(|id| Busy { table_id: *id, window: Window::new(at(18, 0), at(20, 0)).expect("valid") })
                .collect();
            let free: Vec<&TableSpec> = p.tables.iter().filter(|t| !busy.iter().any(|b| b.table_id == t.id)).collect();
            for party in 1..=20u16 {
                for settings in [ADJACENT, ANY_MERGE, NO_MERGE] {
                    let got = quote(&p, settings, &req(party, start), &busy).map(|s| s.table_ids);
                    let mut want = brute_force(&p, settings, party, &free);
                    if let Some(w) = &mut want {
                        w.sort();
                    }
                    if want.as_ref().is_some_and(|w| w.len() > 1) {
                        merged_answers += 1;
                    }
                    assert_eq!(
                        got.ok(),
                        want,
                        "round {round}, party {party}, {settings:?}, policy {p:#?}, busy {busy:?}"
                    );
                }
            }
        }
        // The random plans really exercised merges, not just singles.
        assert!(merged_answers > 300, "only {merged_answers} merged answers");
    }

    fn big_floor(n: u128, capacity: u16, chain: bool) -> BookingPolicy {
        let mut p = BookingPolicy::demo(1);
        p.max_merge_tables = MAX_MERGE_TABLES_LIMIT;
        p.max_party_size = 50;
        p.turn_times.push(crate::policy::TurnTime { max_party: 50, minutes: 180 });
        let id = |i: u128| TableId(Uuid::from_u128(0x5000 + i));
        p.tables = (0..n)
            .map(|i| TableSpec {
                id: id(i),
                label: format!("T{i:02}"),
                min_party: 1,
                capacity,
                zone: "hall".into(),
                adjacent: if chain && i + 1 < n { vec![id(i + 1)] } else { Vec::new() },
                mergeable: true,
            })
            .collect();
        p
    }

    #[test]
    fn merge_search_stays_within_its_bound_on_fifty_tables() {
        // 50 two-tops. 8 guests need four tables; every 4-subset has the same capacity, so
        // the capacity bound cannot prune and the labels decide.
        let p = big_floor(50, 2, false);
        assert_eq!(p.validate(), Ok(()));
        let sel = quote(&p, ANY_MERGE, &req(8, at(19, 0)), &[]).expect("selection");
        assert_eq!(labels(&p, &sel.table_ids), ["T00", "T01", "T02", "T03"]);
        assert!(sel.snapshot.candidates_considered <= MERGE_SEARCH_BUDGET);
        // 9 guests cannot fit in four two-tops: pruned before any enumeration.
        assert_eq!(quote(&p, ANY_MERGE, &req(9, at(19, 0)), &[]), Err(QuoteRejection::NoTableAvailable));
        // A chain of 50 tables with adjacency: four connected neighbours, lowest labels.
        let chain = big_floor(50, 2, true);
        let sel = quote(&chain, ADJACENT, &req(7, at(19, 0)), &[]).expect("selection");
        assert_eq!(labels(&chain, &sel.table_ids), ["T00", "T01", "T02", "T03"]);
        // Every other table busy: no two free tables are adjacent.
        let b: Vec<Busy> = chain
            .tables
            .iter()
            .step_by(2)
            .map(|t| Busy { table_id: t.id, window: Window::new(at(18, 0), at(22, 0)).expect("valid") })
            .collect();
        assert_eq!(quote(&chain, ADJACENT, &req(3, at(19, 0)), &b), Err(QuoteRejection::NoTableAvailable));
    }

    #[test]
    fn merge_search_budget_is_a_hard_cap() {
        // 80 identical two-tops with identical labels and party 8: every 4-subset ties on
        // capacity, size and labels, so only the budget stops the enumeration (C(80,4) is
        // 1.6 M). The answer is still a valid, deterministic 4-table merge.
        let mut p = big_floor(80, 2, false);
        for t in &mut p.tables {
            t.label = "same".into();
        }
        let sel = quote(&p, ANY_MERGE, &req(8, at(19, 0)), &[]).expect("selection");
        assert!(sel.snapshot.candidates_considered <= MERGE_SEARCH_BUDGET);
        assert_eq!(sel.table_ids.len(), 4);
    }

    #[test]
    fn candidate_times_walk_outwards_on_the_grid() {
        let p = BookingPolicy::demo(1); // 15-minute slots
        let times: Vec<DateTime<Utc>> = candidate_times(&p, at(19, 0)).collect();
        assert_eq!(times.len(), 16); // 8 each way within ±2 h
        assert_eq!(&times[..4], &[at(18, 45), at(19, 15), at(18, 30), at(19, 30)]);
        assert_eq!(times[14], at(17, 0));
        assert_eq!(times[15], at(21, 0));

        // Off-grid request: grid points, not request + n*slot.
        let off: Vec<DateTime<Utc>> = candidate_times(&p, at(19, 7)).collect();
        assert_eq!(&off[..3], &[at(19, 0), at(19, 15), at(18, 45)]);
        assert!(off.iter().all(|t| *t >= at(17, 7) && *t <= at(21, 7)));
        assert_eq!(off.len(), 16);

        // The grid is anchored at local midnight: with UTC+0:10, local 19:00 = 18:50 UTC.
        let mut shifted = p.clone();
        shifted.time_zone = None;
        shifted.utc_offset_minutes = Some(10);
        let s: Vec<DateTime<Utc>> = candidate_times(&shifted, at(18, 50)).collect();
        assert_eq!(&s[..2], &[at(18, 35), at(19, 5)]);

        // Across midnight the grid continues.
        let late: Vec<DateTime<Utc>> = candidate_times(&p, at(23, 30)).collect();
        assert!(late.contains(&(at(23, 30) + Duration::minutes(60))));
    }

    #[test]
    fn alternatives_offer_other_tables_first_then_nearby_times() {
        let p = BookingPolicy::demo(1);
        // The 19:00 quote picked M1 but the hold lost the race on M1.
        let b = [busy(1, at(19, 0), at(20, 45))];
        let alts = alternatives(&p, ADJACENT, &req(2, at(19, 0)), &b, &[demo_table_id(1)], 3);
        assert_eq!(
            alts,
            vec![
                Alternative { start: at(19, 0), table_ids: vec![demo_table_id(2)] },
                Alternative { start: at(18, 45), table_ids: vec![demo_table_id(2)] },
                Alternative { start: at(19, 15), table_ids: vec![demo_table_id(2)] },
            ]
        );
        // Excluded tables are only excluded at the requested time.
        let free_later = alternatives(&p, ADJACENT, &req(2, at(19, 0)), &[], &[demo_table_id(1)], 2);
        assert_eq!(free_later[0].table_ids, vec![demo_table_id(2)]);
        assert_eq!(free_later[1].table_ids, vec![demo_table_id(1)]);
        assert_eq!(free_later[1].start, at(18, 45));
    }

    #[test]
    fn alternatives_skip_full_times_and_stay_in_service_hours() {
        let p = BookingPolicy::demo(1);
        // Everything busy 18:00–19:30: a party of 2 (blocked 105 min) fits from 19:30 on,
        // or if it ends by 18:00 (start <= 16:15, outside the ±2 h horizon of 18:30).
        let b: Vec<Busy> = (1..=8).map(|t| busy(t, at(18, 0), at(19, 30))).collect();
        let alts = alternatives(&p, NO_MERGE, &req(2, at(18, 30)), &b, &[], 3);
        let starts: Vec<_> = alts.iter().map(|a| a.start).collect();
        assert_eq!(starts, [at(19, 30), at(19, 45), at(20, 0)]);

        // Near opening: nothing before 11:00 is offered.
        let b: Vec<Busy> = (1..=8).map(|t| busy(t, at(11, 0), at(13, 0))).collect();
        let alts = alternatives(&p, NO_MERGE, &req(2, at(11, 30)), &b, &[], 10);
        assert!(!alts.is_empty());
        assert!(alts.iter().all(|a| a.start >= at(13, 0)), "{alts:?}");

        // Near closing: a party of 2 must start by 21:30.
        let alts = alternatives(&p, NO_MERGE, &req(2, at(21, 0)), &[], &[], 100);
        assert!(alts.iter().all(|a| a.start <= at(21, 30)), "{alts:?}");
        assert!(alts.iter().any(|a| a.start == at(21, 30)));
        assert_eq!(alts[0].start, at(21, 0));
        assert_eq!(alts.len(), 1 + 2 + 8); // now, 21:15 and 21:30, 8 earlier slots
    }

    #[test]
    fn alternatives_limits_and_dead_ends() {
        let p = BookingPolicy::demo(1);
        assert!(alternatives(&p, ADJACENT, &req(2, at(19, 0)), &[], &[], 0).is_empty());
        assert!(alternatives(&p, ADJACENT, &req(11, at(19, 0)), &[], &[], 5).is_empty());
        let all_day: Vec<Busy> = (1..=8).map(|t| busy(t, at(11, 0), at(23, 30))).collect();
        assert!(alternatives(&p, ADJACENT, &req(2, at(19, 0)), &all_day, &[], 5).is_empty());
        assert_eq!(alternatives(&p, ADJACENT, &req(2, at(19, 0)), &[], &[], 5).len(), 5);
    }

    #[test]
    fn alternatives_not_before_drops_past_times() {
        let p = BookingPolicy::demo(1);
        let b = [busy(1, at(19, 0), at(20, 45))];
        let alts = alternatives_not_before(&p, ADJACENT, &req(2, at(19, 0)), &b, &[demo_table_id(1)], 4, at(18, 50));
        let starts: Vec<_> = alts.iter().map(|a| a.start).collect();
        assert_eq!(starts, [at(19, 0), at(19, 15), at(19, 30), at(19, 45)]);
        let none = alternatives_not_before(&p, ADJACENT, &req(2, at(19, 0)), &[], &[], 4, at(23, 0));
        assert!(none.is_empty());
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use crate::policy::{BookingHorizon, ServiceHours};
    use chrono::TimeZone;

    const S: AllocatorSettings = AllocatorSettings { merges_enabled: true, require_adjacency: true };

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
    }

    fn req(party: u16, start: DateTime<Utc>) -> QuoteRequest {
        QuoteRequest { party: PartySize::new(party).expect("valid party"), start }
    }

    /// The demo floor plan, Europe/London, open Fri and Sat 22:00 – 02:00 (next day), 30-min slots.
    fn late_night() -> BookingPolicy {
        let mut p = BookingPolicy::demo(1);
        p.slot_minutes = 30;
        p.service_hours = vec![
            ServiceHours { weekday: 4, opens_minute: 22 * 60, closes_minute: 2 * 60 },
            ServiceHours { weekday: 5, opens_minute: 22 * 60, closes_minute: 2 * 60 },
        ];
        p
    }

    #[test]
    fn a_seating_after_midnight_is_quoted_in_the_previous_days_period() {
        let p = late_night();
        // Saturday 2026-01-10 00:30 GMT, Friday's period.
        let sel = quote(&p, S, &req(2, utc(2026, 1, 10, 0, 30)), &[]).expect("seated");
        assert_eq!(sel.seated.end(), utc(2026, 1, 10, 2, 0));
        assert_eq!(quote(&p, S, &req(2, utc(2026, 1, 10, 0, 31)), &[]), Err(QuoteRejection::OutsideServiceHours));
    }

    #[test]
    fn the_slot_grid_is_local_on_dst_days() {
        let p = late_night();
        // Spring forward, Sunday 29 March 2026: 01:00Z is 02:00 BST. Grid instants are those
        // whose London wall time is on the half hour; no instant shows 01:xx local that night.
        let times: Vec<DateTime<Utc>> = candidate_times(&p, utc(2026, 3, 29, 0, 0)).collect();
        assert_eq!(times.len(), 8, "{times:?}");
        assert!(times.iter().all(|t| t.timestamp() % 1800 == 0));
        // Fall back, Sunday 25 October 2026: 01:30 local happens twice, and both are offered
        // as candidate instants (00:30Z BST and 01:30Z GMT).
        let times: Vec<DateTime<Utc>> = candidate_times(&p, utc(2026, 10, 25, 1, 0)).collect();
        assert!(times.contains(&utc(2026, 10, 25, 0, 30)) && times.contains(&utc(2026, 10, 25, 1, 30)));

        // A half-hour zone: the grid follows local time, not UTC.
        let mut adelaide = p.clone();
        adelaide.time_zone = crate::local_time::TimeZoneName::parse("Australia/Adelaide").ok();
        adelaide.slot_minutes = 60;
        let times: Vec<DateTime<Utc>> = candidate_times(&adelaide, utc(2026, 1, 9, 9, 30)).collect();
        assert!(times.iter().all(|t| t.timestamp() % 3600 == 1800), "{times:?}");
        // UTC+10:30
    }

    #[test]
    fn alternatives_bookable_are_never_in_the_past_or_beyond_the_horizon() {
        let mut p = BookingPolicy::demo(1);
        p.booking_horizon = BookingHorizon { min_lead_minutes: 15, max_days_ahead: 1 };
        let start = utc(2026, 1, 9, 19, 0);
        // Now is 18:10: 18:25 is the earliest bookable start; everything else is taken at 19:00.
        let now = utc(2026, 1, 9, 18, 10);
        let busy: Vec<Busy> = p
            .tables
            .iter()
            .map(|t| Busy { table_id: t.id, window: Window::new(start, utc(2026, 1, 9, 19, 30)).expect("window") })
            .collect();
        let all = alternatives(&p, S, &req(2, start), &busy, &[], 100);
        assert!(all.iter().any(|a| a.start < utc(2026, 1, 9, 18, 25)), "the unfiltered list reaches back");
        let alts = alternatives_bookable(&p, S, &req(2, start), &busy, &[], 100, now);
        assert!(!alts.is_empty());
        assert!(alts.iter().all(|a| a.start >= utc(2026, 1, 9, 18, 25)), "{alts:?}");
        // Near the far edge: nothing after now + 1 day.
        let now = utc(2026, 1, 8, 19, 30);
        let alts = alternatives_bookable(&p, S, &req(2, start), &[], &[], 100, now);
        assert!(!alts.is_empty());
        assert!(alts.iter().all(|a| a.start <= utc(2026, 1, 9, 19, 30)), "{alts:?}");
        assert_eq!(alternatives_bookable(&p, S, &req(2, start), &[], &[], 100, DateTime::<Utc>::MAX_UTC), vec![]);
    }

    #[test]
    fn extreme_starts_never_panic() {
        let p = BookingPolicy::demo(1);
        let edges = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MAX_UTC - Duration::hours(1),
            DateTime::<Utc>::MIN_UTC + Duration::hours(1),
        ];
        for start in edges {
            let r = req(2, start);
            let _ = quote(&p, S, &r, &[]);
            let _ = alternatives(&p, S, &r, &[], &[], 5);
            let _ = candidate_times(&p, start).count();
        }
    }
}

#[cfg(test)]
mod select_tables_tests {
    use super::*;
    use crate::policy::{demo_table_id, BookingPolicy};
    use chrono::TimeZone;

    fn req(party: u16) -> QuoteRequest {
        QuoteRequest {
            party: PartySize::new(party).expect("party"),
            start: Utc.with_ymd_and_hms(2030, 1, 7, 19, 0, 0).single().expect("time"),
        }
    }

    #[test]
    fn selects_only_within_the_requested_tables() {
        let p = BookingPolicy::demo(1);
        let s = AllocatorSettings { merges_enabled: true, require_adjacency: true };
        let want = demo_table_id(3);
        let sel = select_tables(&p, s, &req(2), &[want]).expect("fits");
        assert_eq!(sel.table_ids, vec![want]);
        assert_eq!(sel.policy_hash, p.content_hash());
    }

    #[test]
    fn refuses_unknown_tables_and_tables_too_small() {
        let p = BookingPolicy::demo(1);
        let s = AllocatorSettings { merges_enabled: false, require_adjacency: true };
        assert_eq!(
            select_tables(&p, s, &req(2), &[TableId(uuid::Uuid::from_u128(99))]),
            Err(QuoteRejection::NoTableAvailable)
        );
        let smallest = p.tables.iter().min_by_key(|t| t.capacity).expect("tables");
        assert_eq!(
            select_tables(&p, s, &req(smallest.capacity + 1), &[smallest.id]),
            Err(QuoteRejection::NoTableAvailable)
        );
    }
}
