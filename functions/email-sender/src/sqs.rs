//! SQS plumbing shared by the local runner, the tests, the benchmark and the ops commands:
//! building real Lambda SQS event shapes from received messages, the event source mapping's
//! delete-on-success behaviour, queue + DLQ creation with the production redrive policy, and
//! DLQ inspect/redrive.

use crate::error::EmailError;
use crate::handler::EmailSender;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use std::collections::{HashMap, HashSet};

/// The redrive policy of infra/template.yaml: DLQ after 5 receives.
pub const MAX_RECEIVE_COUNT: u32 = holdfast_shared::email::MAX_RECEIVES;

/// A queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub queue_url: String,
    pub queue_arn: String,
    pub dlq_url: String,
    pub dlq_arn: String,
}

pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, EmailError> {
    const OP: &str = "GetQueueAttributes";
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(EmailError::sqs(OP))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or(EmailError::SqsIncomplete { op: OP, field: "queue ARN" })
}

/// Create (idempotently) `name` and `name`-dlq with the production redrive policy
/// (maxReceiveCount 5) and the given visibility timeout.
pub async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dlq_name: &str,
    visibility_timeout_seconds: u32,
) -> Result<QueuePair, EmailError> {
    const OP: &str = "CreateQueue";
    let dlq_url = sqs
        .create_queue()
        .queue_name(dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(EmailError::sqs(OP))?
        .queue_url
        .ok_or(EmailError::SqsIncomplete { op: OP, field: "DLQ url" })?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT }).to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout_seconds.to_string())
        .attributes(QueueAttributeName::MessageRetentionPeriod, "345600")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(EmailError::sqs(OP))?
        .queue_url
        .ok_or(EmailError::SqsIncomplete { op: OP, field: "queue url" })?;
    let queue_arn = queue_arn(sqs, &queue_url).await?;
    Ok(QueuePair { queue_url, queue_arn, dlq_url, dlq_arn })
}

/// The event Lambda's SQS event source mapping would deliver for these messages.
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> SqsEvent {
    let mut ev = SqsEvent::default();
    ev.records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r.md5_of_body = m.md5_of_body.clone();
            r.md5_of_message_attributes = m.md5_of_message_attributes.clone();
            // String attributes (the job's correlation id) as the event source mapping passes them.
            r.message_attributes = m
                .message_attributes
                .as_ref()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            let mut attr = SqsMessageAttribute::default();
                            attr.data_type = Some(v.data_type.clone());
                            attr.string_value = v.string_value.clone();
                            (k.clone(), attr)
                        })
                        .collect()
                })
                .unwrap_or_default();
            r.attributes = m
                .attributes
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
                .unwrap_or_default();
            r.event_source = Some("aws:sqs".into());
            r.event_source_arn = Some(queue_arn.to_string());
            r.aws_region = Some(region.to_string());
            r
        })
        .collect();
    ev
}

/// Receive up to 10 messages with every system attribute (ApproximateReceiveCount, …) and
/// every message attribute (the correlation id).
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait_seconds: i32,
    visibility_timeout: Option<i32>,
) -> Result<Vec<Message>, EmailError> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(visibility_timeout)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(EmailError::sqs("ReceiveMessage"))?;
    Ok(out.messages.unwrap_or_default())
}

/// What one delivery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub received: usize,
    /// Message ids the handler reported as batch item failures (left on the queue).
    pub failed: Vec<String>,
    pub deleted: usize,
}

/// Do what the event source mapping does with a handler response: delete every record that
/// is not a batch item failure.
pub async fn deliver(
    sqs: &aws_sdk_sqs::Client,
    sender: &EmailSender,
    queue_url: &str,
    queue_arn: &str,
    region: &str,
    messages: &[Message],
) -> Result<Delivery, EmailError> {
    if messages.is_empty() {
        return Ok(Delivery::default());
    }
    let resp = sender.handle(sqs_event(messages, queue_arn, region)).await;
    let failed: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    let failed_set: HashSet<&str> = failed.iter().map(String::as_str).collect();
    let mut deleted = 0;
    let done: Vec<&Message> =
        messages.iter().filter(|m| !failed_set.contains(m.message_id.as_deref().unwrap_or(""))).collect();
    for chunk in done.chunks(10) {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry as Entry;
        let entries: Vec<Entry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                Entry::builder().id(format!("d{i}")).receipt_handle(m.receipt_handle.clone()?).build().ok()
            })
            .collect();
        let out = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(EmailError::sqs("DeleteMessageBatch"))?;
        deleted += out.successful.len();
    }
    Ok(Delivery { received: messages.len(), failed, deleted })
}

