//! `flag-review-sweep`: the scheduled Lambda (EventBridge, every minute) that keeps flag
//! governance honest after the fact:
//! - break-glass reviews past their 24 h deadline unacknowledged record a
//!   `flags.review_overdue` event each, on every run until acknowledged (metric
//!   `FlagReviewsOverdue`, alarm `holdfast-<env>-flag-review-overdue`);
//! - the bake check: an applied prod change whose bake window an SLO burn-rate alarm
//!   (`HOLDFAST_BURN_RATE_ALARMS`) entered ALARM inside is reverted (metric `FlagAutoReverts`),
//!   or, when it must not be, ops are told (metric `FlagAutoRevertsRefused`).
//!
//! Both run on every invocation; a failure of either fails the invocation (the function's
//! Errors metric) after the other has run.

use flag_approver::alarms::BurnAlarms;
use holdfast_adapters::config::Config;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logs();
    let cfg = Config::from_env()?;
    let svc = flag_approver::build(&cfg).await?;
    let alarms = BurnAlarms::from_env(aws_sdk_cloudwatch::Client::new(&holdfast_adapters::aws::sdk_config().await));
    let function = &FunctionTelemetry::new("flag-review-sweep");
    if alarms.names().is_empty() {
        let _init = function.init().entered();
        tracing::warn!("no burn-rate alarms configured: bake windows close without a revert");
    }
    let (svc, alarms, env) = (&svc, &alarms, cfg.environment);
    run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let span = function.invocation(Some(&ev.context), None);
        sweep(svc, alarms, env).instrument(span)
    }))
    .await
}

/// One invocation: the overdue reviews, then the bake windows.
async fn sweep(
    svc: &flag_approver::FlagApprover,
    alarms: &BurnAlarms,
    env: holdfast_shared::flags::Environment,
) -> Result<serde_json::Value, Error> {
    let now = chrono::Utc::now();
    let reviews = svc.sweep_reviews(now).await;
    let bakes = svc.check_bakes(env, alarms, now).await;
    let (r, b) = (reviews?, bakes?);
    tracing::info!(overdue = r.overdue, reverted = b.reverted, refused = b.refused, failed = b.failed, "flag sweep");
    if b.failed > 0 {
        return Err(Error::from(format!("{} bake window(s) could not be checked", b.failed)));
    }
    Ok(serde_json::json!({
        "overdue": r.overdue, "newly_overdue": r.newly_overdue, "bakes": b,
    }))
}
