//! The SQS-triggered handler. One batch goes through four phases, each in its own file:
//! [`parse`] (and re-queue what is not due yet), [`claim`] (one round trip for the batch, which
//! also records the attempts about to be made), [`send`] (concurrently, a panic isolated to its
//! record; a job whose earlier attempt may have been delivered is not resent through a provider
//! that cannot deduplicate it) and [`record`] (ledger, attempt outcomes, events, backoff).
//! [`Tally`] collects what the batch owes SQS and the event table on the way.

mod claim;
mod events;
mod parse;
mod queue;
mod record;
mod send;

use crate::clock::Clock;
use crate::provider::{EmailProvider, SendError};
use crate::store::SendStore;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use holdfast_adapters::telemetry::FunctionTelemetry;
use holdfast_shared::email::{self, Backoff};
use holdfast_shared::events::ObservabilityEvent;
use std::sync::Arc;
use tracing::Instrument;
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
    telemetry: FunctionTelemetry,
}

/// What a batch owes at its end, gathered by every phase.
#[derive(Default)]
struct Tally {
    /// Message ids for `batchItemFailures` (received again after their backoff).
    failures: Vec<String>,
    events: Vec<ObservabilityEvent>,
    /// Receipt handle and visibility timeout (seconds) of records to retry sooner or later
    /// than the queue's default.
    visibility: Vec<(String, u32)>,
}

impl Tally {
    fn into_response(self) -> SqsBatchResponse {
        let mut r = SqsBatchResponse::default();
        r.batch_item_failures = self
            .failures
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        r
    }
}

impl EmailSender {
    pub fn new(
        store: SendStore,
        provider: Arc<dyn EmailProvider>,
        sqs: aws_sdk_sqs::Client,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self { store, provider, sqs, clock, settings, telemetry: FunctionTelemetry::new("email-sender") }
    }

    pub fn store(&self) -> &SendStore {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// [`Self::handle_in`] off Lambda (local runner, tests, tools).
    pub async fn handle(&self, batch: SqsEvent) -> SqsBatchResponse {
        self.handle_in(None, batch).await
    }

    /// Handle one SQS batch in the invocation's span (`lambda`: the invocation's context); each
    /// record's lines also carry its booking's correlation id (the `correlation_id` message
    /// attribute). Never fails as a whole: every record ends acknowledged (sent, skipped,
    /// re-queued for later, or permanently failed and recorded) or listed in
    /// `batchItemFailures` (to be received again after its backoff).
    pub async fn handle_in(&self, lambda: Option<&lambda_runtime::Context>, batch: SqsEvent) -> SqsBatchResponse {
        self.handle_batch(batch).instrument(self.telemetry.invocation(lambda, None)).await
    }

    async fn handle_batch(&self, batch: SqsEvent) -> SqsBatchResponse {
        let now = self.clock.now();
        let mut tally = Tally::default();
        let parsed = parse::parse_batch(batch.records, now, self.settings.max_hop_delay_seconds, &mut tally);
        self.requeue(parsed.deferred, &mut tally).await;
        let work = claim::first_of_each_key(parsed.due, &mut tally);
        if work.is_empty() {
            self.store.record_events(&tally.events).await;
            return tally.into_response();
        }
        let token = Uuid::new_v4();
        // The provider is chosen before the claim, so each attempt is recorded under the one
        // that really carries it.
        let carrier = self.carrier().await;
        let attempts: Vec<Uuid> = work.iter().map(|_| Uuid::new_v4()).collect();
        let recorded = carrier.as_ref().ok().map(|c| c.name());
        let Some(rows) = self.claim(&work, &attempts, recorded, token, now, &mut tally).await else {
            self.store.record_events(&tally.events).await;
            return tally.into_response();
        };
        let claimed =
            claim::settle_unclaimed(&work, &rows, &attempts, recorded.is_some(), now, self.settings.lease, &mut tally);
        let outcomes = self.send_all(&claimed, &carrier, now).await;
        let (finishes, ends) = record::settle(&claimed, outcomes, &self.settings.backoff, &mut tally);
        self.record(&finishes, &ends, token, tally).await
    }

    /// The provider this batch's sends go through (a router resolves its current choice).
    async fn carrier(&self) -> Result<&dyn EmailProvider, SendError> {
        match self.provider.route().await? {
            Some(p) => Ok(p),
            None => Ok(self.provider.as_ref()),
        }
    }
}
