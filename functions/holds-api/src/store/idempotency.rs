//! `idempotency_keys`: the first response to a (scope, key), stored in the write's own
//! transaction and replayed for retries.

use holdfast_adapters::db::DbFault;
use holdfast_adapters::sql::Sql;
use serde_json::Value;

/// A stored first response: replayed as it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
}

/// The stored request hash and first response for (scope, key), if any.
pub async fn idempotency_lookup<C: Sql>(
    c: &C,
    scope: &str,
    key: &str,
) -> Result<Option<(String, StoredResponse)>, DbFault> {
    let sql = "SELECT request_hash, status_code, response FROM idempotency_keys WHERE scope = $1 AND key = $2";
    Ok(c.fetch_opt(sql, &[&scope, &key]).await?.map(|r| {
        let status: i16 = r.get(1);
        (r.get(0), StoredResponse { status: u16::try_from(status).unwrap_or(500), body: r.get(2) })
    }))
}

/// Store the response in the write's own transaction. A concurrent duplicate blocks on the
/// primary key until the first commits, then fails with a unique violation (caller replays).
pub async fn idempotency_save<C: Sql>(
    c: &C,
    scope: &str,
    key: &str,
    hash: &str,
    response: &StoredResponse,
) -> Result<(), DbFault> {
    let status = i16::try_from(response.status).map_err(|_| DbFault::Other("status out of range".into()))?;
    c.run(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response) VALUES ($1, $2, $3, $4, $5)",
        &[&scope, &key, &hash, &status, &response.body],
    )
    .await?;
    Ok(())
}
