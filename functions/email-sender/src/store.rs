//! The sender's database access: the idempotency ledger (`email_sends`, V4) and the booking
//! data templates need. Every statement goes through here and is counted, so the benchmark can
//! report database round trips per job.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use holdfast_adapters::db::DbFault;
use holdfast_shared::email::EmailType;
use holdfast_shared::events::ObservabilityEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// One key to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub dedupe_key: String,
    pub email_type: EmailType,
    pub booking_id: Option<Uuid>,
    pub restaurant_id: Option<Uuid>,
}

/// Where a key stands after the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// This invocation holds the claim; `attempts` counts claims including this one.
    Claimed {
        attempts: i32,
    },
    AlreadySent,
    FailedPermanent,
    /// Another consumer holds a live lease (until then, if known).
    Busy {
        until: Option<DateTime<Utc>>,
    },
}

/// Booking columns a template needs (PII: kept in memory only, never logged).
#[derive(Clone)]
pub struct BookingRow {
    pub restaurant_id: Uuid,
    pub status: String,
    pub party_size: i16,
    pub starts_at: DateTime<Utc>,
    pub guest_name: Option<String>,
    pub guest_email: Option<String>,
}

#[derive(Clone)]
pub struct ClaimRow {
    pub dedupe_key: String,
    pub state: ClaimState,
    pub booking: Option<BookingRow>,
    pub restaurant_name: Option<String>,
}

/// How a claimed key ends this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Sent {
        provider: String,
        message_id: Option<String>,
    },
    Permanent {
        code: String,
    },
    /// Transient failure: release the lease now so the retry can claim at once.
    Released {
        code: String,
    },
    /// Not sent on purpose (cancelled booking): drop the claim row.
    Skipped,
    /// Outcome unknown (a panic mid-send): keep the lease; the key is claimable when it expires.
    Hold {
        code: String,
    },
}

pub struct SendStore {
    pool: Pool,
    statements: AtomicU64,
}

/// Claim every key of a batch in ONE statement, and load what the templates need with it.
///
/// The `claimed` CTE inserts new keys and re-claims keys whose lease has passed; the outer
/// SELECT sees the table as it was before the statement (same snapshot), so for keys that were
/// not claimed it reports the existing row's state. A key that another transaction inserted
/// concurrently is neither claimed nor visible: reported as busy.
const CLAIM_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[]) WITH ORDINALITY
        AS t(dedupe_key, email_type, booking_id, restaurant_id, ord)
), claimed AS (
    INSERT INTO email_sends AS s
        (dedupe_key, email_type, booking_id, restaurant_id, state, claim_token, claimed_until, attempts, created_at, updated_at)
    SELECT dedupe_key, email_type, booking_id, restaurant_id, 'in_progress', $5, $6, 1, $7, $7 FROM input
    ON CONFLICT (dedupe_key) DO UPDATE
        SET claim_token = EXCLUDED.claim_token, claimed_until = EXCLUDED.claimed_until,
            attempts = s.attempts + 1, updated_at = EXCLUDED.updated_at
        WHERE s.state = 'in_progress' AND s.claimed_until <= $7
    RETURNING s.dedupe_key, s.attempts
)
SELECT i.dedupe_key, c.attempts, e.state, e.claimed_until,
       b.restaurant_id, b.status, b.party_size, b.starts_at, b.guest_name, b.guest_email, r.name
FROM input i
LEFT JOIN claimed c ON c.dedupe_key = i.dedupe_key
LEFT JOIN email_sends e ON e.dedupe_key = i.dedupe_key
LEFT JOIN bookings b ON b.id = i.booking_id
LEFT JOIN restaurants r ON r.id = coalesce(b.restaurant_id, i.restaurant_id)
ORDER BY i.ord";

/// Apply a batch's outcomes in one statement; only rows this invocation still owns change.
const FINISH_SQL: &str = "
WITH f AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS t(dedupe_key, outcome, provider, message_id, code)
), dropped AS (
    DELETE FROM email_sends s USING f
    WHERE s.dedupe_key = f.dedupe_key AND s.claim_token = $6 AND s.state = 'in_progress' AND f.outcome = 'skipped'
    RETURNING s.dedupe_key
), updated AS (
    UPDATE email_sends s SET
        state = CASE f.outcome WHEN 'sent' THEN 'sent' WHEN 'permanent' THEN 'failed_permanent' ELSE 'in_progress' END,
        claimed_until = CASE f.outcome WHEN 'released' THEN $7 WHEN 'hold' THEN s.claimed_until ELSE NULL END,
        provider = coalesce(f.provider, s.provider),
        provider_message_id = coalesce(f.message_id, s.provider_message_id),
        last_error = f.code,
        sent_at = CASE WHEN f.outcome = 'sent' THEN $7 ELSE s.sent_at END,
        updated_at = $7
    FROM f
    WHERE s.dedupe_key = f.dedupe_key AND s.claim_token = $6 AND s.state = 'in_progress' AND f.outcome <> 'skipped'
    RETURNING s.dedupe_key
)
SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM updated)";

