//! flag approver: the HTTP API through which feature flags change. A proposal (one flag or
//! several) is made by a `holdfast-ops` member, validated against the target environment's
//! flags in SSM (type, range, contradiction rules over the combined result), approved by
//! `holdfast-flag-approvers` members other than the proposer (two for critical flags in prod),
//! then written to SSM, all changes or none, with a check that no parameter changed since the
//! proposal. Kill switches may be turned off by one ops member alone (break-glass), which is
//! alarmed and opens a review a second person must acknowledge within 24 h; the
//! `flag-review-sweep` binary signals overdue reviews. Every step is appended to `flag_audit`,
//! which the database keeps append-only. Who may call which route: `auth::authorize`.
//!
//! It manages all three environments: environment E lives under `<root>/E` in SSM, where the
//! root is `HOLDFAST_SSM_ROOT` (default `/holdfast`). See docs/runbooks/feature-flags.md.

pub mod alarms;
pub mod api;
pub mod error;
pub mod service;
pub mod ssm;
pub mod store;

pub use error::ApproverError;
pub use service::FlagApprover;

use holdfast_adapters::config::Config;

/// The SSM root from `HOLDFAST_SSM_ROOT` (default `/holdfast`).
pub fn ssm_root_from_env() -> String {
    std::env::var("HOLDFAST_SSM_ROOT")
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| ssm::DEFAULT_SSM_ROOT.to_string())
}

/// Build the service once per container: SDK config, SSM client, the pool (connections open
/// lazily, on the first request that needs one).
pub async fn build(cfg: &Config) -> Result<FlagApprover, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &client).await?;
    let ssm = ssm::SsmFlags::new(client, ssm_root_from_env())?;
    Ok(FlagApprover::new(pool, ssm))
}
