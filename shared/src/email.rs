//! Email jobs: what goes on the queue. Ids only — the sender loads what a template needs from
//! the database, so no guest PII ever sits in a queue message, an outbox row or a DLQ.

use crate::ids::{BookingId, RestaurantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped when the job shape changes; the sender refuses versions it does not know.
pub const JOB_SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailType {
    RequestReceived,
    BookingConfirmed,
    BookingUpdated,
    BookingCancelled,
    Reminder,
    /// To the ops mailbox: a restaurant's policy changed under live holds.
    OpsPolicyDrift,
    /// To the ops mailbox: a booking request could not be assigned a table automatically.
    OpsPendingAttention,
}

impl EmailType {
    pub const ALL: [EmailType; 7] = [
        Self::RequestReceived,
        Self::BookingConfirmed,
        Self::BookingUpdated,
        Self::BookingCancelled,
        Self::Reminder,
        Self::OpsPolicyDrift,
        Self::OpsPendingAttention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestReceived => "request_received",
            Self::BookingConfirmed => "booking_confirmed",
            Self::BookingUpdated => "booking_updated",
            Self::BookingCancelled => "booking_cancelled",
            Self::Reminder => "reminder",
            Self::OpsPolicyDrift => "ops_policy_drift",
            Self::OpsPendingAttention => "ops_pending_attention",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One email to send. Exactly one of `booking_id` (guest emails) or `restaurant_id` +
/// `policy_version` (ops drift notice) identifies the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailJob {
    pub schema_version: u16,
    pub email_type: EmailType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<BookingId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restaurant_id: Option<RestaurantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i32>,
    /// Do not send before this instant (deferred sends survive restarts by riding the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The booking's revision the email is about (updates and reminders): one email per
    /// revision, and a job for an older revision than the booking's is superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i32>,
}

impl EmailJob {
    pub fn for_booking(email_type: EmailType, booking: BookingId) -> Self {
        Self {
            schema_version: JOB_SCHEMA_VERSION,
            email_type,
            booking_id: Some(booking),
            restaurant_id: None,
            policy_version: None,
            not_before: None,
            revision: None,
        }
    }

    /// A guest email about one revision of the booking (updated, reminder).
    pub fn for_revision(email_type: EmailType, booking: BookingId, revision: i32) -> Self {
        Self { revision: Some(revision), ..Self::for_booking(email_type, booking) }
    }

    /// The ops notice that a request stays pending after auto-assign gave up (once per booking).
    pub fn ops_pending_attention(restaurant: RestaurantId, booking: BookingId) -> Self {
        Self { restaurant_id: Some(restaurant), ..Self::for_booking(EmailType::OpsPendingAttention, booking) }
    }

    pub fn ops_policy_drift(restaurant: RestaurantId, policy_version: i32) -> Self {
        Self {
            schema_version: JOB_SCHEMA_VERSION,
            email_type: EmailType::OpsPolicyDrift,
            booking_id: None,
            restaurant_id: Some(restaurant),
            policy_version: Some(policy_version),
            not_before: None,
            revision: None,
        }
    }

    /// The idempotency key: at most one successful send per key. Guest emails are keyed by
    /// booking and type; the drift notice once per restaurant and policy version.
    pub fn key(&self) -> DedupeKey {
        let t = self.email_type.as_str();
        DedupeKey(match (self.booking_id, self.restaurant_id, self.policy_version) {
            (Some(b), _, _) => match self.revision {
                Some(r) => format!("booking:{b}:{t}:r{r}"),
                None => format!("booking:{b}:{t}"),
            },
            (None, Some(r), Some(v)) => format!("restaurant:{r}:policy:{v}:{t}"),
            (None, Some(r), None) => format!("restaurant:{r}:{t}"),
            (None, None, _) => format!("orphan:{t}"),
        })
    }

    /// [`Self::key`] as text, for a SQL parameter (`email_outbox.dedupe_key`).
    pub fn dedupe_key(&self) -> String {
        self.key().into_string()
    }
}

/// A job's idempotency key (`email_sends` and `email_outbox` are unique on it). Its own type so
/// it cannot be swapped with the other strings a send carries (address, provider, code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupeKey(String);

impl DedupeKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A key read back from the ledger.
impl From<String> for DedupeKey {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// SQS's maximum `DelaySeconds`: a longer deferral is re-queued hop by hop.
pub const MAX_SQS_DELAY_SECONDS: u32 = 900;

/// Receives before the queue's redrive policy moves a job to the DLQ (infra: maxReceiveCount).
pub const MAX_RECEIVES: u32 = 5;

/// The retry schedule of transient failures: the message's visibility timeout after failed
/// receive `n` is `base · 2^(n-1)`, capped. Production: 60 s, 120 s, 240 s, 480 s, then the
/// fifth failed receive leaves the job to the redrive policy (DLQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_seconds: u32,
    pub cap_seconds: u32,
}

impl Backoff {
    /// SQS's maximum visibility timeout is 12 hours.
    pub const SQS_MAX_VISIBILITY_SECONDS: u32 = 43_200;

    pub const PRODUCTION: Backoff = Backoff { base_seconds: 60, cap_seconds: 900 };

    /// Visibility timeout to set after failed receive `receive_count` (1-based).
    pub fn visibility_after(&self, receive_count: u32) -> u32 {
        let exp = receive_count.saturating_sub(1).min(20);
        let secs = u64::from(self.base_seconds).saturating_mul(1u64 << exp);
        let cap = self.cap_seconds.min(Self::SQS_MAX_VISIBILITY_SECONDS);
        u32::try_from(secs.min(u64::from(cap))).unwrap_or(cap)
    }

    /// Whether a transient failure on this receive is the last one the queue allows.
    pub fn is_final_receive(receive_count: u32) -> bool {
        receive_count >= MAX_RECEIVES
    }
}

/// What to do with a job whose `not_before` may lie in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Due: send now.
    Due,
    /// Re-queue with `delay_seconds` (≤ the hop cap) and acknowledge the current message;
    /// `remaining_seconds` is what is left of the whole deferral.
    Requeue { delay_seconds: u32, remaining_seconds: u64 },
}

/// Plan a deferral: the remaining delay, one hop of at most `max_hop_seconds` (itself capped
/// at SQS's 900 s). Sub-second remainders round up so a job is never sent early.
pub fn plan_deferral(not_before: Option<DateTime<Utc>>, now: DateTime<Utc>, max_hop_seconds: u32) -> Deferral {
    let Some(nb) = not_before else { return Deferral::Due };
    let ms = (nb - now).num_milliseconds();
    if ms <= 0 {
        return Deferral::Due;
    }
    let remaining = (ms as u64).div_ceil(1000);
    let hop = u64::from(max_hop_seconds.clamp(1, MAX_SQS_DELAY_SECONDS));
    Deferral::Requeue { delay_seconds: remaining.min(hop) as u32, remaining_seconds: remaining }
}

/// `DelaySeconds` for publishing a job due at `not_before` (0 when due, ≤ 900).
pub fn publish_delay_seconds(not_before: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
    match plan_deferral(Some(not_before), now, MAX_SQS_DELAY_SECONDS) {
        Deferral::Due => 0,
        Deferral::Requeue { delay_seconds, .. } => delay_seconds,
    }
}

/// The "request received" job, deferred by the `email.requestReceivedDelayMinutes` flag.
pub fn request_received(booking: BookingId, now: DateTime<Utc>, delay_minutes: u32) -> EmailJob {
    let mut job = EmailJob::for_booking(EmailType::RequestReceived, booking);
    if delay_minutes > 0 {
        job.not_before = Some(now + chrono::Duration::minutes(i64::from(delay_minutes)));
    }
    job
}

/// Booking status as stored (`bookings.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Requested,
    Confirmed,
    Cancelled,
}

