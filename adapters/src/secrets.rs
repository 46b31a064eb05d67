//! Secrets read from SSM: a SecureString parameter (or a Secrets Manager secret through SSM's
//! [`secrets_manager_reference`] path), decrypted, never printed. An [`SsmSecret`] is read once
//! per container; a [`RotatingSecret`] (the database credentials) is re-read when the value in
//! hand is proved stale, so a rotation needs no restart.

use std::sync::Arc;
use tokio::sync::OnceCell;

/// A secret value: an API key, or a credentials document. `Debug` and `Display` never show it;
/// [`ApiKey::expose`] is the one way to read it, at the point of use.
#[derive(Clone)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The secret itself: for a request header or a connection, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The SSM call failed (the SDK's error context: it names the parameter, not its value), or
    /// the value is not what its reader expects (a description of the shape, never the value).
    #[error("{0}")]
    Unreadable(String),
    /// The parameter has no value, or only whitespace.
    #[error("empty")]
    Empty,
}

/// The SSM name under which Secrets Manager secret `arn` is readable with `GetParameter`.
pub fn secrets_manager_reference(arn: &str) -> String {
    format!("/aws/reference/secretsmanager/{arn}")
}

/// One SSM SecureString parameter, read with decryption on first use and kept for the life of
/// the container. A failed read is not kept: the next [`SsmSecret::get`] tries again.
#[derive(Debug)]
pub struct SsmSecret {
    ssm: aws_sdk_ssm::Client,
    name: String,
    value: OnceCell<ApiKey>,
}

impl SsmSecret {
    pub fn new(ssm: aws_sdk_ssm::Client, name: impl Into<String>) -> Self {
        Self { ssm, name: name.into(), value: OnceCell::new() }
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value (surrounding whitespace trimmed), read from SSM on the first call only.
    pub async fn get(&self) -> Result<&ApiKey, SecretError> {
        self.value.get_or_try_init(|| read(&self.ssm, &self.name)).await
    }
}

/// A secret that rotates (the database credentials), parsed into a `T`: read at cold start,
/// kept, and re-read only when a caller proves the value in hand stale (an authentication
/// failure). Each read bumps a generation, so however many connections notice one rotation at
/// once, SSM is read once: the others find a newer generation than the one that failed them.
/// A value that fails to read or parse is never kept: the last good one stays.
pub struct RotatingSecret<T> {
    ssm: aws_sdk_ssm::Client,
    name: String,
    parse: fn(&ApiKey) -> Result<T, SecretError>,
    current: tokio::sync::Mutex<(u64, Arc<T>)>,
}

impl<T> std::fmt::Debug for RotatingSecret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<T> RotatingSecret<T> {
    /// Read and parse the secret now (cold start); fails when it cannot be read or parsed.
    pub async fn load(
        ssm: aws_sdk_ssm::Client,
        name: impl Into<String>,
        parse: fn(&ApiKey) -> Result<T, SecretError>,
    ) -> Result<Self, SecretError> {
        let name = name.into();
        let value = parse(&read(&ssm, &name).await?)?;
        Ok(Self { ssm, name, parse, current: tokio::sync::Mutex::new((1, Arc::new(value))) })
    }

    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value in hand and its generation.
    pub async fn current(&self) -> (u64, Arc<T>) {
        self.current.lock().await.clone()
    }

    /// The value to use after generation `stale` failed: re-read from SSM, unless another
    /// caller already did since (then its newer value, without a read).
    pub async fn refresh(&self, stale: u64) -> Result<(u64, Arc<T>), SecretError> {
        let mut current = self.current.lock().await;
        if current.0 == stale {
            let value = (self.parse)(&read(&self.ssm, &self.name).await?)?;
            *current = (stale + 1, Arc::new(value));
        }
        Ok(current.clone())
    }
}

async fn read(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<ApiKey, SecretError> {
    let out = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| SecretError::Unreadable(aws_sdk_ssm::error::DisplayErrorContext(&e).to_string()))?;
    let value = out.parameter.and_then(|p| p.value);
    let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty()).ok_or(SecretError::Empty)?;
    Ok(ApiKey::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_redacted_in_debug() {
        assert_eq!(format!("{:?}", ApiKey::new("dd-secret")), "ApiKey(<redacted>)");
    }
}
