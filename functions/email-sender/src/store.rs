//! The sender's database access: the idempotency ledger (`email_sends`, V4), the provider
//! attempts recorded before each send (`email_send_attempts`, V10) and the booking data
//! templates need. Every statement goes through here and is counted, so the benchmark can
//! report database round trips per job.

use crate::error::EmailError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::{DedupeKey, EmailJob, EmailType};
use holdfast_shared::events::ObservabilityEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// One key to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub dedupe_key: DedupeKey,
    pub email_type: EmailType,
    pub booking_id: Option<Uuid>,
    pub restaurant_id: Option<Uuid>,
}

impl ClaimRequest {
    pub fn for_job(job: &EmailJob) -> Self {
        Self {
            dedupe_key: job.key(),
            email_type: job.email_type,
            booking_id: job.booking_id.map(|b| b.as_uuid()),
            restaurant_id: job.restaurant_id.map(|r| r.as_uuid()),
        }
    }
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
    /// Not sent again: an earlier attempt may have been delivered (an operator decides).
    Suppressed,
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
    /// Bumped by every change and cancellation: emails about older revisions are superseded.
    pub revision: i32,
    /// The restaurant's current policy (its time zone renders the guest's local time).
    pub policy: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct ClaimRow {
    pub dedupe_key: DedupeKey,
    pub state: ClaimState,
    pub booking: Option<BookingRow>,
    pub restaurant_name: Option<String>,
    /// Earlier attempts of this job whose outcome is unknown or ambiguous (before this claim).
    pub unresolved: Option<Unresolved>,
}

/// A job's earlier attempts that may have been delivered: outcome unknown (the sender died,
/// or could not record the answer) or ambiguous (timeout, 5xx, connection lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The most recent one: its id is the `holdfast_attempt` tag to look for at SES.
    pub latest: Uuid,
    pub count: i64,
    /// The providers they went to (distinct).
    pub providers: Vec<String>,
    pub oldest_started_at: DateTime<Utc>,
}

/// The attempts a claim records before anything is sent: one id per request, in order, all
/// through `provider` (the one that will carry the sends).
#[derive(Debug, Clone, Copy)]
pub struct NewAttempts<'a> {
    pub provider: &'a str,
    pub ids: &'a [Uuid],
}

/// `email_send_attempts.outcome` (the table's CHECK lists the same three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Accepted,
    /// Certainly not sent (refused before sending, throttled, refused for good, never tried).
    NotSent,
    /// The request went out and no answer says whether it was accepted.
    Ambiguous,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::NotSent => "not_sent",
            Self::Ambiguous => "ambiguous",
        }
    }
}

/// How one recorded attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    pub attempt_id: Uuid,
    pub outcome: AttemptOutcome,
    pub code: Option<String>,
    pub message_id: Option<String>,
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
    /// Not sent (again): an attempt may have been delivered and the provider cannot tell.
    Suppressed {
        code: String,
    },
}

/// `email_sends.state` (the table's CHECK, V4 and V10, lists the same four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LedgerState {
    InProgress,
    Sent,
    FailedPermanent,
    SuppressedAmbiguous,
}

impl LedgerState {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Sent => "sent",
            Self::FailedPermanent => "failed_permanent",
            Self::SuppressedAmbiguous => "suppressed_ambiguous",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::InProgress, Self::Sent, Self::FailedPermanent, Self::SuppressedAmbiguous]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// The ledger writes of one batch's outcomes, as `FINISH_SQL`'s array parameters. [`Self::push`]
/// is the one place a [`Finish`] becomes column values; the SQL only applies them.
#[derive(Default)]
struct FinishColumns<'a> {
    /// Skipped keys: their claim rows are deleted (a skip leaves nothing behind).
    dropped: Vec<&'a str>,
    keys: Vec<&'a str>,
    states: Vec<&'static str>,
    providers: Vec<Option<&'a str>>,
    message_ids: Vec<Option<&'a str>>,
    codes: Vec<Option<&'a str>>,
    claimed_until: Vec<Option<DateTime<Utc>>>,
    /// Leave `claimed_until` as it is (overrides `claimed_until`).
    keep_lease: Vec<bool>,
    sent_at: Vec<Option<DateTime<Utc>>>,
}

