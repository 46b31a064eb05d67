//! Request parsing: bodies, path ids and query strings, each refused as a client-facing
//! problem naming the field. Bodies refuse unknown fields, so a body cannot claim an actor.

use crate::service::ProposeInput;
use crate::store::{AuditQuery, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT};
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::flags::{ChangeRequest, Environment, MAX_CHANGES};
use holdfast_shared::guest::{has_forbidden_char, HOSTILE_TEXT};
use holdfast_shared::ids::ProposalId;
use lambda_http::http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use serde_json::Value;

/// Longest reason accepted (the audit column's bound).
pub const MAX_REASON_CHARS: usize = 500;

/// Longest flag name looked up (registry names are far shorter): an unknown name is quoted in
/// the refusal, so a huge one is refused before it is quoted.
const MAX_FLAG_NAME_CHARS: usize = 200;

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
            (Some(flag), Some(value), None) => {
                vec![ChangeRequest::new(flag_name(flag, "flag")?, raw_value(&value, "value")?)]
            }
            (None, None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_CHANGES {
                    return Err(Problem::validation("changes", format!("expected 1..={MAX_CHANGES} changes")));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let flag = flag_name(c.flag, &format!("changes[{i}].flag"))?;
                        Ok(ChangeRequest::new(flag, raw_value(&c.value, &format!("changes[{i}].value"))?))
                    })
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
    http::parse_optional_json(http::body_bytes(req))
}

/// Trimmed, 1..=500 characters, no hostile characters (`guest::forbidden_char`; newlines and
/// tabs allowed).
pub(super) fn reason(raw: &str, field: &str) -> Result<String, Problem> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(Problem::validation(field, "a reason is required"));
    }
    if r.chars().count() > MAX_REASON_CHARS {
        return Err(Problem::validation(field, format!("at most {MAX_REASON_CHARS} characters")));
    }
    if has_forbidden_char(r, true) {
        return Err(Problem::validation(field, HOSTILE_TEXT));
    }
    Ok(r.to_string())
}

/// A flag name as given (the registry decides whether it exists): one line of plain text, of a
/// length a flag name can have.
fn flag_name(raw: String, field: &str) -> Result<String, Problem> {
    if has_forbidden_char(&raw, false) {
        return Err(Problem::validation(field, HOSTILE_TEXT));
    }
    if raw.chars().count() > MAX_FLAG_NAME_CHARS {
        return Err(Problem::validation(field, format!("at most {MAX_FLAG_NAME_CHARS} characters")));
    }
    Ok(raw)
}

/// The value as the registry parses it. Text flag values are one line (the audit log and the
/// generated docs are line-based).
fn raw_value(v: &Value, field: &str) -> Result<String, Problem> {
    match v {
        Value::String(s) if has_forbidden_char(s, false) => Err(Problem::validation(field, HOSTILE_TEXT)),
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

/// `GET /flags/reviews`: open reviews unless `all=true`.
pub(super) fn reviews_open_only(req: &Request) -> Result<bool, Problem> {
    Ok(http::query_param(req, "all")?.is_none_or(|v| v != "true"))
}

/// `GET /flags/audit`'s filters. Every parameter goes through `http::query_param`: a NUL
/// (`?flag=%00`) or any other hostile character is a 422 naming it, never a query.
pub(super) fn audit_query(req: &Request) -> Result<AuditQuery, Problem> {
    let get = |k: &str| -> Result<Option<&str>, Problem> {
        Ok(http::query_param(req, k)?.map(str::trim).filter(|v| !v.is_empty()))
    };
    let flag = get("flag")?.map(str::to_string);
    if flag.as_deref().is_some_and(|f| f.len() > 200) {
        return Err(Problem::validation("flag", "at most 200 characters"));
    }
    let env = get("environment")?
        .map(|e| {
            Environment::parse(e).ok_or_else(|| Problem::validation("environment", "expected dev, staging or prod"))
        })
        .transpose()?;
    let proposal = get("proposal")?
        .map(|p| p.parse::<ProposalId>().map_err(|_| Problem::validation("proposal", "must be a UUID")))
        .transpose()?;
    let before_id = get("before")?
        .map(|b| b.parse::<i64>().map_err(|_| Problem::validation("before", "must be an audit row id")))
        .transpose()?;
    let limit = match get("limit")? {
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
