//! Persistence: `flag_proposals` (the workflow state, locked per proposal while it changes),
//! `flag_reviews` (break-glass reviews), `flag_bakes` (bake windows of applied prod changes) and
//! `flag_audit` (append-only: this crate only ever INSERTs and SELECTs it). One file per table
//! family; this one holds the row helpers they share.

mod audit;
mod bakes;
mod proposals;
mod reviews;

pub use audit::{
    append_audit, read_audit, AuditAction, AuditEntry, AuditQuery, AuditRow, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT,
};
pub use bakes::{decide_bake, get_bake, insert_bake, lock_open_bake, open_bakes, BakeOutcome, BakeRow, OpenBake};
pub use proposals::{
    get_proposal, insert_proposal, lock_flag, lock_flags, lock_proposal, update_proposal, StoredProposal,
};
pub use reviews::{
    acknowledge_review, get_review, insert_review, list_reviews, lock_overdue_reviews, lock_review,
    mark_overdue_recorded, StoredReview,
};

use crate::error::ApproverError;
use holdfast_shared::flags::{Actor, Environment};

fn bad_row(what: &str) -> ApproverError {
    ApproverError::Db(holdfast_adapters::db::DbFault::Other(format!("flag_proposals row has an invalid {what}")))
}

fn actor(s: String) -> Result<Actor, ApproverError> {
    Actor::new(&s).map_err(|_| bad_row("actor"))
}

fn env_of(s: &str) -> Result<Environment, ApproverError> {
    Environment::parse(s).ok_or_else(|| bad_row("environment"))
}
