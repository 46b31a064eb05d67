//! Measure a Lambda binary's init time: start it under a minimal Lambda Runtime API on
//! loopback and time from process spawn to its first `GET /runtime/invocation/next` — the
//! moment the real service would start counting "Init Duration" as done.

use crate::Res;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct InitArgs {
    pub binary: PathBuf,
    pub runs: usize,
}

/// Serve until the first `next` request arrives, report it, and never answer it (the
/// process is killed right after).
async fn runtime_api(listener: tokio::net::TcpListener, tx: mpsc::Sender<Instant>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let tx = tx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    if req.uri().path().ends_with("/runtime/invocation/next") {
                        let _ = tx.send(Instant::now()).await;
                        // Hold the long poll open, as the real Runtime API does between events.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

pub async fn run(a: InitArgs) -> Res {
    let mut samples = Vec::new();
    let name = a.binary.file_name().and_then(|n| n.to_str()).unwrap_or("function").to_string();
    for _ in 0..a.runs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = mpsc::channel(1);
        let server = tokio::spawn(runtime_api(listener, tx));
        let started = Instant::now();
        let mut child = std::process::Command::new(&a.binary)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let ready = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
        match ready {
            Ok(Some(t)) => samples.push(t.duration_since(started).as_secs_f64() * 1000.0),
            _ => return Err(format!("{name} did not reach the Runtime API within 10 s").into()),
        }
    }
    samples.sort_by(f64::total_cmp);
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: init (spawn → first /next) over {} runs: median {:.1} ms, min {:.1} ms, p90 {:.1} ms",
        samples.len(),
        p(0.5),
        samples[0],
        p(0.9)
    );
    Ok(())
}
