//! HTTP routing for the holds API (API Gateway HTTP API payload v2, or the local server). The
//! only layer that knows HTTP: it parses requests, calls a use case and picks the status code
//! and body for its typed outcome (`problem` maps every error).

mod problem;

use crate::idempotency::Idempotency;
use crate::outcome::Reply;
use crate::service::HoldsService;
use holdfast_adapters::http::{self, Problem};
use holdfast_adapters::identity;
use holdfast_shared::auth::Caller;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::str::FromStr;

pub async fn handle(svc: &HoldsService, req: Request) -> Response<Body> {
    match route(svc, &req).await {
        Ok(resp) => resp,
        Err(p) => p.into_response(),
    }
}

async fn route(svc: &HoldsService, req: &Request) -> Result<Response<Body>, Problem> {
    let path = req.uri().path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method();
    let known = matches!(
        segs.as_slice(),
        ["restaurants", _, "quotes"]
            | ["holds"]
            | ["holds", _]
            | ["holds", _, "confirm"]
            | ["bookings"]
            | ["bookings", _]
            | ["bookings", _, "cancel"]
    );
    // Deny by default: every route needs the authorizer's identity (the gateway refuses a
    // request without one first; this is the function checking again).
    let caller = match identity::caller(req) {
        Some(c) => c,
        None if known => return Err(Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first")),
        None => return Err(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")),
    };
    let who = &caller;
    match segs.as_slice() {
        ["restaurants", id, "quotes"] if method == Method::POST => {
            let restaurant: RestaurantId = path_id(id, "restaurant_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            Ok(ok(StatusCode::OK, &svc.quote(who, restaurant, body).await.map_err(problem::from)?))
        }
        ["holds"] if method == Method::POST => {
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /holds", StatusCode::CREATED)?;
            Ok(reply(StatusCode::CREATED, svc.hold(who, body, idem).await.map_err(problem::from)?))
        }
        ["holds", id] if method == Method::GET => {
            let view = svc.get(who, path_id::<HoldId>(id, "hold_id")?).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &view))
        }
        ["holds", id] if method == Method::DELETE => {
            let released = svc.release(who, path_id::<HoldId>(id, "hold_id")?).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &released))
        }
        ["holds", id, "confirm"] if method == Method::POST => {
            let hold: HoldId = path_id(id, "hold_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /holds/{id}/confirm", StatusCode::OK)?;
            Ok(reply(StatusCode::OK, svc.confirm(who, hold, body, idem).await.map_err(problem::from)?))
        }
        ["bookings"] if method == Method::POST => {
            let body = http::parse_json(http::body_bytes(req))?;
            let idem = idempotency(req, who, "POST /bookings", StatusCode::CREATED)?;
            Ok(reply(StatusCode::CREATED, svc.request_booking(who, body, idem).await.map_err(problem::from)?))
        }
        ["bookings", id] if method == Method::GET => {
            let view = svc.booking(who, path_id::<BookingId>(id, "booking_id")?).await.map_err(problem::from)?;
            Ok(ok(StatusCode::OK, &view))
        }
        ["bookings", id] if method == Method::PATCH => {
            let id: BookingId = path_id(id, "booking_id")?;
            let body = http::parse_json(http::body_bytes(req))?;
            Ok(ok(StatusCode::OK, &svc.change_booking(who, id, body).await.map_err(problem::from)?))
        }
        ["bookings", id, "cancel"] if method == Method::POST => {
            let id: BookingId = path_id(id, "booking_id")?;
            Ok(ok(StatusCode::OK, &svc.cancel_booking(who, id).await.map_err(problem::from)?))
        }
        _ if known => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )),
        _ => Err(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")),
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
