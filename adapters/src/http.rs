//! HTTP plumbing shared by the API Gateway functions: JSON bodies parsed into typed requests
//! with errors that name the field, JSON problem responses, and the caller's identity from the
//! API Gateway authorizer (never from the request body).

use base64::Engine;
use holdfast_shared::guest::{has_forbidden_char, HOSTILE_TEXT};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequest,
    ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription,
};
use lambda_http::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
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

/// The body as the client sent it: `lambda_http` has already decoded a base64 body
/// (`isBase64Encoded: true`) into [`Body::Binary`], so this is byte-exact either way.
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parse a JSON body into `T` (which should `deny_unknown_fields`). Errors name the field:
/// 413 too large, 400 not UTF-8 or malformed JSON (field `body`), 422 a string anywhere in the
/// document holding a hostile character (`guest::forbidden_char`; field: where it is), 422
/// missing/unknown/ill-typed field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {MAX_BODY_BYTES} bytes"),
        )
        .field("body"));
    }
    // JSON is UTF-8 (RFC 8259 §8.1). Said up front, not left to serde's "invalid unicode code
    // point", which only notices bad bytes inside a string.
    if std::str::from_utf8(bytes).is_err() {
        return Err(malformed("the body is not UTF-8 text"));
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(malformed("a JSON body is required"));
    }
    // Every string of the document, whatever type it is bound for: a hostile character is
    // refused here, naming where it is, before any field parser (or PostgreSQL, which cannot
    // store a NUL) sees it. Field parsers may be stricter (a name is one line).
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| malformed(format!("malformed JSON: {e}")))?;
    if let Some(field) = hostile_text(&doc, "") {
        return Err(Problem::validation(field, HOSTILE_TEXT));
    }
    // Every request body is an object. serde's derived structs would also take a JSON array
    // (fields by position: `[]` is a field-less body, `[2, "…"]` a quote), which no spec allows.
    if !doc.is_object() {
        return Err(Problem::validation("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return malformed(format!("malformed JSON: {inner}"));
        }
        let msg = inner.to_string();
        // serde reports a missing (or repeated) field at its parent's path; an unknown one at
        // its own path.
        let at_parent = msg.starts_with("missing field") || msg.starts_with("duplicate field");
        let field = match backticked(&msg) {
            Some(f) if at_parent && path != "." => format!("{path}.{f}"),
            Some(f) if path == "." && (at_parent || msg.starts_with("unknown field")) => f.to_string(),
            _ => path,
        };
        Problem::validation(field, without_input(&msg))
    })
}

/// [`parse_json`] for a body that may be omitted: empty (or blank) means `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

fn malformed(message: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "malformed_json", message).field("body")
}

/// The path (serde_path_to_error's form: `guest.name`, `changes[0].value`) of the first string
/// holding a [`holdfast_shared::guest::forbidden_char`] (newlines and tabs allowed: notes and
/// reasons span lines), or of the object whose key holds one (`body` at the top). The value
/// itself is never returned: it may be guest PII.
fn hostile_text(v: &Value, at: &str) -> Option<String> {
    let here = || if at.is_empty() { "body".to_string() } else { at.to_string() };
    match v {
        Value::String(s) => has_forbidden_char(s, true).then(here),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| hostile_text(item, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if has_forbidden_char(key, false) {
                return Some(here());
            }
            hostile_text(item, &if at.is_empty() { key.clone() } else { format!("{at}.{key}") })
        }),
        _ => None,
    }
}

/// A query-string parameter (as `lambda_http` decoded it: `%00` is a NUL by now), refused
/// with a 422 naming it when any parameter of the request holds a hostile character
/// (`guest::forbidden_char`; one with such a name is refused as `query`). Every route that
/// reads the query string reads it through here.
pub fn query_param<'r>(req: &'r Request, name: &str) -> Result<Option<&'r str>, Problem> {
    let Some(params) = req.query_string_parameters_ref() else { return Ok(None) };
    for (key, value) in params.iter() {
        if has_forbidden_char(key, false) {
            return Err(Problem::validation("query", "parameter names must be plain text"));
        }
        if has_forbidden_char(value, false) {
            return Err(Problem::validation(key, HOSTILE_TEXT));
        }
    }
    Ok(params.first(name))
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

