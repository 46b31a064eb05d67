//! A loopback stand-in for API Gateway: accepts plain HTTP, builds the API Gateway HTTP API
//! (payload v2) event that Lambda would receive as the typed `ApiGatewayV2httpRequest`, turns
//! it into a `Request` the way the Lambda runtime does (`http::lambda_request`) and hands that
//! to the function's handler.
//!
//! Authorization mimics the JWT authorizer: `Authorization: Bearer dev:<subject>` becomes the
//! claim `sub = <subject>`; a request without it is refused with 401, as in AWS.

use holdfast_adapters::http;
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

    // The event carries headers as strings: values that are not visible ASCII are dropped.
    let mut headers = lambda_http::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in parts.headers.iter().filter(|(_, v)| v.to_str().is_ok()) {
        headers.append(name.clone(), value.clone());
    }
    let event = http::apigw_v2_http_request(
        parts.method.clone(),
        &path,
        parts.uri.query().unwrap_or(""),
        &headers,
        &String::from_utf8_lossy(&body),
        Some(&sub),
    );
    let request = match http::lambda_request(&event) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_adapters::http::{body_bytes, caller, json_response};
    use lambda_http::http::StatusCode;

    fn echo() -> Handler {
        Arc::new(|req: Request| {
            Box::pin(async move {
                let seen = json!({
                    "caller": caller(&req),
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "key": req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()),
                    "body": String::from_utf8_lossy(body_bytes(&req)),
                });
                json_response(StatusCode::OK, &seen)
            })
        })
    }

    #[tokio::test]
    async fn requests_reach_the_handler_as_api_gateway_would_send_them() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let routes = Arc::new(Routes { routes: vec![("/holds", echo())] });
        let server = tokio::spawn(serve(addr, routes));
        let client = reqwest::Client::new();
        let url = |p: &str| format!("http://{addr}{p}");
        let mut tries = 0;
        let resp = loop {
            match client
                .post(url("/holds/h1/confirm?x=1"))
                .header("authorization", "Bearer dev:ada")
                .header("idempotency-key", "k-1")
                .body(r#"{"a":1}"#)
                .send()
                .await
            {
                Ok(r) => break r,
                // The server task may not be listening yet.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("gateway not listening: {e}"),
            }
        };
        assert_eq!(resp.status().as_u16(), 200);
        let seen: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(
            seen,
            json!({"caller": "ada", "method": "POST", "path": "/holds/h1/confirm", "query": "x=1", "key": "k-1", "body": "{\"a\":1}"})
        );

        let unauth = client.get(url("/holds/h1")).send().await.expect("send");
        assert_eq!(unauth.status().as_u16(), 401);
        let other = client.get(url("/holds/h1")).header("authorization", "Bearer someone").send().await.expect("send");
        assert_eq!(other.status().as_u16(), 401);
        let unrouted = client.get(url("/nope")).header("authorization", "Bearer dev:ada").send().await.expect("send");
        assert_eq!(unrouted.status().as_u16(), 404);
        server.abort();
    }
}
