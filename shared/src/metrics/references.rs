//! Finds the metrics that dashboards, monitors and the infra template reference, so a test
//! (and CI) can prove they all exist in [`super::METRICS`]. A dashboard pointing at a metric
//! nobody publishes shows a flat line forever; an alarm on it never fires.

use super::{datadog_name, datadog_tag_key, dimension_values, metric_def, METRICS, NAMESPACE};
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

/// A dashboard or alarm filtering a metric on one dimension value (`EmailType = reminder`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DimensionFilter {
    /// The catalogue metric name (CloudWatch spelling; Datadog names are mapped back).
    pub metric: String,
    /// The dimension as the source spells it (`EmailType`, or Datadog's `email_type`).
    pub dimension: String,
    pub value: String,
}

impl DimensionFilter {
    fn new(metric: &str, dimension: &str, value: &str) -> Self {
        Self { metric: metric.to_owned(), dimension: dimension.to_owned(), value: value.to_owned() }
    }

    /// Why this filter can never match what the code emits, if it cannot. Template variables
    /// (`${Environment}`, Datadog's `$env`) and wildcards are not checked; metrics missing from
    /// the catalogue are reported by [`unknown`] instead.
    pub fn problem(&self) -> Option<String> {
        let def = metric_def(&self.metric)?;
        if self.value == "*" || self.value.contains('$') {
            return None;
        }
        let Some(dim) = def.dimensions.iter().find(|d| **d == self.dimension || datadog_tag_key(d) == self.dimension)
        else {
            return Some(format!("{} has no dimension {} (it has {:?})", self.metric, self.dimension, def.dimensions));
        };
        let allowed = dimension_values(dim)?;
        (!allowed.contains(&self.value.as_str())).then(|| {
            format!("{} is never emitted with {dim} = {:?} (the code emits {allowed:?})", self.metric, self.value)
        })
    }
}

/// Every dimension value a JSON dashboard or monitor filters on: CloudWatch `metrics` rows
/// (`[ns, name, dim, value, …]`), Grafana targets (`metricName` + `dimensions` object) and
/// Datadog queries (`holdfast.x{tag:value,…}`).
pub fn dimension_filters_from_json(doc: &Value) -> Vec<DimensionFilter> {
    let mut out = Vec::new();
    walk_filters(doc, &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk_filters(v: &Value, out: &mut Vec<DimensionFilter>) {
    match v {
        Value::Object(m) => {
            let name = m.get("metricName").or_else(|| m.get("MetricName")).and_then(Value::as_str);
            let ns = m.get("namespace").or_else(|| m.get("Namespace")).and_then(Value::as_str);
            if let (Some(name), Some(Value::Object(dims))) = (name, m.get("dimensions")) {
                if ns.is_none_or(|ns| ns == NAMESPACE) {
                    for (k, v) in dims {
                        let values = match v {
                            Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
                            Value::String(s) => vec![s.as_str()],
                            _ => vec![],
                        };
                        out.extend(values.into_iter().map(|v| DimensionFilter::new(name, k, v)));
                    }
                }
            }
            if let Some(Value::Array(rows)) = m.get("metrics") {
                cloudwatch_row_filters(rows, out);
            }
            m.values().for_each(|x| walk_filters(x, out));
        }
        Value::Array(xs) => xs.iter().for_each(|x| walk_filters(x, out)),
        Value::String(s) => out.extend(datadog_filters(s)),
        _ => {}
    }
}

/// `[ns, name, k1, v1, k2, v2, …, {options}]`, where `"."` repeats the row above's cell.
fn cloudwatch_row_filters(rows: &[Value], out: &mut Vec<DimensionFilter>) {
    let mut prev: Vec<String> = Vec::new();
    for row in rows {
        let Some(cells) = row.as_array() else { continue };
        let strings: Vec<String> = cells
            .iter()
            .map_while(Value::as_str)
            .enumerate()
            .map(|(i, c)| if c == "." { prev.get(i).cloned().unwrap_or_default() } else { c.to_owned() })
            .collect();
        if strings.len() >= 2 && strings[0] == NAMESPACE {
            for pair in strings[2..].chunks(2) {
                if let [k, v] = pair {
                    out.push(DimensionFilter::new(&strings[1], k, v));
                }
            }
        }
        if !strings.is_empty() {
            prev = strings;
        }
    }
}

/// Tag filters of Datadog queries: `holdfast.emails_sent{env:prod,email_type:reminder}` and
/// boolean forms (`{$env AND (operation:hold OR operation:confirm)}`), negations included.
pub fn datadog_filters(s: &str) -> Vec<DimensionFilter> {
    let mut out = Vec::new();
    for dd_name in extract_datadog_names(s) {
        let Some(def) = METRICS.iter().find(|m| datadog_name(m.name) == dd_name) else { continue };
        let mut rest = s;
        while let Some(pos) = rest.find(&dd_name) {
            let after = &rest[pos + dd_name.len()..];
            rest = after;
            let Some(scope) = after.strip_prefix('{').and_then(|a| a.split_once('}')).map(|(scope, _)| scope) else {
                continue;
            };
            let tokens = scope.split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace());
            for token in tokens.map(|t| t.trim_start_matches('!')).filter(|t| !t.is_empty()) {
                if let Some((k, v)) = token.split_once(':') {
                    out.push(DimensionFilter::new(def.name, k, v));
                }
            }
        }
    }
    out
}

/// `Dimensions` of the CloudWatch alarms in a CloudFormation/SAM template, each with its
/// sibling `MetricName` (flow style `- { Name: X, Value: Y }` and block style both).
pub fn dimension_filters_from_template_yaml(text: &str) -> Vec<DimensionFilter> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if key_value(line, "Dimensions").is_none() {
            continue;
        }
        let Some(metric) = sibling_value(&lines, i, "MetricName") else { continue };
        let (col, _) = key_column(line);
        let mut name: Option<String> = None;
        for l in lines[i + 1..].iter().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            let (c, _) = key_column(l);
            let dashed = l.trim_start().starts_with("- ");
            if c <= col && !dashed {
                break;
            }
            let body = l.trim_start().trim_start_matches("- ").trim();
            let pairs: Vec<(&str, &str)> = body
                .trim_start_matches('{')
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim().trim_matches(|c| c == '"' || c == '\'')))
                .collect();
            for (k, v) in pairs {
                match k {
                    "Name" => name = Some(v.to_owned()),
                    "Value" => {
                        if let Some(n) = name.take() {
                            if !v.starts_with('!') {
                                out.push(DimensionFilter::new(&metric, &n, v));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