/// The API Gateway HTTP API (payload v2) event that Lambda would receive for a request, as the
/// typed `aws_lambda_events` struct, so the compiler checks its shape (no hand-written JSON).
/// Built by the local gateway (`cli/src/gateway.rs`), the tests and the holds benchmark.
///
/// `sub` becomes the JWT authorizer's claims (what `caller` and `identity::caller` read): the
/// dev-token form `<subject>[;groups=<g1>,<g2>…]` gives `sub=<subject>` and, when groups are
/// given, `groups=[<g1> <g2>]` — the way API Gateway flattens an array claim such as
/// `cognito:groups`. `None` leaves the authorizer out, as for a route without one. Headers are
/// lower-cased by `HeaderMap`; a header sent more than once is folded into one comma-separated
/// value, as API Gateway does for payload v2 (the event carries one value per name); a value
/// that is not ASCII travels as its UTF-8 text (the event is JSON: a value that is not UTF-8
/// cannot be carried, and `lambda_request` refuses it). The body is byte-exact: text for a
/// text media type ([`is_text_media_type`]) holding UTF-8, otherwise base64 with
/// `isBase64Encoded: true` (binary media types, a missing content type, or bytes that are not
/// UTF-8), which `lambda_http` decodes back into the same bytes.
pub fn apigw_v2_http_request(
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: impl AsRef<[u8]>,
    sub: Option<&str>,
) -> ApiGatewayV2httpRequest {
    let now = chrono::Utc::now();

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = method;
    http.path = Some(path.to_string());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some("127.0.0.1".into());
    http.user_agent =
        Some(headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string());

    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.account_id = Some("000000000000".into());
    ctx.apiid = Some("local".into());
    ctx.domain_name = Some("127.0.0.1".into());
    ctx.domain_prefix = Some("local".into());
    ctx.http = http;
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.route_key = Some("$default".into());
    ctx.stage = Some("$default".into());
    ctx.time = Some(now.format("%d/%b/%Y:%H:%M:%S +0000").to_string());
    ctx.time_epoch = now.timestamp_millis();
    ctx.authorizer = sub.map(|token| {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        let (sub, groups) = match token.split_once(";groups=") {
            Some((sub, groups)) => (sub, Some(groups)),
            None => (token, None),
        };
        jwt.claims.insert("sub".into(), sub.trim().to_string());
        if let Some(groups) = groups {
            let list: Vec<&str> = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            jwt.claims.insert("groups".into(), format!("[{}]", list.join(" ")));
        }
        let mut auth = ApiGatewayRequestAuthorizer::default();
        auth.jwt = Some(jwt);
        auth
    });

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some("$default".into());
    event.raw_path = Some(path.to_string());
    event.raw_query_string = Some(query.to_string());
    event.headers = fold_repeated_headers(headers);
    event.request_context = ctx;
    let (body, is_base64_encoded) = event_body(headers, body.as_ref());
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;
    event
}

/// Whether API Gateway (HTTP API, payload 2.0) hands a body of this `Content-Type` to Lambda as
/// text. AWS documents only that a binary content type's body is base64-encoded, not which
/// types are binary; the split observed against AWS (reported with ministackorg/ministack PR
/// 766) is: text for `text/*`, `application/json`, `application/xml` and
/// `application/javascript` (parameters such as `charset` aside), binary for everything else,
/// a missing content type and `application/x-www-form-urlencoded` included. See
/// docs/testing.md, "Hostile input".
pub fn is_text_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(essence.as_str(), "application/json" | "application/xml" | "application/javascript")
}

/// The event's `body` and `isBase64Encoded` for the bytes a client sent: none for an empty
/// body, text for UTF-8 under a text media type, base64 for anything else (the JSON event
/// cannot carry bytes that are not UTF-8 as text, and replacing them would change the request).
fn event_body(headers: &HeaderMap, body: &[u8]) -> (Option<String>, bool) {
    if body.is_empty() {
        return (None, false);
    }
    let text_type = is_text_media_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()));
    match std::str::from_utf8(body) {
        Ok(text) if text_type => (Some(text.to_owned()), false),
        _ => (Some(base64::engine::general_purpose::STANDARD.encode(body)), true),
    }
}

