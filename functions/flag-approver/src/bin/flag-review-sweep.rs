//! `flag-review-sweep`: the scheduled Lambda (EventBridge, every 5 minutes) that finds
//! break-glass reviews past their 24 h deadline unacknowledged and records a
//! `flags.review_overdue` event for each, on every run until acknowledged (metric
//! `FlagReviewsOverdue`, alarm `holdfast-<env>-flag-review-overdue`).

use holdfast_adapters::config::Config;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_json_logs();
    let svc = flag_approver::build(&Config::from_env()?).await?;
    let svc = &svc;
    run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let r = svc.sweep_reviews(chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::json!({ "overdue": r.overdue, "newly_overdue": r.newly_overdue }))
    }))
    .await
}
