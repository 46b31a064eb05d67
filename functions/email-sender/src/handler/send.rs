//! Phase 3, send: render each claimed job from the loaded booking data and hand it to the
//! provider. All sends run concurrently, each in its own `catch_unwind`.

use super::claim::Claimed;
use super::EmailSender;
use crate::provider::{plausible_address, OutgoingEmail, Receipt, SendError};
use crate::store::ClaimRow;
use futures::FutureExt;
use holdfast_shared::email::{self, BookingStatus, BookingView, DriftView, EmailJob, EmailType, Rendered};
use holdfast_shared::ids::BookingId;
use holdfast_shared::policy::BookingPolicy;
use std::panic::AssertUnwindSafe;
use std::time::Instant;
use uuid::Uuid;

pub(super) enum SendOutcome {
    Sent(Receipt),
    Failed(SendError),
    Skipped(&'static str),
    Panicked,
}

fn permanent(code: &str) -> SendOutcome {
    SendOutcome::Failed(SendError::permanent(code))
}

impl EmailSender {
    /// Send every claimed job; each outcome comes with the send's duration in milliseconds.
    pub(super) async fn send_all(&self, claimed: &[Claimed<'_>]) -> Vec<(SendOutcome, u64)> {
        futures::future::join_all(claimed.iter().map(|c| async move {
            let started = Instant::now();
            let r = AssertUnwindSafe(self.send_one(c.job, c.row)).catch_unwind().await;
            (r.unwrap_or(SendOutcome::Panicked), started.elapsed().as_millis() as u64)
        }))
        .await
    }

    async fn send_one(&self, job: &EmailJob, row: &ClaimRow) -> SendOutcome {
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
        let out = OutgoingEmail {
            to,
            from: self.settings.from_address.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            // The provider API is stringly typed; the key is only passed through.
            idempotency_key: row.dedupe_key.to_string(),
        };
        match self.provider.send(&out).await {
            Ok(r) => SendOutcome::Sent(r),
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

/// The start in the restaurant's own zone ("Mon 7 Jan 2030, 19:00 GMT"), from its policy.
fn local_time(policy: Option<&serde_json::Value>, t: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let policy: BookingPolicy = serde_json::from_value(policy?.clone()).ok()?;
    Some(policy.render_local(t))
}
