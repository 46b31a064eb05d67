//! Restaurant-local time: the restaurant's clock (an IANA zone, or the fixed offset of a policy
//! published before zones existed), wall-clock ↔ instant conversion across DST changes, and the
//! guest-facing rendering of an instant ("Sat 28 Mar 2026, 19:30 GMT").
//!
//! The rules, in one place (docs/runbooks/holds.md, "Local time", repeats them):
//! - An instant (what the API takes: RFC 3339 with an offset, stored as UTC) names exactly one
//!   local wall-clock time. It is never in a DST gap and never ambiguous.
//! - A wall-clock time is turned into an instant by [`RestaurantClock::to_instant`]: a time
//!   that does not exist that day (spring-forward gap, e.g. 01:30 Europe/London on
//!   2026-03-29) is refused ([`LocalTimeError::Nonexistent`]); a time that occurs twice
//!   (autumn fallback, 01:30 on 2026-10-25) means its **first** occurrence (the earlier
//!   instant, still on summer time).
//! - A service-period boundary (opening or closing wall-clock time) is the **first instant at
//!   which the restaurant's clock shows that time or later** ([`RestaurantClock::boundary`]):
//!   an ambiguous boundary is its first occurrence (a service closing at 01:30 on fallback night
//!   closes at 01:30 summer time; the repeated hour after it is closed), and a boundary inside
//!   a gap is the instant the clocks jump (a service opening at 01:30 on spring-forward night
//!   opens at 02:00 summer time).