/// One value per header name, repeated values joined with `,` (API Gateway payload v2). The
/// event serializer keeps only a header's first value, so the folding must happen here.
fn fold_repeated_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let mut joined = first.as_bytes().to_vec();
        for v in values {
            joined.push(b',');
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            out.insert(name.clone(), v);
        }
    }
    out
}

/// The `lambda_http::Request` a function's handler gets for `event`, built as the Lambda
/// runtime builds it: the event as JSON (the invoke payload), deserialized by `lambda_http`
/// (its `LambdaRequest` payload detection) and converted into an `http::Request`. Going through
/// JSON also proves the typed event serializes into something `lambda_http` accepts.
pub fn lambda_request(event: &ApiGatewayV2httpRequest) -> Result<Request, InvalidEvent> {
    let payload = serde_json::to_string(event).map_err(|e| InvalidEvent(format!("serialize: {e}")))?;
    // lambda_http unwraps its URL parse (a host or scheme header that is not one panics): an
    // error here, not a dead connection in the local gateway.
    std::panic::catch_unwind(|| lambda_http::request::from_str(&payload))
        .map_err(|_| InvalidEvent("lambda_http panicked on it".into()))?
        .map_err(|e| InvalidEvent(format!("lambda_http refused it: {e}")))
}

/// A request that cannot be expressed as an API Gateway v2 event (bad method or header, or an
/// event `lambda_http` refuses).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid API Gateway v2 event: {0}")]
pub struct InvalidEvent(pub String);

/// The same event as JSON, for callers that hand the payload to `lambda_http::request::from_str`
/// themselves (the holds benchmark). `Value::Null` if the method or a header is invalid, which
/// `from_str` refuses like any other malformed event.
pub fn apigw_v2_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: impl AsRef<[u8]>,
    sub: Option<&str>,
) -> Value {
    typed_event(method, path, query, headers, body, sub)
        .and_then(|e| serde_json::to_value(e).map_err(|e| InvalidEvent(e.to_string())))
        .unwrap_or(Value::Null)
}

