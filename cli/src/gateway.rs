//! A loopback stand-in for API Gateway: accepts plain HTTP, builds the API Gateway HTTP API
//! (payload v2) event that Lambda would receive as the typed `ApiGatewayV2httpRequest`, turns
//! it into a `Request` the way the Lambda runtime does (`http::lambda_request`) and hands that
//! to the function's handler.
//!
//! Authorization mimics the JWT authorizer: `Authorization: Bearer dev:<subject>` becomes the
//! claim `sub = <subject>`; a request without it is refused with 401, as in AWS.
//!
//! It is no more forgiving than API Gateway, so a test that passes here passes in AWS: the body
//! reaches the function byte-exact (base64 with `isBase64Encoded` when API Gateway would send
//! it so: a binary media type, or bytes that are not UTF-8; never replaced with U+FFFD), and
//! every header is passed as sent, non-ASCII UTF-8 included (`Idempotency-Key: clé` reaches
//! the function, which refuses it). What the JSON event cannot carry at all, a header value
//! that is not UTF-8, is refused here with 400 rather than altered or dropped. As in AWS, the
//! `x-forwarded-*` headers are the gateway's, not the client's.

use holdfast_adapters::http;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::http::{header, HeaderMap, HeaderName, HeaderValue};
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
        let (stream, peer) = listener.accept().await?;
        let local = stream.local_addr()?;
        let routes = routes.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let routes = routes.clone();
                async move { Ok::<_, std::convert::Infallible>(dispatch(&routes, req, peer, local).await) }
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