use chrono::{DateTime, Duration, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetName, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An IANA time zone name of the compiled-in tz database (e.g. `"Europe/London"`), serialised
/// as the name exactly as written (a link such as `"GB"` stays `"GB"`, so the policy hash is
/// over what the operator published). Deserialising refuses unknown names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZoneName(Tz);

/// A time zone name the tz database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{got:?} is not an IANA time zone name (e.g. \"Europe/London\")")]
pub struct UnknownTimeZone {
    pub got: String,
}

impl TimeZoneName {
    pub fn parse(s: &str) -> Result<Self, UnknownTimeZone> {
        s.parse::<Tz>().map(Self).map_err(|_| UnknownTimeZone { got: s.to_owned() })
    }

    pub fn tz(self) -> Tz {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TimeZoneName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a wall-clock time has no instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalTimeError {
    /// Skipped by a DST change (spring forward).
    #[error("{local} does not exist in {zone} (the clocks skip it)")]
    Nonexistent { local: NaiveDateTime, zone: String },
    /// Beyond the range of representable instants.
    #[error("{local} is outside the range of supported times")]
    OutOfRange { local: NaiveDateTime },
}

/// What a wall-clock time is in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalInstant {
    /// Exactly one instant.
    Single(DateTime<Utc>),
    /// The time occurs twice (fallback): both instants, earlier first.
    Ambiguous(DateTime<Utc>, DateTime<Utc>),
    /// The time is skipped (spring forward); `next` is the instant the clocks jump (the first
    /// instant at which the clock shows a later time).
    Nonexistent { next: DateTime<Utc> },
    /// Not representable.
    OutOfRange,
}

/// A restaurant's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestaurantClock {
    /// An IANA zone: offsets and abbreviations follow the tz database, DST included.
    Zone(Tz),
    /// A fixed offset from UTC (policies published with `utc_offset_minutes` only).
    Fixed(FixedOffset),
}

impl RestaurantClock {
    pub const UTC: RestaurantClock = RestaurantClock::Zone(Tz::UTC);

    /// The offset in force at `t`.
    pub fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        match self {
            Self::Zone(tz) => tz.offset_from_utc_datetime(&t.naive_utc()).fix(),
            Self::Fixed(o) => *o,
        }
    }

    /// The wall-clock time at `t`; `None` only at the very edge of chrono's range.
    pub fn local(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        let offset = Duration::seconds(i64::from(self.offset_at(t).local_minus_utc()));
        t.naive_utc().checked_add_signed(offset)
    }

    /// The zone's abbreviation at `t` ("GMT", "BST", "CET"); zones the tz database names only
    /// numerically, and fixed offsets, get "UTC" or "UTC+05:30".
    pub fn abbreviation(&self, t: DateTime<Utc>) -> String {
        if let Self::Zone(tz) = self {
            if let Some(abbr) = tz.offset_from_utc_datetime(&t.naive_utc()).abbreviation() {
                if abbr.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return abbr.to_owned();
                }
            }
        }
        let secs = self.offset_at(t).local_minus_utc();
        if secs == 0 {
            return "UTC".to_owned();
        }
        let sign = if secs < 0 { '-' } else { '+' };
        let mins = secs.unsigned_abs() / 60;
        format!("UTC{sign}{:02}:{:02}", mins / 60, mins % 60)
    }

    /// Every instant whose wall-clock time is `local`.
    pub fn resolve(&self, local: NaiveDateTime) -> LocalInstant {
        match self {
            Self::Fixed(o) => match local.checked_sub_signed(Duration::seconds(i64::from(o.local_minus_utc()))) {
                Some(u) => LocalInstant::Single(u.and_utc()),
                None => LocalInstant::OutOfRange,
            },
            Self::Zone(tz) => {
                // chrono-tz itself does not guard the edges of chrono's range.
                let day = Duration::days(1);
                let (Some(before), Some(after)) = (local.checked_sub_signed(day), local.checked_add_signed(day)) else {
                    return LocalInstant::OutOfRange;
                };
                match tz.from_local_datetime(&local) {
                    LocalResult::Single(t) => LocalInstant::Single(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => {
                        let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                        LocalInstant::Ambiguous(a.min(b), a.max(b))
                    }
                    LocalResult::None => match self.jump_instant(local, before, after) {
                        Some(next) => LocalInstant::Nonexistent { next },
                        None => LocalInstant::OutOfRange,
                    },
                }
            }
        }
    }

    /// The instant the clocks jump over the skipped `local`: the first instant whose wall
    /// clock shows `local` or later. Found by bisection between the two readings of `local`
    /// under the offsets in force a day before and a day after.
    fn jump_instant(&self, local: NaiveDateTime, before: NaiveDateTime, after: NaiveDateTime) -> Option<DateTime<Utc>> {
        let off_before = i64::from(self.offset_at(before.and_utc()).local_minus_utc());
        let off_after = i64::from(self.offset_at(after.and_utc()).local_minus_utc());
        let mut lo = local.checked_sub_signed(Duration::seconds(off_after))?.and_utc();
        let mut hi = local.checked_sub_signed(Duration::seconds(off_before))?.and_utc();
        if lo > hi {
            std::mem::swap(&mut lo, &mut hi);
        }
        let shows_at_least = |t: DateTime<Utc>| self.local(t).is_some_and(|l| l >= local);
        if !shows_at_least(hi) {
            return None;
        }
        // Invariant: the answer is in (lo, hi]; offsets change on whole seconds.
        while hi - lo > Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if shows_at_least(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// The instant a guest means by a wall-clock time: a skipped time is refused, a repeated
    /// one is its first occurrence (see module docs).
    pub fn to_instant(&self, local: NaiveDateTime) -> Result<DateTime<Utc>, LocalTimeError> {
        match self.resolve(local) {
            LocalInstant::Single(t) | LocalInstant::Ambiguous(t, _) => Ok(t),
            LocalInstant::Nonexistent { .. } => Err(LocalTimeError::Nonexistent { local, zone: self.to_string() }),
            LocalInstant::OutOfRange => Err(LocalTimeError::OutOfRange { local }),
        }
    }

    /// The instant a service-period boundary at wall-clock `local` falls on: the first instant
    /// at which the clock shows `local` or later (first occurrence if repeated, the jump if
    /// skipped). `None` when not representable.
    pub fn boundary(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.resolve(local) {
            LocalInstant::Single(t) | LocalInstant::Ambiguous(t, _) => Some(t),
            LocalInstant::Nonexistent { next } => Some(next),
            LocalInstant::OutOfRange => None,
        }
    }
}

impl fmt::Display for RestaurantClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zone(tz) => f.write_str(tz.name()),
            Self::Fixed(o) => write!(f, "UTC{o}"),
        }
    }
}

