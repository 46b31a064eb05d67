//! Request parsing: bodies, path ids and query strings, each refused as a client-facing
//! problem naming the field. Bodies refuse unknown fields, so a body cannot claim an actor.

use crate::service::ProposeInput;
use crate::store::{AuditQuery, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT};
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::flags::{ChangeRequest, Environment, MAX_CHANGES};
use holdfast_shared::ids::ProposalId;
use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Deserialize;
use serde_json::Value;

/// Longest reason accepted (the audit column's bound).
pub const MAX_REASON_CHARS: usize = 500;

/// A proposal or break-glass: either one flag (`flag` + `value`, the original shape) or several
/// (`changes`), never both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProposeBody {
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
    pub(super) fn into_input(self) -> Result<ProposeInput, Problem> {
        let changes = match (self.flag, self.value, self.changes) {
            (Some(flag), Some(value), None) => vec![ChangeRequest::new(flag, raw_value(&value, "value")?)],
            (None, None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_CHANGES {
                    return Err(Problem::validation("changes", format!("expected 1..={MAX_CHANGES} changes")));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, c)| Ok(ChangeRequest::new(c.flag, raw_value(&c.value, &format!("changes[{i}].value"))?)))
                    .collect::<Result<_, Problem>>()?
            }
            (_, _, Some(_)) => {
                return Err(Problem::validation("changes", "give either `flag` and `value` or `changes`"))
            }
            (None, _, None) => return Err(Problem::validation("flag", "missing field `flag`")),
            (Some(_), None, None) => return Err(Problem::validation("value", "missing field `value`")),
        };
        Ok(ProposeInput { env: self.environment, changes, reason: reason(&self.reason, "reason")? })
    }
}

/// Approve and acknowledge: an optional reason.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    reason: Option<String>,
}

impl ReasonBody {
    /// Absent or blank means none.
    pub(super) fn into_reason(self) -> Result<Option<String>, Problem> {
        match self.reason.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(r) => Ok(Some(reason(r, "reason")?)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectBody {
    pub(super) reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyBody {}

/// A body that may be omitted (approve, apply): empty means `{}`.
pub(super) fn optional_body<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, Problem> {
    let bytes = http::body_bytes(req);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    http::parse_json(bytes)
}

/// Trimmed, 1..=500 characters, no control characters other than newlines and tabs.
pub(super) fn reason(raw: &str, field: &str) -> Result<String, Problem> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(Problem::validation(field, "a reason is required"));
    }
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(Problem::validation(field, format!("at most {MAX_REASON_CHARS} characters")));
    }
    if r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Problem::validation(field, "control characters are not allowed"));
    }
    Ok(r.to_string())
}

fn raw_value(v: &Value, field: &str) -> Result<String, Problem> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() => Ok(n.to_string()),
        _ => Err(Problem::validation(field, "expected a string, a boolean or an integer")),
    }
}

/// A malformed id is answered like an unknown one (404), naming the path segment.
pub(super) fn proposal_id(raw: &str) -> Result<ProposalId, Problem> {
    raw.parse().map_err(|_| Problem::new(StatusCode::NOT_FOUND, "not_found", "proposal not found").field("id"))
}

pub(super) fn audit_query(req: &Request) -> Result<AuditQuery, Problem> {
    let params = req.query_string_parameters_ref();
    let get = |k: &str| params.and_then(|p| p.first(k)).map(str::trim).filter(|v| !v.is_empty());
    let flag = get("flag").map(str::to_string);
    if flag.as_deref().is_some_and(|f| f.len() > 200) {
        return Err(Problem::validation("flag", "at most 200 characters"));
    }
    let env = get("environment")
        .map(|e| {
            Environment::parse(e).ok_or_else(|| Problem::validation("environment", "expected dev, staging or prod"))
        })
        .transpose()?;
    let proposal = get("proposal")
        .map(|p| p.parse::<ProposalId>().map_err(|_| Problem::validation("proposal", "must be a UUID")))
        .transpose()?;
    let before_id = get("before")
        .map(|b| b.parse::<i64>().map_err(|_| Problem::validation("before", "must be an audit row id")))
        .transpose()?;
    let limit = match get("limit") {
        None => AUDIT_DEFAULT_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n))
            .ok_or_else(|| Problem::validation("limit", format!("expected 1..={AUDIT_MAX_LIMIT}")))?,
    };
    Ok(AuditQuery { flag, env, proposal, before_id, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Result<ProposeInput, Problem> {
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
            Err(p) => p.field,
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
