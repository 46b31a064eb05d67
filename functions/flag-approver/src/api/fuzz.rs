//! Fuzz target: the flag API's request parsing (`request`: proposal and break-glass bodies,
//! reasons, the audit query string), through `holdfast_adapters::http::parse_json` as the routes
//! call it, then the registry's validation of the changes. A `#[cfg(test)]` module because the
//! body types are private to the API layer. Bounded by `PROPTEST_CASES`; see docs/testing.md,
//! "Fuzzing".
//!
//! Property: nothing panics; a refusal is a `Problem` (400 malformed, 413 too large, 422 naming
//! the field); an accepted proposal has 1..=10 changes and a trimmed reason of 1..=500
//! characters without control characters; an accepted audit query has a limit in 1..=500 and a
//! flag filter of at most 200 characters.

#[path = "../../../../shared/tests/support/hostile.rs"]
mod hostile;

use super::request::{audit_query, reason, ProposeBody, ReasonBody, RejectBody};
use crate::store::AUDIT_MAX_LIMIT;
use holdfast_adapters::http::{self, Problem};
use holdfast_shared::flags::{validate_changes, Environment, FlagSet, MAX_CHANGES, REGISTRY};
use lambda_http::{Body, Request, RequestExt};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::collections::HashMap;

fn bodies() -> Vec<Value> {
    vec![
        json!({ "environment": "prod", "flag": "holds.ttlSeconds", "value": 300, "reason": "longer holds, INC-7" }),
        json!({ "environment": "dev", "reason": "kill it\nsee INC-9", "changes": [
            { "flag": "holds.strictConflicts", "value": false },
            { "flag": "holds.strictConflicts.killSwitchReason", "value": "INC-9" }
        ]}),
        json!({ "environment": "staging", "flag": "email.provider", "value": "resend", "reason": "r" }),
        json!({ "reason": "looks right" }),
        json!({}),
    ]
}

fn answer(p: &Problem, bytes: &[u8]) -> Result<(), TestCaseError> {
    let ok = matches!(
        (p.status.as_u16(), p.code),
        (400, "malformed_json") | (413, "payload_too_large") | (422, "validation_failed")
    );
    prop_assert!(ok, "unexpected refusal {} {} for {}", p.status, p.code, hostile::show(bytes));
    prop_assert!(p.field.is_some(), "{} names no field", p.code);
    Ok(())
}

/// The reason invariant (the audit column's): trimmed, 1..=500 characters, one paragraph of
/// text (newlines and tabs only).
fn good_reason(r: &str) -> bool {
    !r.is_empty()
        && r == r.trim()
        && r.chars().count() <= 500
        && !r.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn check(bytes: &[u8], env: Environment) -> Result<(), TestCaseError> {
    match http::parse_json::<ProposeBody>(bytes) {
        Err(p) => answer(&p, bytes)?,
        Ok(body) => match body.into_input() {
            Err(p) => prop_assert_eq!(p.status.as_u16(), 422, "{:?}", p),
            Ok(input) => {
                prop_assert!((1..=MAX_CHANGES).contains(&input.changes.len()));
                prop_assert!(good_reason(&input.reason), "reason {:?}", input.reason);
                if let Ok(accepted) = validate_changes(&FlagSet::defaults(env), env, &input.changes) {
                    prop_assert!(accepted.iter().all(|(d, v)| d.check(v).is_ok()));
                }
            }
        },
    }
    match http::parse_json::<ReasonBody>(bytes) {
        Err(p) => answer(&p, bytes)?,
        Ok(body) => match body.into_reason() {
            Ok(r) => prop_assert!(r.as_deref().is_none_or(good_reason)),
            Err(p) => prop_assert_eq!(p.field.as_deref(), Some("reason")),
        },
    }
    match http::parse_json::<RejectBody>(bytes) {
        Err(p) => answer(&p, bytes)?,
        Ok(body) => {
            if let Ok(r) = reason(&body.reason, "reason") {
                prop_assert!(good_reason(&r));
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_flag_api_bodies() {
    let envs = prop::sample::select(Environment::ALL.to_vec());
    hostile::run("flag API bodies", 5000, (hostile::input(bodies()), envs), |(bytes, env)| check(&bytes, env));
}

fn param_value() -> impl Strategy<Value = String> {
    let names: Vec<String> = REGISTRY.iter().map(|d| d.name.to_string()).collect();
    prop_oneof![
        prop::sample::select(names),
        prop::sample::select(vec!["dev", "prod", "0", "1", "500", "501", "-1", "9223372036854775808", "true"])
            .prop_map(String::from),
        Just(uuid::Uuid::new_v4().to_string()),
        hostile::hostile_string(),
    ]
}

#[test]
fn fuzz_flag_audit_queries() {
    let key = prop::sample::select(vec!["flag", "environment", "proposal", "before", "limit", "all", "x"]);
    let params = prop::collection::vec((key, param_value()), 0..6);
    hostile::run("flag audit query", 5000, params, |params| {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in params {
            map.entry(k.to_string()).or_default().push(v);
        }
        let req: Request = lambda_http::http::Request::builder()
            .uri("/flags/audit")
            .body(Body::Empty)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .with_query_string_parameters(map);
        match audit_query(&req) {
            Ok(q) => {
                prop_assert!((1..=AUDIT_MAX_LIMIT).contains(&q.limit), "limit {}", q.limit);
                prop_assert!(q.flag.as_deref().is_none_or(|f| f.len() <= 200 && f == f.trim() && !f.is_empty()));
            }
            Err(p) => prop_assert_eq!(p.status.as_u16(), 422, "{:?}", p),
        }
        Ok(())
    });
}