/// An instant as a guest reads it, in the restaurant's clock with the zone's abbreviation at
/// that instant: `"Sat 28 Mar 2026, 19:30 GMT"`, `"Sun 29 Mar 2026, 19:30 BST"`. English day and
/// month names; 24-hour clock.
pub fn render_local(clock: &RestaurantClock, t: DateTime<Utc>) -> String {
    match clock.local(t) {
        Some(local) => format!("{}, {} {}", local.format("%a %-d %b %Y"), local.format("%H:%M"), clock.abbreviation(t)),
        // Only at the edge of chrono's range, which no booking reaches.
        None => format!("{} UTC", t.format("%Y-%m-%d %H:%M")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
    }

    fn wall(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, 0)).expect("valid wall time")
    }

    fn london() -> RestaurantClock {
        RestaurantClock::Zone(TimeZoneName::parse("Europe/London").expect("known").tz())
    }

    #[test]
    fn zone_names_parse_strictly_and_round_trip() {
        let z = TimeZoneName::parse("Europe/Paris").expect("known");
        assert_eq!(z.name(), "Europe/Paris");
        assert_eq!(serde_json::to_string(&z).expect("ser"), "\"Europe/Paris\"");
        assert_eq!(serde_json::from_str::<TimeZoneName>("\"Europe/Paris\"").expect("de"), z);
        // A link keeps its own spelling.
        assert_eq!(TimeZoneName::parse("GB").expect("link").name(), "GB");
        for bad in ["", "europe/london", "Europe/Londres", "UTC+1", "Mars/Olympus"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<TimeZoneName>(&format!("\"{bad}\"")).is_err());
        }
    }

    #[test]
    fn london_spring_forward_2026() {
        let c = london();
        // 01:00 GMT → 02:00 BST on Sunday 29 March 2026: 01:00–01:59 never shows.
        assert_eq!(c.resolve(wall(2026, 3, 29, 0, 59)), LocalInstant::Single(utc(2026, 3, 29, 0, 59)));
        let gap = wall(2026, 3, 29, 1, 30);
        assert_eq!(c.resolve(gap), LocalInstant::Nonexistent { next: utc(2026, 3, 29, 1, 0) });
        assert_eq!(c.to_instant(gap), Err(LocalTimeError::Nonexistent { local: gap, zone: "Europe/London".into() }));
        assert_eq!(c.resolve(wall(2026, 3, 29, 1, 0)), LocalInstant::Nonexistent { next: utc(2026, 3, 29, 1, 0) });
        assert_eq!(c.boundary(gap), Some(utc(2026, 3, 29, 1, 0)));
        assert_eq!(c.to_instant(wall(2026, 3, 29, 2, 0)), Ok(utc(2026, 3, 29, 1, 0)));
        assert_eq!(c.to_instant(wall(2026, 3, 29, 19, 30)), Ok(utc(2026, 3, 29, 18, 30)));
        // Every instant has a wall time; none of them is in the gap.
        assert_eq!(c.local(utc(2026, 3, 29, 0, 59)), Some(wall(2026, 3, 29, 0, 59)));
        assert_eq!(c.local(utc(2026, 3, 29, 1, 0)), Some(wall(2026, 3, 29, 2, 0)));
    }

    #[test]
    fn london_fall_back_2026() {
        let c = london();
        // 02:00 BST → 01:00 GMT on Sunday 25 October 2026: 01:00–01:59 shows twice.
        let twice = wall(2026, 10, 25, 1, 30);
        assert_eq!(c.resolve(twice), LocalInstant::Ambiguous(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)));
        assert_eq!(c.to_instant(twice), Ok(utc(2026, 10, 25, 0, 30)), "first occurrence");
        assert_eq!(c.boundary(twice), Some(utc(2026, 10, 25, 0, 30)));
        assert_eq!(c.to_instant(wall(2026, 10, 25, 2, 0)), Ok(utc(2026, 10, 25, 2, 0)));
        assert_eq!(c.local(utc(2026, 10, 25, 0, 30)), Some(twice));
        assert_eq!(c.local(utc(2026, 10, 25, 1, 30)), Some(twice));
    }

    #[test]
    fn renders_with_the_abbreviation_in_force() {
        let c = london();
        assert_eq!(render_local(&c, utc(2026, 3, 28, 19, 30)), "Sat 28 Mar 2026, 19:30 GMT");
        assert_eq!(render_local(&c, utc(2026, 3, 29, 18, 30)), "Sun 29 Mar 2026, 19:30 BST");
        assert_eq!(render_local(&c, utc(2026, 10, 25, 0, 30)), "Sun 25 Oct 2026, 01:30 BST");
        assert_eq!(render_local(&c, utc(2026, 10, 25, 1, 30)), "Sun 25 Oct 2026, 01:30 GMT");
        let paris = RestaurantClock::Zone(TimeZoneName::parse("Europe/Paris").expect("known").tz());
        assert_eq!(render_local(&paris, utc(2026, 7, 3, 18, 5)), "Fri 3 Jul 2026, 20:05 CEST");
        let kolkata = RestaurantClock::Zone(TimeZoneName::parse("Asia/Kolkata").expect("known").tz());
        assert_eq!(render_local(&kolkata, utc(2026, 7, 3, 18, 5)), "Fri 3 Jul 2026, 23:35 IST");
        // A zone the tz database abbreviates only numerically.
        let dubai = RestaurantClock::Zone(TimeZoneName::parse("Asia/Dubai").expect("known").tz());
        assert_eq!(render_local(&dubai, utc(2026, 7, 3, 18, 5)), "Fri 3 Jul 2026, 22:05 UTC+04:00");
        let fixed = RestaurantClock::Fixed(FixedOffset::east_opt(-150 * 60).expect("offset"));
        assert_eq!(render_local(&fixed, utc(2026, 7, 3, 18, 5)), "Fri 3 Jul 2026, 15:35 UTC-02:30");
        assert_eq!(render_local(&RestaurantClock::UTC, utc(2026, 7, 3, 18, 5)), "Fri 3 Jul 2026, 18:05 UTC");
    }

    #[test]
    fn the_edges_of_chrono_never_panic() {
        for c in [london(), RestaurantClock::Fixed(FixedOffset::east_opt(18 * 3600).expect("offset"))] {
            for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let _ = c.local(t);
                let _ = render_local(&c, t);
                let _ = c.abbreviation(t);
            }
            for l in [NaiveDateTime::MIN, NaiveDateTime::MAX] {
                let _ = c.resolve(l);
                let _ = c.boundary(l);
                assert!(c.to_instant(l).is_err() || matches!(c, RestaurantClock::Fixed(_)));
            }
        }
    }
}