impl<'a> FinishColumns<'a> {
    fn push(&mut self, key: &'a DedupeKey, finish: &'a Finish, now: DateTime<Utc>) {
        use LedgerState::{FailedPermanent, InProgress, Sent, SuppressedAmbiguous};
        let (state, provider, message_id, code, claimed_until, keep_lease) = match finish {
            Finish::Skipped => {
                self.dropped.push(key.as_str());
                return;
            }
            Finish::Sent { provider, message_id } => (Sent, Some(provider), message_id.as_ref(), None, None, false),
            Finish::Permanent { code } => (FailedPermanent, None, None, Some(code), None, false),
            Finish::Released { code } => (InProgress, None, None, Some(code), Some(now), false),
            Finish::Hold { code } => (InProgress, None, None, Some(code), None, true),
            Finish::Suppressed { code } => (SuppressedAmbiguous, None, None, Some(code), None, false),
        };
        self.keys.push(key.as_str());
        self.states.push(state.as_str());
        self.providers.push(provider.map(String::as_str));
        self.message_ids.push(message_id.map(String::as_str));
        self.codes.push(code.map(String::as_str));
        self.claimed_until.push(claimed_until);
        self.keep_lease.push(keep_lease);
        self.sent_at.push((state == Sent).then_some(now));
    }

    fn is_empty(&self) -> bool {
        self.dropped.is_empty() && self.keys.is_empty()
    }
}

/// Attempt outcomes as `FINISH_SQL`'s array parameters.
#[derive(Default)]
struct AttemptColumns<'a> {
    ids: Vec<Uuid>,
    outcomes: Vec<&'static str>,
    codes: Vec<Option<&'a str>>,
    message_ids: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn of(ends: &'a [AttemptEnd]) -> Self {
        let mut c = Self::default();
        for e in ends {
            c.ids.push(e.attempt_id);
            c.outcomes.push(e.outcome.as_str());
            c.codes.push(e.code.as_deref());
            c.message_ids.push(e.message_id.as_deref());
        }
        c
    }
}

pub struct SendStore {
    pool: Pool,
    statements: AtomicU64,
}

/// Claim every key of a batch in ONE statement, record the attempts about to be made, and load
/// what the templates need with it.
///
/// The `claimed` CTE inserts new keys and re-claims keys whose lease has passed; `recorded`
/// writes an attempt (outcome unknown) for every claimed key when a provider is given ($9),
/// committed before any send. The outer SELECT sees the tables as they were before the
/// statement (same snapshot), so for keys that were not claimed it reports the existing row's
/// state, and `u` summarises the earlier attempts only. A key that another transaction inserted
/// concurrently is neither claimed nor visible: reported as busy.
const CLAIM_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $8::uuid[]) WITH ORDINALITY
        AS t(dedupe_key, email_type, booking_id, restaurant_id, attempt_id, ord)
), claimed AS (
    INSERT INTO email_sends AS s
        (dedupe_key, email_type, booking_id, restaurant_id, state, claim_token, claimed_until, attempts, created_at, updated_at)
    SELECT dedupe_key, email_type, booking_id, restaurant_id, 'in_progress', $5, $6, 1, $7, $7 FROM input
    ON CONFLICT (dedupe_key) DO UPDATE
        SET claim_token = EXCLUDED.claim_token, claimed_until = EXCLUDED.claimed_until,
            attempts = s.attempts + 1, updated_at = EXCLUDED.updated_at
        WHERE s.state = 'in_progress' AND s.claimed_until <= $7
    RETURNING s.dedupe_key, s.attempts
), recorded AS (
    INSERT INTO email_send_attempts (attempt_id, dedupe_key, provider, started_at)
    SELECT i.attempt_id, i.dedupe_key, $9::text, $7 FROM claimed c JOIN input i ON i.dedupe_key = c.dedupe_key
    WHERE $9::text IS NOT NULL
)
SELECT i.dedupe_key, c.attempts, e.state, e.claimed_until,
       b.restaurant_id, b.status, b.party_size, b.starts_at, b.guest_name, b.guest_email, r.name, b.revision,
       (SELECT p.body FROM booking_policies p WHERE p.restaurant_id = b.restaurant_id
         ORDER BY p.version DESC LIMIT 1),
       u.n, u.latest, u.providers, u.oldest
