//! Where closed windows go. A sink turns a batch of datums into an ordered, deterministic list
//! of requests ("parts"); the aggregator records after each part that it was sent, so a retry
//! resumes at the first unsent part and never re-sends an accepted one.

use chrono::Duration;
use holdfast_adapters::secrets::{SecretError, SsmSecret};
use holdfast_shared::metrics::{chunk_for_cloudwatch, datadog_name, metric_def, DatumValue, MetricDatum, MetricKind};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a part was not accepted. The message is an error class for logs and the
/// `metrics_publications.last_error` column: never a payload, never a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

impl SinkError {
    fn new(s: impl Into<String>) -> Self {
        let mut s: String = s.into();
        s.truncate(200);
        Self(s)
    }
}

pub trait Sink: Send + Sync {
    /// `metrics_publications.sink`.
    fn name(&self) -> &'static str;
    /// Oldest timestamp the sink still accepts; older unsent batches are marked expired.
    fn max_age(&self) -> Duration;
    /// Number of requests needed for `data` (deterministic for the same data).
    fn part_count(&self, data: &[MetricDatum]) -> usize;
    /// Sends request `part` (0-based) of `data`.
    fn send_part<'a>(&'a self, data: &'a [MetricDatum], part: usize) -> BoxFuture<'a, Result<(), SinkError>>;
}

// ------------------------------------------------------------------------------ CloudWatch

/// `PutMetricData` to one namespace, batched by `chunk_for_cloudwatch`; latency as
/// `Values`/`Counts` so CloudWatch computes percentiles over any period.
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

impl CloudWatchSink {
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into() }
    }
}

/// The SDK datum for one of ours.
pub fn cloudwatch_datum(d: &MetricDatum) -> aws_sdk_cloudwatch::types::MetricDatum {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum as Cw, StandardUnit};
    let b = Cw::builder()
        .metric_name(d.name)
        .set_dimensions(Some(
            d.dimensions.iter().map(|(k, v)| Dimension::builder().name(*k).value(v).build()).collect(),
        ))
        .unit(StandardUnit::from(d.unit.as_str()))
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(d.timestamp.timestamp()));
    match &d.value {
        DatumValue::Sum(v) => b.value(*v),
        DatumValue::Distribution { values, counts } => {
            b.set_values(Some(values.clone())).set_counts(Some(counts.clone()))
        }
    }
    .build()
}

impl Sink for CloudWatchSink {
    fn name(&self) -> &'static str {
        "cloudwatch"
    }

    fn max_age(&self) -> Duration {
        // CloudWatch accepts datapoints up to two weeks old; keep a day of margin.
        Duration::days(13)
    }

    fn part_count(&self, data: &[MetricDatum]) -> usize {
        chunk_for_cloudwatch(data).len()
    }

    fn send_part<'a>(&'a self, data: &'a [MetricDatum], part: usize) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let chunks = chunk_for_cloudwatch(data);
            let chunk = chunks.get(part).ok_or_else(|| SinkError::new("cloudwatch: no such part"))?;
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(chunk.iter().map(|d| cloudwatch_datum(d)).collect()))
                .send()
                .await
                .map_err(|e| {
                    let detail = match e.as_service_error() {
                        Some(s) => {
                            aws_sdk_cloudwatch::error::ProvideErrorMetadata::code(s).unwrap_or("service").to_owned()
                        }
                        None => match &e {
                            aws_sdk_cloudwatch::error::SdkError::TimeoutError(_) => "timeout".to_owned(),
                            aws_sdk_cloudwatch::error::SdkError::DispatchFailure(_) => "dispatch".to_owned(),
                            _ => "response".to_owned(),
                        },
                    };
                    SinkError::new(format!("cloudwatch: {detail}"))
                })?;
            Ok(())
        })
    }
}

// ------------------------------------------------------------------------------ Datadog

/// Series per `POST /api/v2/series` request.
pub const DATADOG_SERIES_PER_REQUEST: usize = 500;
/// Raw values per `POST /api/v1/distribution_points` request (≈ 1 MB of JSON at most).
pub const DATADOG_VALUES_PER_REQUEST: usize = 100_000;

/// Counters and gauges through the v2 series API, `Latency` through the distribution points
/// API (Datadog then computes p50/p95/p99 over any period). Names are `holdfast.<snake_case>`,
/// tags `env:`, `operation:`, … from the bounded dimensions only.
pub struct DatadogSink {
    http: reqwest::Client,
    base_url: String,
    /// The API key, read once per container from an SSM SecureString; sent only as a
    /// sensitive header.
    key: SsmSecret,
}

