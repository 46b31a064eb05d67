//! The flag approver's one error enum and its single mapping to HTTP.

use holdfast_adapters::db::DbFault;
use holdfast_adapters::http::Problem;
use holdfast_shared::flags::{ChangeRefused, ProposalStatus, WorkflowError};
use lambda_http::http::StatusCode;
use serde_json::json;

/// Seconds a client should wait before retrying after SSM was unreachable.
pub const SSM_RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApproverError {
    /// Malformed or invalid request (already a client-facing problem naming the field).
    #[error("invalid request")]
    Invalid(Problem),
    /// No identity from the API Gateway authorizer.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller lacks the role the route needs (`auth::authorize`).
    #[error("this route needs the {needs} role")]
    Forbidden { needs: &'static str },
    #[error("proposal not found")]
    NotFound,
    /// The change itself is refused (type/range, contradiction rules, stale base, no change).
    #[error(transparent)]
    Refused(ChangeRefused),
    /// The workflow refuses the step (self-approval, not pending, expired…).
    #[error(transparent)]
    Workflow(WorkflowError),
    /// SSM could not be read or written. When an apply failed, `status` is the proposal's
    /// persisted status (`apply_failed`): the change is kept and can be retried.
    #[error("SSM unavailable")]
    SsmUnavailable { status: Option<ProposalStatus> },
    /// The proposal row changed under us (should not happen under the row lock).
    #[error("concurrent update")]
    ConcurrentUpdate,
    #[error("database: {0}")]
    Db(#[from] DbFault),
}

impl From<deadpool_postgres::PoolError> for ApproverError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}

impl From<tokio_postgres::Error> for ApproverError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl ApproverError {
    /// Stable code for responses, logs and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(p) => p.code,
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound => "not_found",
            Self::Refused(r) => r.code(),
            Self::Workflow(w) => w.code(),
            Self::SsmUnavailable { .. } => "ssm_unavailable",
            Self::ConcurrentUpdate => "concurrent_update",
            Self::Db(f) if f.is_retriable() => "database_unavailable",
            Self::Db(_) => "internal",
        }
    }

    pub fn into_problem(self) -> Problem {
        let code = self.code();
        let msg = self.to_string();
        match self {
            Self::Invalid(p) => p,
            Self::Unauthenticated => {
                Problem::new(StatusCode::UNAUTHORIZED, code, "no caller identity from the API Gateway authorizer")
            }
            Self::Forbidden { .. } => Problem::new(StatusCode::FORBIDDEN, code, msg),
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, code, "proposal not found"),
            Self::Refused(r) => {
                let status = match r {
                    ChangeRefused::StaleProposal { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let p = Problem::new(status, code, msg);
                match r {
                    ChangeRefused::Contradiction { rule_ids, .. } => {
                        p.field("value").detail("rule_ids", json!(rule_ids))
                    }
                    ChangeRefused::UnknownFlag { .. } => p.field("flag"),
                    ChangeRefused::InvalidValue(_) | ChangeRefused::NoChange { .. } => p.field("value"),
                    ChangeRefused::StaleProposal { .. } => p,
                    ChangeRefused::ChangeCount
                    | ChangeRefused::DuplicateFlag { .. }
                    | ChangeRefused::BreakGlassNotAllowed { .. } => p.field("changes"),
                }
            }
            Self::Workflow(w) => {
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
            Self::SsmUnavailable { status } => {
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
            Self::ConcurrentUpdate => {
                Problem::new(StatusCode::CONFLICT, code, "the proposal changed concurrently; read it and retry")
            }
            Self::Db(f) if f.is_retriable() => Problem::unavailable(),
            Self::Db(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (e, status) in cases {
            let code = e.code();
            let p = e.into_problem();
            assert_eq!(p.status.as_u16(), status, "{code}");
            assert_eq!(p.code, code);
        }
    }

    #[test]
    fn contradiction_carries_rule_ids_and_503s_carry_retry_after() {
        let p = ApproverError::Refused(ChangeRefused::Contradiction {
            rule_ids: vec!["FR001", "FR004"],
            explanations: vec!["a", "b"],
        })
        .into_problem();
        assert_eq!(p.details, vec![("rule_ids", json!(["FR001", "FR004"]))]);
        let p = ApproverError::SsmUnavailable { status: Some(ProposalStatus::ApplyFailed) }.into_problem();
        assert_eq!(p.retry_after, Some(SSM_RETRY_AFTER_SECS));
        assert_eq!(p.details, vec![("status", json!("apply_failed"))]);
        assert!(ApproverError::Db(DbFault::Unavailable).into_problem().retry_after.is_some());
    }
}
