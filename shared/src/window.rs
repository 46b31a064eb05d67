//! Time windows and their overlap rule.
//!
//! A [`Window`] is half-open, `[start, end)`, exactly like PostgreSQL's default `tstzrange`
//! bounds used by the exclusion constraint: a booking ending at 20:00 and one starting at 20:00
//! do not conflict. Keeping the app's rule identical to the database's means the app never
//! predicts a conflict the database would not raise (or the reverse).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Why a window could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window end {end} is not after its start {start}")]
    EndNotAfterStart { start: DateTime<Utc>, end: DateTime<Utc> },
}

/// A non-empty half-open time window `[start, end)`.
///
/// Serialised as `{"start": "<RFC 3339>", "end": "<RFC 3339>"}`; deserialising goes through
/// [`Window::new`], so an empty or inverted window can never be read back from JSON either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawWindow")]
pub struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The unvalidated wire shape; only used to route deserialisation through `Window::new`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TryFrom<RawWindow> for Window {
    type Error = WindowError;
    fn try_from(raw: RawWindow) -> Result<Self, Self::Error> {
        Window::new(raw.start, raw.end)
    }
}

impl Window {
    /// Builds `[start, end)`; an empty window (`end == start`) is rejected because it could
    /// never conflict with anything and would silently defeat the exclusion constraint.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, WindowError> {
        if end <= start {
            return Err(WindowError::EndNotAfterStart { start, end });
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Always strictly positive.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Half-open overlap: windows that merely touch (`a.end == b.start`) do not overlap.
    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// True when `other` lies entirely inside `self` (touching bounds allowed).
    pub fn contains(&self, other: &Window) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// True when the instant `t` is in `[start, end)`.
    pub fn contains_instant(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The same window moved by `by` (negative moves earlier), or `None` when either bound
    /// leaves chrono's representable range.
    pub fn checked_shifted(&self, by: Duration) -> Option<Window> {
        Some(Window { start: self.start.checked_add_signed(by)?, end: self.end.checked_add_signed(by)? })
    }

    /// The same window moved by `by` (negative moves earlier).
    ///
    /// # Panics
    /// When a bound leaves chrono's range (about ±262,000 years); use
    /// [`Window::checked_shifted`] for untrusted offsets.
    pub fn shifted(&self, by: Duration) -> Window {
        // Shifting both bounds by the same amount keeps end > start, so no re-validation.
        Window { start: self.start + by, end: self.end + by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 14, h, m, 0).single().expect("valid test time")
    }

    fn w(sh: u32, sm: u32, eh: u32, em: u32) -> Window {
        Window::new(t(sh, sm), t(eh, em)).expect("valid test window")
    }

    #[test]
    fn new_rejects_empty_and_inverted_windows() {
        assert_eq!(
            Window::new(t(19, 0), t(19, 0)),
            Err(WindowError::EndNotAfterStart { start: t(19, 0), end: t(19, 0) })
        );
        assert!(matches!(Window::new(t(20, 0), t(19, 0)), Err(WindowError::EndNotAfterStart { .. })));
        let ok = Window::new(t(19, 0), t(19, 1)).expect("one minute is fine");
        assert_eq!(ok.start(), t(19, 0));
        assert_eq!(ok.end(), t(19, 1));
        assert_eq!(ok.duration(), Duration::minutes(1));
    }

    #[test]
    fn touching_windows_do_not_overlap() {
        let a = w(18, 0, 20, 0);
        let b = w(20, 0, 22, 0);
        assert!(!a.overlaps(&b));
        assert!(!b.overlaps(&a));
    }

    #[test]
    fn overlap_cases_are_symmetric() {
        let a = w(18, 0, 20, 0);
        let cases = [
            (w(19, 59, 21, 0), true),  // one minute of overlap at the end
            (w(17, 0, 18, 1), true),   // one minute at the start
            (w(18, 30, 19, 30), true), // inside
            (w(17, 0, 21, 0), true),   // around
            (w(18, 0, 20, 0), true),   // identical
            (w(16, 0, 18, 0), false),  // touching before
            (w(20, 1, 21, 0), false),  // after
            (w(10, 0, 11, 0), false),  // far before
        ];
        for (b, expected) in cases {
            assert_eq!(a.overlaps(&b), expected, "{a:?} vs {b:?}");
            assert_eq!(b.overlaps(&a), expected, "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn contains_allows_touching_bounds_only_from_inside() {
        let outer = w(11, 0, 23, 0);
        assert!(outer.contains(&w(11, 0, 23, 0)));
        assert!(outer.contains(&w(21, 30, 23, 0)));
        assert!(!outer.contains(&w(21, 30, 23, 1)));
        assert!(!outer.contains(&w(10, 59, 12, 0)));
        assert!(outer.contains_instant(t(11, 0)));
        assert!(!outer.contains_instant(t(23, 0)));
    }

    #[test]
    fn shifted_moves_both_bounds() {
        let a = w(18, 0, 20, 0);
        let later = a.shifted(Duration::minutes(15));
        assert_eq!(later, w(18, 15, 20, 15));
        assert_eq!(later.duration(), a.duration());
        assert_eq!(a.shifted(Duration::minutes(-60)), w(17, 0, 19, 0));
        assert_eq!(a.checked_shifted(Duration::minutes(15)), Some(later));
        assert_eq!(a.checked_shifted(Duration::MAX), None);
    }

    #[test]
    fn serde_roundtrip_uses_rfc3339_fields() {
        let a = w(18, 0, 20, 0);
        let json = serde_json::to_value(a).expect("serialises");
        assert_eq!(json, serde_json::json!({"start": "2025-06-14T18:00:00Z", "end": "2025-06-14T20:00:00Z"}));
        let back: Window = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, a);
        // Offsets other than Z are accepted and normalised to UTC.
        let other: Window =
            serde_json::from_str(r#"{"start":"2025-06-14T20:00:00+02:00","end":"2025-06-14T22:00:00+02:00"}"#)
                .expect("deserialises");
        assert_eq!(other, a);
    }

    #[test]
    fn deserialisation_validates() {
        let inverted = r#"{"start":"2025-06-14T20:00:00Z","end":"2025-06-14T18:00:00Z"}"#;
        let err = serde_json::from_str::<Window>(inverted).expect_err("inverted window");
        assert!(err.to_string().contains("not after its start"), "{err}");
        let empty = r#"{"start":"2025-06-14T20:00:00Z","end":"2025-06-14T20:00:00Z"}"#;
        assert!(serde_json::from_str::<Window>(empty).is_err());
        let extra = r#"{"start":"2025-06-14T18:00:00Z","end":"2025-06-14T20:00:00Z","x":1}"#;
        assert!(serde_json::from_str::<Window>(extra).is_err());
        let missing = r#"{"start":"2025-06-14T18:00:00Z"}"#;
        assert!(serde_json::from_str::<Window>(missing).is_err());
    }
}
