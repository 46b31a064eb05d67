//! HTTP routing for the holds API (API Gateway HTTP API payload v2, or the local server). The
//! only layer that knows HTTP: it parses requests, calls a use case and picks the status code
//! and body for its typed outcome (`problem` maps every error).

mod problem;
mod telemetry;

pub use telemetry::CORRELATION_HEADER;

use crate::idempotency::Idempotency;
use crate::outcome::Reply;
use crate::service::HoldsService;
use holdfast_adapters::http::{self, Problem};
use holdfast_adapters::identity;
use holdfast_adapters::routes::{self, Found, Route};
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::auth::Caller;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use telemetry::Given;
use tracing::Instrument;

/// What a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Quote,
    Hold,
    ReadHold,
    ReleaseHold,
    Confirm,
    RequestBooking,
    ReadBooking,
    ChangeBooking,
    CancelBooking,
}

/// Every route of the holds API, spelled as `docs/api/holds.openapi.yaml` spells it (the
/// contract test compares the two). The router dispatches through this table only.
pub const ROUTES: &[Route<Op>] = &[
    Route { method: "POST", path: "/restaurants/{restaurantId}/quotes", op: Op::Quote },
    Route { method: "POST", path: "/holds", op: Op::Hold },
    Route { method: "GET", path: "/holds/{holdId}", op: Op::ReadHold },
    Route { method: "DELETE", path: "/holds/{holdId}", op: Op::ReleaseHold },
    Route { method: "POST", path: "/holds/{holdId}/confirm", op: Op::Confirm },
    Route { method: "POST", path: "/bookings", op: Op::RequestBooking },
    Route { method: "GET", path: "/bookings/{bookingId}", op: Op::ReadBooking },
    Route { method: "PATCH", path: "/bookings/{bookingId}", op: Op::ChangeBooking },
    Route { method: "POST", path: "/bookings/{bookingId}/cancel", op: Op::CancelBooking },
];

/// One request, in its invocation's span (docs/observability.md): every line carries the
/// request's correlation id, and the answer says it in `X-Correlation-Id`.
pub async fn handle(svc: &HoldsService, req: Request) -> Response<Body> {
    let started = std::time::Instant::now();
    let given = Given::of(&req);
    let id = given.or_mint();
    let span = svc.telemetry().invocation(req.lambda_context_ref(), Some(&id));
    let corr = Correlation::new(id, span.clone());
    let mut resp = async {
        let resp = match route(svc, &req, &given, &corr).await {
            Ok(resp) => resp,
            Err(p) => p.into_response(),
        };
        telemetry::log_request(&req, resp.status(), started);
        resp
    }
    .instrument(span)
    .await;
    telemetry::set_header(&mut resp, &corr.id());
    resp
}

async fn route(
    svc: &HoldsService,
    req: &Request,
    given: &Given,
    corr: &Correlation,
) -> Result<Response<Body>, Problem> {
    let found = routes::find(ROUTES, req.method(), req.uri().path());
    // Deny by default: every route needs the authorizer's identity (the gateway refuses a
    // request without one first; this is the function checking again).
    let caller = match identity::caller(req) {
        Some(c) => c,
        None if found.is_known_path() => {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first"))
        }
        None => return Err(no_such_route()),
    };
    match found {
        Found::Route(op, params) => {
            if let Some(refused) = given.problem() {
                return Err(refused);
            }
            dispatch(svc, req, (&caller, corr), op, params.first().copied().unwrap_or("")).await
        }
        Found::MethodNotAllowed(allow) => Ok(routes::method_not_allowed(req.method(), &allow)),
        Found::NotFound => Err(no_such_route()),
    }
}

