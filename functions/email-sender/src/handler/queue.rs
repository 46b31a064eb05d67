//! The handler's own SQS writes: re-queueing deferred jobs, and the visibility backoff of the
//! records it hands back.

use super::parse::Rec;
use super::{EmailSender, Tally};
use crate::relay::correlation_attribute;
use aws_sdk_sqs::error::DisplayErrorContext;
use holdfast_adapters::telemetry;

impl EmailSender {
    /// Re-queue each deferred job with its remaining delay (one hop), so its message can be
    /// acknowledged, with its correlation id attribute. A crash in between leaves both; the
    /// ledger absorbs the duplicate. A failed re-queue keeps the message (retried).
    pub(super) async fn requeue(&self, deferred: Vec<(Rec, u32)>, tally: &mut Tally) {
        let requeues = futures::future::join_all(deferred.iter().map(|(rec, delay)| {
            self.sqs
                .send_message()
                .queue_url(&self.settings.queue_url)
                .message_body(&rec.body)
                .delay_seconds(i32::try_from(*delay).unwrap_or(900))
                .set_message_attributes(rec.correlation.as_ref().map(correlation_attribute))
                .send()
        }))
        .await;
        for ((rec, delay), res) in deferred.into_iter().zip(requeues) {
            match res {
                Ok(_) => {
                    tracing::debug!(parent: &rec.span, message_id = %rec.message_id, delay, "deferred job re-queued")
                }
                Err(e) => {
                    tracing::warn!(parent: &rec.span, message_id = %rec.message_id, error = %DisplayErrorContext(&e), "re-queue of a deferred job failed; will retry");
                    tally.failures.push(rec.message_id);
                }
            }
        }
    }

    /// Backoff: one `ChangeMessageVisibilityBatch` call per ten failed records.
    pub(super) async fn change_visibility(&self, items: &[(String, u32)]) {
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
            let call = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(&self.settings.queue_url)
                .set_entries(Some(entries))
                .send();
            let res = telemetry::timed("sqs.change_message_visibility_batch", call).await;
            match res {
                Ok(out) if !out.failed.is_empty() => {
                    tracing::warn!(
                        failed = out.failed.len(),
                        "some visibility changes were refused; default visibility applies"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %DisplayErrorContext(&e), "visibility change failed; default visibility applies")
                }
            }
        }
    }
}
