use holdfast_adapters::config::Config;
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    holdfast_adapters::telemetry::init_json_logs();
    let cfg = Config::from_env()?;
    let svc = flag_approver::build(&cfg).await?;
    let svc = &svc;
    run(service_fn(move |req: Request| async move { Ok::<_, Error>(flag_approver::api::handle(svc, req).await) })).await
}
