//! Observability event types and the PII sanitizer.
//!
//! Every function records what happened as an [`ObservabilityEvent`] (one row of the
//! `observability_events` table). The context is *typed and allow-listed*: only the keys of
//! [`EventContext`] exist, each with a fixed shape (enum value, validated code, bounded
//! number, UUID). [`sanitize_context`] applies the same rules to arbitrary JSON, so anything
//! read back from the table (old rows may carry PII) is cleaned before use.

use crate::correlation::CorrelationId;
use crate::ids::{BookingId, HoldId, RestaurantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// Declares a closed string enum with stable wire names, `ALL`, `as_str` and `parse`.
macro_rules! string_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Parses the wire name (exact, case-sensitive).
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("unknown ", stringify!($name), " {:?}"), s))
                })
            }
        }
    };
}

string_enum! {
    /// Which component recorded the event (`observability_events.source`).
    pub enum Source {
        HoldsApi => "holds-api",
        EmailSender => "email-sender",
        OutboxRelay => "outbox-relay",
        MetricsAggregator => "metrics-aggregator",
        FlagApprover => "flag-approver",
        Cli => "cli",
        /// The scheduled retention step (functions/metrics-aggregator/src/bin/maintenance.rs).
        Maintenance => "maintenance",
    }
}

string_enum! {
    /// `observability_events.severity`.
    pub enum Severity {
        Info => "info",
        Warning => "warning",
        Error => "error",
    }
}

string_enum! {
    /// `observability_events.event_type`. The dotted names are a stable contract with the
    /// aggregator and with rows already stored: never rename, only add.
    pub enum EventType {
        /// A quote answered (any outcome).
        QuoteCompleted => "quote.completed",
        HoldCreated => "hold.created",
        /// Enforced conflict: the database refused an overlapping hold; answered 409.
        HoldConflict => "hold.conflict",
        /// Would-be conflict observed in shadow mode; the request itself went on.
        HoldConflictShadow => "hold.conflict.shadow",
        HoldReleased => "hold.released",
        HoldConfirmed => "hold.confirmed",
        /// Any other non-success outcome of an operation (rejection or server error).
        HoldFailed => "hold.failed",
        /// Confirm refused a hold without policy hash / table ids / selection snapshot.
        HoldMetadataRejected => "hold.metadata.rejected",
        PolicyDriftRecovered => "policy.drift.recovered",
        PolicyDriftFailed => "policy.drift.failed",
        EmailSent => "email.sent",
        EmailRetried => "email.retried",
        EmailFailed => "email.failed",
        EmailDeadLettered => "email.dead_lettered",
        /// Not sent on purpose: cancelled booking or duplicate delivery.
        EmailSkipped => "email.skipped",
        /// Not sent (again) because an attempt may have been delivered and the provider (SES)
        /// cannot deduplicate a retry: an operator decides (docs/runbooks/email.md).
        EmailSuppressed => "email.suppressed",
        /// The outbox relay handed a job to SQS (one per outbox row published; carries the
        /// row's correlation id, so a booking's trail shows the hop from outbox to queue).
        EmailPublished => "email.published",
        FlagsContradiction => "flags.contradiction",
        FlagsChanged => "flags.changed",
        /// A kill switch was applied by one person alone (break-glass); a review is open.
        FlagsBreakGlass => "flags.break_glass",
        /// A break-glass review is past its 24 h deadline unacknowledged (recorded by every
        /// review sweep while it stays so).
        FlagsReviewOverdue => "flags.review_overdue",
        /// A prod flag change was reverted automatically: an SLO burn-rate alarm entered ALARM
        /// during its bake window.
        FlagsAutoReverted => "flags.auto_reverted",
        /// A bake window's alarm fired but the revert was not written (the flag changed again
        /// since, or the revert would break a contradiction rule): an operator decides.
        FlagsAutoRevertRefused => "flags.auto_revert_refused",
        /// The cold-start check found the exclusion constraint missing.
        StrictVerifyFailed => "strict.verify.failed",
        /// A maintenance run (retention: partitions, purges, expired claims) finished cleanly.
        MaintenanceCompleted => "maintenance.completed",
        /// A maintenance run had a failed step or left the event partitions unhealthy; the next
        /// run retries (error_code: the first failed step, or `health`).
        MaintenanceFailed => "maintenance.failed",
    }
}

