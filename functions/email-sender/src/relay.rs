//! The outbox relay (EventBridge schedule, every minute): publishes due `email_outbox` rows to
//! the email queue. A row is marked published only after SQS accepted it; a crash in between
//! publishes it again and the sender's ledger absorbs the duplicate. While SQS is unreachable
//! rows simply wait (the outage does not count against them); a row that SQS itself refuses
//! ten times is marked dead (`dead_at`) and alarmed on.

use crate::clock::Clock;
use crate::error::EmailError;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use holdfast_adapters::sql::Sql;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::email::{self, EmailJob, MAX_SQS_DELAY_SECONDS};
use holdfast_shared::events::{Code, EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::ids::{BookingId, RestaurantId};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// The SQS message attribute that carries a job's correlation id to the email sender.
pub const CORRELATION_ATTRIBUTE: &str = "correlation_id";

/// Rows dead after this many refusals by SQS (docs/runbooks/email.md: dead rows, and reviving
/// them once the cause is fixed).
pub const OUTBOX_MAX_ATTEMPTS: i32 = 10;
/// Rows per page (one transaction, `FOR UPDATE SKIP LOCKED`, SQS batches of ten).
const PAGE: i64 = 100;
/// Pages per tick, so one run stays well inside the 50 s timeout.
const MAX_PAGES: usize = 20;

const DUE_SQL: &str = "
SELECT id, payload, not_before, email_type, booking_id, restaurant_id, correlation_id FROM email_outbox
WHERE published_at IS NULL AND dead_at IS NULL AND not_before <= $1
ORDER BY not_before, created_at LIMIT $2
FOR UPDATE SKIP LOCKED";

/// Count a refusal per row; a row dies at the attempt limit, or at once if its payload is not
/// a job.
const REFUSED_SQL: &str = "
UPDATE email_outbox o SET attempts = o.attempts + 1, last_error = f.code,
    dead_at = CASE WHEN o.attempts + 1 >= $3 OR f.code = 'invalid_payload' THEN $4 END
FROM unnest($1::uuid[], $2::text[]) AS f(id, code)
WHERE o.id = f.id
RETURNING o.id, o.dead_at IS NOT NULL, o.attempts";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayReport {
    pub published: usize,
    /// Rows SQS refused this tick (attempts counted).
    pub refused: usize,
    pub dead: usize,
    /// SQS could not be reached; the rows wait for the next tick.
    pub sqs_unavailable: bool,
}

pub struct OutboxRelay {
    pool: Pool,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    clock: Arc<dyn Clock>,
    telemetry: FunctionTelemetry,
}

struct Row {
    id: Uuid,
    /// The message body; `None` when the payload is not a job.
    body: Option<String>,
    delay: u32,
    email_type: String,
    booking_id: Option<Uuid>,
    restaurant_id: Option<Uuid>,
    /// The booking's correlation id (`None`: a row written before V13, or about no booking).
    correlation: Option<CorrelationId>,
}

enum Published {
    Ok,
    Refused(String),
}

/// A page's rows by what publishing did to them.
#[derive(Default)]
struct Attempts {
    published: Vec<Uuid>,
    refused: Vec<(Uuid, String)>,
    /// Not tried: SQS became unreachable first.
    waiting: Vec<Uuid>,
}

impl OutboxRelay {
    pub fn new(pool: Pool, sqs: aws_sdk_sqs::Client, queue_url: String, clock: Arc<dyn Clock>) -> Self {
        Self { pool, sqs, queue_url, clock, telemetry: FunctionTelemetry::new("outbox-relay") }
    }

    /// One tick off Lambda (local runner, tests, tools): [`Self::tick_in`] without a context.
    pub async fn tick(&self) -> Result<RelayReport, EmailError> {
        self.tick_in(None).await
    }

    /// One tick: publish everything due (or due within SQS's 15-minute delay window), in the
    /// invocation's span (`lambda`: the invocation's context).
    pub async fn tick_in(&self, lambda: Option<&lambda_runtime::Context>) -> Result<RelayReport, EmailError> {
        self.tick_inner().instrument(self.telemetry.invocation(lambda, None)).await
    }

    async fn tick_inner(&self) -> Result<RelayReport, EmailError> {
        let mut report = RelayReport::default();
        for _ in 0..MAX_PAGES {
            let n = self.page(&mut report).await?;
            if n < PAGE as usize || report.sqs_unavailable {
                break;
            }
        }
        if report.published > 0 || report.refused > 0 || report.sqs_unavailable {
            tracing::info!(
                published = report.published,
                refused = report.refused,
                dead = report.dead,
                sqs_unavailable = report.sqs_unavailable,
                "outbox relay tick"
            );
        }
        Ok(report)
    }