impl BookingStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "requested" => Some(Self::Requested),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What a guest email's template needs, loaded by the sender from the database at send time.
/// Holds PII: its `Debug` redacts the guest's fields.
#[derive(Clone, PartialEq, Eq)]
pub struct BookingView {
    pub booking_id: BookingId,
    pub status: BookingStatus,
    pub restaurant_name: String,
    pub guest_name: Option<String>,
    pub guest_email: Option<String>,
    pub party_size: u16,
    pub starts_at: DateTime<Utc>,
    /// `starts_at` as the guest reads it at the restaurant, in its own zone with the zone's
    /// abbreviation (`BookingPolicy::render_local`, e.g. "Mon 7 Jan 2030, 19:00 GMT"). `None`
    /// only when the restaurant's policy cannot be read: UTC is shown then, marked as such.
    pub starts_at_local: Option<String>,
}

impl std::fmt::Debug for BookingView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BookingView")
            .field("booking_id", &self.booking_id)
            .field("status", &self.status)
            .field("party_size", &self.party_size)
            .field("starts_at", &self.starts_at)
            .finish_non_exhaustive()
    }
}

/// The ops drift notice's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftView {
    pub restaurant_id: RestaurantId,
    pub restaurant_name: String,
    pub policy_version: i32,
}