impl EventType {
    /// The severity recorded unless the emitter says otherwise.
    pub fn default_severity(self) -> Severity {
        use EventType::*;
        match self {
            QuoteCompleted | HoldCreated | HoldConflict | HoldConflictShadow | HoldReleased | HoldConfirmed
            | EmailSent | EmailSkipped | EmailPublished | FlagsChanged | MaintenanceCompleted => Severity::Info,
            HoldMetadataRejected | PolicyDriftRecovered | EmailRetried | FlagsBreakGlass | FlagsAutoReverted => {
                Severity::Warning
            }
            HoldFailed
            | PolicyDriftFailed
            | EmailFailed
            | EmailDeadLettered
            | EmailSuppressed
            | FlagsContradiction
            | StrictVerifyFailed
            | FlagsReviewOverdue
            | FlagsAutoRevertRefused
            | MaintenanceFailed => Severity::Error,
        }
    }
}

string_enum! {
    /// The operation an event is about. A closed list keeps the metric dimension bounded.
    pub enum Operation {
        Quote => "quote",
        Hold => "hold",
        Confirm => "confirm",
        Release => "release",
        Send => "send",
        Relay => "relay",
        Aggregate => "aggregate",
        FlagChange => "flag_change",
        StrictVerify => "strict_verify",
        Backfill => "backfill",
    }
}

string_enum! {
    /// How an operation ended, as the caller saw it.
    pub enum Outcome {
        Success => "success",
        /// A table/time conflict (409 with alternatives).
        Conflict => "conflict",
        /// The request was refused (4xx other than conflicts): validation, not found, expired…
        Rejected => "rejected",
        /// A server fault (5xx or equivalent); counts against the SLO.
        Error => "error",
    }
}

string_enum! {
    /// How hold conflicts were handled for the restaurant (`holds.strictConflicts` rollout).
    pub enum StrictMode {
        Enforced => "enforced",
        Shadow => "shadow",
    }
}

/// Longest code accepted in `error_code` / `email_type`.
pub const MAX_CODE_LEN: usize = 64;
/// Durations above this (1 h, longer than any Lambda can run) are treated as garbage.
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// Attempt counters above this are treated as garbage.
pub const MAX_ATTEMPT: u8 = 50;
/// Bounds for the small counts carried in the context.
pub const MAX_TABLE_COUNT: u16 = 100;
pub const MAX_PARTY_SIZE: u16 = 1000;

/// Longest run of consecutive digits a code may contain. Codes are identifiers such as
/// `http_503`; a long digit run is more likely a phone or card number pasted into a code.
const MAX_DIGIT_RUN: usize = 4;

/// Whether `s` is a machine code: `[a-z][a-z0-9_.]{0,63}` with no run of more than four
/// digits. Deliberately stricter than `[a-z0-9_.]{1,64}`: an all-digit "code" could be a
/// phone number. Written by hand (no regex dependency).
pub fn is_valid_code(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_CODE_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut digit_run = 0usize;
    for &b in bytes {
        if b.is_ascii_digit() {
            digit_run += 1;
            if digit_run > MAX_DIGIT_RUN {
                return false;
            }
        } else if b.is_ascii_lowercase() || b == b'_' || b == b'.' {
            digit_run = 0;
        } else {
            return false;
        }
    }
    true
}

/// A string that was rejected as a [`Code`]. The value is not kept: it may be PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid code (expected [a-z][a-z0-9_.]{{0,63}})")]
pub struct InvalidCode;

/// A validated machine code (see [`is_valid_code`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(String);

