//! The flag approver's one error enum. Its HTTP mapping is the api layer's
//! (`api::problem`): this module knows nothing of HTTP.

use holdfast_adapters::db::DbFault;
use holdfast_shared::flags::{ChangeRefused, ProposalStatus, WorkflowError};

#[derive(Debug, thiserror::Error)]
pub enum ApproverError {
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
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound => "not_found",
            Self::Refused(r) => r.code(),
            Self::Workflow(w) => w.code(),
            Self::SsmUnavailable { .. } => "ssm_unavailable",
            Self::ConcurrentUpdate => "concurrent_update",
            Self::Db(f) if f.is_retriable() => "database_unavailable",
            Self::Db(DbFault::DataException { .. }) => "invalid_input",
            Self::Db(_) => "internal",
        }
    }
}