fn no_such_route() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Runs `op` for an identified caller; `id` is the route's path parameter (empty if none).
async fn dispatch(
    svc: &HoldsService,
    req: &Request,
    (who, corr): (&Caller, &Correlation),
    op: Op,
    id: &str,
) -> Result<Response<Body>, Problem> {
    match op {
        Op::Quote => {
            let restaurant: RestaurantId = path_id(id, "restaurant_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            Ok(ok(StatusCode::OK, &svc.quote(who, restaurant, body, corr).await.map_err(problem::from)?))
        }
        Op::Hold => {
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /holds", StatusCode::CREATED)?;
            Ok(reply(StatusCode::CREATED, svc.hold(who, body, idem, corr).await.map_err(problem::from)?))
        }
        Op::ReadHold => {
            let view = svc.get(who, path_id::<HoldId>(id, "hold_id")?, corr).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &view))
        }
        Op::ReleaseHold => {
            let released = svc.release(who, path_id::<HoldId>(id, "hold_id")?, corr).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &released))
        }
        Op::Confirm => {
            let hold: HoldId = path_id(id, "hold_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /holds/{id}/confirm", StatusCode::OK)?;
            Ok(reply(StatusCode::OK, svc.confirm(who, hold, body, idem, corr).await.map_err(problem::from)?))
        }
        Op::RequestBooking => {
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /bookings", StatusCode::CREATED)?;
            Ok(reply(StatusCode::CREATED, svc.request_booking(who, body, idem, corr).await.map_err(problem::from)?))
        }
        Op::ReadBooking => {
            let view = svc.booking(who, path_id::<BookingId>(id, "booking_id")?, corr).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &view))
        }
        Op::ChangeBooking => {
            let id: BookingId = path_id(id, "booking_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            Ok(ok(StatusCode::OK, &svc.change_booking(who, id, body, corr).await.map_err(problem::from)?))
        }
        Op::CancelBooking => {
            let id: BookingId = path_id(id, "booking_id")?;
            let _: crate::dto::CancelBody = http::parse_optional_json(http::body_bytes(req))?;
            Ok(ok(StatusCode::OK, &svc.cancel_booking(who, id, corr).await.map_err(problem::from)?))
        }
    }
}

fn ok<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    http::json_response(status, body)
}

/// A fresh outcome with the route's status; a replay exactly as first answered.
fn reply<T: Serialize>(status: StatusCode, r: Reply<T>) -> Response<Body> {
    match r {
        Reply::Fresh(body) => ok(status, &body),
        Reply::Replayed(first) => ok(StatusCode::from_u16(first.status).unwrap_or(status), &first.body),
    }
}

fn path_id<T: FromStr>(raw: &str, field: &'static str) -> Result<T, Problem> {
    T::from_str(raw)
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "validation_failed", "must be a UUID").field(field))
}

/// The Idempotency-Key header, scoped to the route and the caller, with a hash of the request.
fn idempotency(
    req: &Request,
    caller: &Caller,
    scope: &str,
    success: StatusCode,
) -> Result<Option<Idempotency>, Problem> {
    let Some(v) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > 200 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::validation("Idempotency-Key", "must be 1 to 200 printable ASCII characters"));
    }
    let mut h = Sha256::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b" ");
    h.update(req.uri().path().as_bytes());
    h.update(b"\n");
    h.update(http::body_bytes(req));
    Ok(Some(Idempotency {
        scope: format!("{scope}|{}", caller.subject),
        key: key.to_string(),
        request_hash: format!("{:x}", h.finalize()),
        success_status: success.as_u16(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::Method;

    /// Every entry is reachable: its own template (ids filled in) finds it and nothing else.
    #[test]
    fn every_route_in_the_table_is_found_by_its_own_path() {
        for (i, r) in ROUTES.iter().enumerate() {
            let path = r.path.replace("{restaurantId}", "r1").replace("{holdId}", "h1").replace("{bookingId}", "b1");
            let method = Method::from_bytes(r.method.as_bytes()).expect("method");
            // Each template has at most one parameter, always the second segment.
            let want: Vec<&str> = path.split('/').nth(2).filter(|_| r.path.contains('{')).into_iter().collect();
            assert_eq!(routes::find(ROUTES, &method, &path), Found::Route(r.op, want), "{} {}", r.method, r.path);
            let twins = ROUTES.iter().enumerate().filter(|(j, o)| *j != i && o.method == r.method && o.path == r.path);
            assert_eq!(twins.count(), 0, "{} {} is listed twice", r.method, r.path);
        }
        assert_eq!(routes::find(ROUTES, &Method::PUT, "/holds/h1"), Found::MethodNotAllowed("GET, DELETE".into()));
    }
}