    /// One page in one transaction: lock the due rows, publish them, record what happened.
    async fn page(&self, report: &mut RelayReport) -> Result<usize, EmailError> {
        let now = self.clock.now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = telemetry::timed("db.outbox_due", due_rows(&tx, now)).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let attempts = self.attempt(&rows, report).await;
        if !attempts.published.is_empty() {
            tx.run(
                "UPDATE email_outbox SET published_at = $2, last_error = NULL WHERE id = ANY($1)",
                &[&attempts.published, &now],
            )
            .await?;
        }
        let mut events = record_refusals(&tx, &rows, &attempts.refused, now, report).await?;
        for row in rows.iter().filter(|r| attempts.published.contains(&r.id)) {
            // One line and one event per row, in the row's booking's correlation.
            let span = telemetry::correlated("outbox_row", row.correlation.as_ref());
            tracing::info!(parent: &span, outbox_id = %row.id, email_type = %row.email_type, "outbox row published");
            events.push(published_event(row));
        }
        if !attempts.waiting.is_empty() && report.sqs_unavailable {
            tx.run("UPDATE email_outbox SET last_error = 'sqs_unavailable' WHERE id = ANY($1)", &[&attempts.waiting])
                .await?;
            if let Some(first) = rows.iter().find(|r| r.id == attempts.waiting[0]) {
                // One event per tick (not per row): the outage, not the rows, is the news.
                events.push(relay_event(EventType::EmailRetried, first, 1, "sqs_unavailable"));
            }
        }
        holdfast_adapters::events::record_batch(&tx, &events).await?;
        tx.commit().await?;
        report.published += attempts.published.len();
        report.refused += attempts.refused.len();
        Ok(rows.len())
    }

    /// Publish the page's valid rows ten at a time, stopping at the first chunk SQS could not
    /// take (`report.sqs_unavailable`); rows whose payload is not a job are refused unsent.
    async fn attempt(&self, rows: &[Row], report: &mut RelayReport) -> Attempts {
        let mut results: Vec<(usize, Published)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if row.body.is_none() {
                results.push((i, Published::Refused("invalid_payload".into())));
            }
        }
        let sendable: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].body.is_some()).collect();
        for chunk in sendable.chunks(10) {
            match self.publish(rows, chunk.to_vec()).await {
                Ok(mut r) => results.append(&mut r),
                Err(code) => {
                    tracing::warn!(code = %code, "SQS unavailable; outbox rows wait for the next tick");
                    report.sqs_unavailable = true;
                    break;
                }
            }
        }
        let mut attempts = Attempts::default();
        for (i, p) in results {
            match p {
                Published::Ok => attempts.published.push(rows[i].id),
                Published::Refused(code) => attempts.refused.push((rows[i].id, code)),
            }
        }
        let tried: HashSet<Uuid> =
            attempts.published.iter().copied().chain(attempts.refused.iter().map(|(id, _)| *id)).collect();
        attempts.waiting = rows.iter().map(|r| r.id).filter(|id| !tried.contains(id)).collect();
        attempts
    }

    /// Publish one chunk (≤ 10) with `SendMessageBatch`. `Err(code)` when SQS could not be
    /// reached or failed as a whole (nothing accepted); per-entry refusals are `Refused`.
    async fn publish(&self, rows: &[Row], chunk: Vec<usize>) -> Result<Vec<(usize, Published)>, String> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry as Entry;
        let mut entries = Vec::new();
        for &i in &chunk {
            let entry = Entry::builder()
                .id(format!("r{i}"))
                .message_body(rows[i].body.clone().unwrap_or_default())
                .delay_seconds(i32::try_from(rows[i].delay).unwrap_or(0))
                .set_message_attributes(rows[i].correlation.as_ref().map(correlation_attribute))
                .build()
                .map_err(|_| "sqs_entry_invalid".to_string())?;
            entries.push(entry);
        }
        let batch = self.sqs.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send();
        let out = telemetry::timed("sqs.send_message_batch", batch).await.map_err(|e| {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "SendMessageBatch failed");
            "sqs_unavailable".to_string()
        })?;
        let index = |id: &str| id.strip_prefix('r').and_then(|n| n.parse::<usize>().ok());
        let mut res = Vec::new();
        for ok in &out.successful {
            if let Some(i) = index(&ok.id) {
                res.push((i, Published::Ok));
            }
        }
        for f in &out.failed {
            if let Some(i) = index(&f.id) {
                let code =
                    format!("sqs_{}", f.code.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
                let code = if Code::parse(&code).is_ok() { code } else { "sqs_refused".into() };
                res.push((i, Published::Refused(code)));
            }
        }
        Ok(res)
    }
}

