//! The holds API's one error enum and its single mapping to HTTP.

use holdfast_adapters::db::DbFault;
use holdfast_adapters::http::Problem;
use holdfast_shared::allocator::{Alternative, QuoteRejection};
use lambda_http::http::StatusCode;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum HoldsError {
    #[error("invalid request")]
    Invalid(Problem),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("quote rejected: {0}")]
    Rejected(QuoteRejection),
    /// The tables are taken for that window (SQLSTATE 23P01 or no free table): an answer.
    #[error("conflict: {code}")]
    Conflict { code: &'static str, message: String, alternatives: Vec<Alternative> },
    #[error("hold expired")]
    HoldExpired,
    #[error("hold is {state}, not live")]
    HoldNotLive { state: &'static str, booking_id: Option<uuid::Uuid> },
    #[error("hold metadata incomplete")]
    MetadataIncomplete { missing: Vec<&'static str> },
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// Strict conflicts are on but the database does not enforce the constraint: fail safe.
    #[error("conflict enforcement unverified")]
    EnforcementUnverified,
    #[error("database: {0}")]
    Db(#[from] DbFault),
}

impl HoldsError {
    /// Stable code for events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(p) => p.code,
            Self::NotFound(_) => "not_found",
            Self::Rejected(r) => r.code(),
            Self::Conflict { code, .. } => code,
            Self::HoldExpired => "hold_expired",
            Self::HoldNotLive { .. } => "hold_not_live",
            Self::MetadataIncomplete { .. } => "metadata_incomplete",
            Self::IdempotencyMismatch => "idempotency_key_reused",
            Self::EnforcementUnverified => "strict_constraint_missing",
            Self::Db(DbFault::Serialization) => "serialization_failure",
            Self::Db(f) if f.is_retriable() => "database_unavailable",
            Self::Db(_) => "internal",
        }
    }

    /// Faults (5xx) count against the SLO; answers (4xx, conflicts) do not.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::EnforcementUnverified | Self::Db(_))
    }

    pub fn into_problem(self) -> Problem {
        let code = self.code();
        match self {
            Self::Invalid(p) => p,
            Self::NotFound(what) => Problem::new(StatusCode::NOT_FOUND, code, format!("{what} not found")),
            Self::Rejected(r) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, r.to_string()),
            Self::Conflict { message, alternatives, .. } => {
                Problem::new(StatusCode::CONFLICT, code, message).detail("alternatives", json!(alternatives))
            }
            Self::HoldExpired => Problem::new(StatusCode::GONE, code, "the hold has expired; quote and hold again"),
            Self::HoldNotLive { state, booking_id } => {
                let p = Problem::new(StatusCode::CONFLICT, code, format!("the hold is {state}"));
                match booking_id {
                    Some(b) => p.detail("booking_id", json!(b)),
                    None => p,
                }
            }
            Self::MetadataIncomplete { missing } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "the hold lacks metadata required to confirm it; create a new hold",
            )
            .detail("missing", json!(missing)),
            Self::IdempotencyMismatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "this Idempotency-Key was used with a different request",
            )
            .field("Idempotency-Key"),
            Self::EnforcementUnverified => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                "hold writes are paused: the database does not enforce table conflicts",
            )
            .retry_after(30),
            Self::Db(f) if f.is_retriable() => Problem::unavailable(),
            Self::Db(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error"),
        }
    }
}
