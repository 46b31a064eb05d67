//! HTTP routing for the holds API (API Gateway HTTP API payload v2, or the local server).

use crate::error::HoldsError;
use crate::service::{HoldsService, Idempotency};
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::ids::{HoldId, RestaurantId};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use sha2::{Digest, Sha256};
use std::str::FromStr;

pub async fn handle(svc: &HoldsService, req: Request) -> Response<Body> {
    match route(svc, &req).await {
        Ok((status, body)) => http::json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), &body),
        Err(e) => e.into_problem().into_response(),
    }
}

fn path_id<T: FromStr>(raw: &str, field: &'static str) -> Result<T, HoldsError> {
    T::from_str(raw).map_err(|_| {
        HoldsError::Invalid(Problem::new(StatusCode::BAD_REQUEST, "validation_failed", "must be a UUID").field(field))
    })
}

fn idempotency(req: &Request, scope: &str) -> Result<Option<Idempotency>, HoldsError> {
    let Some(v) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > 200 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(HoldsError::Invalid(Problem::validation(
            "Idempotency-Key",
            "must be 1 to 200 printable ASCII characters",
        )));
    }
    let caller = http::caller(req).unwrap_or_else(|| "anonymous".into());
    let mut h = Sha256::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b" ");
    h.update(req.uri().path().as_bytes());
    h.update(b"\n");
    h.update(http::body_bytes(req));
    Ok(Some(Idempotency {
        scope: format!("{scope}|{caller}"),
        key: key.to_string(),
        request_hash: format!("{:x}", h.finalize()),
    }))
}

async fn route(svc: &HoldsService, req: &Request) -> Result<(u16, serde_json::Value), HoldsError> {
    let path = req.uri().path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method();
    match segs.as_slice() {
        ["restaurants", id, "quotes"] if method == Method::POST => {
            let restaurant: RestaurantId = path_id(id, "restaurant_id")?;
            let body = http::parse_json(http::body_bytes(req)).map_err(HoldsError::Invalid)?;
            svc.quote(restaurant, body).await
        }
        ["holds"] if method == Method::POST => {
            let body = http::parse_json(http::body_bytes(req)).map_err(HoldsError::Invalid)?;
            let idem = idempotency(req, "POST /holds")?;
            svc.hold(body, idem).await
        }
        ["holds", id] if method == Method::GET => svc.get(path_id::<HoldId>(id, "hold_id")?).await,
        ["holds", id] if method == Method::DELETE => svc.release(path_id::<HoldId>(id, "hold_id")?).await,
        ["holds", id, "confirm"] if method == Method::POST => {
            let hold: HoldId = path_id(id, "hold_id")?;
            let body = http::parse_json(http::body_bytes(req)).map_err(HoldsError::Invalid)?;
            let idem = idempotency(req, "POST /holds/{id}/confirm")?;
            svc.confirm(hold, body, idem).await
        }
        ["restaurants", _, "quotes"] | ["holds"] | ["holds", _] | ["holds", _, "confirm"] => Err(HoldsError::Invalid(
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed here")),
        )),
        _ => Err(HoldsError::Invalid(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route"))),
    }
}
