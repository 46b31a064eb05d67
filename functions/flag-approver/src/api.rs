//! HTTP routing for the flag approver (API Gateway HTTP API payload v2 behind a JWT
//! authorizer, or the local gateway). The actor is always the authorizer's identity
//! (`identity::caller`: subject and groups); request bodies refuse unknown fields, so a body
//! cannot claim an actor. Every route asks `auth::authorize` once, here, before anything else:
//! no identity is 401, a caller without the route's role (a guest) is 403.

use crate::error::ApproverError;
use crate::service::{Caller, FlagApprover, ProposeInput};
use crate::store::{AuditQuery, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT};
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::auth::{self, Action, Decision, Resource, FLAG_APPROVERS_GROUP, OPS_GROUP};
use holdfast_shared::flags::{Actor, ChangeRequest, Environment, MAX_CHANGES};
use holdfast_shared::ids::ProposalId;
use lambda_http::http::{header, HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Deserialize;
use serde_json::Value;

/// Longest reason accepted (the audit column's bound).
pub const MAX_REASON_CHARS: usize = 500;

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
        Err(e) => {
            if matches!(e, ApproverError::Db(_)) {
                tracing::error!(code = e.code(), error = %e, "flag approver request failed");
            }
            e.into_problem().into_response()
        }
    }
}

/// A proposal or break-glass: either one flag (`flag` + `value`, the original shape) or several
/// (`changes`), never both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeBody {
    environment: Environment,
    flag: Option<String>,
    /// A string, boolean or integer; canonicalised by the registry.
    value: Option<Value>,
    changes: Option<Vec<ChangeBody>>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    flag: String,
    value: Value,
}

impl ProposeBody {
    fn into_input(self) -> Result<ProposeInput, ApproverError> {
        let changes = match (self.flag, self.value, self.changes) {
            (Some(flag), Some(value), None) => vec![ChangeRequest::new(flag, raw_value(&value, "value")?)],
            (None, None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_CHANGES {
                    return Err(invalid(Problem::validation("changes", format!("expected 1..={MAX_CHANGES} changes"))));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, c)| Ok(ChangeRequest::new(c.flag, raw_value(&c.value, &format!("changes[{i}].value"))?)))
                    .collect::<Result<_, ApproverError>>()?
            }
            (_, _, Some(_)) => {
                return Err(invalid(Problem::validation("changes", "give either `flag` and `value` or `changes`")))
            }
            (None, _, None) => return Err(invalid(Problem::validation("flag", "missing field `flag`"))),
            (Some(_), None, None) => return Err(invalid(Problem::validation("value", "missing field `value`"))),
        };
        Ok(ProposeInput { env: self.environment, changes, reason: reason(&self.reason, "reason")? })
    }
}

/// Approve and acknowledge: an optional reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {}

fn invalid(p: Problem) -> ApproverError {
    ApproverError::Invalid(p)
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

/// A body that may be omitted (approve, apply): empty means `{}`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, ApproverError> {
    let bytes = http::body_bytes(req);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    http::parse_json(bytes).map_err(invalid)
}

/// Trimmed, 1..=500 characters, no control characters other than newlines and tabs.
fn reason(raw: &str, field: &str) -> Result<String, ApproverError> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(invalid(Problem::validation(field, "a reason is required")));
    }
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(invalid(Problem::validation(field, format!("at most {MAX_REASON_CHARS} characters"))));
    }
    if r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(Problem::validation(field, "control characters are not allowed")));
    }
    Ok(r.to_string())
}

fn raw_value(v: &Value, field: &str) -> Result<String, ApproverError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() => Ok(n.to_string()),
        _ => Err(invalid(Problem::validation(field, "expected a string, a boolean or an integer"))),
    }
}

fn proposal_id(raw: &str) -> Result<ProposalId, ApproverError> {
    raw.parse().map_err(|_| invalid(Problem::new(StatusCode::NOT_FOUND, "not_found", "proposal not found").field("id")))
}

