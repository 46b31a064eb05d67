//! A loopback stand-in for API Gateway: accepts plain HTTP, builds the real API Gateway HTTP
//! API (payload v2) event that Lambda would receive, parses it with `lambda_http` itself and
//! hands the resulting `Request` to the function's handler.
//!
//! Authorization mimics the JWT authorizer: `Authorization: Bearer dev:<subject>` becomes the
//! claim `sub = <subject>`; a request without it is refused with 401, as in AWS.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

pub type Handler = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

/// Route by path prefix to the function that API Gateway would invoke.
pub struct Routes {
    pub routes: Vec<(&'static str, Handler)>,
}

pub async fn serve(addr: SocketAddr, routes: Arc<Routes>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let routes = routes.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let routes = routes.clone();
                async move { Ok::<_, std::convert::Infallible>(dispatch(&routes, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn plain(status: u16, msg: &str) -> hyper::Response<Full<Bytes>> {
    let body = json!({ "message": msg }).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

async fn dispatch(routes: &Routes, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(400, "unreadable body"),
    };
    let path = parts.uri.path().to_string();
    let Some((_, handler)) = routes.routes.iter().find(|(prefix, _)| path.starts_with(prefix)) else {
        return plain(404, "Not Found");
    };
    let sub = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer dev:"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let Some(sub) = sub else { return plain(401, "Unauthorized") };

    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let event = holdfast_adapters::http::apigw_v2_event(
        parts.method.as_str(),
        &path,
        parts.uri.query().unwrap_or(""),
        &headers,
        &String::from_utf8_lossy(&body),
        Some(&sub),
    );
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => return plain(500, &format!("could not build the API Gateway event: {e}")),
    };
    let resp = handler(request).await;
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    let mut out = hyper::Response::new(Full::new(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    out
}