impl Code {
    pub fn parse(s: &str) -> Result<Self, InvalidCode> {
        if is_valid_code(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Code {
    type Error = InvalidCode;
    fn try_from(s: &str) -> Result<Self, InvalidCode> {
        Code::parse(s)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Code::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The typed, allow-listed context of an event (`observability_events.context`).
///
/// Every field is optional and omitted from JSON when absent. There is deliberately no
/// free-text field: guest names, emails, phones and notes have nowhere to go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// 1-based attempt number of this execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u8>,
    /// The attempt cap; `attempt >= max_attempts` on a failure means "gave up" (a cutoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict_mode: Option<StrictMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_count: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub party_size: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_type: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<HoldId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_percent: Option<u8>,
    /// The booking's correlation id (docs/observability.md). Never a metric dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
}

/// The keys [`sanitize_context`] keeps; everything else is dropped.
pub const CONTEXT_KEYS: &[&str] = &[
    "operation",
    "outcome",
    "error_code",
    "duration_ms",
    "attempt",
    "max_attempts",
    "strict_mode",
    "policy_version",
    "table_count",
    "party_size",
    "email_type",
    "hold_id",
    "request_id",
    "rollout_percent",
    "correlation_id",
];

fn get_str<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// An unsigned integer within `lo..=hi`; floats, negatives, strings and out-of-range drop.
fn get_uint(m: &Map<String, Value>, key: &str, lo: u64, hi: u64) -> Option<u64> {
    m.get(key).and_then(Value::as_u64).filter(|n| (lo..=hi).contains(n))
}

/// A UUID string. Re-serialised from the parsed value, so nothing but the UUID survives.
fn get_uuid(m: &Map<String, Value>, key: &str) -> Option<Uuid> {
    get_str(m, key).and_then(|s| Uuid::parse_str(s).ok())
}

impl EventContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a context from untrusted JSON, keeping only allow-listed keys whose values have
    /// the expected shape. Non-objects give an empty context. Never fails.
    pub fn from_raw(raw: &Value) -> Self {
        let Some(m) = raw.as_object() else {
            return Self::default();
        };
        let to_u8 = |n: u64| u8::try_from(n).ok();
        let to_u16 = |n: u64| u16::try_from(n).ok();
        Self {
            operation: get_str(m, "operation").and_then(Operation::parse),
            outcome: get_str(m, "outcome").and_then(Outcome::parse),
            error_code: get_str(m, "error_code").and_then(|s| Code::parse(s).ok()),
            duration_ms: get_uint(m, "duration_ms", 0, MAX_DURATION_MS),
            attempt: get_uint(m, "attempt", 1, MAX_ATTEMPT.into()).and_then(to_u8),
            max_attempts: get_uint(m, "max_attempts", 1, MAX_ATTEMPT.into()).and_then(to_u8),
            strict_mode: get_str(m, "strict_mode").and_then(StrictMode::parse),
            policy_version: get_uint(m, "policy_version", 0, i32::MAX as u64).and_then(|n| i32::try_from(n).ok()),
            table_count: get_uint(m, "table_count", 0, MAX_TABLE_COUNT.into()).and_then(to_u16),
            party_size: get_uint(m, "party_size", 1, MAX_PARTY_SIZE.into()).and_then(to_u16),
            email_type: get_str(m, "email_type").and_then(|s| Code::parse(s).ok()),
            hold_id: get_uuid(m, "hold_id").map(HoldId),
            request_id: get_uuid(m, "request_id"),
            rollout_percent: get_uint(m, "rollout_percent", 0, 100).and_then(to_u8),
            correlation_id: get_str(m, "correlation_id").and_then(|s| CorrelationId::parse(s).ok()),
        }
    }

    /// The context as a JSON object. Goes through the sanitizer, so what is written is exactly
    /// what a later read keeps (out-of-range values set directly on the struct are dropped).
    pub fn to_json_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(v) => sanitize_context(&v),
            // Serialising plain enums, strings and integers cannot fail.
            Err(_) => Map::new(),
        }
    }

    pub fn operation(mut self, v: Operation) -> Self {
        self.operation = Some(v);
        self
    }
    pub fn outcome(mut self, v: Outcome) -> Self {
        self.outcome = Some(v);
        self
    }
    pub fn error_code(mut self, v: Code) -> Self {
        self.error_code = Some(v);
        self
    }
    /// Sets the error code if `code` is valid; an invalid one is dropped rather than stored.
    pub fn error_code_str(mut self, code: &str) -> Self {
        self.error_code = Code::parse(code).ok();
        self
    }
    pub fn duration_ms(mut self, v: u64) -> Self {
        self.duration_ms = Some(v.min(MAX_DURATION_MS));
        self
    }
    pub fn attempt(mut self, v: u8) -> Self {
        self.attempt = Some(v);
        self
    }
    pub fn max_attempts(mut self, v: u8) -> Self {
        self.max_attempts = Some(v);
        self
    }
    pub fn strict_mode(mut self, v: StrictMode) -> Self {
        self.strict_mode = Some(v);
        self
    }
    pub fn policy_version(mut self, v: i32) -> Self {
        self.policy_version = Some(v);
        self
    }
    pub fn table_count(mut self, v: u16) -> Self {
        self.table_count = Some(v);
        self
    }
    pub fn party_size(mut self, v: u16) -> Self {
        self.party_size = Some(v);
        self
    }
    pub fn email_type(mut self, v: Code) -> Self {
        self.email_type = Some(v);
        self
    }
    pub fn hold_id(mut self, v: HoldId) -> Self {
        self.hold_id = Some(v);
        self
    }
    pub fn request_id(mut self, v: Uuid) -> Self {
        self.request_id = Some(v);
        self
    }
    pub fn rollout_percent(mut self, v: u8) -> Self {
        self.rollout_percent = Some(v.min(100));
        self
    }
    pub fn correlation_id(mut self, v: Option<CorrelationId>) -> Self {
        self.correlation_id = v;
        self
    }
}

impl<'de> Deserialize<'de> for EventContext {
    /// Lenient on purpose: stored rows are cleaned, not rejected.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(EventContext::from_raw(&v))
    }
}

