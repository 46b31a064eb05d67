//! The template follows the capacity model (docs/capacity.md): in every environment, each
//! function that reaches the database is bounded (reserved concurrency, or the SQS mapping's
//! maximum concurrency), and the connections they can open together fit the proxy's share of
//! the database:
//!
//!   sum over functions of (bound × DATABASE_POOL_SIZE) <= DbMaxConnections × ProxyMaxConnectionsPercent / 100
//!
//! The template is read as YAML with its CloudFormation tags (`!FindInMap`, `!Ref`), resolved
//! against its own `Mappings` for each environment.

use serde_norway::Value;
use std::path::Path;

const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The connection budget of one environment, as the template states it.
#[derive(Debug, PartialEq, Eq)]
struct Budget {
    /// Sum of bound × pool size over the database functions.
    connections: i64,
    /// DbMaxConnections × ProxyMaxConnectionsPercent / 100.
    proxy_share: i64,
    /// (function, bound, pool size), by logical id.
    functions: Vec<(String, i64, i64)>,
}

fn tag_is(t: &serde_norway::value::TaggedValue, name: &str) -> bool {
    t.tag == name
}

/// A number the template gives literally, as a string, or through `!FindInMap [EnvSettings,
/// !Ref Environment, Key]`.
fn number(v: &Value, env: &str, mappings: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("not an integer: {n}")),
        Value::String(s) => s.parse().map_err(|_| format!("not an integer: {s:?}")),
        Value::Tagged(t) if tag_is(t, "FindInMap") => {
            let args = t.value.as_sequence().ok_or("FindInMap without a list")?;
            let [map, key, attr] = args.as_slice() else { return Err("FindInMap needs 3 arguments".into()) };
            let key = match key {
                Value::Tagged(k) if tag_is(k, "Ref") && k.value.as_str() == Some("Environment") => env.to_owned(),
                Value::String(s) => s.clone(),
                other => return Err(format!("FindInMap key {other:?}")),
            };
            let (map, attr) = (map.as_str().ok_or("map name")?, attr.as_str().ok_or("attribute name")?);
            let found = mappings.get(map).and_then(|m| m.get(&key)).and_then(|m| m.get(attr));
            number(found.ok_or_else(|| format!("no Mappings.{map}.{key}.{attr}"))?, env, mappings)
        }
        other => Err(format!("cannot read a number from {other:?}")),
    }
}

/// The budget for `env`, or what makes it unreadable (an unbounded database function, say).
fn budget(template: &Value, env: &str) -> Result<Budget, String> {
    let mappings = template.get("Mappings").ok_or("no Mappings")?;
    let setting = |key: &str| {
        let v = mappings.get("EnvSettings").and_then(|m| m.get(env)).and_then(|m| m.get(key));
        number(v.ok_or_else(|| format!("no EnvSettings.{env}.{key}"))?, env, mappings)
    };
    let globals = template.get("Globals").and_then(|g| g.get("Function"));
    let global_pool = globals.and_then(|g| g.get("Environment")?.get("Variables")?.get("DATABASE_POOL_SIZE"));
    let global_runtime = globals.and_then(|g| g.get("Runtime")).and_then(Value::as_str).unwrap_or("");
    let resources = template.get("Resources").and_then(Value::as_mapping).ok_or("no Resources")?;
    let mut functions = Vec::new();
    for (id, r) in resources {
        if r.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let id = id.as_str().unwrap_or_default().to_owned();
        let p = r.get("Properties").ok_or_else(|| format!("{id}: no Properties"))?;
        // Inline Python (the CodeDeploy hook) never connects to the database.
        let runtime = p.get("Runtime").and_then(Value::as_str).unwrap_or(global_runtime);
        if runtime.starts_with("python") {
            continue;
        }
        let sqs_max = p.get("Events").and_then(Value::as_mapping).into_iter().flatten().find_map(|(_, e)| {
            (e.get("Type")?.as_str()? == "SQS")
                .then(|| e.get("Properties")?.get("ScalingConfig")?.get("MaximumConcurrency"))?
        });
        let bound = match (p.get("ReservedConcurrentExecutions"), sqs_max) {
            (Some(v), _) | (None, Some(v)) => number(v, env, mappings).map_err(|e| format!("{id}: {e}"))?,
            (None, None) => {
                return Err(format!(
                    "{id}: no ReservedConcurrentExecutions (nor an SQS MaximumConcurrency): its database connections are unbounded"
                ))
            }
        };
        let pool = p.get("Environment").and_then(|e| e.get("Variables")?.get("DATABASE_POOL_SIZE")).or(global_pool);
        let pool = number(pool.ok_or_else(|| format!("{id}: no DATABASE_POOL_SIZE"))?, env, mappings)
            .map_err(|e| format!("{id}: DATABASE_POOL_SIZE {e}"))?;
        functions.push((id, bound, pool));
    }
    functions.sort();
    let idle = setting("ProxyMaxIdleConnectionsPercent")?;
    let percent = setting("ProxyMaxConnectionsPercent")?;
    if !(1..=100).contains(&percent) || !(0..=percent).contains(&idle) {
        return Err(format!("{env}: proxy percentages {percent} / idle {idle} out of range"));
    }
    Ok(Budget {
        connections: functions.iter().map(|(_, b, p)| b * p).sum(),
        proxy_share: setting("DbMaxConnections")? * percent / 100,
        functions,
    })
}