impl SendStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool, statements: AtomicU64::new(0) }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Statements executed so far (each is one database round trip).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn claim(
        &self,
        reqs: &[ClaimRequest],
        token: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimRow>, DbFault> {
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<&str> = reqs.iter().map(|r| r.dedupe_key.as_str()).collect();
        let types: Vec<&str> = reqs.iter().map(|r| r.email_type.as_str()).collect();
        let bookings: Vec<Option<Uuid>> = reqs.iter().map(|r| r.booking_id).collect();
        let restaurants: Vec<Option<Uuid>> = reqs.iter().map(|r| r.restaurant_id).collect();
        let client = self.pool.get().await?;
        self.count();
        let rows =
            client.query(CLAIM_SQL, &[&keys, &types, &bookings, &restaurants, &token, &lease_until, &now]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                let attempts: Option<i32> = row.get(1);
                let existing: Option<String> = row.get(2);
                let state = match (attempts, existing.as_deref()) {
                    (Some(a), _) => ClaimState::Claimed { attempts: a },
                    (None, Some("sent")) => ClaimState::AlreadySent,
                    (None, Some("failed_permanent")) => ClaimState::FailedPermanent,
                    (None, _) => ClaimState::Busy { until: row.get(3) },
                };
                let booking = row.get::<_, Option<Uuid>>(4).map(|restaurant_id| BookingRow {
                    restaurant_id,
                    status: row.get(5),
                    party_size: row.get(6),
                    starts_at: row.get(7),
                    guest_name: row.get(8),
                    guest_email: row.get(9),
                });
                ClaimRow { dedupe_key: row.get(0), state, booking, restaurant_name: row.get(10) }
            })
            .collect())
    }

    /// Apply outcomes and record the batch's events: two statements, pipelined on one
    /// connection. Returns how many ledger rows changed.
    pub async fn finish(
        &self,
        items: &[(String, Finish)],
        token: Uuid,
        now: DateTime<Utc>,
        events: &[ObservabilityEvent],
    ) -> Result<u64, DbFault> {
        let mut keys = Vec::new();
        let mut outcomes = Vec::new();
        let mut providers: Vec<Option<String>> = Vec::new();
        let mut message_ids: Vec<Option<String>> = Vec::new();
        let mut codes: Vec<Option<String>> = Vec::new();
        for (key, f) in items {
            keys.push(key.as_str());
            let (outcome, provider, mid, code) = match f {
                Finish::Sent { provider, message_id } => ("sent", Some(provider.clone()), message_id.clone(), None),
                Finish::Permanent { code } => ("permanent", None, None, Some(code.clone())),
                Finish::Released { code } => ("released", None, None, Some(code.clone())),
                Finish::Skipped => ("skipped", None, None, None),
                Finish::Hold { code } => ("hold", None, None, Some(code.clone())),
            };
            outcomes.push(outcome);
            providers.push(provider);
            message_ids.push(mid);
            codes.push(code);
        }
        let client = self.pool.get().await?;
        let ledger = async {
            if keys.is_empty() {
                return Ok::<u64, DbFault>(0);
            }
            self.count();
            let row = client
                .query_one(FINISH_SQL, &[&keys, &outcomes, &providers, &message_ids, &codes, &token, &now])
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        };
        let evs = async {
            if events.is_empty() {
                return Ok(());
            }
            self.count();
            holdfast_adapters::events::record_batch(&client, events).await
        };
        let (changed, recorded) = futures::join!(ledger, evs);
        if let Err(e) = recorded {
            // Telemetry is best effort; the ledger is not.
            tracing::warn!(error = %e, "email events not recorded");
        }
        changed
    }

    /// Record events alone (batches where nothing was claimed).
    pub async fn record_events(&self, events: &[ObservabilityEvent]) {
        if events.is_empty() {
            return;
        }
        let result = async {
            let client = self.pool.get().await?;
            self.count();
            holdfast_adapters::events::record_batch(&client, events).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "email events not recorded");
        }
    }
}
