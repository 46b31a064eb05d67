//! `outbox-relay`: the scheduled Lambda (EventBridge, every minute) that publishes the outbox.

use holdfast_adapters::config::Config;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_lambda_logs();
    let relay = email_sender::build_relay(&Config::from_env()?).await?;
    let relay = &relay;
    run(service_fn(move |ev: LambdaEvent<serde_json::Value>| async move {
        let r = relay.tick_in(Some(&ev.context)).await?;
        Ok::<_, Error>(serde_json::json!({ "published": r.published, "refused": r.refused, "dead": r.dead, "sqs_unavailable": r.sqs_unavailable }))
    }))
    .await
}