FROM input i
LEFT JOIN claimed c ON c.dedupe_key = i.dedupe_key
LEFT JOIN email_sends e ON e.dedupe_key = i.dedupe_key
LEFT JOIN bookings b ON b.id = i.booking_id
LEFT JOIN restaurants r ON r.id = coalesce(b.restaurant_id, i.restaurant_id)
CROSS JOIN LATERAL (
    SELECT count(*) AS n, (array_agg(a.attempt_id ORDER BY a.started_at DESC))[1] AS latest,
           array_agg(DISTINCT a.provider) AS providers, min(a.started_at) AS oldest
    FROM email_send_attempts a
    WHERE a.dedupe_key = i.dedupe_key AND (a.outcome IS NULL OR a.outcome = 'ambiguous')
) u
ORDER BY i.ord";

/// Apply a batch's outcomes in one statement; only rows this invocation still owns change.
/// The values come from [`FinishColumns`]; the attempts' outcomes ([`AttemptColumns`]) are
/// recorded whoever owns the row now: they are facts about calls this invocation made.
const FINISH_SQL: &str = "
WITH dropped AS (
    DELETE FROM email_sends s
    WHERE s.dedupe_key = ANY($1::text[]) AND s.claim_token = $2 AND s.state = 'in_progress'
    RETURNING s.dedupe_key
), f AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
                         $9::bool[], $10::timestamptz[])
        AS t(dedupe_key, state, provider, message_id, code, claimed_until, keep_lease, sent_at)
), updated AS (
    UPDATE email_sends s SET
        state = f.state,
        claimed_until = CASE WHEN f.keep_lease THEN s.claimed_until ELSE f.claimed_until END,
        provider = coalesce(f.provider, s.provider),
        provider_message_id = coalesce(f.message_id, s.provider_message_id),
        last_error = f.code,
        sent_at = coalesce(f.sent_at, s.sent_at),
        updated_at = $11
    FROM f
    WHERE s.dedupe_key = f.dedupe_key AND s.claim_token = $2 AND s.state = 'in_progress'
    RETURNING s.dedupe_key
), resolved AS (
    UPDATE email_send_attempts a SET outcome = t.outcome, error_code = t.code,
        provider_message_id = t.message_id, finished_at = $11
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[]) AS t(attempt_id, outcome, code, message_id)
    WHERE a.attempt_id = t.attempt_id AND a.outcome IS NULL
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

    /// Claim without recording attempts (nothing will be sent through a provider).
    pub async fn claim(
        &self,
        reqs: &[ClaimRequest],
        token: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimRow>, EmailError> {
        self.claim_attempting(reqs, None, token, now, lease_until).await
    }

    /// Claim, and record an attempt (outcome unknown) for every key claimed, before any send.
    pub async fn claim_attempting(
        &self,
        reqs: &[ClaimRequest],
        attempts: Option<NewAttempts<'_>>,
        token: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<ClaimRow>, EmailError> {
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<&str> = reqs.iter().map(|r| r.dedupe_key.as_str()).collect();
        let types: Vec<&str> = reqs.iter().map(|r| r.email_type.as_str()).collect();
        let bookings: Vec<Option<Uuid>> = reqs.iter().map(|r| r.booking_id).collect();
        let restaurants: Vec<Option<Uuid>> = reqs.iter().map(|r| r.restaurant_id).collect();
        let ids: Vec<Option<Uuid>> = (0..reqs.len()).map(|i| attempts.and_then(|a| a.ids.get(i).copied())).collect();
        let provider: Option<&str> = attempts.map(|a| a.provider);
        let client = self.pool.get().await?;
        self.count();
        let rows = client
            .fetch(CLAIM_SQL, &[&keys, &types, &bookings, &restaurants, &token, &lease_until, &now, &ids, &provider])
            .await?;
        Ok(rows.iter().map(claim_row).collect())
    }

    /// Apply outcomes and record the batch's events: two statements, pipelined on one
    /// connection. Returns how many ledger rows changed.
    pub async fn finish(
        &self,
        items: &[(DedupeKey, Finish)],
        token: Uuid,
        now: DateTime<Utc>,
        events: &[ObservabilityEvent],
    ) -> Result<u64, EmailError> {
        self.finish_attempts(items, &[], token, now, events).await
    }

    /// [`Self::finish`], also recording how this invocation's attempts ended (same statement).
    pub async fn finish_attempts(
        &self,
        items: &[(DedupeKey, Finish)],
        ends: &[AttemptEnd],
        token: Uuid,
        now: DateTime<Utc>,
        events: &[ObservabilityEvent],
    ) -> Result<u64, EmailError> {
        let mut cols = FinishColumns::default();
        for (key, finish) in items {
            cols.push(key, finish, now);
        }
        let att = AttemptColumns::of(ends);
        let client = self.pool.get().await?;
        let ledger = async {
            if cols.is_empty() && att.ids.is_empty() {
                return Ok::<u64, EmailError>(0);
            }
            self.count();
            let (c, a) = (&cols, &att);
            let row = client
                .fetch_one(
                    FINISH_SQL,
                    &[
                        &c.dropped,
                        &token,
                        &c.keys,
                        &c.states,
                        &c.providers,
                        &c.message_ids,
                        &c.codes,
                        &c.claimed_until,
                        &c.keep_lease,
                        &c.sent_at,
                        &now,
                        &a.ids,
                        &a.outcomes,
                        &a.codes,
                        &a.message_ids,
                    ],
                )
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

/// One row of `CLAIM_SQL`: claimed by us if the `claimed` CTE returned attempts, else the state
/// the row had before the statement.
fn claim_row(row: &tokio_postgres::Row) -> ClaimRow {
    let attempts: Option<i32> = row.get(1);
    let existing: Option<String> = row.get(2);
    let state = match (attempts, existing.as_deref().and_then(LedgerState::parse)) {
        (Some(a), _) => ClaimState::Claimed { attempts: a },
        (None, Some(LedgerState::Sent)) => ClaimState::AlreadySent,
        (None, Some(LedgerState::FailedPermanent)) => ClaimState::FailedPermanent,
        (None, Some(LedgerState::SuppressedAmbiguous)) => ClaimState::Suppressed,
        (None, _) => ClaimState::Busy { until: row.get(3) },
    };
    let booking = row.get::<_, Option<Uuid>>(4).map(|restaurant_id| BookingRow {
        restaurant_id,
        status: row.get(5),
        party_size: row.get(6),
        starts_at: row.get(7),
        guest_name: row.get(8),
        guest_email: row.get(9),
        revision: row.get(11),
        policy: row.get(12),
    });
    let unresolved =
        match (row.get::<_, i64>(13), row.get::<_, Option<Uuid>>(14), row.get::<_, Option<DateTime<Utc>>>(16)) {
            (n, Some(latest), Some(oldest_started_at)) if n > 0 => Some(Unresolved {
                latest,
                count: n,
                providers: row.get::<_, Option<Vec<String>>>(15).unwrap_or_default(),
                oldest_started_at,
            }),
            _ => None,
        };
    ClaimRow {
        dedupe_key: DedupeKey::from(row.get::<_, String>(0)),
        state,
        booking,
        restaurant_name: row.get(10),
        unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishes_become_ledger_columns() {
        let now = Utc::now();
        let keys: Vec<DedupeKey> = (0..6).map(|i| DedupeKey::from(format!("k{i}"))).collect();
        let finishes = [
            Finish::Sent { provider: "ses".into(), message_id: Some("m".into()) },
            Finish::Permanent { code: "unknown_booking".into() },
            Finish::Released { code: "ses_throttled".into() },
            Finish::Skipped,
            Finish::Hold { code: "panic".into() },
            Finish::Suppressed { code: "ses_timeout".into() },
        ];
        let mut c = FinishColumns::default();
        for (k, f) in keys.iter().zip(&finishes) {
            c.push(k, f, now);
        }
        assert_eq!(c.dropped, vec!["k3"]);
        assert_eq!(c.keys, vec!["k0", "k1", "k2", "k4", "k5"]);
        assert_eq!(c.states, vec!["sent", "failed_permanent", "in_progress", "in_progress", "suppressed_ambiguous"]);
        assert_eq!(c.claimed_until, vec![None, None, Some(now), None, None]);
        assert_eq!(c.keep_lease, vec![false, false, false, true, false]);
        assert_eq!(c.sent_at, vec![Some(now), None, None, None, None]);
        assert_eq!(c.providers, vec![Some("ses"), None, None, None, None]);
        assert_eq!(
            c.codes,
            vec![None, Some("unknown_booking"), Some("ses_throttled"), Some("panic"), Some("ses_timeout")]
        );
        assert!(FinishColumns::default().is_empty());
        for s in c.states {
            assert!(LedgerState::parse(s).is_some(), "{s}");
        }
    }
}
