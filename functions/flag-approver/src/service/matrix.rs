//! The effective-value matrix: every flag in every environment, read-only. It reads SSM
//! directly (no database), so the CLI can show it without the service.

use crate::ssm::{EnvFlags, SsmFlags};
use chrono::{DateTime, Utc};
use holdfast_shared::flags::{self, Environment};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub generated_at: DateTime<Utc>,
    pub environments: Vec<EnvSummary>,
    pub flags: Vec<FlagRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvSummary {
    pub environment: Environment,
    pub prefix: String,
    /// `ok` or `unavailable`.
    pub ssm: &'static str,
    pub violations: Vec<ViolationView>,
    pub problems: Vec<ProblemView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationView {
    pub rule_id: &'static str,
    pub severity: &'static str,
    pub title: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemView {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagRow {
    pub name: &'static str,
    pub r#type: String,
    pub safety: &'static str,
    pub owner: &'static str,
    pub secret: bool,
    pub values: BTreeMap<Environment, MatrixCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    /// The effective value (redacted for secret flags); `null` when SSM was unavailable.
    pub value: Option<String>,
    pub default: String,
    /// `ssm` (set and valid), `default` (not set), `invalid` (set but invalid: the default
    /// applies) or `unavailable`.
    pub source: &'static str,
}

/// One environment's summary and its cell of every flag.
type Column = (EnvSummary, Vec<(&'static str, MatrixCell)>);

/// The effective value of every flag in every environment, with defaults, where each value
/// comes from, and the rules each environment's set breaks. An environment whose SSM read
/// fails is reported as unavailable (the others are still shown).
pub async fn matrix(ssm: &SsmFlags) -> Matrix {
    let (dev, staging, prod) =
        tokio::join!(ssm.read(Environment::Dev), ssm.read(Environment::Staging), ssm.read(Environment::Prod));
    let reads = [(Environment::Dev, dev), (Environment::Staging, staging), (Environment::Prod, prod)];
    let mut environments = Vec::new();
    let mut cells: BTreeMap<&'static str, BTreeMap<Environment, MatrixCell>> = BTreeMap::new();
    for (env, read) in reads {
        let (summary, column) = match read {
            Ok(current) => read_column(ssm, env, &current),
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "matrix: SSM read failed");
                unavailable_column(ssm, env)
            }
        };
        environments.push(summary);
        for (name, cell) in column {
            cells.entry(name).or_default().insert(env, cell);
        }
    }
    let flags = flags::REGISTRY
        .iter()
        .map(|def| FlagRow {
            name: def.name,
            r#type: def.ty.describe(),
            safety: def.safety.as_str(),
            owner: def.owner,
            secret: def.is_secret(),
            values: cells.remove(def.name).unwrap_or_default(),
        })
        .collect();
    Matrix { generated_at: Utc::now(), environments, flags }
}

fn read_column(ssm: &SsmFlags, env: Environment, current: &EnvFlags) -> Column {
    let summary = EnvSummary {
        environment: env,
        prefix: ssm.prefix(env),
        ssm: "ok",
        violations: flags::check(&current.set, env)
            .into_iter()
            .map(|v| ViolationView { rule_id: v.rule_id, severity: v.severity.as_str(), title: v.title })
            .collect(),
        problems: current.problems.iter().map(|p| ProblemView { code: p.code(), message: p.to_string() }).collect(),
    };
    let cells = current
        .set
        .iter()
        .map(|(def, value)| {
            let source = match current.raw_value(def.name) {
                None => "default",
                Some(r) if def.parse(&r.value).is_ok() => "ssm",
                Some(_) => "invalid",
            };
            let cell = MatrixCell {
                value: Some(def.display_value(value)),
                default: def.display_value(&def.default_for(env)),
                source,
            };
            (def.name, cell)
        })
        .collect();
    (summary, cells)
}

fn unavailable_column(ssm: &SsmFlags, env: Environment) -> Column {
    let summary = EnvSummary {
        environment: env,
        prefix: ssm.prefix(env),
        ssm: "unavailable",
        violations: vec![],
        problems: vec![],
    };
    let cells = flags::REGISTRY
        .iter()
        .map(|def| {
            let cell =
                MatrixCell { value: None, default: def.display_value(&def.default_for(env)), source: "unavailable" };
            (def.name, cell)
        })
        .collect();
    (summary, cells)
}
