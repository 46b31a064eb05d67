//! The holds API's one error enum. It says what went wrong in domain terms; the api layer
//! (`api::problem`) is the one place that turns it into a status code and a body.

use holdfast_adapters::db::DbFault;
use holdfast_shared::allocator::{Alternative, QuoteRejection};
use holdfast_shared::hold::HoldState;
use holdfast_shared::ids::BookingId;

#[derive(Debug, thiserror::Error)]
pub enum HoldsError {
    /// A request value the domain refuses; `field` names it as the client sent it.
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("quote rejected: {0}")]
    Rejected(QuoteRejection),
    /// The tables are taken for that window (SQLSTATE 23P01 or no free table): an answer.
    #[error("conflict: {code}")]
    Conflict { code: &'static str, message: String, alternatives: Vec<Alternative> },
    #[error("hold expired")]
    HoldExpired,
    /// Confirmed or released: `booking_id` is the confirmed hold's booking.
    #[error("hold is {}, not live", state.as_str())]
    HoldNotLive { state: HoldState, booking_id: Option<BookingId> },
    /// A change to a booking that is not confirmed (still pending, or cancelled).
    #[error("booking is {status}, not confirmed")]
    BookingNotConfirmed { status: &'static str },
    #[error("hold metadata incomplete")]
    MetadataIncomplete { missing: Vec<&'static str> },
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// The guest already has the policy's maximum of live holds at this restaurant.
    #[error("too many live holds")]
    TooManyHolds { retry_after_secs: u32 },
    /// The guest confirmed the policy's maximum of bookings here in the last hour.
    #[error("too many confirmations")]
    TooManyConfirms { retry_after_secs: u32 },
    /// Strict conflicts are on but the database does not enforce the constraint: fail safe.
    #[error("conflict enforcement unverified")]
    EnforcementUnverified,
    #[error("database: {0}")]
    Db(#[from] DbFault),
}

impl HoldsError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { field, message: message.into() }
    }

    /// Stable code for events, metrics and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::Rejected(r) => r.code(),
            Self::Conflict { code, .. } => code,
            Self::HoldExpired => "hold_expired",
            Self::HoldNotLive { .. } => "hold_not_live",
            Self::BookingNotConfirmed { .. } => "booking_not_confirmed",
            Self::MetadataIncomplete { .. } => "metadata_incomplete",
            Self::IdempotencyMismatch => "idempotency_key_reused",
            Self::TooManyHolds { .. } => "too_many_live_holds",
            Self::TooManyConfirms { .. } => "confirm_rate_limited",
            Self::EnforcementUnverified => "strict_constraint_missing",
            Self::Db(DbFault::Serialization) => "serialization_failure",
            Self::Db(DbFault::DataException { .. }) => "invalid_input",
            Self::Db(f) if f.is_retriable() => "database_unavailable",
            Self::Db(_) => "internal",
        }
    }

    /// Faults (5xx) count against the SLO; answers (4xx, conflicts) do not. A value the
    /// database refuses (SQLSTATE class 22) is an answer: the request was at fault.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::EnforcementUnverified | Self::Db(_)) && !self.is_invalid_input()
    }

    fn is_invalid_input(&self) -> bool {
        matches!(self, Self::Db(DbFault::DataException { .. }))
    }
}

/// A start the booking horizon (or the restaurant's clock) refuses: 422 naming `start`.
impl From<holdfast_shared::policy::StartError> for HoldsError {
    fn from(e: holdfast_shared::policy::StartError) -> Self {
        Self::invalid("start", e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for HoldsError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbFault::from(e))
    }
}

impl From<tokio_postgres::Error> for HoldsError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbFault::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone, Utc};
    use holdfast_shared::policy::BookingPolicy;

    #[test]
    fn every_refused_start_is_invalid_naming_start() {
        let p = BookingPolicy::demo(1); // Europe/London, default horizon
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 18, 0, 0).single().expect("now");
        let gap = NaiveDate::from_ymd_opt(2027, 3, 28).and_then(|d| d.and_hms_opt(1, 30, 0)).expect("naive");
        let refused = [
            p.check_start(now - Duration::minutes(1), now).expect_err("past"),
            p.check_start(now + Duration::minutes(14), now).expect_err("lead time"),
            p.check_start(now + Duration::days(181), now).expect_err("horizon"),
            p.local_start(gap).expect_err("spring-forward gap"),
        ];
        for e in refused {
            let message = e.to_string();
            let h = HoldsError::from(e);
            assert_eq!(h.code(), "validation_failed");
            assert!(!h.is_fault());
            assert!(matches!(h, HoldsError::Invalid { field: "start", message: ref m } if *m == message), "{h:?}");
        }
    }
}