fn audit_query(req: &Request) -> Result<AuditQuery, ApproverError> {
    let params = req.query_string_parameters_ref();
    let get = |k: &str| params.and_then(|p| p.first(k)).map(str::trim).filter(|v| !v.is_empty());
    let flag = get("flag").map(str::to_string);
    if flag.as_deref().is_some_and(|f| f.len() > 200) {
        return Err(invalid(Problem::validation("flag", "at most 200 characters")));
    }
    let env = get("environment")
        .map(|e| {
            Environment::parse(e)
                .ok_or_else(|| invalid(Problem::validation("environment", "expected dev, staging or prod")))
        })
        .transpose()?;
    let proposal = get("proposal")
        .map(|p| p.parse::<ProposalId>().map_err(|_| invalid(Problem::validation("proposal", "must be a UUID"))))
        .transpose()?;
    let before_id = get("before")
        .map(|b| b.parse::<i64>().map_err(|_| invalid(Problem::validation("before", "must be an audit row id"))))
        .transpose()?;
    let limit = match get("limit") {
        None => AUDIT_DEFAULT_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n))
            .ok_or_else(|| invalid(Problem::validation("limit", format!("expected 1..={AUDIT_MAX_LIMIT}"))))?,
    };
    Ok(AuditQuery { flag, env, proposal, before_id, limit })
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn route(svc: &FlagApprover, req: &Request) -> Result<(StatusCode, Value), ApproverError> {
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
        return Err(invalid(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")));
    }
    let Some(action) = action_of(method, &segs) else {
        return Err(invalid(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )));
    };
    // Every route needs an identity (the audit trail names people) and the route's role.
    let who = authorized(req, action)?;
    match (action, segs.as_slice()) {
        (Action::FlagPropose, _) => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req)).map_err(invalid)?;
            Ok((StatusCode::CREATED, json(&svc.propose(&who, body.into_input()?).await?)))
        }
        (Action::FlagBreakGlass, _) => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req)).map_err(invalid)?;
            Ok((StatusCode::CREATED, json(&svc.break_glass(&who, body.into_input()?).await?)))
        }
        (Action::FlagReadProposal, ["flags", "proposals", id]) => {
            Ok((StatusCode::OK, json(&svc.get(proposal_id(id)?).await?)))
        }
        (Action::FlagReadProposal, ["flags", "reviews"]) => {
            let params = req.query_string_parameters_ref();
            let open_only = params.and_then(|p| p.first("all")).is_none_or(|v| v != "true");
            let reviews = svc.reviews(open_only, AUDIT_DEFAULT_LIMIT).await?;
            Ok((StatusCode::OK, serde_json::json!({ "reviews": reviews })))
        }
        (Action::FlagApprove, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let body: ReasonBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.approve(&who, id, optional_reason(body)?).await?)))
        }
        (Action::FlagReject, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let body: RejectBody = http::parse_json(http::body_bytes(req)).map_err(invalid)?;
            let why = reason(&body.reason, "reason")?;
            Ok((StatusCode::OK, json(&svc.reject(&who, id, why).await?)))
        }
        (Action::FlagApply, ["flags", "proposals", id, _]) => {
            let id = proposal_id(id)?;
            let _: ApplyBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.apply(&who, id).await?)))
        }
        (Action::FlagAcknowledgeReview, ["flags", "reviews", id, _]) => {
            let id = proposal_id(id)?;
            let body: ReasonBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.acknowledge(&who, id, optional_reason(body)?).await?)))
        }
        (Action::FlagReadAudit, _) => {
            let q = audit_query(req)?;
            let rows = svc.audit(&q).await?;
            let next = if rows.len() as i64 == q.limit { rows.last().map(|r| r.id) } else { None };
            Ok((StatusCode::OK, serde_json::json!({ "entries": rows, "next_before": next })))
        }
        (Action::FlagReadMatrix, _) => Ok((StatusCode::OK, json(&svc.matrix().await))),
        _ => Err(invalid(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route"))),
    }
}

/// An optional reason (approve, acknowledge): absent or blank means none.
fn optional_reason(body: ReasonBody) -> Result<Option<String>, ApproverError> {
    match body.reason.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => Ok(Some(reason(r, "reason")?)),
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

    fn body(v: Value) -> Result<ProposeInput, ApproverError> {
        serde_json::from_value::<ProposeBody>(v).expect("shape").into_input()
    }

    #[test]
    fn propose_body_takes_one_flag_or_a_list_never_both() {
        let one = body(
            serde_json::json!({ "environment": "dev", "flag": "holds.ttlSeconds", "value": 300, "reason": " r " }),
        )
        .expect("single");
        assert_eq!(one.changes, vec![ChangeRequest::new("holds.ttlSeconds", "300")]);
        assert_eq!(one.reason, "r");
        let many = body(serde_json::json!({ "environment": "prod", "reason": "r", "changes": [
            { "flag": "holds.strictConflicts", "value": false },
            { "flag": "holds.strictConflicts.killSwitchReason", "value": "INC-1" }
        ]}))
        .expect("grouped");
        assert_eq!(many.changes.len(), 2);
        assert_eq!(many.changes[0].value, "false");
        let field = |v: Value| match body(v) {
            Err(ApproverError::Invalid(p)) => p.field,
            other => panic!("expected a 422, got {other:?}"),
        };
        let both = serde_json::json!({ "environment": "dev", "flag": "a", "value": 1, "changes": [], "reason": "r" });
        assert_eq!(field(both).as_deref(), Some("changes"));
        assert_eq!(
            field(serde_json::json!({ "environment": "dev", "changes": [], "reason": "r" })).as_deref(),
            Some("changes")
        );
        assert_eq!(field(serde_json::json!({ "environment": "dev", "reason": "r" })).as_deref(), Some("flag"));
        assert_eq!(
            field(serde_json::json!({ "environment": "dev", "flag": "a", "reason": "r" })).as_deref(),
            Some("value")
        );
        let bad =
            serde_json::json!({ "environment": "dev", "reason": "r", "changes": [{ "flag": "a", "value": 1.5 }] });
        assert_eq!(field(bad).as_deref(), Some("changes[0].value"));
    }
}
