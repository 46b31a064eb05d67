//! HTTP routing for the flag approver (API Gateway HTTP API payload v2 behind a JWT
//! authorizer, or the local gateway). The only layer that knows HTTP: it parses requests
//! (`request`), calls a use case and maps every error (`problem`). The actor is always the
//! authorizer's identity (`identity::caller`: subject and groups); request bodies refuse unknown
//! fields, so a body cannot claim an actor. Every route asks `auth::authorize` once, here,
//! before anything else: no identity is 401, a caller without the route's role (a guest) is 403.

mod problem;
mod request;

pub use problem::SSM_RETRY_AFTER_SECS;
pub use request::MAX_REASON_CHARS;

use crate::error::ApproverError;
use crate::service::{Caller, FlagApprover};
use crate::store::AUDIT_DEFAULT_LIMIT;
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::auth::{self, Action, Decision, Resource, FLAG_APPROVERS_GROUP, OPS_GROUP};
use holdfast_shared::flags::Actor;
use lambda_http::http::{header, HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use request::{audit_query, optional_body, proposal_id, reason, ApplyBody, ProposeBody, ReasonBody, RejectBody};
use serde_json::Value;

pub async fn handle(svc: &FlagApprover, req: Request) -> Response<Body> {
    match route(svc, &req).await {
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

/// The action of a known route, `None` for a method the route does not take.
fn action_of(method: &Method, segs: &[&str]) -> Option<Action> {
    Some(match (method, segs) {
        (&Method::POST, ["flags", "proposals"]) => Action::FlagPropose,
        (&Method::GET, ["flags", "proposals", _]) => Action::FlagReadProposal,
        (&Method::POST, ["flags", "proposals", _, "approve"]) => Action::FlagApprove,
        (&Method::POST, ["flags", "proposals", _, "reject"]) => Action::FlagReject,
        (&Method::POST, ["flags", "proposals", _, "apply"]) => Action::FlagApply,
        (&Method::POST, ["flags", "break-glass"]) => Action::FlagBreakGlass,
        (&Method::GET, ["flags", "reviews"]) => Action::FlagReadProposal,
        (&Method::POST, ["flags", "reviews", _, "acknowledge"]) => Action::FlagAcknowledgeReview,
        (&Method::GET, ["flags", "audit"]) => Action::FlagReadAudit,
        (&Method::GET, ["flags", "matrix"]) => Action::FlagReadMatrix,
        _ => return None,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn no_such_route() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Unknown path 404, known path with another method 405, then identity and role, then the
/// route itself.
async fn route(svc: &FlagApprover, req: &Request) -> Result<(StatusCode, Value), Problem> {
    let path = req.uri().path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method();
    let known = matches!(
        segs.as_slice(),
        ["flags", "proposals"]
            | ["flags", "proposals", _]
            | ["flags", "proposals", _, "approve" | "reject" | "apply"]
            | ["flags", "break-glass"]
            | ["flags", "reviews"]
            | ["flags", "reviews", _, "acknowledge"]
            | ["flags", "audit"]
            | ["flags", "matrix"]
    );
    if !known {
        return Err(no_such_route());
    }
    let Some(action) = action_of(method, &segs) else {
        return Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        ));
    };
    // Every route needs an identity (the audit trail names people) and the route's role.
    let who = authorized(req, action).map_err(problem::from)?;
    dispatch(svc, req, action, &segs, &who).await
}

/// Parses the request of an authorized `action`, calls its use case and picks the status.
async fn dispatch(
    svc: &FlagApprover,
    req: &Request,
    action: Action,
    segs: &[&str],
    who: &Caller,
) -> Result<(StatusCode, Value), Problem> {
    match (action, segs) {
        (Action::FlagPropose, _) => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req))?;
            let view = svc.propose(who, body.into_input()?).await.map_err(problem::from)?;
            Ok((StatusCode::CREATED, json(&view)))
        }
        (Action::FlagBreakGlass, _) => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req))?;
            let view = svc.break_glass(who, body.into_input()?).await.map_err(problem::from)?;
            Ok((StatusCode::CREATED, json(&view)))
        }
        (Action::FlagReadProposal, ["flags", "proposals", id]) => {
            Ok((StatusCode::OK, json(&svc.get(proposal_id(id)?).await.map_err(problem::from)?)))
        }
        (Action::FlagReadProposal, ["flags", "reviews"]) => {
            let params = req.query_string_parameters_ref();
            let open_only = params.and_then(|p| p.first("all")).is_none_or(|v| v != "true");
            let reviews = svc.reviews(open_only, AUDIT_DEFAULT_LIMIT).await.map_err(problem::from)?;
            Ok((StatusCode::OK, serde_json::json!({ "reviews": reviews })))
        }
        (Action::FlagApprove, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let why = optional_body::<ReasonBody>(req)?.into_reason()?;
            Ok((StatusCode::OK, json(&svc.approve(who, id, why).await.map_err(problem::from)?)))
        }
        (Action::FlagReject, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let body: RejectBody = http::parse_json(http::body_bytes(req))?;
            let why = reason(&body.reason, "reason")?;
            Ok((StatusCode::OK, json(&svc.reject(who, id, why).await.map_err(problem::from)?)))
        }
        (Action::FlagApply, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let _: ApplyBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.apply(who, id).await.map_err(problem::from)?)))
        }
        (Action::FlagAcknowledgeReview, ["flags", "reviews", id, _]) => {
            let id = proposal_id(id)?;
            let note = optional_body::<ReasonBody>(req)?.into_reason()?;
            Ok((StatusCode::OK, json(&svc.acknowledge(who, id, note).await.map_err(problem::from)?)))
        }
        (Action::FlagReadAudit, _) => {
            let q = audit_query(req)?;
            let rows = svc.audit(&q).await.map_err(problem::from)?;
            let next = if rows.len() as i64 == q.limit { rows.last().map(|r| r.id) } else { None };
            Ok((StatusCode::OK, serde_json::json!({ "entries": rows, "next_before": next })))
        }
        (Action::FlagReadMatrix, _) => Ok((StatusCode::OK, json(&svc.matrix().await))),
        _ => Err(no_such_route()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_maps_to_one_action_and_other_methods_to_none() {
        let id = "00000000-0000-0000-0000-000000000001";
        let cases: [(Method, Vec<&str>, Option<Action>); 12] = [
            (Method::POST, vec!["flags", "proposals"], Some(Action::FlagPropose)),
            (Method::GET, vec!["flags", "proposals", id], Some(Action::FlagReadProposal)),
            (Method::POST, vec!["flags", "proposals", id, "approve"], Some(Action::FlagApprove)),
            (Method::POST, vec!["flags", "proposals", id, "reject"], Some(Action::FlagReject)),
            (Method::POST, vec!["flags", "proposals", id, "apply"], Some(Action::FlagApply)),
            (Method::POST, vec!["flags", "break-glass"], Some(Action::FlagBreakGlass)),
            (Method::GET, vec!["flags", "reviews"], Some(Action::FlagReadProposal)),
            (Method::POST, vec!["flags", "reviews", id, "acknowledge"], Some(Action::FlagAcknowledgeReview)),
            (Method::GET, vec!["flags", "audit"], Some(Action::FlagReadAudit)),
            (Method::GET, vec!["flags", "matrix"], Some(Action::FlagReadMatrix)),
            (Method::GET, vec!["flags", "proposals"], None),
            (Method::DELETE, vec!["flags", "proposals", id], None),
        ];
        for (method, segs, want) in cases {
            assert_eq!(action_of(&method, &segs), want, "{method} {segs:?}");
        }
    }
}
