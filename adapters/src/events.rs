//! The one event recorder: every `observability_events` row is written here, and only typed,
//! allow-listed context (see `holdfast_shared::events`) can reach it, so guest PII cannot.

use crate::db::DbFault;
use crate::sql::Sql;
use deadpool_postgres::Pool;
use holdfast_shared::events::ObservabilityEvent;

const INSERT: &str =
    "INSERT INTO observability_events (source, event_type, severity, restaurant_id, booking_id, context)
     VALUES ($1, $2, $3, $4, $5, $6)";

#[derive(Clone)]
pub struct EventRecorder {
    pool: Pool,
}

impl EventRecorder {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Record on its own connection. Best effort by design: losing a telemetry row must never
    /// fail a guest's request, so a failure is logged (with the event type, not the context).
    pub async fn record(&self, ev: &ObservabilityEvent) {
        let result = async {
            let client = self.pool.get().await?;
            record_with(&client, ev).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(event_type = ev.event_type.as_str(), error = %e, "observability event not recorded");
        }
    }
}

/// Record inside the caller's transaction (for events that must commit with the change).
pub async fn record_with<C: Sql>(client: &C, ev: &ObservabilityEvent) -> Result<(), DbFault> {
    client
        .run(
            INSERT,
            &[
                &ev.source.as_str(),
                &ev.event_type.as_str(),
                &ev.severity.as_str(),
                &ev.restaurant_id.map(|r| r.as_uuid()),
                &ev.booking_id.map(|b| b.as_uuid()),
                &ev.context_json(),
            ],
        )
        .await?;
    Ok(())
}

/// Record many events in one round trip (the email sender records a batch's outcomes at once).
/// Same columns, same typed and sanitised context as [`record_with`].
pub async fn record_batch<C: Sql>(client: &C, evs: &[ObservabilityEvent]) -> Result<(), DbFault> {
    if evs.is_empty() {
        return Ok(());
    }
    let sources: Vec<&str> = evs.iter().map(|e| e.source.as_str()).collect();
    let types: Vec<&str> = evs.iter().map(|e| e.event_type.as_str()).collect();
    let severities: Vec<&str> = evs.iter().map(|e| e.severity.as_str()).collect();
    let restaurants: Vec<Option<uuid::Uuid>> = evs.iter().map(|e| e.restaurant_id.map(|r| r.as_uuid())).collect();
    let bookings: Vec<Option<uuid::Uuid>> = evs.iter().map(|e| e.booking_id.map(|b| b.as_uuid())).collect();
    let contexts: Vec<serde_json::Value> = evs.iter().map(|e| e.context_json()).collect();
    client
        .run(
            "INSERT INTO observability_events (source, event_type, severity, restaurant_id, booking_id, context)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::jsonb[])",
            &[&sources, &types, &severities, &restaurants, &bookings, &contexts],
        )
        .await?;
    Ok(())
}
