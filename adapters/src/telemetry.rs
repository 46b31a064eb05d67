//! Logs as Lambda users expect them (docs/observability.md).
//!
//! - Format and level come from Lambda's logging controls, as `lambda_runtime`'s own
//!   `tracing::init_default_subscriber` reads them: `AWS_LAMBDA_LOG_FORMAT` (`JSON`, else text)
//!   and `AWS_LAMBDA_LOG_LEVEL`, falling back to `RUST_LOG` (full directives), then INFO.
//!   The runtime's subscriber is mirrored rather than used because its JSON lines nest span
//!   fields under `spans`/`span`; here they are flattened into the line, so a CloudWatch Logs
//!   Insights query says `filter correlation_id = "…"`, whatever span the line came from.
//! - Every line of an invocation carries `requestId`, `function`, `cold_start` and
//!   `correlation_id`: the handler runs inside [`FunctionTelemetry::invocation`]'s span, and
//!   narrower spans (one SQS record, one outbox row, one auto-assign job) override
//!   `correlation_id` with the booking's. In Lambda the runtime's own span adds `xrayTraceId`.
//! - DB, SQS and provider calls run in a `call` span through [`timed`], which logs their
//!   duration. No OpenTelemetry exporter: X-Ray active tracing already traces each invocation,
//!   and an exporter (opentelemetry, its SDK, OTLP, tracing-opentelemetry, plus a collector
//!   layer) would add dozens of crates for per-call timings a log line gives.
//!
//! Logs carry ids and codes only; guest PII never reaches a log line by construction (handlers
//! log domain ids and error codes, never request bodies; tests/tests/privacy.rs and
//! tests/tests/correlation.rs capture every line to check).

use chrono::{SecondsFormat, Utc};
use holdfast_shared::correlation::CorrelationId;
use lambda_http::Context;
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Instrument, Span, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Set by Lambda from the function's `LoggingConfig.LogFormat`.
pub const LOG_FORMAT_ENV: &str = "AWS_LAMBDA_LOG_FORMAT";
/// Set by Lambda from `LoggingConfig.ApplicationLogLevel` (JSON format only).
pub const LOG_LEVEL_ENV: &str = "AWS_LAMBDA_LOG_LEVEL";

/// The crates whose TRACE lines may be shown. Others stop at DEBUG even when TRACE is asked
/// for: the SDK's and the HTTP stack's TRACE lines can print requests, and an SES request
/// body is the guest's email.
const OWN_CRATES: &[&str] = &[
    "holdfast_shared",
    "holdfast_adapters",
    "holds_api",
    "auto_assigner",
    "email_sender",
    "outbox_relay",
    "metrics_aggregator",
    "maintenance",
    "flag_approver",
    "flag_review_sweep",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (see [`FlatJson`]).
    Json,
    /// tracing's plain text lines, span fields in braces.
    Text,
}

impl LogFormat {
    /// `AWS_LAMBDA_LOG_FORMAT`: `JSON` in any case is JSON; anything else, or unset, is text
    /// (Lambda's default format, and the runtime's reading of the variable).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.trim().eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// A Lambda application log level (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL`; any
/// case). FATAL has no tracing level of its own: ERROR.
fn lambda_level(value: &str) -> Option<LevelFilter> {
    match value.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(LevelFilter::TRACE),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "INFO" => Some(LevelFilter::INFO),
        "WARN" => Some(LevelFilter::WARN),
        "ERROR" | "FATAL" => Some(LevelFilter::ERROR),
        _ => None,
    }
}

fn level_filter(level: LevelFilter) -> EnvFilter {
    if level == LevelFilter::TRACE {
        let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}=trace")).collect();
        EnvFilter::new(format!("debug,{}", own.join(",")))
    } else {
        EnvFilter::new(level.to_string())
    }
}

