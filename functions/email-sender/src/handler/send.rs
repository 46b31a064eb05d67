//! Phase 3, send: render each claimed job from the loaded booking data and hand it to the
//! provider, unless an earlier attempt may already have delivered it. All sends run
//! concurrently, each in its own `catch_unwind`.

use super::claim::Claimed;
use super::EmailSender;
use crate::provider::{plausible_address, EmailProvider, OutgoingEmail, Receipt, SendError};
use crate::store::{ClaimRow, Unresolved};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use holdfast_shared::email::{self, BookingStatus, BookingView, DriftView, EmailJob, EmailType, Rendered};
use holdfast_shared::ids::BookingId;
use holdfast_shared::policy::BookingPolicy;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// Margin kept inside a provider's idempotency window: an attempt this close to the window's
/// end may be forgotten by the time the retry arrives.
const DEDUPE_MARGIN: chrono::Duration = chrono::Duration::hours(1);

pub(super) enum SendOutcome {
    Sent(Receipt),
    /// `SendError::Ambiguous` only through a provider that deduplicates (a safe retry).
    Failed(SendError),
    Skipped(&'static str),
    /// The provider may have accepted it and cannot deduplicate a retry: not resent.
    Unconfirmed(String),
    /// Not sent: an earlier attempt (`Unresolved::latest`) may have delivered it.
    Suppressed,
    /// `provider_called`: the panic came after the provider call began (outcome unknown).
    Panicked {
        provider_called: bool,
    },
}

fn permanent(code: &str) -> SendOutcome {
    SendOutcome::Failed(SendError::permanent(code))
}

impl EmailSender {
    /// Send every claimed job through `carrier`; each outcome comes with the send's duration in
    /// milliseconds.
    pub(super) async fn send_all(
        &self,
        claimed: &[Claimed<'_>],
        carrier: &Result<&dyn EmailProvider, SendError>,
        now: DateTime<Utc>,
    ) -> Vec<(SendOutcome, u64)> {
        futures::future::join_all(claimed.iter().map(|c| {
            async move {
                let started = Instant::now();
                let called = AtomicBool::new(false);
                let r = AssertUnwindSafe(self.send_one(c, carrier, now, &called)).catch_unwind().await;
                let outcome =
                    r.unwrap_or_else(|_| SendOutcome::Panicked { provider_called: called.load(Ordering::SeqCst) });
                (outcome, started.elapsed().as_millis() as u64)
            }
            // The send's lines (the provider's included) carry its booking's correlation id.
            .instrument(c.rec.span.clone())
        }))
        .await
    }

    async fn send_one(
        &self,
        c: &Claimed<'_>,
        carrier: &Result<&dyn EmailProvider, SendError>,
        now: DateTime<Utc>,
        called: &AtomicBool,
    ) -> SendOutcome {
        let (job, row) = (c.job, c.row);
        let composed = match job.email_type {
            EmailType::OpsPolicyDrift => self.drift_notice(job, row),
            EmailType::OpsPendingAttention => self.pending_attention(job, row),
            t => booking_email(t, job, row),
        };
        let (to, rendered) = match composed {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        if !plausible_address(&to) {
            return permanent("invalid_address");
        }
        let carrier = match carrier {
            Ok(p) => *p,
            Err(e) => return SendOutcome::Failed(e.clone()),
        };
        let Some(attempt_id) = c.attempt else {
            // Unreachable while a carrier exists (the claim records one per key): never send
            // without a record.
            return SendOutcome::Failed(SendError::transient("attempt_unrecorded"));
        };
        if let Some(u) = &row.unresolved {
            if resend_blocked(u, carrier.name(), carrier.dedupe_window(), now) {
                return SendOutcome::Suppressed;
            }
        }
        let out = OutgoingEmail {
            to,
            from: self.settings.from_address.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            // The provider API is stringly typed; the key is only passed through.
            idempotency_key: row.dedupe_key.to_string(),
            attempt_id,
        };
        called.store(true, Ordering::SeqCst);
        match holdfast_adapters::telemetry::timed("provider.send", carrier.send(&out)).await {
            Ok(r) => SendOutcome::Sent(r),
            Err(SendError::Ambiguous(code)) if carrier.dedupe_window().is_none() => SendOutcome::Unconfirmed(code),
            Err(e) => SendOutcome::Failed(e),
        }
    }

    /// The ops drift notice, to the configured ops address.
    fn drift_notice(&self, job: &EmailJob, row: &ClaimRow) -> Result<(String, Rendered), SendOutcome> {
        let (Some(restaurant_id), Some(policy_version)) = (job.restaurant_id, job.policy_version) else {
            return Err(permanent("invalid_job"));
        };
        let Some(name) = row.restaurant_name.clone() else {
            return Err(permanent("unknown_restaurant"));
        };
        let Some(to) = self.settings.ops_address.clone() else {
            return Err(permanent("ops_address_unconfigured"));
        };
        Ok((to, email::render_drift(&DriftView { restaurant_id, restaurant_name: name, policy_version })))
    }
}

impl EmailSender {
    /// The ops notice that a booking request stays pending, to the configured ops address.
    fn pending_attention(&self, job: &EmailJob, row: &ClaimRow) -> Result<(String, Rendered), SendOutcome> {
        let (Some(restaurant), Some(booking)) = (job.restaurant_id, job.booking_id) else {
            return Err(permanent("invalid_job"));
        };
        let Some(b) = row.booking.as_ref() else {
            return Err(permanent("unknown_booking"));
        };
        if BookingStatus::parse(&b.status) != Some(BookingStatus::Requested) {
            // Assigned or cancelled since: nothing needs attention any more.
            return Err(SendOutcome::Skipped("no_longer_pending"));
        }
        let Some(to) = self.settings.ops_address.clone() else {
            return Err(permanent("ops_address_unconfigured"));
        };
        let name = row.restaurant_name.clone().unwrap_or_default();
        Ok((to, email::render_pending_attention(&name, restaurant, booking)))
    }
}

/// A guest email, to the booking's address; skipped when the booking's status makes it moot.
fn booking_email(t: EmailType, job: &EmailJob, row: &ClaimRow) -> Result<(String, Rendered), SendOutcome> {
    let Some(b) = row.booking.as_ref() else {
        return Err(permanent("unknown_booking"));
    };
    let Some(status) = BookingStatus::parse(&b.status) else {
        return Err(permanent("unknown_booking_status"));
    };
    if let Some(reason) = email::skip_reason(t, status, job.revision, b.revision) {
        return Err(SendOutcome::Skipped(reason));
    }
    let Some(to) = b.guest_email.clone().filter(|e| !e.trim().is_empty()) else {
        return Err(permanent("no_recipient"));
    };
    let view = BookingView {
        booking_id: job.booking_id.unwrap_or(BookingId(Uuid::nil())),
        status,
        restaurant_name: row.restaurant_name.clone().unwrap_or_default(),
        guest_name: b.guest_name.clone(),
        guest_email: Some(to.clone()),
        party_size: u16::try_from(b.party_size).unwrap_or(1),
        starts_at: b.starts_at,
        starts_at_local: local_time(b.policy.as_ref(), b.starts_at),
    };
    let Some(r) = email::render_booking(t, &view) else {
        return Err(permanent("no_template"));
    };
    Ok((to.trim().to_string(), r))
}

/// Whether earlier attempts that may have been delivered (`u`) forbid sending through `carrier`
/// now: always, unless every one of them went to this same provider and it still remembers the
/// oldest one's idempotency key (with [`DEDUPE_MARGIN`] to spare).
pub(super) fn resend_blocked(
    u: &Unresolved,
    carrier: &str,
    window: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> bool {
    let only_this_provider = u.providers.iter().all(|p| p == carrier);
    match window {
        Some(w) if only_this_provider => now - u.oldest_started_at >= w - DEDUPE_MARGIN,
        _ => true,
    }
}

/// The start in the restaurant's own zone ("Mon 7 Jan 2030, 19:00 GMT"), from its policy.
fn local_time(policy: Option<&serde_json::Value>, t: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let policy: BookingPolicy = serde_json::from_value(policy?.clone()).ok()?;
    Some(policy.render_local(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unresolved(providers: &[&str], age: chrono::Duration, now: DateTime<Utc>) -> Unresolved {
        Unresolved {
            latest: Uuid::nil(),
            count: providers.len() as i64,
            providers: providers.iter().map(|p| p.to_string()).collect(),
            oldest_started_at: now - age,
        }
    }

    #[test]
    fn only_a_deduplicating_provider_within_its_window_may_resend() {
        let now = Utc::now();
        let day = Some(chrono::Duration::hours(24));
        let min = chrono::Duration::minutes(1);
        // SES: never after an unresolved attempt.
        assert!(resend_blocked(&unresolved(&["ses"], min, now), "ses", None, now));
        // Resend after Resend, within the window: the provider drops the repeat.
        assert!(!resend_blocked(&unresolved(&["resend"], min, now), "resend", day, now));
        // ...but not near or past its end,
        assert!(resend_blocked(&unresolved(&["resend"], chrono::Duration::hours(23), now), "resend", day, now));
        // nor across providers, either way round.
        assert!(resend_blocked(&unresolved(&["ses"], min, now), "resend", day, now));
        assert!(resend_blocked(&unresolved(&["resend", "ses"], min, now), "resend", day, now));
        assert!(resend_blocked(&unresolved(&["resend"], min, now), "ses", None, now));
    }
}
