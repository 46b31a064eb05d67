//! The SQS-triggered handler: parse, defer, claim (one round trip per batch), send, finish.

use crate::clock::Clock;
use crate::provider::{plausible_address, EmailProvider, OutgoingEmail, Receipt, SendError};
use crate::store::{ClaimRequest, ClaimRow, ClaimState, Finish, SendStore};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::FutureExt;
use holdfast_shared::email::{
    self, plan_deferral, Backoff, BookingStatus, BookingView, Deferral, DriftView, EmailJob, EmailType,
    JOB_SCHEMA_VERSION, MAX_RECEIVES,
};
use holdfast_shared::events::{Code, EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::ids::{BookingId, RestaurantId};
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// How the handler behaves. Production values come from [`Settings::production`]; tests
/// shorten the backoff, the lease and the deferral hop so that they run in seconds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The queue the messages come from (visibility changes, deferral re-queues).
    pub queue_url: String,
    pub from_address: String,
    /// Recipient of the ops policy-drift notice.
    pub ops_address: Option<String>,
    /// In-progress lease: longer than the function timeout (30 s) so a live send is never
    /// claimed twice, short enough that a crashed consumer's job is retried soon.
    pub lease: chrono::Duration,
    pub backoff: Backoff,
    /// Longest single deferral hop (SQS allows 900 s).
    pub max_hop_delay_seconds: u32,
}

impl Settings {
    pub fn production(queue_url: String, from_address: String, ops_address: Option<String>) -> Self {
        Self {
            queue_url,
            from_address,
            ops_address,
            lease: chrono::Duration::seconds(120),
            backoff: Backoff::PRODUCTION,
            max_hop_delay_seconds: email::MAX_SQS_DELAY_SECONDS,
        }
    }
}

pub struct EmailSender {
    store: SendStore,
    provider: Arc<dyn EmailProvider>,
    sqs: aws_sdk_sqs::Client,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

/// One record of the batch, as far as the handler cares.
struct Rec {
    message_id: String,
    receipt_handle: Option<String>,
    receive_count: u32,
    body: String,
}

enum ParseFault {
    /// Not a job we could ever send (bad JSON, unknown fields, no subject): drop, recorded.
    Invalid,
    /// A newer schema than this build knows: keep it (retry → DLQ) until a deploy catches up.
    Unsupported,
}

enum SendOutcome {
    Sent(Receipt),
    Failed(SendError),
    Skipped(&'static str),
    Panicked,
}

fn parse_job(body: &str) -> Result<EmailJob, ParseFault> {
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u16,
    }
    match serde_json::from_str::<Version>(body) {
        Ok(v) if v.schema_version > JOB_SCHEMA_VERSION => return Err(ParseFault::Unsupported),
        Ok(_) => {}
        Err(_) => return Err(ParseFault::Invalid),
    }
    let job: EmailJob = serde_json::from_str(body).map_err(|_| ParseFault::Invalid)?;
    let subject_ok = match job.email_type {
        EmailType::OpsPolicyDrift => job.restaurant_id.is_some() && job.policy_version.is_some(),
        _ => job.booking_id.is_some(),
    };
    if subject_ok {
        Ok(job)
    } else {
        Err(ParseFault::Invalid)
    }
}

fn attempt_u8(n: u32) -> u8 {
    n.clamp(1, u32::from(holdfast_shared::events::MAX_ATTEMPT)) as u8
}

fn event(
    et: EventType,
    job: Option<&EmailJob>,
    restaurant: Option<uuid::Uuid>,
    receive_count: u32,
    outcome: Outcome,
    code: Option<&str>,
    duration_ms: Option<u64>,
) -> ObservabilityEvent {
    let mut ctx = EventContext::new()
        .operation(Operation::Send)
        .outcome(outcome)
        .attempt(attempt_u8(receive_count))
        .max_attempts(MAX_RECEIVES as u8);
    if let Some(c) = code {
        ctx = ctx.error_code_str(c);
    }
    if let Some(ms) = duration_ms {
        ctx = ctx.duration_ms(ms);
    }
    if let Some(j) = job {
        if let Ok(c) = Code::parse(j.email_type.as_str()) {
            ctx = ctx.email_type(c);
        }
        if let Some(v) = j.policy_version {
            ctx = ctx.policy_version(v);
        }
    }
    let mut ev = ObservabilityEvent::new(Source::EmailSender, et).context(ctx);
    if let Some(b) = job.and_then(|j| j.booking_id) {
        ev = ev.booking(b);
    }
    if let Some(r) = restaurant.or_else(|| job.and_then(|j| j.restaurant_id.map(|r| r.as_uuid()))) {
        ev = ev.restaurant(RestaurantId(r));
    }
    ev
}

impl EmailSender {
    pub fn new(
        store: SendStore,
        provider: Arc<dyn EmailProvider>,
        sqs: aws_sdk_sqs::Client,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self { store, provider, sqs, clock, settings }
    }