/// The filter for `AWS_LAMBDA_LOG_LEVEL` (wins when it is a level), else `RUST_LOG` (any
/// `EnvFilter` directives, for an operator who wants one module louder), else INFO.
pub fn env_filter(lambda_log_level: Option<&str>, rust_log: Option<&str>) -> EnvFilter {
    if let Some(level) = lambda_log_level.and_then(lambda_level) {
        return level_filter(level);
    }
    if let Some(directives) = rust_log.map(str::trim).filter(|d| !d.is_empty()) {
        if let Ok(filter) = EnvFilter::try_new(directives) {
            return filter;
        }
    }
    level_filter(LevelFilter::INFO)
}

/// The functions' subscriber, writing to `writer` (stdout in Lambda; a buffer in the tests
/// that capture log lines).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false);
    match format {
        LogFormat::Json => Box::new(builder.fmt_fields(JsonFields::new()).event_format(FlatJson).finish()),
        // CloudWatch stamps every line already.
        LogFormat::Text => Box::new(builder.with_target(false).without_time().finish()),
    }
}

/// Install the functions' subscriber on stdout, configured by Lambda's logging controls.
/// Called first thing in every function's `main`.
pub fn init_lambda_logs() {
    let var = |k: &str| std::env::var(k).ok();
    let format = LogFormat::parse(var(LOG_FORMAT_ENV).as_deref());
    let filter = env_filter(var(LOG_LEVEL_ENV).as_deref(), var("RUST_LOG").as_deref());
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stdout));
}

/// Human-readable logs for local runs.
pub fn init_pretty_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .try_init();
}

