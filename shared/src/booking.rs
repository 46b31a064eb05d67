//! A booking's life after the request: the auto-assign retry rule. (The reminder lead is
//! policy data: `BookingPolicy::reminder_hours_before`.)
//! Pure: the holds API's assigner asks these with the database's facts and the clock.

use chrono::{DateTime, Duration, Utc};

/// Delays before the 2nd, 3rd and 4th auto-assign attempts (the 1st is inline, in the request).
pub const ASSIGN_RETRY_DELAYS: [Duration; 3] = [Duration::seconds(5), Duration::seconds(15), Duration::seconds(45)];
/// Attempts in all, the inline one included.
pub const ASSIGN_MAX_ATTEMPTS: u32 = 4;
/// No attempt this close to the start: a table found at the last minute helps nobody.
pub const ASSIGN_CUTOFF_BEFORE_START: Duration = Duration::minutes(10);

/// Why an auto-assign attempt did not confirm the booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignFailure {
    /// Retrying cannot help (no table fits the party, outside service hours, party too large).
    Hard(&'static str),
    /// Might work next time (lost a race for the table, database unavailable).
    Transient(&'static str),
}

impl AssignFailure {
    pub fn code(self) -> &'static str {
        match self {
            Self::Hard(c) | Self::Transient(c) => c,
        }
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    /// The booking stays pending; ops get one "pending attention" notice.
    GiveUp,
}

/// The retry rule: hard failures stop; otherwise the next delay, while attempts remain and the
/// retry would still be more than the cutoff before the start. `attempts_made` counts the
/// attempt that just failed.
pub fn after_failure(
    attempts_made: u32,
    failure: AssignFailure,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
) -> AfterFailure {
    if matches!(failure, AssignFailure::Hard(_)) || attempts_made >= ASSIGN_MAX_ATTEMPTS || attempts_made == 0 {
        return AfterFailure::GiveUp;
    }
    let Some(delay) = ASSIGN_RETRY_DELAYS.get(attempts_made as usize - 1) else { return AfterFailure::GiveUp };
    let at = now + *delay;
    match starts_at.checked_sub_signed(ASSIGN_CUTOFF_BEFORE_START) {
        Some(cutoff) if at < cutoff => AfterFailure::RetryAt(at),
        _ => AfterFailure::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 7, h, m, s).single().expect("valid")
    }

    #[test]
    fn transient_failures_retry_after_5_15_45_seconds_then_give_up() {
        let start = t(19, 0, 0);
        let now = t(12, 0, 0);
        let fail = AssignFailure::Transient("hold_conflict");
        assert_eq!(after_failure(1, fail, now, start), AfterFailure::RetryAt(t(12, 0, 5)));
        assert_eq!(after_failure(2, fail, now, start), AfterFailure::RetryAt(t(12, 0, 15)));
        assert_eq!(after_failure(3, fail, now, start), AfterFailure::RetryAt(t(12, 0, 45)));
        assert_eq!(after_failure(4, fail, now, start), AfterFailure::GiveUp);
    }

    #[test]
    fn hard_failures_and_the_cutoff_stop_retries() {
        let start = t(19, 0, 0);
        assert_eq!(
            after_failure(1, AssignFailure::Hard("no_table_available"), t(12, 0, 0), start),
            AfterFailure::GiveUp
        );
        let fail = AssignFailure::Transient("database_unavailable");
        // 18:49:56 + 5 s = 18:50:01, inside the 10 minutes before 19:00.
        assert_eq!(after_failure(1, fail, t(18, 49, 56), start), AfterFailure::GiveUp);
        assert_eq!(after_failure(1, fail, t(18, 49, 54), start), AfterFailure::RetryAt(t(18, 49, 59)));
        assert_eq!(after_failure(1, fail, t(12, 0, 0), DateTime::<Utc>::MIN_UTC), AfterFailure::GiveUp);
    }
}
