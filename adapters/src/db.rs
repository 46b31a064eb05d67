//! PostgreSQL: the connection pool, the migration runner and the one place where driver
//! errors are classified (unavailable → retriable, named constraint → domain error).

use crate::config::{Config, DatabaseSource, OwnerConfig};
use crate::secrets::{secrets_manager_reference, ApiKey, RotatingSecret, SecretError};
use deadpool_postgres::{ConfigConnectImpl, Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use holdfast_shared::flags::Environment;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

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
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("HOLDFAST_OWNER_DATABASE_URL is required: migrations run as the schema owner, not the runtime role")]
    NoOwner,
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
    /// A data exception (SQLSTATE class 22: a NUL in text, a value out of a type's range, text
    /// that is not a number…): a value from the request the database refuses, an answer (422)
    /// and not a fault. Only the code is kept: the server's message may quote the value (PII).
    #[error("data exception (SQLSTATE {sqlstate})")]
    DataException { sqlstate: String },
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
            // Refused credentials while connecting (a password rotated under a URL pool, or a
            // secret that is wrong even after the re-read): not now, maybe later.
            deadpool_postgres::PoolError::Backend(e) if is_auth_failure(&e) => DbFault::Unavailable,
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
        _ if db.code().code().starts_with("22") => DbFault::DataException { sqlstate: db.code().code().to_string() },
        _ => DbFault::Other(format!("{}: {}", db.code().code(), db.message())),
    }
}

/// How a pool speaks TLS: libpq's `sslmode`, and the roots the server's certificate must chain
/// to. Whenever TLS is used the certificate is verified, chain and host name, so `require`,
/// `verify-ca` and `verify-full` all mean libpq's `verify-full`; `prefer` falls back to
/// plaintext only when the server offers no TLS at all (never after a failed verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// PEM bundle of trusted CA certificates; `None`: Mozilla's roots (webpki-roots), which hold
    /// the Amazon roots RDS Proxy's certificate chains to.
    pub ca_file: Option<PathBuf>,
}

/// The `sslmode` when a URL names none: TLS preferred in dev, required everywhere else.
pub fn default_ssl_mode(environment: Environment) -> SslMode {
    match environment {
        Environment::Dev => SslMode::Prefer,
        _ => SslMode::Require,
    }
}

/// Split a libpq-style URL into the driver's config and its [`TlsSettings`]. `sslrootcert` and
/// the `verify-*` modes are libpq's and unknown to tokio-postgres, so they are taken out here
/// (the same URL works for psql and pgbench). `default_mode` applies when there is no
/// `sslmode`. Errors never quote the URL (it may carry a password).
pub fn parse_url(url: &str, default_mode: SslMode) -> Result<(tokio_postgres::Config, TlsSettings), DbSetupError> {
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut ca_file, mut rest) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("sslmode", v) => {
                mode = Some(match v {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" | "verify-ca" | "verify-full" => SslMode::Require,
                    other => return Err(DbSetupError::BadUrl(format!("unsupported sslmode {other:?}"))),
                })
            }
            ("sslrootcert", v) => ca_file = Some(PathBuf::from(percent_decode(v)?)),
            _ => rest.push(pair),
        }
    }
    let driver_url = if rest.is_empty() { head.to_string() } else { format!("{head}?{}", rest.join("&")) };
    // The driver's parse errors name the option, never its value.
    let mut pg: tokio_postgres::Config = driver_url.parse().map_err(|e: tokio_postgres::Error| {
        DbSetupError::BadUrl(std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()))
    })?;
    let mode = mode.unwrap_or(default_mode);
    pg.ssl_mode(mode);
    Ok((pg, TlsSettings { mode, ca_file }))
}

/// `%XX` escapes in a URL parameter value (libpq decodes them the same way).
fn percent_decode(v: &str) -> Result<String, DbSetupError> {
    let bad = || DbSetupError::BadUrl("bad percent-escape in sslrootcert".into());
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
            let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The rustls connector for `tls`, on the aws-lc-rs provider (the one the AWS SDK's HTTPS
/// client uses; rustls has two compiled in, so the provider is named, not left to a default).
fn tls_connector(tls: &TlsSettings) -> Result<MakeRustlsConnect, DbSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) if tls.mode != SslMode::Disable => {
            let unreadable = |e: rustls::pki_types::pem::Error| {
                DbSetupError::Tls(format!("cannot read CA file {}: {e}", path.display()))
            };
            let certs = CertificateDer::pem_file_iter(path).map_err(unreadable)?;
            let certs: Vec<_> = certs.collect::<Result<_, _>>().map_err(unreadable)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbSetupError::Tls(format!("no CA certificate in {}", path.display())));
            }
        }
        _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| DbSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn pool_with(
    mut pg: tokio_postgres::Config,
    connect: impl Connect + 'static,
    size: usize,
) -> Result<Pool, DbSetupError> {
    pg.connect_timeout(Duration::from_secs(3));
    pg.application_name("holdfast");
    let mgr = Manager::from_connect(pg, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| DbSetupError::Pool(e.to_string()))
}

