//! `email-sender`: the SQS-triggered Lambda (partial batch responses).

use aws_lambda_events::event::sqs::SqsEvent;
use holdfast_adapters::config::Config;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_lambda_logs();
    let sender = email_sender::build_sender(&Config::from_env()?).await?;
    let sender = &sender;
    run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(sender.handle_in(Some(&ev.context), ev.payload).await)
    }))
    .await
}
