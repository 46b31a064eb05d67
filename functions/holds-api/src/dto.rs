//! Request bodies as they arrive (deny unknown fields) and their parsed domain forms.
//! Handlers never see raw strings for ids, times or money: `parse` turns DTOs into domain types.
//! A value the domain refuses is a `HoldsError::Invalid` naming the field.

use crate::error::HoldsError;
use holdfast_shared::allocator::PartySize;
use holdfast_shared::guest::{has_forbidden_char, GuestName, GuestNotes, GuestPhone, GuestTextError};
use holdfast_shared::ids::{RestaurantId, TableId};
use holdfast_shared::local_time::StartTime;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteBody {
    pub party_size: u16,
    pub start: StartTime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub restaurant_id: RestaurantId,
    pub party_size: u16,
    pub start: StartTime,
    /// The tables a quote chose; omitted → the service quotes now.
    #[serde(default)]
    pub table_ids: Option<Vec<TableId>>,
    /// The policy hash the quote was made under. Accepted so a client can send its quote back
    /// whole, but informational: a hold is always made under the current policy, and the
    /// hash that counts (checked at confirm) is the one stored with the hold.
    #[serde(default)]
    pub policy_hash: Option<String>,
}

/// A booking request: the guest asks for a table; the service assigns one (now, or later).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRequestBody {
    pub restaurant_id: RestaurantId,
    pub party_size: u16,
    pub start: StartTime,
    pub guest: GuestBody,
}

/// A change to a confirmed booking: a new time, a new party size, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingChangeBody {
    #[serde(default)]
    pub start: Option<StartTime>,
    #[serde(default)]
    pub party_size: Option<u16>,
}

/// A cancellation takes no fields: the body may be omitted or `{}`, and anything else is
/// refused rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {}

/// Debug is derived but harmless: `GuestBody`'s own Debug redacts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    pub guest: GuestBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestBody {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// Guest details, validated. PII: stored in `bookings` only, never logged or put in events
/// (each field's `Debug` redacts). Name and notes reach an email: no control or bidi
/// characters, no links (see `holdfast_shared::guest`).
#[derive(Clone)]
pub struct Guest {
    pub name: GuestName,
    pub email: String,
    pub phone: Option<GuestPhone>,
    pub notes: Option<GuestNotes>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guest(<redacted>)")
    }
}

impl std::fmt::Debug for GuestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestBody(<redacted>)")
    }
}

fn guest_field(field: &'static str) -> impl Fn(GuestTextError) -> HoldsError {
    move |e| HoldsError::invalid(field, e.to_string())
}

impl GuestBody {
    pub fn parse(self) -> Result<Guest, HoldsError> {
        let name = GuestName::parse(&self.name).map_err(guest_field("guest.name"))?;
        let email = self.email.trim().to_string();
        // Bidi marks are not controls: plausible_address alone would let them through.
        if has_forbidden_char(&email, false) || !holdfast_shared::email::plausible_address(&email) {
            return Err(HoldsError::invalid("guest.email", "must be an email address"));
        }
        let phone = GuestPhone::parse(self.phone.as_deref()).map_err(guest_field("guest.phone"))?;
        let notes = GuestNotes::parse(self.notes.as_deref()).map_err(guest_field("guest.notes"))?;
        Ok(Guest { name, email, phone, notes })
    }
}

pub fn party(field: &'static str, n: u16) -> Result<PartySize, HoldsError> {
    PartySize::new(n).map_err(|e| HoldsError::invalid(field, e.to_string()))
}

/// A table list from a quote: non-empty, no duplicates, at most 8.
pub fn table_list(ids: Vec<TableId>) -> Result<Vec<TableId>, HoldsError> {
    let mut v = ids;
    v.sort();
    let before = v.len();
    v.dedup();
    if v.is_empty() || v.len() > 8 || v.len() != before {
        return Err(HoldsError::invalid("table_ids", "must list 1 to 8 distinct tables"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(email: &str) -> GuestBody {
        GuestBody { name: "Ada Lovelace".into(), email: email.into(), phone: None, notes: Some("window".into()) }
    }

    #[test]
    fn confirm_refuses_the_addresses_the_sender_would_refuse() {
        assert!(body("ada@example.com").parse().is_ok());
        let long_local = format!("{}@example.com", "a".repeat(65));
        for bad in ["ada,bob@example.com", "\"ada\"@example.com", long_local.as_str(), "ada@exa\u{7}mple.com"] {
            assert!(!holdfast_shared::email::plausible_address(bad), "{bad:?}");
            let e = body(bad).parse().expect_err(bad);
            assert!(matches!(e, HoldsError::Invalid { field: "guest.email", .. }), "{bad:?}");
        }
        // A right-to-left override reads as another address; the sender's check would pass it.
        let e = body("ada@exa\u{202E}moc.elpm").parse().expect_err("bidi");
        assert!(matches!(e, HoldsError::Invalid { field: "guest.email", .. }));
    }

    #[test]
    fn guest_debug_never_shows_pii() {
        let b = body("ada@example.com");
        let shown = format!("{b:?} {:?}", ConfirmBody { guest: body("ada@example.com") });
        assert!(!shown.contains("Ada") && !shown.contains("ada@") && !shown.contains("window"), "{shown}");
        let g = b.parse().expect("valid");
        assert!(!format!("{g:?}").contains("Ada") && !format!("{g:?}").contains("ada@"));
    }
}