    pub fn store(&self) -> &SendStore {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Handle one SQS batch. Never fails as a whole: every record ends acknowledged (sent,
    /// skipped, re-queued for later, or permanently failed and recorded) or listed in
    /// `batchItemFailures` (to be received again after its backoff).
    pub async fn handle(&self, batch: SqsEvent) -> SqsBatchResponse {
        let now = self.clock.now();
        let token = Uuid::new_v4();
        let mut failures: Vec<String> = Vec::new();
        let mut events: Vec<ObservabilityEvent> = Vec::new();
        let mut visibility: Vec<(String, u32)> = Vec::new();
        let mut due: Vec<(Rec, EmailJob)> = Vec::new();
        let mut deferred: Vec<(Rec, u32)> = Vec::new();

        for msg in batch.records {
            let Some(message_id) = msg.message_id.clone() else {
                tracing::warn!("SQS record without a message id ignored");
                continue;
            };
            let receive_count =
                msg.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
            let rec = Rec {
                message_id,
                receipt_handle: msg.receipt_handle.clone(),
                receive_count,
                body: msg.body.clone().unwrap_or_default(),
            };
            let hop = self.settings.max_hop_delay_seconds;
            let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                parse_job(&rec.body).map(|job| {
                    let plan = plan_deferral(job.not_before, now, hop);
                    (job, plan)
                })
            }));
            match parsed {
                Err(_) => {
                    tracing::error!(message_id = %rec.message_id, "panic while parsing an email job");
                    failures.push(rec.message_id);
                }
                Ok(Err(ParseFault::Invalid)) => {
                    tracing::error!(message_id = %rec.message_id, "invalid email job dropped");
                    events.push(event(
                        EventType::EmailFailed,
                        None,
                        None,
                        receive_count,
                        Outcome::Rejected,
                        Some("invalid_job"),
                        None,
                    ));
                }
                Ok(Err(ParseFault::Unsupported)) => {
                    tracing::warn!(message_id = %rec.message_id, "email job schema newer than this build; kept for retry");
                    events.push(event(
                        EventType::EmailRetried,
                        None,
                        None,
                        receive_count,
                        Outcome::Error,
                        Some("schema_unsupported"),
                        None,
                    ));
                    failures.push(rec.message_id);
                }
                Ok(Ok((job, Deferral::Due))) => due.push((rec, job)),
                Ok(Ok((_, Deferral::Requeue { delay_seconds, .. }))) => deferred.push((rec, delay_seconds)),
            }
        }