/// Receive once and deliver (the local runner's poll step).
pub async fn poll_once(
    sqs: &aws_sdk_sqs::Client,
    sender: &EmailSender,
    pair_url: &str,
    pair_arn: &str,
    region: &str,
    wait_seconds: i32,
) -> Result<Delivery, EmailError> {
    let msgs = receive(sqs, pair_url, wait_seconds, None).await?;
    deliver(sqs, sender, pair_url, pair_arn, region, &msgs).await
}

/// A DLQ message as shown by `holdfast email dlq inspect` (bodies are ids only: no PII).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqEntry {
    pub message_id: String,
    pub receive_count: Option<String>,
    pub sent_timestamp: Option<String>,
    pub body: String,
}

/// Peek at up to `max` DLQ messages without consuming them (visibility reset to 0 after).
pub async fn inspect_dlq(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    max: usize,
) -> Result<(u64, Vec<DlqEntry>), EmailError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(dlq_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(EmailError::sqs("GetQueueAttributes"))?;
    let depth = attrs
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let mut seen: HashMap<String, DlqEntry> = HashMap::new();
    let mut handles = Vec::new();
    for _ in 0..max.div_ceil(10).max(1) {
        let msgs = receive(sqs, dlq_url, 0, Some(30)).await?;
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            let attr = |k: MessageSystemAttributeName| m.attributes.as_ref().and_then(|a| a.get(&k).cloned());
            let id = m.message_id.clone().unwrap_or_default();
            handles.extend(m.receipt_handle.clone());
            seen.entry(id.clone()).or_insert(DlqEntry {
                message_id: id,
                receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount),
                sent_timestamp: attr(MessageSystemAttributeName::SentTimestamp),
                body: m.body.clone().unwrap_or_default(),
            });
        }
        if seen.len() >= max {
            break;
        }
    }
    for h in handles {
        // Make them visible again at once: inspecting must not hide messages from a redrive.
        let _ = sqs.change_message_visibility().queue_url(dlq_url).receipt_handle(h).visibility_timeout(0).send().await;
    }
    let mut entries: Vec<DlqEntry> = seen.into_values().collect();
    entries.sort_by(|a, b| a.sent_timestamp.cmp(&b.sent_timestamp));
    entries.truncate(max);
    Ok((depth, entries))
}

/// Redrive with SQS's own move task (AWS; the emulator does not implement it).
pub async fn redrive_move_task(
    sqs: &aws_sdk_sqs::Client,
    dlq_arn: &str,
    queue_arn: &str,
    max_per_second: Option<i32>,
) -> Result<String, EmailError> {
    let out = sqs
        .start_message_move_task()
        .source_arn(dlq_arn)
        .destination_arn(queue_arn)
        .set_max_number_of_messages_per_second(max_per_second)
        .send()
        .await
        .map_err(EmailError::sqs("StartMessageMoveTask"))?;
    Ok(out.task_handle.unwrap_or_default())
}

/// Redrive by receive-and-resend: each DLQ message is sent to the queue (same body and message
/// attributes, so it keeps its correlation id), and deleted from the DLQ only after the queue
/// accepted it. Returns how many moved.
pub async fn redrive_resend(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    max: usize,
) -> Result<usize, EmailError> {
    let mut moved = 0;
    while moved < max {
        let msgs = receive(sqs, dlq_url, 0, Some(60)).await?;
        if msgs.is_empty() {
            break;
        }
        for m in msgs.into_iter().take(max - moved) {
            sqs.send_message()
                .queue_url(queue_url)
                .message_body(m.body.clone().unwrap_or_default())
                .set_message_attributes(m.message_attributes.clone())
                .send()
                .await
                .map_err(EmailError::sqs("SendMessage"))?;
            if let Some(h) = m.receipt_handle {
                sqs.delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(h)
                    .send()
                    .await
                    .map_err(EmailError::sqs("DeleteMessage"))?;
            }
            moved += 1;
        }
    }
    Ok(moved)
}

/// Approximate visible + in-flight + delayed messages.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64, u64), EmailError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(EmailError::sqs("GetQueueAttributes"))?;
    let a = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    ))
}
