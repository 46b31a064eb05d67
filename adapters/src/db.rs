//! PostgreSQL: the connection pool, the migration runner and the one place where driver
//! errors are classified (unavailable → retriable, named constraint → domain error).

use crate::config::{Config, DatabaseSource};
use crate::secrets::{secrets_manager_reference, SecretError, SsmSecret};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use thiserror::Error;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[path = "../../migrations/constraints.rs"]
pub mod constraints;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

#[derive(Debug, Error)]
pub enum DbSetupError {
    #[error("invalid database url: {0}")]
    BadUrl(String),
    #[error("could not read database credentials: {0}")]
    Credentials(String),
    #[error("could not build pool: {0}")]
    Pool(String),
}

/// What a database failure means to a caller.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DbFault {
    /// Connection refused/lost, pool exhausted, server shutting down: retry later (503).
    #[error("database unavailable")]
    Unavailable,
    /// An exclusion constraint refused overlapping rows (SQLSTATE 23P01).
    #[error("exclusion violation on {constraint}")]
    Exclusion { constraint: String },
    /// A unique constraint refused a duplicate (SQLSTATE 23505).
    #[error("unique violation on {constraint}")]
    Unique { constraint: String },
    /// Serialization failure or deadlock: the transaction may be retried.
    #[error("serialization failure")]
    Serialization,
    /// Anything else is a bug or a schema mismatch.
    #[error("database error: {0}")]
    Other(String),
}

impl DbFault {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable | Self::Serialization)
    }

    /// Did the write break `constraint` (one of [`constraints`])? Exclusion and unique
    /// violations both name their constraint.
    pub fn violates(&self, constraint: &str) -> bool {
        matches!(self, Self::Exclusion { constraint: c } | Self::Unique { constraint: c } if c == constraint)
    }
}

impl From<tokio_postgres::Error> for DbFault {
    fn from(e: tokio_postgres::Error) -> Self {
        classify(&e)
    }
}

impl From<deadpool_postgres::PoolError> for DbFault {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            // Timeouts and closed pools mean "no connection now": retriable.
            _ => DbFault::Unavailable,
        }
    }
}

/// The single mapping from driver errors to [`DbFault`].
pub fn classify(e: &tokio_postgres::Error) -> DbFault {
    let Some(db) = e.as_db_error() else {
        // No server error attached: I/O, closed connection, timeout.
        return DbFault::Unavailable;
    };
    let constraint = || db.constraint().unwrap_or("").to_string();
    match *db.code() {
        SqlState::EXCLUSION_VIOLATION => DbFault::Exclusion { constraint: constraint() },
        SqlState::UNIQUE_VIOLATION => DbFault::Unique { constraint: constraint() },
        SqlState::T_R_SERIALIZATION_FAILURE | SqlState::T_R_DEADLOCK_DETECTED => DbFault::Serialization,
        SqlState::ADMIN_SHUTDOWN
        | SqlState::CRASH_SHUTDOWN
        | SqlState::CANNOT_CONNECT_NOW
        | SqlState::TOO_MANY_CONNECTIONS
        | SqlState::CONNECTION_FAILURE
        | SqlState::CONNECTION_EXCEPTION
        | SqlState::QUERY_CANCELED => DbFault::Unavailable,
        _ => DbFault::Other(format!("{}: {}", db.code().code(), db.message())),
    }
}

/// Build the pool. Connections are opened lazily, so a cold start does not pay for them
/// unless the first request needs one; `connect_timeout` bounds a dead database.
pub fn pool_from_pg_config(mut pg: tokio_postgres::Config, size: usize) -> Result<Pool, DbSetupError> {
    pg.connect_timeout(Duration::from_secs(3));
    pg.application_name("holdfast");
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| DbSetupError::Pool(e.to_string()))
}

pub fn pool_from_url(url: &str, size: usize) -> Result<Pool, DbSetupError> {
    let pg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| DbSetupError::BadUrl(e.to_string()))?;
    pool_from_pg_config(pg, size)
}

/// Pool for the configured database. In AWS the credentials are read once per container from
/// Secrets Manager through SSM's secret-reference path (one client fewer to build).
pub async fn pool_from_config(cfg: &Config, ssm: &aws_sdk_ssm::Client) -> Result<Pool, DbSetupError> {
    match &cfg.database {
        DatabaseSource::Url(url) => pool_from_url(url, cfg.db_pool_size),
        DatabaseSource::Secret { host, port, dbname, secret_arn } => {
            let secret = SsmSecret::new(ssm.clone(), secrets_manager_reference(secret_arn));
            let raw = secret.get().await.map_err(|e| match e {
                SecretError::Unreadable(detail) => DbSetupError::Credentials(detail),
                SecretError::Empty => DbSetupError::Credentials("empty secret".into()),
            })?;
            #[derive(serde::Deserialize)]
            struct Secret {
                username: String,
                password: String,
            }
            let s: Secret = serde_json::from_str(raw.expose())
                .map_err(|_| DbSetupError::Credentials("secret is not {username,password} JSON".into()))?;
            let mut pg = tokio_postgres::Config::new();
            pg.host(host).port(*port).dbname(dbname).user(&s.username).password(&s.password);
            pool_from_pg_config(pg, cfg.db_pool_size)
        }
    }
}

/// Apply pending migrations (idempotent: applied versions are recorded by refinery).
pub async fn migrate(pool: &Pool) -> Result<usize, DbFault> {
    let mut obj = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut obj;
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| DbFault::Other(format!("migration failed: {e}")))?;
    Ok(report.applied_migrations().len())
}

/// Names of the migrations this binary carries, in order (for `holdfast migrate --status`).
pub fn known_migrations() -> Vec<String> {
    embedded::migrations::runner().get_migrations().iter().map(|m| m.to_string()).collect()
}

/// Swap the database name in a `postgres://…/db?params` URL (throwaway test and bench
/// databases beside the configured one).
pub fn replace_dbname(url: &str, dbname: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = head[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(head.len());
    let mut out = format!("{}/{}", &head[..path_start], dbname);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