/// The headers of the event: the client's as sent (a value that is not UTF-8 cannot be put in
/// the JSON event: `Err` names it), except `x-forwarded-*`, which API Gateway sets itself.
fn event_headers(sent: &HeaderMap, peer: SocketAddr, local: SocketAddr) -> Result<HeaderMap, HeaderName> {
    let mut headers = HeaderMap::with_capacity(sent.len() + 3);
    for (name, value) in sent {
        if std::str::from_utf8(value.as_bytes()).is_err() {
            return Err(name.clone());
        }
        if !name.as_str().starts_with("x-forwarded-") {
            headers.append(name.clone(), value.clone());
        }
    }
    let forwarded = [
        ("x-forwarded-for", peer.ip().to_string()),
        ("x-forwarded-port", local.port().to_string()),
        ("x-forwarded-proto", "http".to_string()),
    ];
    for (name, value) in forwarded {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(headers)
}

async fn dispatch(
    routes: &Routes,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
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
    // API Gateway is reached by its host name; a Host that is not one never gets this far.
    let host_ok = parts
        .headers
        .get(header::HOST)
        .is_none_or(|h| h.to_str().ok().and_then(|h| h.parse::<lambda_http::http::uri::Authority>().ok()).is_some());
    if !host_ok {
        return plain(400, "Bad Request");
    }
    let headers = match event_headers(&parts.headers, peer, local) {
        Ok(h) => h,
        Err(name) => {
            return plain(400, &format!("the {name} header is not UTF-8: an API Gateway event cannot carry it"));
        }
    };
    let event = http::apigw_v2_http_request(
        parts.method.clone(),
        &path,
        parts.uri.query().unwrap_or(""),
        &headers,
        &body,
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the function saw: header values and the body as bytes (lossless in JSON as arrays),
    /// and whether lambda_http got the body as text or decoded it from base64.
    fn echo() -> Handler {
        Arc::new(|req: Request| {
            Box::pin(async move {
                let bytes = |h: &str| req.headers().get(h).map(|v| v.as_bytes().to_vec());
                let seen = json!({
                    "caller": caller(&req),
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query(),
                    "key": bytes("idempotency-key"),
                    "proto": bytes("x-forwarded-proto"),
                    "body": body_bytes(&req),
                    "encoding": match req.body() {
                        Body::Text(_) => "text",
                        Body::Binary(_) => "base64",
                        _ => "none",
                    },
                });
                json_response(StatusCode::OK, &seen)
            })
        })
    }

    async fn start() -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let server = tokio::spawn(serve(addr, Arc::new(Routes { routes: vec![("/holds", echo())] })));
        (addr, server)
    }

    /// One HTTP/1.1 request written byte for byte (no client library normalising anything):
    /// the status and the body of the answer.
    async fn send(addr: SocketAddr, head: &[(&str, &[u8])], request_line: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut raw = format!("{request_line} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
        for (name, value) in head {
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body);
        let mut tries = 0;
        let mut stream = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => break s,
                // The server task may not be listening yet.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("gateway not listening: {e}"),
            }
        };
        stream.write_all(&raw).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
        let status = std::str::from_utf8(&answer[9..12]).ok().and_then(|s| s.parse().ok()).expect("status");
        (status, answer[split + 4..].to_vec())
    }

    fn json_of(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).expect("JSON answer")
    }

    const DEV: (&str, &[u8]) = ("authorization", b"Bearer dev:ada");

    /// Request headers as raw bytes.
    type Head<'a> = Vec<(&'a str, &'a [u8])>;

    #[tokio::test]
    async fn requests_reach_the_handler_as_api_gateway_would_send_them() {
        let (addr, server) = start().await;
        let json_ct: (&str, &[u8]) = ("content-type", b"application/json");
        let (s, seen) =
            send(addr, &[DEV, json_ct, ("idempotency-key", b"k-1")], "POST /holds/h1/confirm?x=1", br#"{"a":1}"#).await;
        assert_eq!(s, 200);
        assert_eq!(
            json_of(&seen),
            json!({"caller": "ada", "method": "POST", "path": "/holds/h1/confirm", "query": "x=1",
                   "key": b"k-1", "proto": b"http", "body": br#"{"a":1}"#, "encoding": "text"})
        );

        let (s, _) = send(addr, &[], "GET /holds/h1", b"").await;
        assert_eq!(s, 401);
        let (s, _) = send(addr, &[("authorization", b"Bearer someone")], "GET /holds/h1", b"").await;
        assert_eq!(s, 401);
        let (s, _) = send(addr, &[DEV], "GET /nope", b"").await;
        assert_eq!(s, 404);
        server.abort();
    }

    #[tokio::test]
    async fn bodies_and_headers_arrive_byte_exact_or_not_at_all() {
        let (addr, server) = start().await;
        let json_ct: (&str, &[u8]) = ("content-type", b"application/json");
        // Each case: headers, body, and how the event carried the body. Every body arrives
        // exactly as sent; none is ever "repaired" into U+FFFD.
        let not_utf8 = b"{\"guest\":{\"name\":\"Ada\xff\"}}".to_vec();
        let cases: Vec<(Head, Vec<u8>, &str)> = vec![
            (vec![json_ct], not_utf8.clone(), "base64"),
            (vec![("content-type", b"application/octet-stream")], b"\x00\x01\xfe".to_vec(), "base64"),
            (vec![("content-type", b"application/x-www-form-urlencoded")], b"a=1".to_vec(), "base64"),
            (vec![], br#"{"a":1}"#.to_vec(), "base64"),
            (vec![("content-type", b"text/plain; charset=utf-8")], "clé".as_bytes().to_vec(), "text"),
            (vec![("content-type", b"Application/JSON")], br#"{"a":"\u0000"}"#.to_vec(), "text"),
            (vec![json_ct], vec![], "none"),
        ];
        for (headers, body, encoding) in cases {
            let mut head = vec![DEV];
            head.extend(headers);
            let (s, seen) = send(addr, &head, "POST /holds", &body).await;
            assert_eq!(s, 200, "{body:?}");
            let seen = json_of(&seen);
            assert_eq!(seen["body"], json!(body), "{body:?}");
            assert_eq!(seen["encoding"], encoding, "{body:?}");
        }

        // A UTF-8 header value reaches the function as sent (it is the function's to refuse).
        let (s, seen) = send(addr, &[DEV, ("idempotency-key", "clé".as_bytes())], "POST /holds", b"").await;
        assert_eq!((s, json_of(&seen)["key"].clone()), (200, json!("clé".as_bytes())));
        // A client's x-forwarded-proto is replaced, as API Gateway sets its own (lambda_http
        // builds a URL from it: "a b" would not even parse).
        let (s, seen) = send(addr, &[DEV, ("x-forwarded-proto", b"a b")], "GET /holds/h1", b"").await;
        assert_eq!((s, json_of(&seen)["proto"].clone()), (200, json!(b"http")));

        // What an event cannot carry is refused, never dropped or altered.
        let (s, answer) = send(addr, &[DEV, ("idempotency-key", b"cl\xe9")], "POST /holds", b"").await;
        assert_eq!(s, 400);
        assert!(json_of(&answer)["message"].as_str().is_some_and(|m| m.contains("idempotency-key")));
        let mut raw_host = b"POST /holds HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n".to_vec();
        raw_host.extend_from_slice(b"authorization: Bearer dev:ada\r\ncontent-length: 0\r\n\r\n");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&raw_host).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
        server.abort();
    }
}