/// Build the pool. Connections are opened lazily, so a cold start does not pay for them
/// unless the first request needs one; `connect_timeout` bounds a dead database.
pub fn pool_from_pg_config(
    mut pg: tokio_postgres::Config,
    tls: &TlsSettings,
    size: usize,
) -> Result<Pool, DbSetupError> {
    pg.ssl_mode(tls.mode);
    pool_with(pg, ConfigConnectImpl { tls: tls_connector(tls)? }, size)
}

/// Pool for a libpq-style URL (`sslmode` defaults to `prefer`, as in libpq).
pub fn pool_from_url(url: &str, size: usize) -> Result<Pool, DbSetupError> {
    let (pg, tls) = parse_url(url, SslMode::Prefer)?;
    pool_from_pg_config(pg, &tls, size)
}

/// A configured URL: its `sslmode` or the environment's default, its `sslrootcert` or the
/// configured CA file.
fn pool_from_configured_url(
    environment: Environment,
    ca_file: &Option<PathBuf>,
    url: &str,
    size: usize,
) -> Result<Pool, DbSetupError> {
    let (pg, mut tls) = parse_url(url, default_ssl_mode(environment))?;
    if tls.ca_file.is_none() {
        tls.ca_file = ca_file.clone();
    }
    pool_from_pg_config(pg, &tls, size)
}

/// Pool for the configured database, as the runtime role. In AWS the credentials come from
/// Secrets Manager through SSM's secret-reference path (one client fewer to build): read at
/// cold start and re-read after an authentication failure, so a rotated password costs the
/// one connection attempt that discovers it, not a restart. Always over verified TLS there.
pub async fn pool_from_config(cfg: &Config, ssm: &aws_sdk_ssm::Client) -> Result<Pool, DbSetupError> {
    match &cfg.database {
        DatabaseSource::Url(url) => pool_from_configured_url(cfg.environment, &cfg.db_ca_file, url, cfg.db_pool_size),
        DatabaseSource::Secret { host, port, dbname, secret_arn } => {
            let name = secrets_manager_reference(secret_arn);
            let secret = RotatingSecret::load(ssm.clone(), name, Credentials::parse).await.map_err(|e| match e {
                SecretError::Unreadable(detail) => DbSetupError::Credentials(detail),
                SecretError::Empty => DbSetupError::Credentials("empty secret".into()),
            })?;
            let tls = TlsSettings { mode: SslMode::Require, ca_file: cfg.db_ca_file.clone() };
            let mut pg = tokio_postgres::Config::new();
            pg.host(host).port(*port).dbname(dbname).ssl_mode(tls.mode);
            pool_with(pg, SecretConnect { tls: tls_connector(&tls)?, secret }, cfg.db_pool_size)
        }
    }
}

/// Pool as the schema owner (`HOLDFAST_OWNER_DATABASE_URL`), for migrations and for creating
/// throwaway test and bench databases. The functions never have it.
pub fn owner_pool_from_config(cfg: &OwnerConfig, size: usize) -> Result<Pool, DbSetupError> {
    pool_from_configured_url(cfg.environment, &cfg.db_ca_file, &cfg.url, size)
}

/// The database secret's value, as RDS and Secrets Manager's rotation functions write it.
#[derive(serde::Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    fn parse(raw: &ApiKey) -> Result<Self, SecretError> {
        serde_json::from_str(raw.expose())
            .map_err(|_| SecretError::Unreadable("the secret is not {username,password} JSON".into()))
    }
}

type ConnectResult = Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>;

/// Opens connections with the credentials of a [`RotatingSecret`]. When the server refuses
/// them (28P01 / 28000: the password was rotated) it re-reads the secret once and retries; if
/// the re-read fails, the refusal is returned (retriable: [`DbFault::Unavailable`]).
struct SecretConnect {
    tls: MakeRustlsConnect,
    secret: RotatingSecret<Credentials>,
}