/// Whether a job should not be sent for this booking as it is now (recorded as skipped with the
/// reason): a cancelled booking's pending emails, except the cancellation notice itself; a
/// "request received" that the confirmation beat (superseded); a reminder for a booking that is
/// not confirmed; an update or reminder for a revision the booking has moved past (the job for
/// the new revision is the one that counts).
pub fn skip_reason(
    email_type: EmailType,
    status: BookingStatus,
    job_revision: Option<i32>,
    booking_revision: i32,
) -> Option<&'static str> {
    match (status, email_type) {
        (BookingStatus::Cancelled, EmailType::BookingCancelled) => None,
        (BookingStatus::Cancelled, _) => Some("booking_cancelled"),
        (_, EmailType::BookingCancelled) => Some("booking_not_cancelled"),
        (BookingStatus::Confirmed, EmailType::RequestReceived) => Some("superseded_by_confirmation"),
        (BookingStatus::Requested, EmailType::Reminder) => Some("booking_not_confirmed"),
        (_, EmailType::Reminder | EmailType::BookingUpdated) if job_revision.is_some_and(|r| r < booking_revision) => {
            Some("superseded_by_change")
        }
        _ => None,
    }
}

/// When a booking's reminder goes out: `lead` before its start, unless that is already past
/// at `now` (a booking made at the last minute gets no reminder).
pub fn reminder_at(starts_at: DateTime<Utc>, lead: chrono::Duration, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let at = starts_at.checked_sub_signed(lead)?;
    (at > now).then_some(at)
}

/// A rendered email: subject, plain text and HTML (both always sent).
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Rendered {
    // Bodies carry the guest's name: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").field("subject_len", &self.subject.len()).finish_non_exhaustive()
    }
}

/// A cheap syntactic check, the one the holds API applies at confirm and the sender before
/// sending, so a booking is never confirmed with an address the sender would refuse; the
/// provider has the last word. Refuses what would make a header or a URL misbehave, and
/// obvious non-addresses.
pub fn plausible_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else { return false };
    !local.is_empty()
        && local.len() <= 64
        && addr.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Header values must not carry line breaks (header injection through a restaurant name).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