        // Deferred jobs: re-queue with the remaining delay (one hop), then acknowledge this
        // message. A crash in between leaves both; the ledger absorbs the duplicate.
        let requeues = futures::future::join_all(deferred.iter().map(|(rec, delay)| {
            self.sqs
                .send_message()
                .queue_url(&self.settings.queue_url)
                .message_body(&rec.body)
                .delay_seconds(i32::try_from(*delay).unwrap_or(900))
                .send()
        }))
        .await;
        for ((rec, delay), res) in deferred.into_iter().zip(requeues) {
            match res {
                Ok(_) => tracing::debug!(message_id = %rec.message_id, delay, "deferred job re-queued"),
                Err(e) => {
                    tracing::warn!(message_id = %rec.message_id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "re-queue of a deferred job failed; will retry");
                    failures.push(rec.message_id);
                }
            }
        }

        // The same key twice in one batch: the first occurrence decides, the rest are dropped
        // (if the first fails, its own message comes back).
        let mut seen = HashSet::new();
        let mut work: Vec<(Rec, EmailJob)> = Vec::new();
        for (rec, job) in due {
            if seen.insert(job.dedupe_key()) {
                work.push((rec, job));
            } else {
                events.push(event(
                    EventType::EmailSkipped,
                    Some(&job),
                    None,
                    rec.receive_count,
                    Outcome::Success,
                    Some("duplicate_in_batch"),
                    None,
                ));
            }
        }

        if work.is_empty() {
            self.store.record_events(&events).await;
            return response(failures);
        }

