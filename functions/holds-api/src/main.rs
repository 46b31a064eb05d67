use holdfast_adapters::config::Config;
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_json_logs();
    let cfg = Config::from_env()?;
    let svc = holds_api::build(&cfg).await?;
    // Cold-start check: refuse hold writes (503) unless the database enforces conflicts.
    // A database that is unreachable now is checked again on the first write.
    if let Err(e) = svc.verify_enforcement().await {
        tracing::warn!(error = %e, "enforcement check deferred: database unreachable at cold start");
    }
    let svc = &svc;
    run(service_fn(move |req: Request| async move { Ok::<_, Error>(holds_api::api::handle(svc, req).await) })).await
}
