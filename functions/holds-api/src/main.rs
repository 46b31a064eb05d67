use holdfast_adapters::config::Config;
use lambda_http::{run, service_fn, Error, Request};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // JSON or text and the level per Lambda's logging controls; `api::handle` runs each request
    // in its invocation span (request id, function, cold start, correlation id).
    holdfast_adapters::telemetry::init_lambda_logs();
    let cfg = Config::from_env()?;
    let svc = holds_api::build(&cfg).await?;
    // Cold-start check: refuse hold writes (503) unless the database enforces conflicts.
    // A database that is unreachable now is checked again on the first write.
    if let Err(e) = svc.verify_enforcement().instrument(svc.telemetry().init()).await {
        let _init = svc.telemetry().init().entered();
        tracing::warn!(error = %e, "enforcement check deferred: database unreachable at cold start");
    }
    let svc = &svc;
    run(service_fn(move |req: Request| async move { Ok::<_, Error>(holds_api::api::handle(svc, req).await) })).await
}
