//! Finds the metrics that dashboards, monitors and the infra template reference, so a test
//! (and CI) can prove they all exist in [`super::METRICS`]. A dashboard pointing at a metric
//! nobody publishes shows a flat line forever; an alarm on it never fires.

use super::{datadog_name, metric_def, METRICS, NAMESPACE};
use serde_json::Value;

/// A metric referenced by a dashboard or alarm definition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricRef {
    /// A metric in the `Holdfast` CloudWatch namespace (by catalogue name).
    CloudWatch(String),
    /// A Datadog metric `holdfast.<snake_case>`.
    Datadog(String),
}

impl MetricRef {
    /// Whether the reference names a catalogue metric.
    pub fn is_known(&self) -> bool {
        match self {
            MetricRef::CloudWatch(n) => metric_def(n).is_some(),
            MetricRef::Datadog(n) => METRICS.iter().any(|m| datadog_name(m.name) == *n),
        }
    }
}

/// References that are not in the catalogue.
pub fn unknown(refs: &[MetricRef]) -> Vec<MetricRef> {
    refs.iter().filter(|r| !r.is_known()).cloned().collect()
}

/// Every metric referenced in a JSON document: CloudWatch dashboard `metrics` arrays
/// (`[namespace, name, dim, value, …]`, with `"."` meaning "same as the row above"), objects
/// with `metricName`/`MetricName` (Grafana targets; skipped when their `namespace` is not
/// `Holdfast`), and `holdfast.xxx` names inside any string (Datadog queries).
pub fn extract_from_json(doc: &Value) -> Vec<MetricRef> {
    let mut out = Vec::new();
    walk(doc, &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk(v: &Value, out: &mut Vec<MetricRef>) {
    match v {
        Value::Object(m) => {
            let name = m.get("metricName").or_else(|| m.get("MetricName"));
            if let Some(Value::String(name)) = name {
                let ns = m.get("namespace").or_else(|| m.get("Namespace")).and_then(Value::as_str);
                if ns.is_none_or(|ns| ns == NAMESPACE) {
                    out.push(MetricRef::CloudWatch(name.clone()));
                }
            }
            if let Some(Value::Array(rows)) = m.get("metrics") {
                cloudwatch_metrics_array(rows, out);
            }
            m.values().for_each(|x| walk(x, out));
        }
        Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
        Value::String(s) => out.extend(extract_datadog_names(s).into_iter().map(MetricRef::Datadog)),
        _ => {}
    }
}

/// CloudWatch dashboard `metrics`: rows of `[ns, name, k, v, …, {options}]`; rows starting
/// with an object are math expressions and name no metric.
fn cloudwatch_metrics_array(rows: &[Value], out: &mut Vec<MetricRef>) {
    let mut prev_ns = String::new();
    let mut prev_name = String::new();
    for row in rows {
        let Some(cells) = row.as_array() else {
            continue;
        };
        let (Some(ns), Some(name)) = (cells.first().and_then(Value::as_str), cells.get(1).and_then(Value::as_str))
        else {
            continue;
        };
        let ns = if ns == "." { prev_ns.clone() } else { ns.to_owned() };
        let name = if name == "." { prev_name.clone() } else { name.to_owned() };
        if ns == NAMESPACE {
            out.push(MetricRef::CloudWatch(name.clone()));
        }
        prev_ns = ns;
        prev_name = name;
    }
}

/// `holdfast.<name>` occurrences in free text (`[a-z0-9_]+` after the dot), not preceded by
/// an identifier character (so `myholdfast.x` does not count).
pub fn extract_datadog_names(s: &str) -> Vec<String> {
    let prefix = "holdfast.";
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = s[from..].find(prefix) {
        let start = from + pos;
        let name_start = start + prefix.len();
        let preceded = start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
        };
        let mut end = name_start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if !preceded && end > name_start {
            out.push(s[start..end].to_owned());
        }
        from = name_start;
    }
    out
}

/// Column of a YAML line's key (after indentation and a list dash) and whether the line
/// starts a list item.
fn key_column(line: &str) -> (usize, bool) {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    if let Some(after) = rest.strip_prefix("- ") {
        (indent + 2 + (after.len() - after.trim_start_matches(' ').len()), true)
    } else {
        (indent, false)
    }
}

fn key_value(line: &str, key: &str) -> Option<String> {
    let (col, _) = key_column(line);
    let rest = line.get(col..)?.strip_prefix(key)?.strip_prefix(':')?;
    let v = rest.split(" #").next().unwrap_or("").trim();
    Some(v.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

/// Metric names from `MetricName: X` lines of a CloudFormation/SAM YAML template. Values
/// that are intrinsic functions (`!Ref`, `!Sub`, `{…}`) cannot be resolved and are skipped;
/// a `MetricName` whose sibling `Namespace:` is a literal other than `Holdfast` (e.g.
/// `AWS/SQS`) is not ours and is skipped too.
pub fn extract_from_template_yaml(text: &str) -> Vec<MetricRef> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = key_value(line, "MetricName") else {
            continue;
        };
        if name.is_empty() || name.starts_with('!') || name.starts_with('{') {
            continue;
        }
        let ns = sibling_value(&lines, i, "Namespace");
        let ours = match ns.as_deref() {
            Some(ns) if !ns.starts_with('!') && !ns.starts_with('{') => ns == NAMESPACE,
            _ => true,
        };
        if ours {
            out.push(MetricRef::CloudWatch(name));
        }
    }
    out
}

/// The value of `key` among the mapping siblings of line `i` (same key column).
fn sibling_value(lines: &[&str], i: usize, key: &str) -> Option<String> {
    let (col, starts_item) = key_column(lines[i]);
    let relevant = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    if !starts_item {
        for l in lines[..i].iter().rev().filter(|l| relevant(l)) {
            let (c, item) = key_column(l);
            if c < col {
                break;
            }
            if c == col {
                if let Some(v) = key_value(l, key) {
                    return Some(v);
                }
                if item {
                    break;
                }
            }
        }
    }
    for l in lines[i + 1..].iter().filter(|l| relevant(l)) {
        let (c, item) = key_column(l);
        if c < col || (c == col && item) {
            break;
        }
        if c == col {
            if let Some(v) = key_value(l, key) {
                return Some(v);
            }
        }
    }
    None
}
