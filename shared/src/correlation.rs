//! The correlation id: one per booking. It is minted (or taken from the caller's
//! `X-Correlation-Id`) when a hold or a booking request starts, stored with the hold, the booking
//! and every outbox row they cause, carried to the email sender as an SQS message attribute, and
//! put on every log line and `observability_events` context along the way, so one id finds
//! every line of one booking (docs/observability.md).
//!
//! A caller's value is parsed, not trusted: 8 to 64 characters of ASCII letters, digits and
//! `-_.:`, with at least one letter. That fits UUIDs, ULIDs, X-Ray and W3C trace ids; it keeps
//! out what could break a log query or a header (spaces, quotes, control characters, non-ASCII)
//! and the obvious shapes of personal data (`@` of an email, `+` and all-digit phone or card
//! numbers). The id is an opaque label, never a place for personal data.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 64;

/// A value refused as a correlation id. The value is not kept: it may be anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 8 to 64 characters of letters, digits and - _ . : with at least one letter")]
pub struct InvalidCorrelationId;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn parse(s: &str) -> Result<Self, InvalidCorrelationId> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        let bytes = s.as_bytes();
        if (MIN_LEN..=MAX_LEN).contains(&bytes.len())
            && bytes.iter().all(|&b| allowed(b))
            && bytes.iter().any(u8::is_ascii_alphabetic)
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCorrelationId)
        }
    }

    /// A fresh id (a random UUID) for a request that brought none.
    pub fn mint() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CorrelationId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CorrelationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CorrelationId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_fit_are_kept_as_given() {
        for ok in [
            "9b2f0c1e-6a4d-4f0e-8a57-2d0c5b1e7f33",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "1-5759e988-bd862e3fe1be46a994272793",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "booking:flow.42_a",
            "abcdefgh",
        ] {
            assert_eq!(CorrelationId::parse(ok).map(|c| c.as_str().to_owned()), Ok(ok.to_owned()), "{ok}");
        }
        assert!(CorrelationId::parse(&"a".repeat(MAX_LEN)).is_ok());
        let minted = CorrelationId::mint();
        assert_eq!(CorrelationId::parse(minted.as_str()), Ok(minted));
    }

    #[test]
    fn hostile_or_personal_looking_values_are_refused() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [
            "",
            "abc1234",
            long.as_str(),
            "jane.doe@example.com",
            "+447700900123",
            "07700900123",
            "4111111111111111",
            "Jane Doe",
            "id\r\nX-Injected: 1",
            "id\"},{\"level\":\"ERROR",
            "caf\u{e9}-1234567",
            "abc/def/ghi",
            "\u{0}abcdefgh",
        ] {
            assert_eq!(CorrelationId::parse(bad), Err(InvalidCorrelationId), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_parses_on_the_way_in() {
        let id = CorrelationId::parse("9b2f0c1e-6a4d").expect("valid");
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, "\"9b2f0c1e-6a4d\"");
        assert_eq!(serde_json::from_str::<CorrelationId>(&json).ok(), Some(id));
        assert!(serde_json::from_str::<CorrelationId>("\"jane.doe@example.com\"").is_err());
    }
}
