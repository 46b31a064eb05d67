//! HTTP routing for the flag approver (API Gateway HTTP API payload v2 behind a JWT
//! authorizer, or the local gateway). The actor is always the authorizer's identity
//! (`http::caller`); request bodies refuse unknown fields, so a body cannot claim an actor.

use crate::error::ApproverError;
use crate::service::{Caller, FlagApprover, ProposeInput};
use crate::store::{AuditQuery, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT};
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::flags::{Actor, Environment};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeBody {
    flag: String,
    environment: Environment,
    /// A string, boolean or integer; canonicalised by the registry.
    value: Value,
    reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
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

fn caller(req: &Request) -> Result<Caller, ApproverError> {
    let raw = http::caller(req).ok_or(ApproverError::Unauthenticated)?;
    let actor = Actor::new(&raw).map_err(|_| ApproverError::Unauthenticated)?;
    Ok(Caller { actor, request_id: http::request_id(req) })
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

fn raw_value(v: &Value) -> Result<String, ApproverError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() => Ok(n.to_string()),
        _ => Err(invalid(Problem::validation("value", "expected a string, a boolean or an integer"))),
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
            | ["flags", "audit"]
            | ["flags", "matrix"]
    );
    if !known {
        return Err(invalid(Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")));
    }
    // Every route needs an identity: the audit trail itself names people.
    let who = caller(req)?;
    match (method, segs.as_slice()) {
        (&Method::POST, ["flags", "proposals"]) => {
            let body: ProposeBody = http::parse_json(http::body_bytes(req)).map_err(invalid)?;
            let input = ProposeInput {
                value: raw_value(&body.value)?,
                reason: reason(&body.reason, "reason")?,
                flag: body.flag,
                env: body.environment,
            };
            Ok((StatusCode::CREATED, json(&svc.propose(&who, input).await?)))
        }
        (&Method::GET, ["flags", "proposals", id]) => Ok((StatusCode::OK, json(&svc.get(proposal_id(id)?).await?))),
        (&Method::POST, ["flags", "proposals", id, "approve"]) => {
            let id = proposal_id(id)?;
            let body: ApproveBody = optional_body(req)?;
            let why = match body.reason.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(r) => Some(reason(r, "reason")?),
            };
            Ok((StatusCode::OK, json(&svc.approve(&who, id, why).await?)))
        }
        (&Method::POST, ["flags", "proposals", id, "reject"]) => {
            let id = proposal_id(id)?;
            let body: RejectBody = http::parse_json(http::body_bytes(req)).map_err(invalid)?;
            let why = reason(&body.reason, "reason")?;
            Ok((StatusCode::OK, json(&svc.reject(&who, id, why).await?)))
        }
        (&Method::POST, ["flags", "proposals", id, "apply"]) => {
            let id = proposal_id(id)?;
            let _: ApplyBody = optional_body(req)?;
            Ok((StatusCode::OK, json(&svc.apply(&who, id).await?)))
        }
        (&Method::GET, ["flags", "audit"]) => {
            let q = audit_query(req)?;
            let rows = svc.audit(&q).await?;
            let next = if rows.len() as i64 == q.limit { rows.last().map(|r| r.id) } else { None };
            Ok((StatusCode::OK, serde_json::json!({ "entries": rows, "next_before": next })))
        }
        (&Method::GET, ["flags", "matrix"]) => Ok((StatusCode::OK, json(&svc.matrix().await))),
        _ => Err(invalid(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        ))),
    }
}
