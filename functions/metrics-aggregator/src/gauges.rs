//! Levels the aggregator measures itself once per minute (they are not derived from events):
//! DLQ depth (SQS), outbox pending/lag/dead rows (SQL) and the effective strict-conflicts
//! rollout (flags).

use chrono::{DateTime, Utc};
use holdfast_adapters::sql::Sql;
use holdfast_shared::flags::FlagSet;
use holdfast_shared::metrics::{gauge, Gauge, MetricDatum};

/// Due, unpublished, not dead outbox rows, and the age of the oldest one (from when it became
/// due: a deferred email waiting for its `not_before` is not lag).
pub const OUTBOX_SQL: &str = "SELECT count(*)::bigint,
            COALESCE(EXTRACT(EPOCH FROM ($1::timestamptz - min(not_before)))::float8, 0)
       FROM email_outbox
      WHERE published_at IS NULL AND dead_at IS NULL AND not_before <= $1";

/// Rows the relay gave up on (`dead_at`, see `functions/email-sender/src/relay.rs`). They are
/// out of the lag above on purpose, so they need their own gauge: until an operator revives or
/// discards them, their emails never leave. No index covers `dead_at IS NOT NULL`, so this is
/// a sequential scan of `email_outbox` (measured: ~115 ms a minute at 1 M rows; ~0.6 ms with a
/// partial index `ON email_outbox (dead_at) WHERE dead_at IS NOT NULL`).
pub const OUTBOX_DEAD_SQL: &str =
    "SELECT count(*)::bigint FROM email_outbox WHERE dead_at IS NOT NULL AND published_at IS NULL";

/// `holds.strictConflicts.rolloutPercent` as it takes effect: 0 while the flag (the kill
/// switch) is off, because every restaurant is then in shadow mode.
pub fn effective_rollout_percent(flags: &FlagSet) -> f64 {
    if flags.strict_conflicts() {
        f64::from(flags.strict_rollout_percent())
    } else {
        0.0
    }
}

pub async fn outbox<C: Sql>(client: &C, now: DateTime<Utc>) -> Result<(f64, f64), tokio_postgres::Error> {
    let row = client.fetch_one(OUTBOX_SQL, &[&now]).await?;
    let pending: i64 = row.get(0);
    let lag: f64 = row.get(1);
    Ok((pending as f64, lag.max(0.0)))
}

pub async fn outbox_dead<C: Sql>(client: &C) -> Result<f64, tokio_postgres::Error> {
    let dead: i64 = client.fetch_one(OUTBOX_DEAD_SQL, &[]).await?.get(0);
    Ok(dead as f64)
}

pub async fn dlq_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<f64, String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| format!("sqs: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    out.attributes
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).cloned())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| "sqs: ApproximateNumberOfMessages missing".to_owned())
}

/// Measured gauges, stamped `minute`, plus the names of the ones that could not be measured
/// (those are left out rather than published as a misleading 0).
pub struct Measured {
    pub data: Vec<MetricDatum>,
    pub failures: Vec<String>,
}

pub async fn measure<C: Sql>(
    env: &str,
    minute: DateTime<Utc>,
    now: DateTime<Utc>,
    client: &C,
    sqs: Option<(&aws_sdk_sqs::Client, &str)>,
    flags: &FlagSet,
) -> Measured {
    let mut data = Vec::new();
    let mut failures = Vec::new();
    match outbox(client, now).await {
        Ok((pending, lag)) => {
            data.push(gauge(env, Gauge::OutboxPending, pending, minute));
            data.push(gauge(env, Gauge::OutboxLagSeconds, lag, minute));
        }
        Err(e) => {
            tracing::warn!(error = %e, "outbox gauges not measured");
            failures.push("outbox".to_owned());
        }
    }
    match outbox_dead(client).await {
        Ok(dead) => data.push(gauge(env, Gauge::OutboxDeadRows, dead, minute)),
        Err(e) => {
            tracing::warn!(error = %e, "outbox dead rows not measured");
            failures.push("outbox_dead".to_owned());
        }
    }
    if let Some((sqs, url)) = sqs {
        match dlq_depth(sqs, url).await {
            Ok(depth) => data.push(gauge(env, Gauge::DlqDepth, depth, minute)),
            Err(e) => {
                tracing::warn!(error = %e, "DLQ depth not measured");
                failures.push("dlq_depth".to_owned());
            }
        }
    }
    data.push(gauge(env, Gauge::StrictRolloutPercent, effective_rollout_percent(flags), minute));
    Measured { data, failures }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_shared::flags::{Environment, FlagValue};

    #[test]
    fn kill_switch_reads_as_zero_rollout() {
        let on = FlagSet::defaults(Environment::Prod)
            .with("holds.strictConflicts.rolloutPercent", FlagValue::Int(50))
            .expect("valid");
        assert_eq!(effective_rollout_percent(&on), 50.0);
        let off = on.with("holds.strictConflicts", FlagValue::Bool(false)).expect("valid");
        assert_eq!(effective_rollout_percent(&off), 0.0);
    }
}
