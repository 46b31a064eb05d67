//! One typed configuration, read from environment variables, identical in Lambda and locally.
//!
//! The AWS endpoint is not part of it on purpose: `aws-config` reads `AWS_ENDPOINT_URL`
//! itself, so pointing the SDK at the emulator is configuration, never a code path.

use holdfast_shared::flags::Environment;
use std::env;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where the database is and how to authenticate.
#[derive(Clone)]
pub enum DatabaseSource {
    /// A full connection URL (local runs, tests, CI jobs such as migrations). libpq's
    /// `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
    /// are understood; without `sslmode`, TLS is preferred in dev and required elsewhere.
    Url(String),
    /// In AWS: RDS Proxy host + database name; the credentials come from a Secrets Manager
    /// secret read through SSM's `/aws/reference/secretsmanager/` bridge at cold start, and again
    /// after an authentication failure (rotation). Always over verified TLS.
    Secret { host: String, port: u16, dbname: String, secret_arn: String },
}

impl std::fmt::Debug for DatabaseSource {
    // Never print a URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(_) => f.write_str("Url(<redacted>)"),
            Self::Secret { host, dbname, .. } => write!(f, "Secret {{ host: {host}, dbname: {dbname} }}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    /// The runtime role: what every function connects as (`DATABASE_URL` or the secret).
    pub database: DatabaseSource,
    /// PEM file of the CA certificates PostgreSQL's server certificate must chain to
    /// (`HOLDFAST_PG_CA_FILE`); unset, Mozilla's roots (enough for RDS Proxy). A URL's
    /// `sslrootcert` takes precedence.
    pub db_ca_file: Option<PathBuf>,
    pub db_pool_size: usize,
    pub ssm_prefix: String,
    pub email_queue_url: Option<String>,
    pub email_dlq_url: Option<String>,
    pub metrics_namespace: String,
    pub datadog_api_key_param: Option<String>,
    pub datadog_api_url: Option<String>,
    pub resend_api_key_param: Option<String>,
    /// Resend's API base URL; unset means the public API (tests point it at a capture server).
    pub resend_api_url: Option<String>,
    pub ses_from_address: Option<String>,
    /// Recipient of the ops policy-drift notice; unset, those jobs fail permanently.
    pub email_ops_address: Option<String>,
}

fn environment(get_nonempty: impl Fn(&str) -> Option<String>) -> Result<Environment, ConfigError> {
    let env_name = get_nonempty("HOLDFAST_ENV").ok_or(ConfigError::Missing("HOLDFAST_ENV"))?;
    Environment::parse(&env_name).ok_or_else(|| ConfigError::Invalid {
        name: "HOLDFAST_ENV",
        reason: format!("expected dev, staging or prod, got {env_name:?}"),
    })
}

/// What migrations need, and nothing a function has: the schema owner's URL
/// (`HOLDFAST_OWNER_DATABASE_URL`) and the TLS defaults (`HOLDFAST_ENV`, `HOLDFAST_PG_CA_FILE`).
/// Operator tooling only (`holdfast migrate`, `holdfast local`).
#[derive(Clone)]
pub struct OwnerConfig {
    pub environment: Environment,
    pub url: String,
    pub db_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for OwnerConfig {
    // The URL carries the owner's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnerConfig {{ environment: {}, url: <redacted> }}", self.environment.as_str())
    }
}

impl OwnerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get_nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        Ok(Self {
            environment: environment(get_nonempty)?,
            url: get_nonempty("HOLDFAST_OWNER_DATABASE_URL")
                .ok_or(ConfigError::Missing("HOLDFAST_OWNER_DATABASE_URL (migrations run as the schema owner)"))?,
            db_ca_file: get_nonempty("HOLDFAST_PG_CA_FILE").map(PathBuf::from),
        })
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| env::var(k).ok())
    }

    /// Testable core: `get` is the variable lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get_nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let environment = environment(get_nonempty)?;

        let database = if let Some(url) = get_nonempty("DATABASE_URL") {
            DatabaseSource::Url(url)
        } else {
            let host = get_nonempty("DATABASE_HOST").ok_or(ConfigError::Missing("DATABASE_URL or DATABASE_HOST"))?;
            let dbname = get_nonempty("DATABASE_NAME").ok_or(ConfigError::Missing("DATABASE_NAME"))?;
            let secret_arn = get_nonempty("DATABASE_SECRET_ARN").ok_or(ConfigError::Missing("DATABASE_SECRET_ARN"))?;
            let port = match get_nonempty("DATABASE_PORT") {
                None => 5432,
                Some(p) => p
                    .parse()
                    .map_err(|_| ConfigError::Invalid { name: "DATABASE_PORT", reason: "not a port number".into() })?,
            };
            DatabaseSource::Secret { host, port, dbname, secret_arn }
        };

        let db_pool_size = match get_nonempty("DATABASE_POOL_SIZE") {
            None => 4,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or(ConfigError::Invalid { name: "DATABASE_POOL_SIZE", reason: "expected 1..=256".into() })?,
        };

        let ssm_prefix =
            get_nonempty("HOLDFAST_SSM_PREFIX").unwrap_or_else(|| format!("/holdfast/{}", environment.as_str()));
        if !ssm_prefix.starts_with('/') || ssm_prefix.ends_with('/') {
            return Err(ConfigError::Invalid {
                name: "HOLDFAST_SSM_PREFIX",
                reason: "must start with '/' and not end with '/'".into(),
            });
        }

        Ok(Self {
            environment,
            database,
            db_ca_file: get_nonempty("HOLDFAST_PG_CA_FILE").map(PathBuf::from),
            db_pool_size,
            ssm_prefix,
            email_queue_url: get_nonempty("EMAIL_QUEUE_URL"),
            email_dlq_url: get_nonempty("EMAIL_DLQ_URL"),
            metrics_namespace: get_nonempty("METRICS_NAMESPACE").unwrap_or_else(|| "Holdfast".into()),
            datadog_api_key_param: get_nonempty("DATADOG_API_KEY_PARAM"),
            datadog_api_url: get_nonempty("DATADOG_API_URL"),
            resend_api_key_param: get_nonempty("RESEND_API_KEY_PARAM"),
            resend_api_url: get_nonempty("RESEND_API_URL"),
            ses_from_address: get_nonempty("SES_FROM_ADDRESS"),
            email_ops_address: get_nonempty("EMAIL_OPS_ADDRESS"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn environment_is_required_and_explicit() {
        assert!(matches!(cfg(&[("DATABASE_URL", "postgres://x")]), Err(ConfigError::Missing("HOLDFAST_ENV"))));
        assert!(matches!(
            cfg(&[("HOLDFAST_ENV", "production"), ("DATABASE_URL", "postgres://x")]),
            Err(ConfigError::Invalid { name: "HOLDFAST_ENV", .. })
        ));
    }

    #[test]
    fn defaults_derive_from_environment() {
        let c = cfg(&[("HOLDFAST_ENV", "staging"), ("DATABASE_URL", "postgres://x")]).expect("valid");
        assert_eq!(c.ssm_prefix, "/holdfast/staging");
        assert_eq!(c.metrics_namespace, "Holdfast");
        assert_eq!(c.db_pool_size, 4);
    }

    #[test]
    fn secret_source_needs_all_parts_and_debug_redacts() {
        assert!(cfg(&[("HOLDFAST_ENV", "prod"), ("DATABASE_HOST", "proxy")]).is_err());
        let c = cfg(&[
            ("HOLDFAST_ENV", "prod"),
            ("DATABASE_HOST", "proxy"),
            ("DATABASE_NAME", "holdfast"),
            ("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:1:secret:db"),
        ])
        .expect("valid");
        assert!(matches!(c.database, DatabaseSource::Secret { port: 5432, .. }));
        let u = cfg(&[("HOLDFAST_ENV", "dev"), ("DATABASE_URL", "postgres://u:hunter2@h/db")]).expect("valid");
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn the_owner_config_needs_only_its_url_and_never_shows_it() {
        let vars = [("HOLDFAST_ENV", "prod"), ("HOLDFAST_OWNER_DATABASE_URL", "postgres://o:swordfish@h/db")];
        let m: HashMap<&str, &str> = vars.into_iter().collect();
        let o = OwnerConfig::from_lookup(|k| m.get(k).map(|v| v.to_string())).expect("valid without DATABASE_URL");
        assert_eq!(o.environment, Environment::Prod);
        assert!(!format!("{o:?}").contains("swordfish"));
        let none = OwnerConfig::from_lookup(|k| (k == "HOLDFAST_ENV").then(|| "dev".to_string()));
        assert!(matches!(none, Err(ConfigError::Missing(_))));
    }

    #[test]
    fn bad_prefix_and_pool_size_are_refused() {
        let base = [("HOLDFAST_ENV", "dev"), ("DATABASE_URL", "postgres://x")];
        let mut v = base.to_vec();
        v.push(("HOLDFAST_SSM_PREFIX", "holdfast/dev/"));
        assert!(cfg(&v).is_err());
        let mut v = base.to_vec();
        v.push(("DATABASE_POOL_SIZE", "0"));
        assert!(cfg(&v).is_err());
    }
}
