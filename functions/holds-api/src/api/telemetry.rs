//! What every holds API request gets for its log lines and its caller (docs/observability.md):
//! its correlation id (the caller's `X-Correlation-Id` if it parses, else a minted one; the
//! booking's once a use case adopts it), the invocation span that carries it, the
//! `X-Correlation-Id` response header, and one `request` line.

use super::ROUTES;
use holdfast_adapters::http::Problem;
use holdfast_adapters::routes::{self, Found};
use holdfast_shared::correlation::CorrelationId;
use lambda_http::http::header::HeaderValue;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use std::time::Instant;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The caller's `X-Correlation-Id`.
pub(super) enum Given {
    Absent,
    Id(CorrelationId),
    /// Present but not an id (see `holdfast_shared::correlation`): a known route answers 400.
    Refused,
}

impl Given {
    pub fn of(req: &Request) -> Given {
        match req.headers().get(CORRELATION_HEADER) {
            None => Given::Absent,
            Some(v) => match v.to_str().ok().map(CorrelationId::parse) {
                Some(Ok(id)) => Given::Id(id),
                _ => Given::Refused,
            },
        }
    }

    /// The request's id to start with: the caller's, or a fresh one.
    pub fn or_mint(&self) -> CorrelationId {
        match self {
            Given::Id(id) => id.clone(),
            Given::Absent | Given::Refused => CorrelationId::mint(),
        }
    }

    /// The 400 for a refused header (the value is not echoed: it may be anything).
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Given::Refused => Some(Problem::validation(
                "X-Correlation-Id",
                "must be 8 to 64 characters of letters, digits and - _ . : with at least one letter",
            )),
            Given::Absent | Given::Id(_) => None,
        }
    }
}

/// Every answer says which correlation id its lines, events and emails carry.
pub(super) fn set_header(resp: &mut Response<Body>, id: &CorrelationId) {
    // A parsed id is visible ASCII: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(CORRELATION_HEADER, v);
    }
}

/// One line per request: the method, the route's template (never the raw path, which is
/// caller input), the status and the time taken.
pub(super) fn log_request(req: &Request, status: StatusCode, started: Instant) {
    let route = match routes::find(ROUTES, req.method(), req.uri().path()) {
        Found::Route(op, _) => ROUTES.iter().find(|r| r.op == op).map(|r| r.path),
        Found::MethodNotAllowed(_) | Found::NotFound => None,
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let method = req.method().as_str();
    tracing::info!(method, route = route.unwrap_or("unmatched"), status = status.as_u16(), duration_ms, "request");
}
