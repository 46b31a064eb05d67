use holdfast_adapters::config::Config;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use lambda_http::{run, service_fn, Error, Request, RequestExt};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logs();
    let cfg = Config::from_env()?;
    let svc = flag_approver::build(&cfg).await?;
    let (svc, function) = (&svc, &FunctionTelemetry::new("flag-approver"));
    run(service_fn(move |req: Request| async move {
        let span = function.invocation(req.lambda_context_ref(), None);
        Ok::<_, Error>(flag_approver::api::handle(svc, req).instrument(span).await)
    }))
    .await
}
