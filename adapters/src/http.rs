//! HTTP plumbing shared by the API Gateway functions: JSON bodies parsed into typed requests
//! with errors that name the field, JSON problem responses, and the caller's identity from the
//! API Gateway authorizer (never from the request body).

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Bodies are small JSON documents; anything bigger is refused before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A client-facing error: status, stable machine code, human message, optional field.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Extra members of the error object (e.g. `alternatives`, `missing`).
    pub details: Vec<(&'static str, Value)>,
    /// Seconds, for 503s: the caller may retry after this.
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, details: vec![], retry_after: None }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn detail(mut self, key: &'static str, value: Value) -> Self {
        self.details.push((key, value));
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message).field(field)
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the service is temporarily unavailable; retry",
        )
        .retry_after(2)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), json!(self.code));
        err.insert("message".into(), json!(self.message));
        if let Some(f) = &self.field {
            err.insert("field".into(), json!(f));
        }
        for (k, v) in self.details {
            err.insert(k.into(), v);
        }
        let mut resp = json_response(self.status, &json!({ "error": err }));
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::Binary(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parse a JSON body into `T` (which should `deny_unknown_fields`). Errors name the field:
/// 413 too large, 400 malformed JSON, 422 missing/unknown/ill-typed field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {MAX_BODY_BYTES} bytes"),
        ));
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "a JSON body is required"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Problem::new(StatusCode::BAD_REQUEST, "malformed_json", format!("malformed JSON: {inner}"));
        }
        let msg = inner.to_string();
        // serde reports a missing field at its parent's path; an unknown one at its own path.
        let field = match backticked(&msg) {
            Some(f) if msg.starts_with("missing field") && path != "." => format!("{path}.{f}"),
            Some(f) if path == "." && (msg.starts_with("missing field") || msg.starts_with("unknown field")) => {
                f.to_string()
            }
            _ => path,
        };
        Problem::validation(field, without_input(&msg))
    })
}

/// serde's message without the caller's input: "invalid type: string \"Ada <ada@…>\", expected
/// u16" quotes the value, which may be guest PII, and error bodies must never carry it. Only
/// the schema half ("expected …") is kept; "at line X column Y" is dropped as noise.
fn without_input(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    let echoes_input = ["invalid type", "invalid value", "invalid length", "unknown variant"];
    if !echoes_input.iter().any(|p| msg.starts_with(p)) {
        return msg.to_string();
    }
    match msg.rsplit_once(", expected ") {
        Some((_, expected)) => format!("wrong type or value; expected {expected}"),
        None => "wrong type or value".to_string(),
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// The authenticated caller, from the API Gateway JWT authorizer (`sub`, or `username` for
/// some issuers) or IAM authorizer (user ARN). Never from the body.
pub fn caller(req: &Request) -> Option<String> {
    let ctx = req.request_context_ref()?;
    let auth = ctx.authorizer()?;
    if let Some(jwt) = &auth.jwt {
        for claim in ["sub", "username"] {
            if let Some(v) = jwt.claims.get(claim).filter(|v| !v.trim().is_empty()) {
                return Some(v.trim().to_string());
            }
        }
    }
    auth.iam.as_ref().and_then(|iam| iam.user_arn.clone()).filter(|v| !v.is_empty())
}

/// API Gateway's request id, for correlating logs and events.
pub fn request_id(req: &Request) -> Option<String> {
    req.lambda_context_ref().map(|c| c.request_id.clone()).filter(|s| !s.is_empty()).or_else(|| {
        match req.request_context_ref()? {
            lambda_http::request::RequestContext::ApiGatewayV2(c) => c.request_id.clone(),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    })
}

/// The API Gateway HTTP API (payload v2) event for a request, as Lambda receives it, with the
/// JWT authorizer's `sub` claim. Used by the local gateway and by tests, which then parse it
/// with `lambda_http::request::from_str` — the same code path as in AWS.
pub fn apigw_v2_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &str,
    sub: Option<&str>,
) -> Value {
    let mut hdrs = serde_json::Map::new();
    for (k, v) in headers {
        hdrs.insert(k.to_ascii_lowercase(), json!(v));
    }
    let now = chrono::Utc::now();
    let mut ctx = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": "127.0.0.1",
        "domainPrefix": "local",
        "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "" },
        "requestId": uuid::Uuid::new_v4().to_string(),
        "routeKey": "$default",
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        "timeEpoch": now.timestamp_millis()
    });
    if let Some(sub) = sub {
        ctx["authorizer"] = json!({ "jwt": { "claims": { "sub": sub }, "scopes": null } });
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "requestContext": ctx,
        "body": body,
        "isBase64Encoded": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body1 {
        party_size: u16,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    #[test]
    fn errors_name_the_field() {
        let p = parse_json::<Body1>(br#"{}"#).expect_err("missing");
        assert_eq!((p.status.as_u16(), p.field.as_deref()), (422, Some("party_size")));
        let p = parse_json::<Body1>(br#"{"party_size":"x"}"#).expect_err("type");
        assert_eq!(p.field.as_deref(), Some("party_size"));
        let p = parse_json::<Body1>(br#"{"party_size":2,"guest_email":"a@b.c"}"#).expect_err("unknown");
        assert_eq!(p.field.as_deref(), Some("guest_email"));
        let p = parse_json::<Body1>(br#"{"party_size":2,"inner":{}}"#).expect_err("nested");
        assert_eq!(p.field.as_deref(), Some("inner.name"));
        let p = parse_json::<Body1>(br#"{"party_size":"#).expect_err("syntax");
        assert_eq!((p.status.as_u16(), p.code), (400, "malformed_json"));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_json::<Body1>(&big).expect_err("big").status.as_u16(), 413);
        assert!(parse_json::<Body1>(br#"{"party_size":2}"#).is_ok());
    }

    #[test]
    fn errors_never_echo_the_callers_value() {
        let pii = "Ada Lovelace <ada@example.com>";
        for body in [
            format!(r#"{{"party_size":"{pii}"}}"#),
            format!(r#"{{"party_size":2,"inner":"{pii}"}}"#),
            format!(r#"{{"party_size":2,"inner":{{"name":["{pii}"]}}}}"#),
        ] {
            let p = parse_json::<Body1>(body.as_bytes()).expect_err("ill-typed");
            let rendered = String::from_utf8(body_bytes_of(&p.into_response()).to_vec()).expect("utf8");
            assert!(!rendered.contains("Ada") && !rendered.contains("ada@"), "{rendered}");
            assert!(rendered.contains("expected"), "the schema half stays: {rendered}");
        }
    }

    #[test]
    fn problem_renders_json_with_retry_after() {
        let r = Problem::unavailable().into_response();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
        let v: Value = serde_json::from_slice(body_bytes_of(&r)).expect("json");
        assert_eq!(v["error"]["code"], "database_unavailable");
    }

    fn body_bytes_of(r: &Response<Body>) -> &[u8] {
        match r.body() {
            Body::Binary(b) => b,
            Body::Text(t) => t.as_bytes(),
            _ => &[],
        }
    }
}