fn template() -> Value {
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).expect("infra/template.yaml");
    serde_norway::from_str(&text).expect("the template parses as YAML")
}

#[test]
fn the_functions_connections_fit_the_proxy_share_in_every_environment() {
    let t = template();
    let doc = std::fs::read_to_string(root().join("docs/capacity.md")).expect("docs/capacity.md");
    for env in ENVIRONMENTS {
        let b = budget(&t, env).unwrap_or_else(|e| panic!("{env}: {e}"));
        assert!(b.functions.len() >= 8, "{env}: only {:?} found", b.functions);
        assert!(
            b.connections <= b.proxy_share,
            "{env}: the functions can open {} connections but the proxy may use {}: {:?}",
            b.connections,
            b.proxy_share,
            b.functions
        );
        // The model quotes the template's figures: the two move together.
        let quoted = format!("{} ≤ {}", b.connections, b.proxy_share);
        assert!(doc.contains(&quoted), "docs/capacity.md does not quote {env}'s budget \"{quoted}\"");
    }
}

const SMALL: &str = r#"
Mappings:
  EnvSettings:
    dev: { Api: 10, Pool: "2", DbMaxConnections: 100, ProxyMaxConnectionsPercent: 30, ProxyMaxIdleConnectionsPercent: 10 }
    staging: { Api: 10, Pool: "2", DbMaxConnections: 100, ProxyMaxConnectionsPercent: 30, ProxyMaxIdleConnectionsPercent: 10 }
    prod: { Api: 10, Pool: "2", DbMaxConnections: 100, ProxyMaxConnectionsPercent: 30, ProxyMaxIdleConnectionsPercent: 10 }
Globals:
  Function:
    Runtime: provided.al2023
    Environment:
      Variables:
        DATABASE_POOL_SIZE: !FindInMap [EnvSettings, !Ref Environment, Pool]
Resources:
  Api:
    Type: AWS::Serverless::Function
    Properties:
      ReservedConcurrentExecutions: !FindInMap [EnvSettings, !Ref Environment, Api]
  Sender:
    Type: AWS::Serverless::Function
    Properties:
      Environment: { Variables: { DATABASE_POOL_SIZE: "1" } }
      Events:
        Jobs: { Type: SQS, Properties: { ScalingConfig: { MaximumConcurrency: 4 } } }
  Hook:
    Type: AWS::Serverless::Function
    Properties: { Runtime: python3.12 }
"#;

#[test]
fn the_check_reads_bounds_pools_and_mappings() {
    let t: Value = serde_norway::from_str(SMALL).expect("yaml");
    let b = budget(&t, "dev").expect("budget");
    assert_eq!(b.functions, vec![("Api".to_owned(), 10, 2), ("Sender".to_owned(), 4, 1)]);
    assert_eq!((b.connections, b.proxy_share), (24, 30));
}

#[test]
fn an_unbounded_database_function_or_an_overrun_is_caught() {
    let unbounded = SMALL.replace(
        "      ReservedConcurrentExecutions: !FindInMap [EnvSettings, !Ref Environment, Api]\n",
        "      Timeout: 10\n",
    );
    let t: Value = serde_norway::from_str(&unbounded).expect("yaml");
    let e = budget(&t, "dev").expect_err("an unbounded function");
    assert!(e.contains("Api") && e.contains("unbounded"), "{e}");
    let over = SMALL.replace("dev: { Api: 10,", "dev: { Api: 20,");
    let b = budget(&serde_norway::from_str(&over).expect("yaml"), "dev").expect("budget");
    assert!(b.connections > b.proxy_share, "44 connections against 30 must not fit: {b:?}");
}