/// Keeps only the allow-listed keys of `raw` whose values have the expected type and shape;
/// drops everything else (unknown keys, nested objects, arrays, free text, malformed codes,
/// out-of-range numbers, non-UUID ids). Values are re-serialised from their typed form.
pub fn sanitize_context(raw: &Value) -> Map<String, Value> {
    match serde_json::to_value(EventContext::from_raw(raw)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// One row of `observability_events` (without the database-assigned id and timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservabilityEvent {
    pub source: Source,
    pub event_type: EventType,
    pub severity: Severity,
    pub restaurant_id: Option<RestaurantId>,
    pub booking_id: Option<BookingId>,
    pub context: EventContext,
}

impl ObservabilityEvent {
    /// An event with the type's default severity, no ids and an empty context.
    pub fn new(source: Source, event_type: EventType) -> Self {
        Self {
            source,
            event_type,
            severity: event_type.default_severity(),
            restaurant_id: None,
            booking_id: None,
            context: EventContext::default(),
        }
    }

    pub fn severity(mut self, v: Severity) -> Self {
        self.severity = v;
        self
    }
    pub fn restaurant(mut self, v: RestaurantId) -> Self {
        self.restaurant_id = Some(v);
        self
    }
    pub fn booking(mut self, v: BookingId) -> Self {
        self.booking_id = Some(v);
        self
    }
    pub fn context(mut self, v: EventContext) -> Self {
        self.context = v;
        self
    }

    /// The value for the `context jsonb` column (always an object, always sanitised).
    pub fn context_json(&self) -> Value {
        Value::Object(self.context.to_json_map())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PII: &[&str] = &[
        "Jane Doe",
        "jane.doe@example.com",
        "jane",
        "doe",
        "+44 7700 900123",
        "07700900123",
        "7700900123",
        "allergic to nuts",
        "12 Baker Street",
        "4111111111111111",
    ];

    fn assert_no_pii(out: &str) {
        let lower = out.to_lowercase();
        for p in PII {
            assert!(!lower.contains(&p.to_lowercase()), "PII {p:?} survived in {out}");
        }
    }

    #[test]
    fn string_enums_round_trip_and_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
            assert!(seen.insert(t.as_str()), "duplicate {t}");
        }
        assert_eq!(EventType::ALL.len(), 26);
        assert_eq!(EventType::parse("hold.conflict.shadow"), Some(EventType::HoldConflictShadow));
        assert_eq!(EventType::parse("Hold.Created"), None);
        assert_eq!(Source::HoldsApi.as_str(), "holds-api");
        assert_eq!(Source::parse("metrics-aggregator"), Some(Source::MetricsAggregator));
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(*s));
        }
        assert_eq!(serde_json::to_value(Severity::Warning).ok(), Some(json!("warning")));
    }

    #[test]
    fn code_validation() {
        for ok in ["hold_conflict", "http_503", "provider.transient", "e2e", "a"] {
            assert!(is_valid_code(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Hold_Conflict",
            "jane.doe@example.com",
            "07700900123",
            "call_07700900123",
            "has space",
            "_leading",
            "1abc",
            "dash-code",
            "café",
            long.as_str(),
        ] {
            assert!(!is_valid_code(bad), "{bad:?} accepted");
        }
        assert!(is_valid_code(&"a".repeat(64)));
    }

    #[test]
    fn sanitizer_keeps_well_formed_context() {
        let hold = Uuid::new_v4();
        let req = Uuid::new_v4();
        let raw = json!({
            "operation": "confirm", "outcome": "conflict", "error_code": "hold_conflict",
            "duration_ms": 42, "attempt": 2, "max_attempts": 2, "strict_mode": "shadow",
            "policy_version": 7, "table_count": 2, "party_size": 6,
            "email_type": "confirmed", "hold_id": hold.to_string(),
            "request_id": req.to_string(), "rollout_percent": 50,
            "correlation_id": "9b2f0c1e-6a4d-4f0e-8a57-2d0c5b1e7f33"
        });
        let out = sanitize_context(&raw);
        assert_eq!(Value::Object(out), raw);
    }

    #[test]
    fn sanitizer_drops_pii_in_every_field_type() {
        let raw = json!({
            // unknown keys with PII
            "guest_name": "Jane Doe",
            "email": "jane.doe@example.com",
            "phone": "+44 7700 900123",
            "notes": "allergic to nuts",
            "address": "12 Baker Street",
            // nested objects / arrays, including under known-looking names
            "note": {"text": "allergic to nuts", "by": "Jane Doe"},
            "guest": {"name": "Jane Doe", "email": "jane.doe@example.com"},
            "tags": ["Jane Doe", "07700900123"],
            // enum fields carrying PII
            "operation": "+44 7700 900123",
            "outcome": "Jane Doe",
            "strict_mode": "jane.doe@example.com",
            // code fields carrying PII
            "error_code": "jane.doe@example.com",
            "email_type": "07700900123",
            // number fields carrying PII-ish strings / garbage
            "duration_ms": "7700900123",
            "attempt": "Jane Doe",
            "max_attempts": 4111111111111111u64,
            "policy_version": -1,
            "table_count": 1.5,
            "party_size": "doe",
            "rollout_percent": 7700900123u64,
            // uuid fields carrying PII
            "request_id": "jane.doe@example.com",
            "correlation_id": "jane.doe@example.com",
            "hold_id": {"guest": "Jane Doe"}
        });
        let out = sanitize_context(&raw);
        assert!(out.is_empty(), "expected nothing to survive, got {out:?}");
        let s = serde_json::to_string(&out).unwrap_or_default();
        assert_no_pii(&s);

        // Mixed: the valid fields survive, the PII still does not.
        let mut mixed = raw.clone();
        if let Some(m) = mixed.as_object_mut() {
            m.insert("operation".into(), json!("hold"));
            m.insert("attempt".into(), json!(1));
        }
        let out = sanitize_context(&mixed);
        let s = serde_json::to_string(&out).unwrap_or_default();
        assert_no_pii(&s);
        assert_eq!(out.len(), 2, "{s}");
    }

    #[test]
    fn sanitizer_handles_non_objects_and_normalises_uuids() {
        assert!(sanitize_context(&json!("Jane Doe")).is_empty());
        assert!(sanitize_context(&json!(["Jane Doe"])).is_empty());
        assert!(sanitize_context(&Value::Null).is_empty());
        let u = Uuid::new_v4();
        let braced = format!("{{{}}}", u.to_string().to_uppercase());
        let out = sanitize_context(&json!({ "request_id": braced }));
        assert_eq!(out.get("request_id"), Some(&json!(u.to_string())));
    }

    #[test]
    fn sanitizer_bounds_numbers() {
        let out = sanitize_context(&json!({
            "attempt": 0, "duration_ms": MAX_DURATION_MS + 1, "rollout_percent": 101,
            "party_size": 0, "table_count": 101
        }));
        assert!(out.is_empty(), "{out:?}");
        let out = sanitize_context(&json!({"attempt": 50, "duration_ms": 0, "rollout_percent": 100}));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn event_builder_and_context_json() {
        let r = RestaurantId::new_random();
        let ev = ObservabilityEvent::new(Source::HoldsApi, EventType::HoldConflict).restaurant(r).context(
            EventContext::new()
                .operation(Operation::Hold)
                .outcome(Outcome::Conflict)
                .error_code_str("hold_conflict")
                .strict_mode(StrictMode::Enforced)
                .duration_ms(12),
        );
        assert_eq!(ev.severity, Severity::Info);
        assert_eq!(ev.restaurant_id, Some(r));
        assert_eq!(
            ev.context_json(),
            json!({"operation": "hold", "outcome": "conflict", "error_code": "hold_conflict",
                   "strict_mode": "enforced", "duration_ms": 12})
        );
        // An invalid code is dropped, not stored.
        let ctx = EventContext::new().error_code_str("jane.doe@example.com");
        assert_eq!(ctx.error_code, None);
        // Out-of-range values set directly on the struct do not reach the table.
        let ctx = EventContext { attempt: Some(0), ..EventContext::default() };
        assert!(ctx.to_json_map().is_empty());
        // Deserialising a stored context cleans it.
        let back: EventContext =
            serde_json::from_value(json!({"operation": "send", "guest_name": "Jane Doe"})).unwrap_or_default();
        assert_eq!(back, EventContext::new().operation(Operation::Send));
    }
}