/// A requested start as a client may send it: an instant (RFC 3339 with `Z` or an offset) or
/// the restaurant's own wall-clock time with no offset (`"2026-03-29T19:30:00"`), which the
/// restaurant's clock turns into an instant ([`RestaurantClock::to_instant`]: a skipped time is
/// refused, a repeated one is its first occurrence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
}

impl StartTime {
    /// The instant, on `clock`'s restaurant.
    pub fn resolve(self, clock: &RestaurantClock) -> Result<DateTime<Utc>, LocalTimeError> {
        match self {
            Self::Instant(t) => Ok(t),
            Self::Local(l) => clock.to_instant(l),
        }
    }

    /// The instant when one was sent (no restaurant clock needed).
    pub fn instant(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Instant(t) => Some(t),
            Self::Local(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for StartTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            return Ok(Self::Instant(t.to_utc()));
        }
        for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(l) = NaiveDateTime::parse_from_str(&s, f) {
                return Ok(Self::Local(l));
            }
        }
        Err(serde::de::Error::custom(
            "expected an RFC 3339 instant (2026-03-29T18:30:00Z) or the restaurant's local time (2026-03-29T19:30:00)",
        ))
    }
}

#[cfg(test)]
mod start_time_tests {
    use super::*;

    #[test]
    fn instants_and_local_wall_clock_times_both_parse() {
        let i: StartTime = serde_json::from_str("\"2030-01-07T19:00:00Z\"").expect("instant");
        assert!(matches!(i, StartTime::Instant(_)));
        let o: StartTime = serde_json::from_str("\"2030-01-07T20:00:00+01:00\"").expect("offset");
        assert_eq!(o, i);
        let l: StartTime = serde_json::from_str("\"2030-01-07T19:00:00\"").expect("local");
        assert!(matches!(l, StartTime::Local(_)));
        let m: StartTime = serde_json::from_str("\"2030-01-07T19:00\"").expect("local minutes");
        assert_eq!(m, l);
        for bad in ["\"tomorrow\"", "\"2030-13-01T19:00:00\"", "\"+262143-12-31T22:00:00\"", "19"] {
            assert!(serde_json::from_str::<StartTime>(bad).is_err(), "{bad}");
        }
    }
}
