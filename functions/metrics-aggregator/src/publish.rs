//! Phase 3, **publish**: per sink, a queue. Lock the oldest pending publication `FOR UPDATE
//! SKIP LOCKED`, send its next part, record it, commit. A failing sink is left pending (retried
//! next run) and does not touch the other sink's rows.

use crate::report::SinkReport;
use crate::sinks::{Sink, SinkError};
use crate::store::{self, Pending, PublicationKey};
use crate::{payload, AggError, Aggregator};
use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

/// What became of one pending publication in its transaction.
enum Step {
    /// Ended unsent (unreadable payload, or too old for the sink).
    Expired,
    /// Every part had already been sent: now marked published.
    Published,
    /// One part accepted; `last` when that published the batch.
    Sent { last: bool },
    /// The sink refused `part` of batch (`kind`, `window`); the publication stays pending.
    Refused { kind: String, window: DateTime<Utc>, part: usize, error: SinkError },
}

impl Aggregator {
    /// Publishes pending batches to one sink, one part per transaction, oldest first. Stops at
    /// the first failure (the sink is likely down; the rest waits for the next run) or when the
    /// time budget is spent.
    pub(crate) async fn publish(
        &self,
        sink: &dyn Sink,
        now: DateTime<Utc>,
        deadline: tokio::time::Instant,
    ) -> Result<SinkReport, AggError> {
        let mut rep = SinkReport { sink: sink.name(), ..SinkReport::default() };
        let mut client = self.pool.get().await?;
        loop {
            if tokio::time::Instant::now() >= deadline {
                rep.out_of_time = true;
                break;
            }
            let tx = client.transaction().await?;
            let Some(pending) = store::next_pending(&tx, sink.name()).await? else {
                break;
            };
            let step = publish_next(&tx, sink, pending, now).await?;
            tx.commit().await?;
            match step {
                Step::Expired => rep.batches_expired += 1,
                Step::Published => rep.batches_published += 1,
                Step::Sent { last } => {
                    rep.parts_sent += 1;
                    if last {
                        rep.batches_published += 1;
                    }
                }
                Step::Refused { kind, window, part, error } => {
                    tracing::warn!(sink = sink.name(), window = %window, kind, part, error = %error, "sink refused a part; retried next run");
                    rep.failures += 1;
                    rep.last_error = Some(error.0);
                    break;
                }
            }
        }
        Ok(rep)
    }
}

/// Sends the next part of `pending` (or ends it) and records the result in `tx`.
async fn publish_next(
    tx: &Transaction<'_>,
    sink: &dyn Sink,
    pending: Pending,
    now: DateTime<Utc>,
) -> Result<Step, AggError> {
    let Pending { kind, start, parts_done, datums } = pending;
    let key = PublicationKey { kind: &kind, start, sink: sink.name() };
    let data = match payload::decode(datums) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(sink = sink.name(), window = %start, kind, error = %e, "stored batch unreadable; expiring it");
            store::finish(tx, &key, "expired", Some("payload invalid"), now).await?;
            return Ok(Step::Expired);
        }
    };
    if now - start > sink.max_age() {
        tracing::error!(sink = sink.name(), window = %start, kind, "batch too old for the sink; expired unsent");
        store::finish(tx, &key, "expired", Some("too old for the sink"), now).await?;
        return Ok(Step::Expired);
    }
    let parts = sink.part_count(&data);
    let part = usize::try_from(parts_done).unwrap_or(0);
    if part >= parts {
        store::finish(tx, &key, "published", None, now).await?;
        return Ok(Step::Published);
    }
    match sink.send_part(&data, part).await {
        Ok(()) => {
            let last = part + 1 >= parts;
            store::record_part_sent(tx, &key, last, now).await?;
            Ok(Step::Sent { last })
        }
        Err(error) => {
            store::record_failure(tx, &key, &error.0, now).await?;
            Ok(Step::Refused { kind, window: start, part, error })
        }
    }
}
