//! The one mapping from [`HoldsError`] to an HTTP problem (status, code, body).

use crate::error::HoldsError;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::http::Problem;
use lambda_http::http::StatusCode;
use serde_json::json;

pub(super) fn from(e: HoldsError) -> Problem {
    let code = e.code();
    match e {
        HoldsError::Invalid { field, message } => Problem::validation(field, message),
        HoldsError::NotFound(what) => Problem::new(StatusCode::NOT_FOUND, code, format!("{what} not found")),
        HoldsError::Rejected(r) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, r.to_string()),
        HoldsError::Conflict { message, alternatives, .. } => {
            Problem::new(StatusCode::CONFLICT, code, message).detail("alternatives", json!(alternatives))
        }
        HoldsError::HoldExpired => Problem::new(StatusCode::GONE, code, "the hold has expired; quote and hold again"),
        HoldsError::HoldNotLive { state, booking_id } => {
            let p = Problem::new(StatusCode::CONFLICT, code, format!("the hold is {}", state.as_str()));
            match booking_id {
                Some(b) => p.detail("booking_id", json!(b)),
                None => p,
            }
        }
        HoldsError::BookingNotConfirmed { status } => Problem::new(
            StatusCode::CONFLICT,
            code,
            format!("the booking is {status}; only a confirmed booking can change"),
        ),
        HoldsError::MetadataIncomplete { missing } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "the hold lacks metadata required to confirm it; create a new hold",
        )
        .detail("missing", json!(missing)),
        HoldsError::IdempotencyMismatch => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "this Idempotency-Key was used with a different request",
        )
        .field("Idempotency-Key"),
        HoldsError::TooManyHolds { retry_after_secs } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            "you already hold the most tables this restaurant allows at once; confirm or release one",
        )
        .retry_after(retry_after_secs),
        HoldsError::TooManyConfirms { retry_after_secs } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            "you have confirmed the most bookings this restaurant allows in an hour",
        )
        .retry_after(retry_after_secs),
        HoldsError::EnforcementUnverified => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "hold writes are paused: the database does not enforce table conflicts",
        )
        .retry_after(30),
        HoldsError::Db(f) if f.is_retriable() => Problem::unavailable(),
        // The parsers name the field first; this is the backstop for a value only the database
        // refuses. No field is known, and the value is not echoed (it may be PII).
        HoldsError::Db(DbFault::DataException { .. }) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "a value in the request is not acceptable (out of range or not storable)",
        ),
        HoldsError::Db(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_the_database_refuses_is_a_422_naming_no_value() {
        let refused = || HoldsError::Db(DbFault::DataException { sqlstate: "22021".into() });
        assert!(!refused().is_fault(), "an answer, not a fault");
        let p = from(refused());
        assert_eq!((p.status.as_u16(), p.code, p.field.as_deref()), (422, "invalid_input", None));
        assert!(!p.message.contains("22021"));
        let other = from(HoldsError::Db(DbFault::Other("42P01: relation missing".into())));
        assert_eq!((other.status.as_u16(), other.code), (500, "internal"));
    }
}
