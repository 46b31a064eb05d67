//! HTTP routing for the flag approver (API Gateway HTTP API payload v2 behind a JWT
//! authorizer, or the local gateway). The only layer that knows HTTP: it parses requests
//! (`request`), calls a use case and maps every error (`problem`). The actor is always the
//! authorizer's identity (`identity::caller`: subject and groups); request bodies refuse unknown
//! fields, so a body cannot claim an actor. Every route asks `auth::authorize` once, here,
//! before anything else: no identity is 401, a caller without the route's role (a guest) is 403.

#[cfg(test)]
mod fuzz;
mod problem;
mod request;

pub use problem::SSM_RETRY_AFTER_SECS;
pub use request::MAX_REASON_CHARS;

use crate::error::ApproverError;
use crate::service::{Caller, FlagApprover};
use crate::store::AUDIT_DEFAULT_LIMIT;
use holdfast_adapters::http::{self, Problem};
use holdfast_adapters::routes::{self, Found, Route};
use holdfast_shared::auth::{self, Action, Decision, Resource, FLAG_APPROVERS_GROUP, OPS_GROUP};
use holdfast_shared::flags::Actor;
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use request::{audit_query, optional_body, proposal_id, reason, ApplyBody, ProposeBody, ReasonBody, RejectBody};
use serde_json::Value;

/// What a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Propose,
    ReadProposal,
    Approve,
    Reject,
    Apply,
    BreakGlass,
    ListReviews,
    AcknowledgeReview,
    ReadAudit,
    ReadMatrix,
}

impl Op {
    /// The authorization table's action for this route.
    fn action(self) -> Action {
        match self {
            Op::Propose => Action::FlagPropose,
            Op::ReadProposal | Op::ListReviews => Action::FlagReadProposal,
            Op::Approve => Action::FlagApprove,
            Op::Reject => Action::FlagReject,
            Op::Apply => Action::FlagApply,
            Op::BreakGlass => Action::FlagBreakGlass,
            Op::AcknowledgeReview => Action::FlagAcknowledgeReview,
            Op::ReadAudit => Action::FlagReadAudit,
            Op::ReadMatrix => Action::FlagReadMatrix,
        }
    }
}

/// Every route of the flag approver, spelled as `docs/api/flags.openapi.yaml` spells it (the
/// contract test compares the two). The router dispatches through this table only.
pub const ROUTES: &[Route<Op>] = &[
    Route { method: "POST", path: "/flags/proposals", op: Op::Propose },
    Route { method: "GET", path: "/flags/proposals/{id}", op: Op::ReadProposal },
    Route { method: "POST", path: "/flags/proposals/{id}/approve", op: Op::Approve },
    Route { method: "POST", path: "/flags/proposals/{id}/reject", op: Op::Reject },
    Route { method: "POST", path: "/flags/proposals/{id}/apply", op: Op::Apply },
    Route { method: "POST", path: "/flags/break-glass", op: Op::BreakGlass },
    Route { method: "GET", path: "/flags/reviews", op: Op::ListReviews },
    Route { method: "POST", path: "/flags/reviews/{id}/acknowledge", op: Op::AcknowledgeReview },
    Route { method: "GET", path: "/flags/audit", op: Op::ReadAudit },
    Route { method: "GET", path: "/flags/matrix", op: Op::ReadMatrix },
];

/// Unknown path 404, known path with another method 405 (with `Allow`), then identity and
/// role, then the route itself.
pub async fn handle(svc: &FlagApprover, req: Request) -> Response<Body> {
    let (op, id) = match routes::find(ROUTES, req.method(), req.uri().path()) {
        Found::Route(op, params) => (op, params.first().copied().unwrap_or("")),
        Found::MethodNotAllowed(allow) => return routes::method_not_allowed(req.method(), &allow),
        Found::NotFound => return no_such_route().into_response(),
    };
    match route(svc, &req, op, id).await {
        Ok((status, body)) => {
            let mut resp = http::json_response(status, &body);
            if status == StatusCode::CREATED {
                if let Some(loc) =
                    body["id"].as_str().and_then(|id| HeaderValue::from_str(&format!("/flags/proposals/{id}")).ok())
                {
                    resp.headers_mut().insert(header::LOCATION, loc);
                }
            }
            resp
        }
        Err(p) => p.into_response(),
    }
}

