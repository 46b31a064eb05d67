//! The one mapping from [`ApproverError`] to an HTTP problem (status, code, body).

use crate::error::ApproverError;
use holdfast_adapters::db::DbFault;
use holdfast_adapters::http::Problem;
use holdfast_shared::flags::{ChangeRefused, WorkflowError};
use lambda_http::http::StatusCode;
use serde_json::json;

/// Seconds a client should wait before retrying after SSM was unreachable.
pub const SSM_RETRY_AFTER_SECS: u32 = 5;

pub(super) fn from(e: ApproverError) -> Problem {
    // Only database faults are ours to investigate; the rest are answers to the caller. A
    // value only the database refused is an answer, but also a parser that let it through.
    match &e {
        ApproverError::Db(DbFault::DataException { .. }) => {
            tracing::warn!(code = e.code(), error = %e, "the database refused a request value")
        }
        ApproverError::Db(_) => tracing::error!(code = e.code(), error = %e, "flag approver request failed"),
        _ => {}
    }
    let code = e.code();
    let msg = e.to_string();
    match e {
        ApproverError::Unauthenticated => {
            Problem::new(StatusCode::UNAUTHORIZED, code, "no caller identity from the API Gateway authorizer")
        }
        ApproverError::Forbidden { .. } => Problem::new(StatusCode::FORBIDDEN, code, msg),
        ApproverError::NotFound => Problem::new(StatusCode::NOT_FOUND, code, "proposal not found"),
        ApproverError::Refused(r) => refused(&r, code, msg),
        ApproverError::Workflow(w) => workflow(&w, code, msg),
        ApproverError::SsmUnavailable { status } => {
            let p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                match status {
                    Some(_) => "SSM is unavailable; the approved change was kept and can be applied again with POST /flags/proposals/{id}/apply",
                    None => "SSM is unavailable; retry",
                },
            )
            .retry_after(SSM_RETRY_AFTER_SECS);
            match status {
                Some(s) => p.detail("status", json!(s)),
                None => p,
            }
        }
        ApproverError::ConcurrentUpdate => {
            Problem::new(StatusCode::CONFLICT, code, "the proposal changed concurrently; read it and retry")
        }
        ApproverError::Db(f) if f.is_retriable() => Problem::unavailable(),
        // The backstop for a value only the database refuses: no field is known, and the
        // value is not echoed.
        ApproverError::Db(DbFault::DataException { .. }) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "a value in the request is not acceptable (out of range or not storable)",
        ),
        ApproverError::Db(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error"),
    }
}

/// A refused change names the field to fix (and the rule ids of a contradiction).
fn refused(r: &ChangeRefused, code: &'static str, msg: String) -> Problem {
    let status = match r {
        ChangeRefused::StaleProposal { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let p = Problem::new(status, code, msg);
    match r {
        ChangeRefused::Contradiction { rule_ids, .. } => p.field("value").detail("rule_ids", json!(rule_ids)),
        ChangeRefused::UnknownFlag { .. } => p.field("flag"),
        ChangeRefused::InvalidValue(_) | ChangeRefused::NoChange { .. } => p.field("value"),
        ChangeRefused::StaleProposal { .. } => p,
        ChangeRefused::ChangeCount
        | ChangeRefused::DuplicateFlag { .. }
        | ChangeRefused::BreakGlassNotAllowed { .. } => p.field("changes"),
    }
}

fn workflow(w: &WorkflowError, code: &'static str, msg: String) -> Problem {
    let status = match w {
        WorkflowError::SelfApproval | WorkflowError::SelfReview => StatusCode::FORBIDDEN,
        WorkflowError::Expired => StatusCode::GONE,
        WorkflowError::UnknownFlag(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WorkflowError::DuplicateApproval(_)
        | WorkflowError::NotPending(_)
        | WorkflowError::NotApproved(_)
        | WorkflowError::InvalidTransition(..)
        | WorkflowError::AlreadyAcknowledged => StatusCode::CONFLICT,
    };
    // DuplicateApproval's message names the actor: that is the caller, fine to echo.
    Problem::new(status, code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_shared::flags::ProposalStatus;

    #[test]
    fn each_error_maps_to_one_status() {
        let cases: Vec<(ApproverError, u16)> = vec![
            (ApproverError::Unauthenticated, 401),
            (ApproverError::Forbidden { needs: "holdfast-ops" }, 403),
            (ApproverError::Workflow(WorkflowError::SelfReview), 403),
            (ApproverError::Workflow(WorkflowError::AlreadyAcknowledged), 409),
            (ApproverError::Refused(ChangeRefused::BreakGlassNotAllowed { flag: "x".into(), why: "y".into() }), 422),
            (ApproverError::NotFound, 404),
            (ApproverError::Refused(ChangeRefused::UnknownFlag { flag: "x".into() }), 422),
            (
                ApproverError::Refused(ChangeRefused::Contradiction {
                    rule_ids: vec!["FR001"],
                    explanations: vec!["because"],
                }),
                422,
            ),
            (
                ApproverError::Refused(ChangeRefused::StaleProposal {
                    flag: "holds.ttlSeconds",
                    expected: "180".into(),
                    current: "240".into(),
                }),
                409,
            ),
            (ApproverError::Workflow(WorkflowError::SelfApproval), 403),
            (ApproverError::Workflow(WorkflowError::Expired), 410),
            (ApproverError::Workflow(WorkflowError::NotPending(ProposalStatus::Applied)), 409),
            (ApproverError::SsmUnavailable { status: None }, 503),
            (ApproverError::Db(DbFault::Unavailable), 503),
            (ApproverError::Db(DbFault::Other("x".into())), 500),
            (ApproverError::Db(DbFault::DataException { sqlstate: "22021".into() }), 422),
        ];
        for (e, status) in cases {
            let code = e.code();
            let p = from(e);
            assert_eq!(p.status.as_u16(), status, "{code}");
            assert_eq!(p.code, code);
        }
    }

    #[test]
    fn contradiction_carries_rule_ids_and_503s_carry_retry_after() {
        let p = from(ApproverError::Refused(ChangeRefused::Contradiction {
            rule_ids: vec!["FR001", "FR004"],
            explanations: vec!["a", "b"],
        }));
        assert_eq!(p.details, vec![("rule_ids", json!(["FR001", "FR004"]))]);
        let p = from(ApproverError::SsmUnavailable { status: Some(ProposalStatus::ApplyFailed) });
        assert_eq!(p.retry_after, Some(SSM_RETRY_AFTER_SECS));
        assert_eq!(p.details, vec![("status", json!("apply_failed"))]);
        assert!(from(ApproverError::Db(DbFault::Unavailable)).retry_after.is_some());
    }
}