        let reqs: Vec<ClaimRequest> = work
            .iter()
            .map(|(_, j)| ClaimRequest {
                dedupe_key: j.dedupe_key(),
                email_type: j.email_type,
                booking_id: j.booking_id.map(|b| b.as_uuid()),
                restaurant_id: j.restaurant_id.map(|r| r.as_uuid()),
            })
            .collect();
        let rows = match self.store.claim(&reqs, token, now, now + self.settings.lease).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, jobs = work.len(), "idempotency claim failed; batch will be retried");
                for (rec, job) in &work {
                    events.push(event(
                        EventType::EmailRetried,
                        Some(job),
                        None,
                        rec.receive_count,
                        Outcome::Error,
                        Some("db_unavailable"),
                        None,
                    ));
                    failures.push(rec.message_id.clone());
                }
                self.store.record_events(&events).await;
                return response(failures);
            }
        };

        // Send every claimed job concurrently; each in its own catch_unwind.
        let mut sends = Vec::new();
        let mut finishes: Vec<(String, Finish)> = Vec::new();
        for ((rec, job), row) in work.iter().zip(rows.iter()) {
            match &row.state {
                ClaimState::Claimed { .. } => sends.push((rec, job, row)),
                ClaimState::AlreadySent => {
                    events.push(event(
                        EventType::EmailSkipped,
                        Some(job),
                        None,
                        rec.receive_count,
                        Outcome::Success,
                        Some("already_sent"),
                        None,
                    ));
                }
                ClaimState::FailedPermanent => {
                    events.push(event(
                        EventType::EmailSkipped,
                        Some(job),
                        None,
                        rec.receive_count,
                        Outcome::Success,
                        Some("already_failed"),
                        None,
                    ));
                }
                ClaimState::Busy { until } => {
                    // Another consumer is sending it now (or crashed mid-send): look again
                    // when its lease ends.
                    let secs = until
                        .map(|u| (u - now).num_seconds())
                        .unwrap_or(0)
                        .clamp(1, self.settings.lease.num_seconds().max(1));
                    tracing::info!(message_id = %rec.message_id, "job claimed by another consumer; retry after its lease");
                    failures.push(rec.message_id.clone());
                    if let Some(h) = &rec.receipt_handle {
                        visibility.push((h.clone(), secs as u32));
                    }
                }
            }
        }

        let outcomes = futures::future::join_all(sends.iter().map(|(_, job, row)| async move {
            let started = Instant::now();
            let r = AssertUnwindSafe(self.send_one(job, row)).catch_unwind().await;
            (r.unwrap_or(SendOutcome::Panicked), started.elapsed().as_millis() as u64)
        }))
        .await;

        for ((rec, job, row), (outcome, ms)) in sends.iter().zip(outcomes) {
            let restaurant = row.booking.as_ref().map(|b| b.restaurant_id);
            let n = rec.receive_count;
            let final_receive = Backoff::is_final_receive(n);
            let key = row.dedupe_key.clone();
            match outcome {
                SendOutcome::Sent(receipt) => {
                    events.push(event(
                        EventType::EmailSent,
                        Some(job),
                        restaurant,
                        n,
                        Outcome::Success,
                        None,
                        Some(ms),
                    ));
                    finishes.push((
                        key,
                        Finish::Sent { provider: receipt.provider.to_string(), message_id: receipt.message_id },
                    ));
                }
                SendOutcome::Skipped(reason) => {
                    events.push(event(
                        EventType::EmailSkipped,
                        Some(job),
                        restaurant,
                        n,
                        Outcome::Success,
                        Some(reason),
                        Some(ms),
                    ));
                    finishes.push((key, Finish::Skipped));
                }
                SendOutcome::Failed(SendError::Permanent(code)) => {
                    tracing::warn!(message_id = %rec.message_id, code = %code, "email failed permanently");
                    events.push(event(
                        EventType::EmailFailed,
                        Some(job),
                        restaurant,
                        n,
                        Outcome::Rejected,
                        Some(&code),
                        Some(ms),
                    ));
                    finishes.push((key, Finish::Permanent { code }));
                }
                SendOutcome::Failed(SendError::Transient(code)) => {
                    let et = if final_receive { EventType::EmailDeadLettered } else { EventType::EmailRetried };
                    tracing::warn!(message_id = %rec.message_id, code = %code, receive_count = n, dead_lettered = final_receive, "email failed transiently");
                    events.push(event(et, Some(job), restaurant, n, Outcome::Error, Some(&code), Some(ms)));
                    failures.push(rec.message_id.clone());
                    if let Some(h) = &rec.receipt_handle {
                        let secs = if final_receive { 0 } else { self.settings.backoff.visibility_after(n) };
                        visibility.push((h.clone(), secs));
                    }
                    finishes.push((key, Finish::Released { code }));
                }
                SendOutcome::Panicked => {
                    // Unknown whether the provider accepted it: keep the lease (no resend until
                    // it expires) and let the message come back.
                    let et = if final_receive { EventType::EmailDeadLettered } else { EventType::EmailRetried };
                    tracing::error!(message_id = %rec.message_id, "panic while sending an email; record isolated");
                    events.push(event(et, Some(job), restaurant, n, Outcome::Error, Some("panic"), Some(ms)));
                    failures.push(rec.message_id.clone());
                    finishes.push((key, Finish::Hold { code: "panic".into() }));
                }
            }
        }

        if let Err(e) = self.store.finish(&finishes, token, self.clock.now(), &events).await {
            // Sent emails stay acknowledged (no resend); their ledger rows stay in progress
            // until the lease ends — visible in the runbook's "stuck" query.
            tracing::error!(error = %e, "recording email outcomes failed");
        }
        self.change_visibility(visibility).await;
        response(failures)
    }

    async fn send_one(&self, job: &EmailJob, row: &ClaimRow) -> SendOutcome {
        let (to, rendered) = match job.email_type {
            EmailType::OpsPolicyDrift => {
                let (Some(restaurant_id), Some(policy_version)) = (job.restaurant_id, job.policy_version) else {
                    return SendOutcome::Failed(SendError::permanent("invalid_job"));
                };
                let Some(name) = row.restaurant_name.clone() else {
                    return SendOutcome::Failed(SendError::permanent("unknown_restaurant"));
                };
                let Some(to) = self.settings.ops_address.clone() else {
                    return SendOutcome::Failed(SendError::permanent("ops_address_unconfigured"));
                };
                (to, email::render_drift(&DriftView { restaurant_id, restaurant_name: name, policy_version }))
            }
            t => {
                let Some(b) = row.booking.as_ref() else {
                    return SendOutcome::Failed(SendError::permanent("unknown_booking"));
                };
                let Some(status) = BookingStatus::parse(&b.status) else {
                    return SendOutcome::Failed(SendError::permanent("unknown_booking_status"));
                };
                if let Some(reason) = email::skip_reason(t, status) {
                    return SendOutcome::Skipped(reason);
                }
                let Some(to) = b.guest_email.clone().filter(|e| !e.trim().is_empty()) else {
                    return SendOutcome::Failed(SendError::permanent("no_recipient"));
                };
                let view = BookingView {
                    booking_id: job.booking_id.unwrap_or(BookingId(Uuid::nil())),
                    status,
                    restaurant_name: row.restaurant_name.clone().unwrap_or_default(),
                    guest_name: b.guest_name.clone(),
                    guest_email: Some(to.clone()),
                    party_size: u16::try_from(b.party_size).unwrap_or(1),
                    starts_at: b.starts_at,
                };
                let Some(r) = email::render_booking(t, &view) else {
                    return SendOutcome::Failed(SendError::permanent("no_template"));
                };
                (to.trim().to_string(), r)
            }
        };
        if !plausible_address(&to) {
            return SendOutcome::Failed(SendError::permanent("invalid_address"));
        }
        let out = OutgoingEmail {
            to,
            from: self.settings.from_address.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            idempotency_key: row.dedupe_key.clone(),
        };
        match self.provider.send(&out).await {
            Ok(r) => SendOutcome::Sent(r),
            Err(e) => SendOutcome::Failed(e),
        }
    }

    /// Backoff: one `ChangeMessageVisibilityBatch` call per ten failed records.
    async fn change_visibility(&self, items: Vec<(String, u32)>) {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry as Entry;
        for chunk in items.chunks(10) {
            let entries: Vec<Entry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (handle, secs))| {
                    Entry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(handle)
                        .visibility_timeout(i32::try_from(*secs).unwrap_or(i32::MAX))
                        .build()
                        .ok()
                })
                .collect();
            let res = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.settings.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match res {
                Ok(out) if !out.failed.is_empty() => {
                    tracing::warn!(
                        failed = out.failed.len(),
                        "some visibility changes were refused; default visibility applies"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "visibility change failed; default visibility applies")
                }
            }
        }
    }
}

