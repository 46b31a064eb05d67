use aws_lambda_events::eventbridge::EventBridgeEvent;
use holdfast_adapters::config::Config;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logs();
    let cfg = Config::from_env()?;
    let agg = metrics_aggregator::build(&cfg).await?;
    let (agg, function) = (&agg, &FunctionTelemetry::new("metrics-aggregator"));
    run(service_fn(move |ev: LambdaEvent<EventBridgeEvent>| async move {
        let span = function.invocation(Some(&ev.context), None);
        metrics_aggregator::handle(agg, ev).instrument(span).await
    }))
    .await
}
