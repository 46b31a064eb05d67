//! The API contract kept in step with the code. `docs/api/holds.openapi.yaml` and
//! `docs/api/flags.openapi.yaml` must list exactly the routes the routers serve (the routers
//! dispatch through `ROUTES` only, so that table is what they serve), every `$ref` and link must
//! resolve, and every operation must document the answers its route can give whatever the
//! request. `scripts/contract.sh` then validates both documents with openapi-spec-validator and
//! runs schemathesis against the local stack (docs/testing.md, "API contract").

use holdfast_adapters::routes::Route;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn spec(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Through YAML's own value first: it refuses a duplicated key (a second `'503':` in one
    // responses map), which a JSON map and openapi-spec-validator would silently collapse.
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
    serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{name} is not JSON-shaped: {e}"))
}

/// Every (METHOD, path template, operation object) of a document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for method in HTTP_METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_uppercase(), path.clone(), op));
            }
        }
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc).into_iter().map(|(m, p, _)| (m, p)).collect()
}

fn served<Op>(table: &[Route<Op>]) -> BTreeSet<(String, String)> {
    table.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect()
}

fn assert_same_routes(name: &str, documented: BTreeSet<(String, String)>, served: BTreeSet<(String, String)>) {
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "{name}: served but not documented {undocumented:?}; documented but not served {unserved:?}"
    );
}

/// `$ref`s (local JSON pointers only) that point at nothing, with where they are.
fn unresolved_refs(root: &Value) -> Vec<String> {
    fn walk(root: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref") {
                    let target = r.as_str().and_then(|r| r.strip_prefix('#')).and_then(|p| root.pointer(p));
                    if target.is_none() {
                        out.push(format!("{at}: {r}"));
                    }
                }
                for (k, child) in map {
                    walk(root, child, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(root, child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, root, "", &mut out);
    out
}

/// The statuses an operation documents.
fn statuses(op: &Value) -> BTreeSet<String> {
    op["responses"].as_object().expect("responses").keys().cloned().collect()
}

fn assert_documents(name: &str, doc: &Value, rule: &str, wanted: impl Fn(&str, &str, &Value) -> Vec<&'static str>) {
    let mut missing = Vec::new();
    for (method, path, op) in operations(doc) {
        let have = statuses(op);
        for status in wanted(&method, &path, op) {
            if !have.contains(status) {
                missing.push(format!("{method} {path}: {status}"));
            }
        }
    }
    assert!(missing.is_empty(), "{name}: {rule}; missing {missing:?}");
}

#[test]
fn both_documents_are_openapi_3_1_with_a_bearer_jwt_scheme() {
    for name in ["holds.openapi.yaml", "flags.openapi.yaml"] {
        let doc = spec(name);
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{name}: {}", doc["openapi"]);
        let jwt = &doc["components"]["securitySchemes"]["jwt"];
        assert_eq!((jwt["type"].as_str(), jwt["scheme"].as_str()), (Some("http"), Some("bearer")), "{name}");
        assert_eq!(doc["security"], serde_json::json!([{ "jwt": [] }]), "{name}: every route needs the token");
    }
}

#[test]
fn the_holds_document_lists_exactly_the_routes_the_holds_router_serves() {
    assert_same_routes("holds", documented(&spec("holds.openapi.yaml")), served(holds_api::api::ROUTES));
}

#[test]
fn the_flags_document_lists_exactly_the_routes_the_flag_router_serves() {
    assert_same_routes("flags", documented(&spec("flags.openapi.yaml")), served(flag_approver::api::ROUTES));
}

#[test]
fn every_ref_resolves_and_every_link_names_an_operation_of_its_document() {
    for name in ["holds.openapi.yaml", "flags.openapi.yaml"] {
        let doc = spec(name);
        let unresolved = unresolved_refs(&doc);
        assert!(unresolved.is_empty(), "{name}: unresolved $ref {unresolved:?}");
        let ids: BTreeSet<&str> = operations(&doc).iter().filter_map(|(_, _, op)| op["operationId"].as_str()).collect();
        assert_eq!(ids.len(), operations(&doc).len(), "{name}: every operation has its own operationId");
        for (method, path, op) in operations(&doc) {
            for (status, resp) in op["responses"].as_object().expect("responses") {
                for (link, def) in resp["links"].as_object().into_iter().flatten() {
                    let target = def["operationId"].as_str().unwrap_or_default();
                    assert!(ids.contains(target), "{name}: {method} {path} {status} link {link} -> {target:?}");
                }
            }
        }
    }
}

/// What every route can answer whatever the request: the gateway's 400 (a request it cannot
/// pass on, e.g. a header that is not UTF-8) and 401; `http::parse_json`'s 413 and 422 wherever
/// there is a body; a role's 403 on the flags surface; the database's 503 wherever the route
/// reads it; a path id that names nothing is 404.
#[test]
fn every_operation_documents_the_answers_its_route_can_always_give() {
    let holds = spec("holds.openapi.yaml");
    assert_documents("holds", &holds, "every route", |_, path, op| {
        let mut want = vec!["400", "401", "503"];
        if op.get("requestBody").is_some() {
            want.extend(["413", "422"]);
        }
        if path.contains('{') {
            want.push("404");
        }
        want
    });
    let flags = spec("flags.openapi.yaml");
    assert_documents("flags", &flags, "every route", |_, path, op| {
        let mut want = vec!["400", "401", "403"];
        if op.get("requestBody").is_some() {
            want.extend(["413", "422"]);
        }
        if path.contains('{') {
            want.push("404");
        }
        // The matrix reads SSM only and shows an unreachable environment as such.
        if path != "/flags/matrix" {
            want.push("503");
        }
        want
    });
}

#[test]
fn the_flag_names_the_flags_document_accepts_are_the_registry() {
    let doc = spec("flags.openapi.yaml");
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["FlagName"]["enum"]
        .as_array()
        .expect("FlagName enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let registry: BTreeSet<&str> = holdfast_shared::flags::REGISTRY.iter().map(|d| d.name).collect();
    assert_eq!(listed, registry);
}

#[test]
fn a_document_that_drifts_is_caught() {
    // The checks above can fail: a route the router does not serve, and a dangling $ref.
    let mut doc = spec("holds.openapi.yaml");
    doc["paths"]["/holds/{holdId}"]["put"] = serde_json::json!({ "responses": {} });
    doc["paths"]["/holds"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] =
        Value::String("#/components/schemas/NoSuchSchema".into());
    let served = served(holds_api::api::ROUTES);
    let extra: Vec<_> = documented(&doc).difference(&served).cloned().collect();
    assert_eq!(extra, [("PUT".to_string(), "/holds/{holdId}".to_string())]);
    assert_eq!(unresolved_refs(&doc).len(), 1);
}