/// One Datadog request of a batch.
#[derive(Debug, Clone, PartialEq)]
enum DdPart {
    /// Indices (into the batch) of non-distribution datums.
    Series(Vec<usize>),
    /// (datum index, first expanded value, number of values) slices of distributions.
    Distribution(Vec<(usize, usize, usize)>),
}

fn expanded_len(d: &MetricDatum) -> usize {
    match &d.value {
        DatumValue::Distribution { counts, .. } => counts.iter().map(|c| c.max(0.0).round() as usize).sum(),
        DatumValue::Sum(_) => 0,
    }
}

fn plan(data: &[MetricDatum]) -> Vec<DdPart> {
    let mut parts = Vec::new();
    let series: Vec<usize> =
        (0..data.len()).filter(|i| !matches!(data[*i].value, DatumValue::Distribution { .. })).collect();
    for chunk in series.chunks(DATADOG_SERIES_PER_REQUEST) {
        parts.push(DdPart::Series(chunk.to_vec()));
    }
    let mut current: Vec<(usize, usize, usize)> = Vec::new();
    let mut room = DATADOG_VALUES_PER_REQUEST;
    for (i, d) in data.iter().enumerate() {
        let total = expanded_len(d);
        let mut from = 0;
        while from < total {
            let take = (total - from).min(room);
            current.push((i, from, take));
            from += take;
            room -= take;
            if room == 0 {
                parts.push(DdPart::Distribution(std::mem::take(&mut current)));
                room = DATADOG_VALUES_PER_REQUEST;
            }
        }
    }
    if !current.is_empty() {
        parts.push(DdPart::Distribution(current));
    }
    parts
}

/// The JSON body and API path of a part.
fn body(data: &[MetricDatum], part: &DdPart) -> (&'static str, Value) {
    match part {
        DdPart::Series(idx) => {
            let series: Vec<Value> = idx
                .iter()
                .map(|i| {
                    let d = &data[*i];
                    let value = match d.value {
                        DatumValue::Sum(v) => v,
                        DatumValue::Distribution { .. } => 0.0,
                    };
                    let kind = metric_def(d.name).map(|m| m.kind).unwrap_or(MetricKind::Gauge);
                    // v2 intake types: 1 count, 3 gauge. Counts carry their interval (the window).
                    let mut s = json!({
                        "metric": datadog_name(d.name),
                        "type": if kind == MetricKind::Counter { 1 } else { 3 },
                        "points": [{"timestamp": d.timestamp.timestamp(), "value": value}],
                        "tags": d.datadog_tags(),
                    });
                    if kind == MetricKind::Counter {
                        s["interval"] = json!(60);
                    }
                    s
                })
                .collect();
            ("/api/v2/series", json!({ "series": series }))
        }
        DdPart::Distribution(slices) => {
            let series: Vec<Value> = slices
                .iter()
                .map(|(i, from, take)| {
                    let d = &data[*i];
                    let raw: Vec<f64> = match &d.value {
                        DatumValue::Distribution { values, counts } => values
                            .iter()
                            .zip(counts)
                            .flat_map(|(v, c)| std::iter::repeat_n(*v, c.max(0.0).round() as usize))
                            .skip(*from)
                            .take(*take)
                            .collect(),
                        DatumValue::Sum(_) => Vec::new(),
                    };
                    json!({
                        "metric": datadog_name(d.name),
                        "type": "distribution",
                        "points": [[d.timestamp.timestamp(), raw]],
                        "tags": d.datadog_tags(),
                    })
                })
                .collect();
            ("/api/v1/distribution_points", json!({ "series": series }))
        }
    }
}

impl DatadogSink {
    /// `base_url` e.g. `https://api.datadoghq.eu`; the key is read from SSM on first use.
    pub fn from_ssm(http: reqwest::Client, base_url: &str, ssm: aws_sdk_ssm::Client, parameter: String) -> Self {
        Self { http, base_url: base_url.trim_end_matches('/').to_owned(), key: SsmSecret::new(ssm, parameter) }
    }

