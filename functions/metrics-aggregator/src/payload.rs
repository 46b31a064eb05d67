//! The stored form of a closed window's datums (`metrics_batches.datums`).
//!
//! A window's datums are frozen when it closes so that a sink retried on a later run sends
//! exactly what the other sinks got. Reading them back goes through the catalogue: a name or
//! dimension that is not in `METRICS` is refused, so a hand-edited row cannot smuggle a new
//! (possibly high-cardinality or PII-carrying) series into a sink.

use chrono::{DateTime, Utc};
use holdfast_shared::metrics::{metric_def, DatumValue, MetricDatum, MetricKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    n: String,
    d: Vec<(String, String)>,
    t: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Vec<f64>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("stored datums are not valid JSON: {0}")]
    Json(String),
    #[error("stored datum names unknown metric {0:?}")]
    UnknownMetric(String),
    #[error("stored datum for {metric} has unexpected dimensions")]
    BadDimensions { metric: &'static str },
    #[error("stored datum for {metric} has no value or mismatched values/counts")]
    BadValue { metric: &'static str },
}

pub fn encode(data: &[MetricDatum]) -> Value {
    let stored: Vec<Stored> = data
        .iter()
        .map(|d| {
            let (s, v, c) = match &d.value {
                DatumValue::Sum(x) => (Some(*x), None, None),
                DatumValue::Distribution { values, counts } => (None, Some(values.clone()), Some(counts.clone())),
            };
            Stored {
                n: d.name.to_owned(),
                d: d.dimensions.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                t: d.timestamp,
                s,
                v,
                c,
            }
        })
        .collect();
    serde_json::to_value(stored).unwrap_or(Value::Array(Vec::new()))
}

pub fn decode(json: Value) -> Result<Vec<MetricDatum>, PayloadError> {
    let stored: Vec<Stored> = serde_json::from_value(json).map_err(|e| PayloadError::Json(e.to_string()))?;
    stored
        .into_iter()
        .map(|s| {
            let def = metric_def(&s.n).ok_or_else(|| PayloadError::UnknownMetric(s.n.clone()))?;
            if s.d.len() != def.dimensions.len() {
                return Err(PayloadError::BadDimensions { metric: def.name });
            }
            let mut dimensions = Vec::with_capacity(s.d.len());
            for ((k, v), want) in s.d.into_iter().zip(def.dimensions.iter()) {
                if k != *want {
                    return Err(PayloadError::BadDimensions { metric: def.name });
                }
                let bounded = holdfast_shared::metrics::dimension_values(want);
                if bounded.is_some_and(|allowed| !allowed.contains(&v.as_str())) {
                    return Err(PayloadError::BadDimensions { metric: def.name });
                }
                dimensions.push((*want, v));
            }
            let value = match (def.kind, s.s, s.v, s.c) {
                (MetricKind::Distribution, None, Some(values), Some(counts)) if values.len() == counts.len() => {
                    DatumValue::Distribution { values, counts }
                }
                (MetricKind::Counter | MetricKind::Gauge, Some(x), None, None) => DatumValue::Sum(x),
                _ => return Err(PayloadError::BadValue { metric: def.name }),
            };
            Ok(MetricDatum { name: def.name, dimensions, unit: def.unit, timestamp: s.t, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use holdfast_shared::metrics::{aggregate_window, gauge, EventRow, Gauge};
    use serde_json::json;

    #[test]
    fn round_trips_what_aggregation_produces() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single().expect("time");
        let rows: Vec<EventRow> = (0..40)
            .map(|i| EventRow {
                id: i,
                created_at: t + Duration::seconds(i),
                source: "holds-api".into(),
                event_type: ["hold.created", "hold.conflict", "hold.failed", "email.sent"][i as usize % 4].into(),
                context: json!({"duration_ms": i * 7, "attempt": 1 + i % 3, "max_attempts": 2, "email_type": "reminder"}),
            })
            .collect();
        let mut data = aggregate_window("prod", t, Duration::minutes(1), &rows);
        data.push(gauge("prod", Gauge::OutboxLagSeconds, 12.0, t));
        assert!(data.len() > 8);
        let back = decode(encode(&data)).expect("decodes");
        assert_eq!(back, data);
    }

    #[test]
    fn refuses_what_the_catalogue_does_not_allow() {
        let t = "2026-11-23T10:00:00Z";
        let unknown = json!([{"n": "GuestEmails", "d": [["Environment", "prod"]], "t": t, "s": 1.0}]);
        assert!(matches!(decode(unknown), Err(PayloadError::UnknownMetric(_))));
        let extra_dim =
            json!([{"n": "Requests", "d": [["Environment", "prod"], ["Restaurant", "r1"]], "t": t, "s": 1.0}]);
        assert!(matches!(decode(extra_dim), Err(PayloadError::BadDimensions { .. })));
        let free_value = json!([{"n": "Requests", "d": [["Environment", "prod"], ["Operation", "jane@example.com"]], "t": t, "s": 1.0}]);
        assert!(matches!(decode(free_value), Err(PayloadError::BadDimensions { .. })));
        let mismatched = json!([{"n": "Latency", "d": [["Environment", "prod"], ["Operation", "hold"]], "t": t,
            "v": [1.0, 2.0], "c": [1.0]}]);
        assert!(matches!(decode(mismatched), Err(PayloadError::BadValue { .. })));
    }
}