/// The caller, authorized for `action` on the flags surface: the one place the flag routes
/// ask [`auth::authorize`].
fn authorized(req: &Request, action: Action) -> Result<Caller, ApproverError> {
    let caller = holdfast_adapters::identity::caller(req).ok_or(ApproverError::Unauthenticated)?;
    match auth::authorize(&caller, action, &Resource::Flags) {
        Decision::Allow => {}
        Decision::NotFound => return Err(ApproverError::NotFound),
        Decision::Forbidden => {
            let needs = match action {
                Action::FlagApprove => FLAG_APPROVERS_GROUP,
                Action::FlagReadProposal | Action::FlagApply | Action::FlagAcknowledgeReview => {
                    "holdfast-ops or holdfast-flag-approvers"
                }
                _ => OPS_GROUP,
            };
            return Err(ApproverError::Forbidden { needs });
        }
    }
    Ok(Caller { actor: Actor::of_subject(&caller.subject), request_id: http::request_id(req) })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn no_such_route() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Every route needs an identity (the audit trail names people) and the route's role.
async fn route(svc: &FlagApprover, req: &Request, op: Op, id: &str) -> Result<(StatusCode, Value), Problem> {
    let who = authorized(req, op.action()).map_err(problem::from)?;
    dispatch(svc, req, op, id, &who).await
}

/// Parses the request of an authorized route, calls its use case and picks the status; `id`
/// is the route's path parameter (empty if none).
async fn dispatch(
    svc: &FlagApprover,
    req: &Request,
    op: Op,
    id: &str,
    who: &Caller,
) -> Result<(StatusCode, Value), Problem> {
    match op {
        Op::Propose => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req))?;
            let view = svc.propose(who, body.into_input()?).await.map_err(problem::from)?;
            Ok((StatusCode::CREATED, json(&view)))
        }
        Op::BreakGlass => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req))?;
            let view = svc.break_glass(who, body.into_input()?).await.map_err(problem::from)?;
            Ok((StatusCode::CREATED, json(&view)))
        }
        Op::ReadProposal => Ok((StatusCode::OK, json(&svc.get(proposal_id(id)?).await.map_err(problem::from)?))),
        Op::ListReviews => {
            let open_only = request::reviews_open_only(req)?;
            let reviews = svc.reviews(open_only, AUDIT_DEFAULT_LIMIT).await.map_err(problem::from)?;
            Ok((StatusCode::OK, serde_json::json!({ "reviews": reviews })))
        }
        Op::Approve => {
            let id = proposal_id(id)?;
            let why = optional_body::<ReasonBody>(req)?.into_reason()?;
            Ok((StatusCode::OK, json(&svc.approve(who, id, why).await.map_err(problem::from)?)))
        }
        Op::Reject => {
            let id = proposal_id(id)?;
            let body: RejectBody = http::parse_json(http::body_bytes(req))?;
            let why = reason(&body.reason, "reason")?;
            Ok((StatusCode::OK, json(&svc.reject(who, id, why).await.map_err(problem::from)?)))
        }
        Op::Apply => {
            let id = proposal_id(id)?;
            let _: ApplyBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.apply(who, id).await.map_err(problem::from)?)))
        }
        Op::AcknowledgeReview => {
            let id = proposal_id(id)?;
            let note = optional_body::<ReasonBody>(req)?.into_reason()?;
            Ok((StatusCode::OK, json(&svc.acknowledge(who, id, note).await.map_err(problem::from)?)))
        }
        Op::ReadAudit => {
            let q = audit_query(req)?;
            let rows = svc.audit(&q).await.map_err(problem::from)?;
            let next = if rows.len() as i64 == q.limit { rows.last().map(|r| r.id) } else { None };
            Ok((StatusCode::OK, serde_json::json!({ "entries": rows, "next_before": next })))
        }
        Op::ReadMatrix => Ok((StatusCode::OK, json(&svc.matrix().await))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::Method;

    #[test]
    fn every_route_maps_to_one_action_and_other_methods_to_405() {
        let id = "00000000-0000-0000-0000-000000000001";
        let cases: [(Method, String, Action); 10] = [
            (Method::POST, "/flags/proposals".into(), Action::FlagPropose),
            (Method::GET, format!("/flags/proposals/{id}"), Action::FlagReadProposal),
            (Method::POST, format!("/flags/proposals/{id}/approve"), Action::FlagApprove),
            (Method::POST, format!("/flags/proposals/{id}/reject"), Action::FlagReject),
            (Method::POST, format!("/flags/proposals/{id}/apply"), Action::FlagApply),
            (Method::POST, "/flags/break-glass".into(), Action::FlagBreakGlass),
            (Method::GET, "/flags/reviews".into(), Action::FlagReadProposal),
            (Method::POST, format!("/flags/reviews/{id}/acknowledge"), Action::FlagAcknowledgeReview),
            (Method::GET, "/flags/audit".into(), Action::FlagReadAudit),
            (Method::GET, "/flags/matrix".into(), Action::FlagReadMatrix),
        ];
        assert_eq!(cases.len(), ROUTES.len());
        for (method, path, want) in cases {
            match routes::find(ROUTES, &method, &path) {
                Found::Route(op, params) => {
                    assert_eq!(op.action(), want, "{method} {path}");
                    assert_eq!(params.first().copied().unwrap_or(id), id, "{method} {path}");
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        }
        assert_eq!(routes::find(ROUTES, &Method::GET, "/flags/proposals"), Found::MethodNotAllowed("POST".into()));
        let one = format!("/flags/proposals/{id}");
        assert_eq!(routes::find(ROUTES, &Method::DELETE, &one), Found::MethodNotAllowed("GET".into()));
        assert_eq!(routes::find(ROUTES, &Method::GET, "/flags/nope"), Found::NotFound);
    }
}