impl SecretConnect {
    async fn connect_as(&self, pg: &tokio_postgres::Config, c: &Credentials) -> ConnectResult {
        let mut pg = pg.clone();
        pg.user(&c.username).password(&c.password);
        let (client, connection) = pg.connect(self.tls.clone()).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "database connection closed with an error");
            }
        });
        Ok((client, task))
    }
}

impl Connect for SecretConnect {
    fn connect(&self, pg: &tokio_postgres::Config) -> Pin<Box<dyn Future<Output = ConnectResult> + Send + '_>> {
        let pg = pg.clone();
        Box::pin(async move {
            let (generation, credentials) = self.secret.current().await;
            match self.connect_as(&pg, &credentials).await {
                Err(e) if is_auth_failure(&e) => match self.secret.refresh(generation).await {
                    Ok((_, fresh)) => self.connect_as(&pg, &fresh).await,
                    Err(read) => {
                        tracing::warn!(secret = self.secret.name(), error = %read, "re-reading the database secret failed");
                        Err(e)
                    }
                },
                other => other,
            }
        })
    }
}

/// The server refused the credentials: a wrong or rotated password, or an unknown role.
fn is_auth_failure(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

/// Apply pending migrations (idempotent: applied versions are recorded by refinery).
pub async fn migrate(pool: &Pool) -> Result<usize, DbFault> {
    let mut obj = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut obj;
    let report = embedded::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| DbFault::Other(format!("migration failed: {e}{}", server_message(&e))))?;
    Ok(report.applied_migrations().len())
}

/// The server's refusal behind a migration error (refinery shows only "db error"), such as
/// "permission denied for schema public" when migrations run as the wrong role.
fn server_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(db) = s.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::as_db_error) {
            return format!(" ({}: {})", db.code().code(), db.message());
        }
        source = s.source();
    }
    String::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_taken_out_of_the_url() {
        let url = "postgres://u:p@127.0.0.1:5/db?sslmode=verify-full&sslrootcert=/a%20b/ca.crt&application_name=x";
        let (pg, tls) = parse_url(url, SslMode::Disable).expect("parses");
        assert_eq!(tls, TlsSettings { mode: SslMode::Require, ca_file: Some(PathBuf::from("/a b/ca.crt")) });
        assert_eq!(
            (pg.get_ssl_mode(), pg.get_dbname(), pg.get_application_name()),
            (SslMode::Require, Some("db"), Some("x"))
        );
        for (mode, want) in
            [("disable", SslMode::Disable), ("prefer", SslMode::Prefer), ("verify-ca", SslMode::Require)]
        {
            let (_, tls) = parse_url(&format!("postgres://u@h/db?sslmode={mode}"), SslMode::Require).expect("parses");
            assert_eq!(tls.mode, want, "{mode}");
        }
    }

    #[test]
    fn without_sslmode_the_default_applies_and_tls_is_required_outside_dev() {
        let (_, tls) = parse_url("postgres://u@h/db", default_ssl_mode(Environment::Prod)).expect("parses");
        assert_eq!(tls, TlsSettings { mode: SslMode::Require, ca_file: None });
        assert_eq!(default_ssl_mode(Environment::Staging), SslMode::Require);
        assert_eq!(default_ssl_mode(Environment::Dev), SslMode::Prefer);
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for url in ["postgres://u:hunter2@h/db?sslmode=allow", "postgres://u:hunter2@h/db?sslrootcert=%zz"] {
            let e = parse_url(url, SslMode::Prefer).expect_err(url).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e =
            parse_url("postgres://u:hunter2@h/db?nosuch=1", SslMode::Prefer).expect_err("unknown option").to_string();
        assert!(e.contains("nosuch") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_setup_error() {
        let path = std::env::temp_dir().join(format!("holdfast-empty-ca-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, "not a certificate\n").expect("write");
        let tls = TlsSettings { mode: SslMode::Require, ca_file: Some(path.clone()) };
        assert!(matches!(tls_connector(&tls), Err(DbSetupError::Tls(_))));
        let _ = std::fs::remove_file(path);
        // Mozilla's roots when no file is named.
        assert!(tls_connector(&TlsSettings { mode: SslMode::Require, ca_file: None }).is_ok());
    }
}