/// Lock and load a page of due rows (or due within SQS's delay window). A row due later than
/// now carries its `not_before` in the job, so the sender defers the rest.
async fn due_rows(tx: &Transaction<'_>, now: DateTime<Utc>) -> Result<Vec<Row>, EmailError> {
    let horizon = now + chrono::Duration::seconds(i64::from(MAX_SQS_DELAY_SECONDS));
    let rows = tx.fetch(DUE_SQL, &[&horizon, &PAGE]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let payload: serde_json::Value = r.get(1);
            let not_before: DateTime<Utc> = r.get(2);
            let body = serde_json::from_value::<EmailJob>(payload).ok().and_then(|mut job| {
                if not_before > now {
                    job.not_before = Some(not_before);
                }
                serde_json::to_string(&job).ok()
            });
            // The column's CHECK has the parser's shape; anything else travels without an id.
            let correlation = r.get::<_, Option<&str>>(6).and_then(|c| CorrelationId::parse(c).ok());
            Row {
                id: r.get(0),
                body,
                delay: email::publish_delay_seconds(not_before, now),
                email_type: r.get(3),
                booking_id: r.get(4),
                restaurant_id: r.get(5),
                correlation,
            }
        })
        .collect())
}

/// Count the refusals (dead rows in `report`); returns an event per refused row.
async fn record_refusals(
    tx: &Transaction<'_>,
    rows: &[Row],
    refused: &[(Uuid, String)],
    now: DateTime<Utc>,
    report: &mut RelayReport,
) -> Result<Vec<ObservabilityEvent>, EmailError> {
    let mut events = Vec::new();
    if refused.is_empty() {
        return Ok(events);
    }
    let ids: Vec<Uuid> = refused.iter().map(|(id, _)| *id).collect();
    let codes: Vec<&str> = refused.iter().map(|(_, c)| c.as_str()).collect();
    for r in tx.fetch(REFUSED_SQL, &[&ids, &codes, &OUTBOX_MAX_ATTEMPTS, &now]).await? {
        let id: Uuid = r.get(0);
        let dead: bool = r.get(1);
        let attempts: i32 = r.get(2);
        let Some(row) = rows.iter().find(|x| x.id == id) else { continue };
        let code = refused.iter().find(|(x, _)| *x == id).map(|(_, c)| c.as_str()).unwrap_or("sqs_refused");
        let et = if dead { EventType::EmailDeadLettered } else { EventType::EmailRetried };
        events.push(relay_event(et, row, attempts, code));
        if dead {
            report.dead += 1;
        }
    }
    Ok(events)
}

/// The message attribute a job's correlation id travels in.
pub fn correlation_attribute(
    c: &CorrelationId,
) -> std::collections::HashMap<String, aws_sdk_sqs::types::MessageAttributeValue> {
    let value =
        aws_sdk_sqs::types::MessageAttributeValue::builder().data_type("String").string_value(c.as_str()).build();
    // Building fails only without a data type, which is set above.
    value.map(|v| [(CORRELATION_ATTRIBUTE.to_string(), v)].into_iter().collect()).unwrap_or_default()
}

fn published_event(row: &Row) -> ObservabilityEvent {
    row_event(EventType::EmailPublished, row, EventContext::new().operation(Operation::Relay).outcome(Outcome::Success))
}

fn relay_event(et: EventType, row: &Row, attempts: i32, code: &str) -> ObservabilityEvent {
    let ctx = EventContext::new()
        .operation(Operation::Relay)
        .outcome(Outcome::Error)
        .error_code_str(code)
        .attempt(attempts.clamp(1, 50) as u8)
        .max_attempts(OUTBOX_MAX_ATTEMPTS as u8);
    row_event(et, row, ctx)
}

/// An `outbox-relay` event about `row`: its email type, booking, restaurant and correlation id.
fn row_event(et: EventType, row: &Row, mut ctx: EventContext) -> ObservabilityEvent {
    if let Ok(c) = Code::parse(&row.email_type) {
        ctx = ctx.email_type(c);
    }
    ctx = ctx.correlation_id(row.correlation.clone());
    let mut ev = ObservabilityEvent::new(Source::OutboxRelay, et).context(ctx);
    if let Some(b) = row.booking_id {
        ev = ev.booking(BookingId(b));
    }
    if let Some(r) = row.restaurant_id {
        ev = ev.restaurant(RestaurantId(r));
    }
    ev
}
