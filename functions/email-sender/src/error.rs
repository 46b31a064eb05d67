//! The crate's one error type. The SQS-triggered handler itself never fails as a whole (every
//! record ends acknowledged or retried); these are the failures of building the functions, of
//! the ledger, the outbox relay and the queue plumbing.

use holdfast_adapters::db::{DbFault, DbSetupError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EmailError {
    /// A setting the function cannot run without (named by its environment variable).
    #[error("{0} is required")]
    MissingSetting(&'static str),
    #[error(transparent)]
    DbSetup(#[from] DbSetupError),
    #[error(transparent)]
    Db(#[from] DbFault),
    /// An SQS call failed; `detail` is the SDK's error context (no message bodies).
    #[error("SQS {op} failed: {detail}")]
    Sqs { op: &'static str, detail: String },
    /// SQS answered without a field it always sends.
    #[error("SQS {op} returned no {field}")]
    SqsIncomplete { op: &'static str, field: &'static str },
    #[error("SES {op} failed: {detail}")]
    Ses { op: &'static str, detail: String },
}

impl EmailError {
    /// For `map_err`: an SQS SDK error of operation `op`.
    pub(crate) fn sqs<E: std::error::Error>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Sqs { op, detail: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string() }
    }

    /// For `map_err`: an SES SDK error of operation `op`.
    pub(crate) fn ses<E: std::error::Error>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Ses { op, detail: aws_sdk_sesv2::error::DisplayErrorContext(&e).to_string() }
    }
}

// Driver errors reach the crate through the adapters' one classification.
impl From<tokio_postgres::Error> for EmailError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for EmailError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.into())
    }
}
