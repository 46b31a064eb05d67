//! AWS SDK configuration, built once per container.
//!
//! `aws-config` honours `AWS_ENDPOINT_URL` (the emulator locally), region and credentials from
//! the environment; there is no emulator-specific code path.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// Shared SDK config with tight timeouts: a Lambda must fail fast and let the platform retry
/// rather than hang until its own timeout when a dependency is down.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(12))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}