fn typed_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: impl AsRef<[u8]>,
    sub: Option<&str>,
) -> Result<ApiGatewayV2httpRequest, InvalidEvent> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| InvalidEvent(format!("method: {e}")))?;
    let mut map = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| InvalidEvent(format!("header {k:?}: {e}")))?;
        let value = HeaderValue::from_str(v).map_err(|e| InvalidEvent(format!("header {k:?}: {e}")))?;
        map.append(name, value);
    }
    Ok(apigw_v2_http_request(method, path, query, &map, body, sub))
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

    fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    /// Found by schemathesis: `POST /bookings/{id}/cancel` with the body `[]` cancelled.
    #[test]
    fn a_body_that_is_not_an_object_is_refused_even_where_serde_would_take_it() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Quote {
            party_size: u16,
            start: String,
        }
        for body in ["[]", "[2, \"2030-01-01T19:00:00Z\"]", "2", "\"x\"", "null", "true"] {
            let e = parse_json::<Quote>(body.as_bytes()).expect_err(body);
            assert_eq!((e.status, e.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("body")), "{body}");
            let e = parse_optional_json::<Empty>(body.as_bytes()).expect_err(body);
            assert_eq!(e.field.as_deref(), Some("body"), "{body}");
        }
        assert!(parse_optional_json::<Empty>(b"{}").is_ok() && parse_optional_json::<Empty>(b"").is_ok());
    }

    #[test]
    fn dev_tokens_carry_groups_as_api_gateway_flattens_them() {
        let r = format!("restaurant:{}:staff", uuid::Uuid::nil());
        let token = format!("Olga;groups=holdfast-ops, {r}");
        let event = apigw_v2_http_request(Method::GET, "/flags/matrix", "", &HeaderMap::new(), "", Some(&token));
        let req = lambda_request(&event).expect("request");
        let who = crate::identity::caller(&req).expect("caller");
        assert_eq!(who.subject.as_str(), "olga", "subjects are case-folded");
        assert!(who.roles.ops && !who.roles.flag_approver);
        assert_eq!(who.roles.staff_of.len(), 1);
        let plain = apigw_v2_http_request(Method::GET, "/x", "", &HeaderMap::new(), "", Some("ada"));
        let who = crate::identity::caller(&lambda_request(&plain).expect("request")).expect("caller");
        assert_eq!(who.roles, holdfast_shared::auth::Roles::default());
    }

    #[test]
    fn typed_event_becomes_the_request_lambda_http_builds() {
        let headers = hdrs(&[("Content-Type", "application/json"), ("Idempotency-Key", "k-1"), ("user-agent", "t/1")]);
        let event =
            apigw_v2_http_request(Method::POST, "/holds/h1/confirm", "a=1&b=2", &headers, r#"{"x":1}"#, Some("ada"));
        let req = lambda_request(&event).expect("lambda_http accepts the event");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/holds/h1/confirm");
        assert_eq!(req.uri().query(), Some("a=1&b=2"));
        assert_eq!(req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()), Some("k-1"));
        assert_eq!(body_bytes(&req), br#"{"x":1}"#);
        assert_eq!(caller(&req).as_deref(), Some("ada"));
        assert!(request_id(&req).is_some_and(|id| !id.is_empty()));
        match req.request_context_ref() {
            Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => {
                assert_eq!(c.http.user_agent.as_deref(), Some("t/1"));
                assert_eq!(c.stage.as_deref(), Some("$default"));
            }
            _ => panic!("an API Gateway v2 request context"),
        }
    }

    #[test]
    fn without_a_subject_there_is_no_authorizer_and_no_caller() {
        let event = apigw_v2_http_request(Method::GET, "/flags", "", &HeaderMap::new(), "", None);
        assert!(event.request_context.authorizer.is_none());
        let req = lambda_request(&event).expect("valid");
        assert_eq!(caller(&req), None);
    }

    #[test]
    fn repeated_headers_are_folded_into_one_value() {
        let event = apigw_v2_http_request(Method::GET, "/", "", &hdrs(&[("x-a", "1"), ("X-A", "2")]), "", None);
        assert_eq!(event.headers.get_all("x-a").iter().collect::<Vec<_>>(), vec!["1,2"]);
    }

    #[test]
    fn json_event_is_the_typed_event() {
        let headers = [("content-type".to_string(), "application/json".to_string())];
        let json = apigw_v2_event("POST", "/holds", "", &headers, "{}", Some("bench"));
        assert_eq!(json["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "bench");
        assert_eq!((json["version"].as_str(), json["isBase64Encoded"].as_bool()), (Some("2.0"), Some(false)));
        let req = lambda_http::request::from_str(&json.to_string()).expect("lambda_http accepts it");
        assert_eq!(caller(&req).as_deref(), Some("bench"));
        assert_eq!(apigw_v2_event("BAD METHOD", "/", "", &[], "", None), Value::Null);
        assert!(lambda_http::request::from_str(&Value::Null.to_string()).is_err());
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
        assert_eq!((p.status.as_u16(), p.code, p.field.as_deref()), (400, "malformed_json", Some("body")));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let p = parse_json::<Body1>(&big).expect_err("big");
        assert_eq!((p.status.as_u16(), p.field.as_deref()), (413, Some("body")));
        let p = parse_json::<Body1>(br#"{"party_size":2,"party_size":3}"#).expect_err("duplicate");
        assert_eq!(p.field.as_deref(), Some("party_size"));
        let p = parse_json::<Body1>(br#"{"party_size":2,"inner":{"name":"a","name":"b"}}"#).expect_err("duplicate");
        assert_eq!(p.field.as_deref(), Some("inner.name"));
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
    fn the_event_carries_the_body_byte_exact_as_api_gateway_does() {
        let json_ct = hdrs(&[("content-type", "application/json; charset=utf-8")]);
        let cases: [(&HeaderMap, &[u8], bool); 6] = [
            (&json_ct, br#"{"name":"Ada"}"#, false),
            (&json_ct, b"{\"name\":\"Ada\xff\"}", true),
            (&hdrs(&[("content-type", "application/octet-stream")]), b"\x00\x01", true),
            (&hdrs(&[("content-type", "application/x-www-form-urlencoded")]), b"a=1", true),
            (&HeaderMap::new(), b"{}", true),
            (&hdrs(&[("content-type", "text/plain")]), "clé".as_bytes(), false),
        ];
        for (headers, body, base64) in cases {
            let event = apigw_v2_http_request(Method::POST, "/holds", "", headers, body, Some("ada"));
            assert_eq!(event.is_base64_encoded, base64, "{body:?}");
            let req = lambda_request(&event).expect("lambda_http accepts it");
            assert_eq!(body_bytes(&req), body, "lambda_http hands the function the bytes that were sent");
        }
        let empty = apigw_v2_http_request(Method::GET, "/holds", "", &json_ct, "", Some("ada"));
        assert_eq!((empty.body, empty.is_base64_encoded), (None, false));
        assert!(is_text_media_type(Some("TEXT/html")) && is_text_media_type(Some("application/xml")));
        assert!(!is_text_media_type(Some("application/vnd.api+json")) && !is_text_media_type(None));
    }

    #[test]
    fn utf8_headers_pass_as_sent_and_others_cannot_be_carried() {
        let utf8 = hdrs(&[("idempotency-key", "clé")]);
        let req = lambda_request(&apigw_v2_http_request(Method::POST, "/holds", "", &utf8, "", Some("ada")))
            .expect("a UTF-8 header fits the event");
        assert_eq!(req.headers().get("idempotency-key").map(|v| v.as_bytes()), Some("clé".as_bytes()));
        let mut latin1 = HeaderMap::new();
        latin1.insert("idempotency-key", HeaderValue::from_bytes(b"cl\xe9").expect("obs-text"));
        let event = apigw_v2_http_request(Method::POST, "/holds", "", &latin1, "", Some("ada"));
        assert!(lambda_request(&event).is_err(), "JSON cannot carry it: the caller must refuse it");
    }

    #[test]
    fn hostile_text_anywhere_in_a_body_is_refused_naming_where() {
        let cases = [
            (r#"{"party_size":2,"inner":{"name":"Ada\u0000"}}"#, "inner.name"),
            (r#"{"party_size":2,"inner":{"name":"Ada\u001b[31m"}}"#, "inner.name"),
            ("{\"party_size\":2,\"inner\":{\"name\":\"Ada\u{202E}\"}}", "inner.name"),
            (r#"{"list":[{"x":"ok"},{"x":"\u2066"}]}"#, "list[1].x"),
            (r#"{"na\u0007me":1}"#, "body"),
            (r#""\u0000""#, "body"),
        ];
        for (body, field) in cases {
            let p = parse_json::<Value>(body.as_bytes()).expect_err(body);
            assert_eq!(
                (p.status.as_u16(), p.code, p.field.as_deref()),
                (422, "validation_failed", Some(field)),
                "{body}"
            );
            assert!(!p.message.contains("Ada"));
        }
        // Lines are the field parsers' business (notes may span them, names may not).
        assert!(parse_json::<Value>(br#"{"notes":"a\nb\tc"}"#).is_ok());
        let p = parse_json::<Value>(b"{\"name\":\"Ada\xff\"}").expect_err("not UTF-8");
        assert_eq!((p.status.as_u16(), p.field.as_deref()), (400, Some("body")));
        let p = parse_json::<Value>(b"\xef\xbb\xbf{}").expect_err("a byte-order mark is not JSON");
        assert_eq!((p.status.as_u16(), p.field.as_deref()), (400, Some("body")));
    }

    #[test]
    fn query_parameters_are_refused_when_hostile_naming_the_parameter() {
        let get = |query: &str| {
            let event = apigw_v2_http_request(Method::GET, "/flags/audit", query, &HeaderMap::new(), "", Some("o"));
            lambda_request(&event).expect("request")
        };
        assert_eq!(
            query_param(&get("flag=holds.ttlSeconds&limit=5"), "flag").expect("plain"),
            Some("holds.ttlSeconds")
        );
        assert_eq!(query_param(&get(""), "flag").expect("none"), None);
        for (query, field) in
            [("flag=%00", "flag"), ("limit=5&x=a%1Bb", "x"), ("flag=%E2%80%AE", "flag"), ("a%00=1", "query")]
        {
            let p = query_param(&get(query), "flag").expect_err(query);
            assert_eq!((p.status.as_u16(), p.field.as_deref()), (422, Some(field)), "{query}");
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