    /// The HTTP client Datadog calls use: tight timeouts, so a slow intake fails the part (and
    /// it is retried next run) instead of eating the Lambda's time.
    pub fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    }

    /// The header carrying the API key (read from SSM on first use).
    async fn api_key_header(&self) -> Result<reqwest::header::HeaderValue, SinkError> {
        let key = self.key.get().await.map_err(|e| match e {
            SecretError::Unreadable(_) => SinkError::new("datadog: api key parameter unreadable"),
            SecretError::Empty => SinkError::new("datadog: api key parameter empty"),
        })?;
        let mut header = reqwest::header::HeaderValue::from_str(key.expose())
            .map_err(|_| SinkError::new("datadog: api key is not a valid header value"))?;
        header.set_sensitive(true);
        Ok(header)
    }
}

impl Sink for DatadogSink {
    fn name(&self) -> &'static str {
        "datadog"
    }

    fn max_age(&self) -> Duration {
        // The intake drops points more than an hour old.
        Duration::minutes(55)
    }

    fn part_count(&self, data: &[MetricDatum]) -> usize {
        plan(data).len()
    }

    fn send_part<'a>(&'a self, data: &'a [MetricDatum], part: usize) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let parts = plan(data);
            let p = parts.get(part).ok_or_else(|| SinkError::new("datadog: no such part"))?;
            let (path, body) = body(data, p);
            let header = self.api_key_header().await?;
            let resp = self
                .http
                .post(format!("{}{path}", self.base_url))
                .header("DD-API-KEY", header)
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    SinkError::new(if e.is_timeout() { "datadog: timeout" } else { "datadog: connection failed" })
                })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(SinkError::new(format!("datadog: {path} answered {}", status.as_u16())))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use holdfast_shared::metrics::{dims, names, Unit};

    fn latency(n_values: usize, count_each: f64) -> MetricDatum {
        MetricDatum {
            name: names::LATENCY,
            dimensions: vec![(dims::ENVIRONMENT, "prod".into()), (dims::OPERATION, "hold".into())],
            unit: Unit::Milliseconds,
            timestamp: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single().expect("t"),
            value: DatumValue::Distribution {
                values: (0..n_values).map(|v| v as f64).collect(),
                counts: vec![count_each; n_values],
            },
        }
    }

    fn counter(op: &str) -> MetricDatum {
        MetricDatum {
            name: names::REQUESTS,
            dimensions: vec![(dims::ENVIRONMENT, "prod".into()), (dims::OPERATION, op.into())],
            unit: Unit::Count,
            timestamp: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single().expect("t"),
            value: DatumValue::Sum(4.0),
        }
    }

    #[test]
    fn datadog_bodies_carry_names_tags_and_expanded_values() {
        let data = vec![counter("hold"), latency(2, 3.0)];
        let parts = plan(&data);
        assert_eq!(parts.len(), 2);
        let (path, series) = body(&data, &parts[0]);
        assert_eq!(path, "/api/v2/series");
        assert_eq!(series["series"][0]["metric"], "holdfast.requests");
        assert_eq!(series["series"][0]["type"], 1);
        assert_eq!(series["series"][0]["interval"], 60);
        assert_eq!(series["series"][0]["tags"], json!(["env:prod", "operation:hold"]));
        assert_eq!(series["series"][0]["points"][0]["value"], 4.0);
        let (path, dist) = body(&data, &parts[1]);
        assert_eq!(path, "/api/v1/distribution_points");
        assert_eq!(dist["series"][0]["metric"], "holdfast.latency");
        assert_eq!(dist["series"][0]["points"][0][1], json!([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]));
    }

    #[test]
    fn large_distributions_are_split_without_losing_or_repeating_values() {
        let data = vec![latency(150, 1000.0), latency(10, 1.0)];
        let parts = plan(&data);
        let total: usize = parts
            .iter()
            .map(|p| match p {
                DdPart::Distribution(s) => s.iter().map(|(_, _, n)| n).sum::<usize>(),
                DdPart::Series(_) => 0,
            })
            .sum();
        assert_eq!(total, 150_000 + 10);
        assert_eq!(parts.len(), 2);
        let mut values: Vec<f64> = Vec::new();
        for p in &parts {
            let (_, b) = body(&data, p);
            for s in b["series"].as_array().expect("series") {
                values.extend(s["points"][0][1].as_array().expect("values").iter().filter_map(|v| v.as_f64()));
            }
        }
        assert_eq!(values.len(), 150_010);
        assert_eq!(values.iter().filter(|v| **v == 149.0).count(), 1000);
        assert_eq!(values.iter().filter(|v| **v == 9.0).count(), 1001);
    }
}
