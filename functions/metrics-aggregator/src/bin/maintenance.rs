//! `maintenance`: the scheduled Lambda (EventBridge, hourly) that keeps the database's growth
//! bounded: event partitions ahead and past retention, expired hold claims, idempotency keys,
//! the email outbox and ledger, stale metric batches (`metrics_aggregator::maintenance`).

use holdfast_adapters::config::Config;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logs();
    let m = metrics_aggregator::maintenance::build(&Config::from_env()?).await?;
    let (m, function) = (&m, &FunctionTelemetry::new("maintenance"));
    run(service_fn(move |ev: LambdaEvent<serde_json::Value>| async move {
        let span = function.invocation(Some(&ev.context), None);
        metrics_aggregator::maintenance::handle(m, ev).instrument(span).await
    }))
    .await
}
