//! SSM Parameter Store access for all three environments. Unlike the runtime loader, the
//! approver never caches and never falls back: a change is validated against what SSM holds
//! right now, or not at all.

use holdfast_adapters::flags::{read_flag_parameters, RawFlag, SsmReadError};
use holdfast_shared::flags::{self, Environment, FlagDef, FlagProblem, FlagSet};
use std::sync::atomic::AtomicU64;

/// `HOLDFAST_SSM_ROOT` default: environment E lives under `/holdfast/E`.
pub const DEFAULT_SSM_ROOT: &str = "/holdfast";

/// What SSM holds for one environment, and the effective set it gives.
#[derive(Debug, Clone)]
pub struct EnvFlags {
    pub env: Environment,
    pub raw: Vec<RawFlag>,
    pub set: FlagSet,
    pub problems: Vec<FlagProblem>,
}

impl EnvFlags {
    /// The raw SSM value of `flag`, if the parameter exists.
    pub fn raw_value(&self, flag: &str) -> Option<&RawFlag> {
        self.raw.iter().find(|r| r.flag == flag)
    }
}

pub struct SsmFlags {
    client: aws_sdk_ssm::Client,
    root: String,
    calls: AtomicU64,
}

/// Checks an SSM root: starts with `/`, does not end with one, no empty segments.
pub fn validate_root(root: &str) -> Result<(), String> {
    if !root.starts_with('/') || root.ends_with('/') || root.contains("//") {
        return Err(format!("SSM root must look like /holdfast (got {root:?})"));
    }
    Ok(())
}

impl SsmFlags {
    pub fn new(client: aws_sdk_ssm::Client, root: impl Into<String>) -> Result<Self, String> {
        let root = root.into();
        validate_root(&root)?;
        Ok(Self { client, root, calls: AtomicU64::new(0) })
    }

    /// `<root>/<env>`, the prefix the functions of that environment read.
    pub fn prefix(&self, env: Environment) -> String {
        format!("{}/{}", self.root, env.as_str())
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub async fn read(&self, env: Environment) -> Result<EnvFlags, SsmReadError> {
        let raw = read_flag_parameters(&self.client, &self.prefix(env), &self.calls).await?;
        let pairs: Vec<(String, String)> = raw.iter().map(|r| (r.flag.clone(), r.value.clone())).collect();
        let (set, problems) = FlagSet::from_raw(env, &pairs);
        Ok(EnvFlags { env, raw, set, problems })
    }

    /// Writes `value` (canonical) to the flag's parameter; returns the new SSM version. Secret
    /// flags are written as SecureString. SSM cannot store an empty string, so an empty value
    /// deletes the parameter (the default, which is then empty, applies; the service refuses
    /// empty values whose default is not empty) and returns `None`. The error text names the failure kind, never the value.
    pub async fn put(&self, env: Environment, def: &FlagDef, value: &str) -> Result<Option<i64>, String> {
        use aws_sdk_ssm::types::ParameterType;
        let name = flags::ssm_parameter_name(&self.prefix(env), def.name);
        if value.is_empty() {
            return match self.client.delete_parameter().name(name).send().await {
                Ok(_) => Ok(None),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(None),
                Err(e) => Err(describe(&e)),
            };
        }
        let ty = if def.is_secret() { ParameterType::SecureString } else { ParameterType::String };
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ty)
            .overwrite(true)
            .send()
            .await
            .map(|out| Some(out.version))
            .map_err(|e| describe(&e))
    }
}

impl SsmFlags {
    /// Puts a flag back to what it held before a failed grouped apply: `previous` is the raw
    /// value read before the write (`None`: the parameter did not exist, so it is deleted).
    pub async fn restore(&self, env: Environment, def: &FlagDef, previous: Option<&str>) -> Result<(), String> {
        self.put(env, def, previous.unwrap_or("")).await.map(|_| ())
    }
}

/// An SDK error as it may be logged: the kind and the service's error code, never the message
/// (a validation message can quote the value, which may be a secret).
fn describe<E: aws_sdk_ssm::error::ProvideErrorMetadata, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> String {
    use aws_sdk_ssm::error::SdkError;
    match e {
        SdkError::ConstructionFailure(_) => "construction failure".into(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ServiceError(s) => format!("service error {}", s.err().code().unwrap_or("unknown")),
        _ => "unknown SDK error".into(),
    }
}
