use aws_lambda_events::eventbridge::EventBridgeEvent;
use holdfast_adapters::config::Config;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_json_logs();
    let cfg = Config::from_env()?;
    let agg = metrics_aggregator::build(&cfg).await?;
    let agg = &agg;
    run(service_fn(move |ev: LambdaEvent<EventBridgeEvent>| async move { metrics_aggregator::handle(agg, ev).await }))
        .await
}