fn wrap_html(title: &str, paragraphs: &[String]) -> String {
    let mut body = String::new();
    for p in paragraphs {
        body.push_str("<p>");
        body.push_str(&html_escape(p));
        body.push_str("</p>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{}</body></html>\n",
        html_escape(title),
        body
    )
}

/// Render a guest email. `None` for the ops drift notice (see [`render_drift`]).
pub fn render_booking(email_type: EmailType, v: &BookingView) -> Option<Rendered> {
    let restaurant = one_line(&v.restaurant_name);
    let when = match &v.starts_at_local {
        Some(local) => one_line(local),
        None => v.starts_at.format("%A %-d %B %Y at %H:%M UTC").to_string(),
    };
    let party = if v.party_size == 1 { "1 guest".to_string() } else { format!("{} guests", v.party_size) };
    let greeting = match v.guest_name.as_deref().map(one_line).filter(|n| !n.is_empty()) {
        Some(n) => format!("Hello {n},"),
        None => "Hello,".to_string(),
    };
    let reference = format!("Booking reference: {}", v.booking_id);
    let (subject, lines): (String, Vec<String>) = match email_type {
        EmailType::RequestReceived => (
            format!("We received your booking request at {restaurant}"),
            vec![
                greeting,
                format!("{restaurant} has received your request for {party} on {when}. We will confirm it shortly."),
                reference,
            ],
        ),
        EmailType::BookingConfirmed => (
            format!("Your table at {restaurant} is confirmed"),
            vec![greeting, format!("Your booking for {party} on {when} at {restaurant} is confirmed."), reference],
        ),
        EmailType::BookingUpdated => (
            format!("Your booking at {restaurant} has changed"),
            vec![greeting, format!("Your booking at {restaurant} is now for {party} on {when}."), reference],
        ),
        EmailType::BookingCancelled => (
            format!("Your booking at {restaurant} is cancelled"),
            vec![
                greeting,
                format!("Your booking for {party} on {when} at {restaurant} has been cancelled."),
                reference,
            ],
        ),
        EmailType::Reminder => (
            format!("Reminder: your table at {restaurant}"),
            vec![greeting, format!("A reminder of your booking for {party} on {when} at {restaurant}."), reference],
        ),
        EmailType::OpsPolicyDrift | EmailType::OpsPendingAttention => return None,
    };
    let text = format!("{}\n", lines.join("\n\n"));
    let html = wrap_html(&subject, &lines);
    Some(Rendered { subject, text, html })
}

/// Render the ops notice: a booking request stays pending after automatic assignment gave up.
/// Ids only: the guest's details stay in the database.
pub fn render_pending_attention(restaurant_name: &str, restaurant: RestaurantId, booking: BookingId) -> Rendered {
    let restaurant_name = one_line(restaurant_name);
    let subject = format!("[holdfast] Booking request needs attention at {restaurant_name}");
    let lines = vec![
        format!(
            "Booking request {booking} at {restaurant_name} ({restaurant}) could not be given a table \
             automatically and is still pending."
        ),
        "Assign it by hand or contact the guest; see the holds runbook (pending attention).".to_string(),
    ];
    let text = format!("{}\n", lines.join("\n\n"));
    let html = wrap_html(&subject, &lines);
    Rendered { subject, text, html }
}

/// Render the ops notice: a restaurant's booking policy changed under live holds.
pub fn render_drift(v: &DriftView) -> Rendered {
    let restaurant = one_line(&v.restaurant_name);
    let subject = format!("[holdfast] Booking policy drift at {restaurant} (version {})", v.policy_version);
    let lines = vec![
        format!(
            "The booking policy of {restaurant} ({}) changed to version {} while holds were live.",
            v.restaurant_id, v.policy_version
        ),
        "Confirmations re-quoted under the new policy; see the policy drift runbook and the \
         policy.drift.* events for recoveries and failures."
            .to_string(),
    ];
    let text = format!("{}\n", lines.join("\n\n"));
    let html = wrap_html(&subject, &lines);
    Rendered { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    fn view(status: BookingStatus) -> BookingView {
        BookingView {
            booking_id: BookingId::new_random(),
            status,
            restaurant_name: "Bistro <b>&</b>\r\nBcc: x@y.z".into(),
            guest_name: Some("Jane <script>".into()),
            guest_email: Some("jane@example.com".into()),
            party_size: 4,
            starts_at: Utc.with_ymd_and_hms(2030, 1, 7, 19, 0, 0).single().expect("valid"),
            starts_at_local: None,
        }
    }

    #[test]
    fn backoff_is_exponential_from_sixty_seconds() {
        let b = Backoff::PRODUCTION;
        let got: Vec<u32> = (1..=5).map(|n| b.visibility_after(n)).collect();
        assert_eq!(got, vec![60, 120, 240, 480, 900]);
        assert_eq!(b.visibility_after(0), 60);
        assert_eq!(b.visibility_after(40), 900);
        let huge = Backoff { base_seconds: u32::MAX, cap_seconds: u32::MAX };
        assert_eq!(huge.visibility_after(3), Backoff::SQS_MAX_VISIBILITY_SECONDS);
        assert!(!Backoff::is_final_receive(4));
        assert!(Backoff::is_final_receive(5));
    }

    #[test]
    fn deferral_hops_never_exceed_sqs_limit_and_never_send_early() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).single().expect("valid");
        assert_eq!(plan_deferral(None, now, 900), Deferral::Due);
        assert_eq!(plan_deferral(Some(now), now, 900), Deferral::Due);
        assert_eq!(plan_deferral(Some(now - chrono::Duration::seconds(5)), now, 900), Deferral::Due);
        let forty = now + chrono::Duration::minutes(40);
        assert_eq!(
            plan_deferral(Some(forty), now, 900),
            Deferral::Requeue { delay_seconds: 900, remaining_seconds: 2400 }
        );
        // Hop caps above SQS's limit are clamped.
        assert_eq!(
            plan_deferral(Some(forty), now, 5000),
            Deferral::Requeue { delay_seconds: 900, remaining_seconds: 2400 }
        );
        assert_eq!(plan_deferral(Some(forty), now, 0), Deferral::Requeue { delay_seconds: 1, remaining_seconds: 2400 });
        // 500 ms left rounds up to one second rather than sending early.
        let soon = now + chrono::Duration::milliseconds(500);
        assert_eq!(plan_deferral(Some(soon), now, 900), Deferral::Requeue { delay_seconds: 1, remaining_seconds: 1 });
        // Walking the hops of a 40-minute deferral reaches "due" with every hop <= 900.
        let mut t = now;
        let mut hops = 0;
        while let Deferral::Requeue { delay_seconds, .. } = plan_deferral(Some(forty), t, 900) {
            assert!(delay_seconds <= MAX_SQS_DELAY_SECONDS);
            t += chrono::Duration::seconds(i64::from(delay_seconds));
            hops += 1;
        }
        assert_eq!((hops, t), (3, forty));
        assert_eq!(publish_delay_seconds(forty, now), 900);
        assert_eq!(publish_delay_seconds(now, now), 0);
    }

    #[test]
    fn request_received_rides_its_delay_on_the_job() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).single().expect("valid");
        let b = BookingId::new_random();
        assert_eq!(request_received(b, now, 0).not_before, None);
        assert_eq!(request_received(b, now, 40).not_before, Some(now + chrono::Duration::minutes(40)));
    }

    #[test]
    fn cancelled_bookings_skip_everything_but_the_cancellation() {
        for t in EmailType::ALL {
            let r = skip_reason(t, BookingStatus::Cancelled, None, 1);
            assert_eq!(r.is_none(), t == EmailType::BookingCancelled, "{t:?}");
        }
        assert_eq!(skip_reason(EmailType::BookingConfirmed, BookingStatus::Confirmed, None, 1), None);
        assert_eq!(
            skip_reason(EmailType::BookingCancelled, BookingStatus::Confirmed, None, 1),
            Some("booking_not_cancelled")
        );
    }

    #[test]
    fn a_confirmation_supersedes_request_received_and_a_change_supersedes_older_revisions() {
        let rr = EmailType::RequestReceived;
        assert_eq!(skip_reason(rr, BookingStatus::Requested, None, 1), None);
        assert_eq!(skip_reason(rr, BookingStatus::Confirmed, None, 1), Some("superseded_by_confirmation"));
        for t in [EmailType::Reminder, EmailType::BookingUpdated] {
            assert_eq!(skip_reason(t, BookingStatus::Confirmed, Some(2), 2), None, "{t:?}");
            assert_eq!(skip_reason(t, BookingStatus::Confirmed, Some(1), 2), Some("superseded_by_change"), "{t:?}");
        }
        assert_eq!(
            skip_reason(EmailType::Reminder, BookingStatus::Requested, Some(1), 1),
            Some("booking_not_confirmed")
        );
        let b = BookingId::new_random();
        let (k1, k2) = (
            EmailJob::for_revision(EmailType::Reminder, b, 1).dedupe_key(),
            EmailJob::for_revision(EmailType::Reminder, b, 2).dedupe_key(),
        );
        assert_ne!(k1, k2, "one reminder per revision");
        assert_eq!(EmailJob::for_booking(EmailType::Reminder, b).dedupe_key(), format!("booking:{b}:reminder"));
    }

    #[test]
    fn reminders_are_lead_before_the_start_and_never_in_the_past() {
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).single().expect("valid");
        let lead = chrono::Duration::hours(24);
        assert_eq!(reminder_at(now + chrono::Duration::hours(48), lead, now), Some(now + chrono::Duration::hours(24)));
        assert_eq!(reminder_at(now + chrono::Duration::hours(2), lead, now), None);
        assert_eq!(reminder_at(DateTime::<Utc>::MIN_UTC, lead, now), None);
    }

    #[test]
    fn templates_render_text_and_escaped_html_for_every_guest_type() {
        let v = view(BookingStatus::Confirmed);
        for t in EmailType::ALL {
            let Some(r) = render_booking(t, &v) else {
                assert!(matches!(t, EmailType::OpsPolicyDrift | EmailType::OpsPendingAttention));
                continue;
            };
            assert!(!r.subject.contains('\n') && !r.subject.contains('\r'), "header injection in {t:?}");
            assert!(r.text.contains("Jane <script>"), "{t:?} text greets the guest");
            assert!(r.text.contains("4 guests") && r.text.contains("Monday 7 January 2030 at 19:00 UTC"));
            assert!(r.text.contains(&v.booking_id.to_string()));
            assert!(r.html.contains("Jane &lt;script&gt;") && !r.html.contains("<script>"));
            assert!(r.html.contains("Bistro &lt;b&gt;&amp;&lt;/b&gt;"));
        }
        let debug = format!("{v:?} {:?}", render_booking(EmailType::Reminder, &v));
        assert!(!debug.contains("Jane") && !debug.contains("jane@example.com"), "{debug}");
        let anon = BookingView { guest_name: None, party_size: 1, ..v };
        let r = render_booking(EmailType::Reminder, &anon).expect("guest email");
        assert!(r.text.starts_with("Hello,") && r.text.contains("1 guest "));
    }

    #[test]
    fn drift_notice_renders() {
        let r = render_drift(&DriftView {
            restaurant_id: RestaurantId::new_random(),
            restaurant_name: "A&B".into(),
            policy_version: 7,
        });
        assert!(r.subject.contains("version 7") && r.text.contains("A&B") && r.html.contains("A&amp;B"));
    }

    #[test]
    fn job_round_trips_and_carries_no_free_text() {
        let job = EmailJob::for_booking(EmailType::BookingConfirmed, BookingId::new_random());
        let json = serde_json::to_value(&job).expect("serialise");
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        assert_eq!(keys, vec!["booking_id", "email_type", "schema_version"]);
        let back: EmailJob = serde_json::from_value(json).expect("parse");
        assert_eq!(back, job);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let raw = r#"{"schema_version":1,"email_type":"reminder","booking_id":"6b0b8a3e-7c43-4a4e-9a39-3e0f9d6f2f10","guest_email":"a@b.c"}"#;
        assert!(serde_json::from_str::<EmailJob>(raw).is_err());
    }

    #[test]
    fn dedupe_keys_separate_types_and_versions() {
        let b = BookingId::new_random();
        let r = RestaurantId::new_random();
        assert_ne!(
            EmailJob::for_booking(EmailType::BookingConfirmed, b).dedupe_key(),
            EmailJob::for_booking(EmailType::Reminder, b).dedupe_key()
        );
        assert_ne!(EmailJob::ops_policy_drift(r, 1).dedupe_key(), EmailJob::ops_policy_drift(r, 2).dedupe_key());
        for t in EmailType::ALL {
            assert_eq!(EmailType::parse(t.as_str()), Some(t));
        }
    }
}