fn response(failures: Vec<String>) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    r.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_invalid_and_keeps_newer_schemas() {
        let b = BookingId::new_random();
        let ok = serde_json::to_string(&EmailJob::for_booking(EmailType::Reminder, b)).expect("json");
        assert!(parse_job(&ok).is_ok());
        assert!(matches!(parse_job("not json"), Err(ParseFault::Invalid)));
        assert!(matches!(parse_job(r#"{"schema_version":1,"email_type":"reminder"}"#), Err(ParseFault::Invalid)));
        assert!(matches!(
            parse_job(
                r#"{"schema_version":1,"email_type":"ops_policy_drift","restaurant_id":"6b0b8a3e-7c43-4a4e-9a39-3e0f9d6f2f10"}"#
            ),
            Err(ParseFault::Invalid)
        ));
        assert!(matches!(parse_job(r#"{"schema_version":99,"email_type":"x","new":1}"#), Err(ParseFault::Unsupported)));
    }

    #[test]
    fn events_carry_codes_and_ids_only() {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, BookingId::new_random());
        let ev = event(EventType::EmailRetried, Some(&job), None, 3, Outcome::Error, Some("ses_throttled"), Some(12));
        let ctx = ev.context_json();
        assert_eq!(ctx["email_type"], "booking_confirmed");
        assert_eq!(ctx["attempt"], 3);
        assert_eq!(ctx["max_attempts"], 5);
        assert_eq!(ctx["error_code"], "ses_throttled");
        assert_eq!(ev.booking_id, job.booking_id);
    }
}
