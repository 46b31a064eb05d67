//! Idempotency-Key handling, decided once per request (zero2prod's `try_processing`): before
//! any work the request either runs or replays the first response; a key reused with another
//! request is refused. The first response is saved in the write's own transaction, so it exists
//! exactly when the write does.

use crate::error::HoldsError;
use crate::store::{self, StoredResponse};
use deadpool_postgres::Pool;
use holdfast_adapters::sql::Sql;
use serde::Serialize;

/// A request's Idempotency-Key, scoped to its route and caller, with the hash of the request
/// it first came with. `success_status` is the status the api layer answers a fresh success
/// with; it is stored beside the body so a replay answers exactly as the first time.
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub success_status: u16,
}

/// What to do with a request.
#[derive(Debug)]
pub enum NextAction {
    /// No first response is stored: do the work.
    Run,
    /// This is a retry: answer with the first response.
    Replay(StoredResponse),
}

/// Decide through `c` (a fresh connection, or a transaction holding the lock that serialises
/// duplicates). A key reused with a different request is an error, never a replay.
pub async fn try_processing<C: Sql>(c: &C, idem: Option<&Idempotency>) -> Result<NextAction, HoldsError> {
    let Some(i) = idem else { return Ok(NextAction::Run) };
    match store::idempotency_lookup(c, &i.scope, &i.key).await? {
        None => Ok(NextAction::Run),
        Some((hash, _)) if hash != i.request_hash => Err(HoldsError::IdempotencyMismatch),
        Some((_, first)) => Ok(NextAction::Replay(first)),
    }
}

/// [`try_processing`] on a connection of its own (no key: no round trip).
pub async fn decide(pool: &Pool, idem: Option<&Idempotency>) -> Result<NextAction, HoldsError> {
    if idem.is_none() {
        return Ok(NextAction::Run);
    }
    try_processing(&pool.get().await?, idem).await
}

/// After a write lost a race (exclusion, unique or serialization failure): a concurrent
/// duplicate with the same key may have committed first, and its answer is this request's.
pub async fn race_winner(pool: &Pool, idem: Option<&Idempotency>) -> Result<Option<StoredResponse>, HoldsError> {
    match decide(pool, idem).await? {
        NextAction::Replay(first) => Ok(Some(first)),
        NextAction::Run => Ok(None),
    }
}

/// Save `answer` as the first response, inside the transaction that makes it true.
pub async fn save<C: Sql, T: Serialize>(
    tx: &C,
    idem: Option<&Idempotency>,
    answer: &T,
) -> Result<(), holdfast_adapters::db::DbFault> {
    let Some(i) = idem else { return Ok(()) };
    let body = serde_json::to_value(answer).map_err(|e| holdfast_adapters::db::DbFault::Other(e.to_string()))?;
    let first = StoredResponse { status: i.success_status, body };
    store::idempotency_save(tx, &i.scope, &i.key, &i.request_hash, &first).await
}