/// The JSON line format: `timestamp` (RFC 3339, which Lambda's log-level filtering reads),
/// `level`, `target`, `message`, then the fields of every span the line is in, outermost
/// first so that an inner span's `correlation_id` wins, then the event's own fields.
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true).into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                // JsonFields keeps each span's fields as one JSON object (empty: none recorded).
                if let Some(fields) = ext.get::<FormattedFields<JsonFields>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields) {
                        line.extend(m);
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// One Lambda function as its log lines name it, with its cold-start flag: built once per
/// container, with the rest of the handler's state.
pub struct FunctionTelemetry {
    name: String,
    warm: AtomicBool,
}

impl FunctionTelemetry {
    /// Named `AWS_LAMBDA_FUNCTION_NAME` in Lambda (`holdfast-prod-holds-api`), `default_name`
    /// elsewhere (local runs, tests).
    pub fn new(default_name: &str) -> Self {
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().filter(|n| !n.is_empty());
        Self { name: name.unwrap_or_else(|| default_name.to_string()), warm: AtomicBool::new(false) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The span of the container's start (Lambda's INIT phase, before any request id exists):
    /// its lines carry `function` and `phase = "init"`.
    pub fn init(&self) -> Span {
        tracing::error_span!("init", function = %self.name, phase = "init")
    }

    /// The span one invocation runs in. `lambda` is the invocation's context (`None` off
    /// Lambda: a request id is minted); `correlation` the booking's, or `None` for an
    /// invocation about no one booking, which then correlates as its request id. The first
    /// invocation of this value is the cold start. ERROR level, so that the span and its
    /// fields exist at every log level (the runtime's own span is INFO).
    pub fn invocation(&self, lambda: Option<&Context>, correlation: Option<&CorrelationId>) -> Span {
        let cold_start = !self.warm.swap(true, Ordering::Relaxed);
        let request_id = match lambda.map(|c| c.request_id.as_str()).filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let correlation = match correlation {
            Some(c) => c.clone(),
            None => CorrelationId::parse(&request_id).unwrap_or_else(|_| CorrelationId::mint()),
        };
        let span = tracing::error_span!(
            "invocation",
            requestId = %request_id,
            xrayTraceId = tracing::field::Empty,
            function = %self.name,
            cold_start,
            correlation_id = %correlation,
        );
        if let Some(trace) = lambda.and_then(|c| c.xray_trace_id.as_deref()) {
            span.record("xrayTraceId", trace);
        }
        span
    }
}

/// The span of one unit of work about one booking inside an invocation (an SQS record, an
/// outbox row, an auto-assign job): its lines carry the booking's correlation id, when known.
pub fn correlated(name: &'static str, correlation: Option<&CorrelationId>) -> Span {
    let span = tracing::error_span!("work", unit = name, correlation_id = tracing::field::Empty);
    if let Some(c) = correlation {
        span.record("correlation_id", c.as_str());
    }
    span
}

/// A request's correlation id, and the span that carries it. A request that acts on a hold or
/// booking which already has an id adopts that id ([`Correlation::adopt`]), so a booking keeps
/// one id from its hold to its last email.
pub struct Correlation {
    id: Mutex<CorrelationId>,
    span: Span,
}

impl Correlation {
    pub fn new(id: CorrelationId, span: Span) -> Self {
        Self { id: Mutex::new(id), span }
    }

    /// For a use case run outside a request (tools, tests): a fresh id, no span.
    pub fn detached() -> Self {
        Self::new(CorrelationId::mint(), Span::none())
    }

    pub fn id(&self) -> CorrelationId {
        self.id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Carry on with `stored` (the hold's or booking's id) if there is one and it differs; the
    /// request's lines from here on, and its response header, say `stored`. One line records
    /// the switch, with the request's own id, so both ids find it.
    pub fn adopt(&self, stored: Option<&CorrelationId>) {
        let Some(stored) = stored else { return };
        let previous = {
            let mut id = self.id.lock().unwrap_or_else(|p| p.into_inner());
            if *id == *stored {
                return;
            }
            std::mem::replace(&mut *id, stored.clone())
        };
        self.span.record("correlation_id", stored.as_str());
        tracing::info!(parent: &self.span, request_correlation_id = %previous, "carrying on with the booking's correlation id");
    }
}

/// Run a DB, SQS or provider call in a `call` span named by `operation` (e.g. `sqs.send_message_batch`)
/// and log how long it took and whether it succeeded (`duration_ms`, `ok`; errors are logged by
/// the caller, which knows what they mean).
pub async fn timed<T, E, F>(operation: &'static str, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let span = tracing::info_span!("call", operation);
    let started = Instant::now();
    let out = call.instrument(span.clone()).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(parent: &span, operation, duration_ms, ok = out.is_ok(), "call finished");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lambda(request_id: &str) -> Context {
        let mut c = Context::default();
        c.request_id = request_id.into();
        c.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
        c
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect()
        }
    }

    fn capture(format: LogFormat, filter: EnvFilter, f: impl FnOnce()) -> Buf {
        let buf = Buf::default();
        let writer = buf.clone();
        tracing::subscriber::with_default(subscriber(format, filter, move || writer.clone()), f);
        buf
    }

    #[test]
    fn the_format_follows_lambda() {
        assert_eq!(LogFormat::parse(Some("JSON")), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some("json")), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some("Text")), LogFormat::Text);
        assert_eq!(LogFormat::parse(None), LogFormat::Text);
    }

    #[test]
    fn lambda_level_wins_then_rust_log_then_info() {
        let at = |lambda: Option<&str>, rust: Option<&str>| env_filter(lambda, rust).max_level_hint();
        assert_eq!(at(Some("WARN"), Some("debug")), Some(LevelFilter::WARN));
        assert_eq!(at(Some("fatal"), None), Some(LevelFilter::ERROR));
        assert_eq!(at(Some("DEBUG"), None), Some(LevelFilter::DEBUG));
        assert_eq!(at(Some("nonsense"), Some("debug")), Some(LevelFilter::DEBUG));
        assert_eq!(at(None, Some("warn")), Some(LevelFilter::WARN));
        assert_eq!(at(None, Some("=%%")), Some(LevelFilter::INFO));
        assert_eq!(at(None, None), Some(LevelFilter::INFO));
        // TRACE is ours only: the SDK's TRACE lines can print requests.
        let trace = env_filter(Some("TRACE"), None).to_string();
        let directives: Vec<&str> = trace.split(',').collect();
        assert!(directives.contains(&"debug") && directives.contains(&"email_sender=trace"), "{trace}");
    }

    #[test]
    fn every_json_line_carries_the_invocation_fields_and_the_innermost_correlation_id() {
        let f = FunctionTelemetry::new("test-fn");
        let booking = CorrelationId::parse("booking-0001").expect("valid");
        let buf = capture(LogFormat::Json, EnvFilter::new("info"), || {
            let inv = f.invocation(Some(&lambda("0b5e7c1a-0000-4000-8000-000000000001")), None);
            let _i = inv.enter();
            tracing::info!(count = 2, "outer");
            let work = correlated("record", Some(&booking));
            let _w = work.enter();
            tracing::warn!(code = "x", "inner");
            drop(_w);
            let again = f.invocation(None, None);
            let _a = again.enter();
            tracing::info!("second invocation");
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["requestId"], "0b5e7c1a-0000-4000-8000-000000000001");
        assert_eq!(lines[0]["function"], "test-fn");
        assert_eq!(lines[0]["cold_start"], true);
        assert_eq!(
            lines[0]["correlation_id"], "0b5e7c1a-0000-4000-8000-000000000001",
            "an invocation about no booking correlates as itself"
        );
        assert_eq!(lines[0]["message"], "outer");
        assert_eq!(lines[0]["count"], 2);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["xrayTraceId"], "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
        assert!(lines[0]["timestamp"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
        assert_eq!(lines[1]["correlation_id"], "booking-0001");
        assert_eq!(lines[1]["requestId"], "0b5e7c1a-0000-4000-8000-000000000001");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[2]["cold_start"], false);
        assert!(lines[2]["requestId"]
            .as_str()
            .is_some_and(|r| r != "0b5e7c1a-0000-4000-8000-000000000001" && !r.is_empty()));
    }

    #[test]
    fn spans_keep_their_fields_at_warn() {
        let f = FunctionTelemetry::new("test-fn");
        let buf = capture(LogFormat::Json, env_filter(Some("WARN"), None), || {
            let inv = f.invocation(Some(&lambda("req-2")), None);
            let _i = inv.enter();
            tracing::info!("filtered out");
            tracing::error!("kept");
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["requestId"], "req-2");
        assert_eq!(lines[0]["function"], "test-fn");
    }

    #[test]
    fn adopting_switches_the_span_and_says_so() {
        let f = FunctionTelemetry::new("test-fn");
        let request = CorrelationId::parse("request-0001").expect("valid");
        let booking = CorrelationId::parse("booking-0002").expect("valid");
        let buf = capture(LogFormat::Json, EnvFilter::new("info"), || {
            let span = f.invocation(Some(&lambda("req-3")), Some(&request));
            let corr = Correlation::new(request.clone(), span.clone());
            let _i = span.enter();
            tracing::info!("before");
            corr.adopt(None);
            corr.adopt(Some(&booking));
            corr.adopt(Some(&booking));
            tracing::info!("after");
            assert_eq!(corr.id(), booking);
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["correlation_id"], "request-0001");
        assert_eq!(lines[1]["correlation_id"], "booking-0002");
        assert_eq!(lines[1]["request_correlation_id"], "request-0001");
        assert_eq!(lines[2]["correlation_id"], "booking-0002");
    }

    #[test]
    fn timed_calls_log_their_duration_inside_the_invocation() {
        let f = FunctionTelemetry::new("test-fn");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let buf = capture(LogFormat::Json, EnvFilter::new("info"), || {
            let inv = f.invocation(Some(&lambda("req-4")), None);
            let r: Result<u8, ()> = rt.block_on(timed("db.test", async { Ok(1) }).instrument(inv));
            assert_eq!(r, Ok(1));
        });
        let lines = buf.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["operation"], "db.test");
        assert_eq!(lines[0]["ok"], true);
        assert!(lines[0]["duration_ms"].is_u64());
        assert_eq!(lines[0]["requestId"], "req-4");
    }

    #[test]
    fn text_format_is_plain_lines() {
        let f = FunctionTelemetry::new("test-fn");
        let buf = capture(LogFormat::Text, EnvFilter::new("info"), || {
            let inv = f.invocation(Some(&lambda("req-5")), None);
            let _i = inv.enter();
            tracing::info!("hello");
        });
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        assert!(text.contains("requestId=req-5") && text.contains("hello") && !text.starts_with('{'), "{text}");
    }
}
