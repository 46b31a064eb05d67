//! Guest-supplied text that ends up in an email: a name and free-text notes. Parsed once into
//! types that cannot hold what would turn a booking email into a phishing relay or a rendering
//! trap: control characters (NUL, BEL, ESC …), bidirectional overrides and isolates, and links.
//! HTML escaping happens at render time (`email::html_escape`); this is the input side.

use std::fmt;

pub const NAME_MAX_CHARS: usize = 200;
pub const NOTES_MAX_CHARS: usize = 1000;
pub const PHONE_MAX_CHARS: usize = 32;

/// Why a guest text was refused (the message names no part of the input: it may be PII).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestTextError {
    #[error("is required")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("{}", HOSTILE_TEXT)]
    ControlCharacter,
    #[error("must not contain links or web addresses")]
    Link,
    #[error("must be digits, spaces and + - ( )")]
    NotAPhoneNumber,
}

/// How a refusal of a [`forbidden_char`] reads, wherever it is refused.
pub const HOSTILE_TEXT: &str = "must not contain control, bidirectional-override or replacement (U+FFFD) characters";

/// Control characters (other than `\n`/`\t` where lines are allowed), the Unicode
/// bidirectional embedding/override/isolate marks, which can make text read differently than it
/// is (Trojan Source, CVE-2021-42574), and U+FFFD, the mark of bytes that were not UTF-8 before
/// something "repaired" them (a gateway that did would otherwise slip them past the check that
/// refuses them as bytes). The one definition of a hostile character: every text
/// field of every request is held to it (`holdfast_adapters::http::parse_json` for all JSON
/// strings, the query and header parsers for the rest), and PostgreSQL cannot store the NUL.
pub fn forbidden_char(c: char, lines_allowed: bool) -> bool {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
    (c.is_control() && !(lines_allowed && (c == '\n' || c == '\t'))) || bidi || c == '\u{FFFD}'
}

/// Does `s` hold a [`forbidden_char`]?
pub fn has_forbidden_char(s: &str, lines_allowed: bool) -> bool {
    s.chars().any(|c| forbidden_char(c, lines_allowed))
}

/// Anything a mail client would turn into a link: a scheme, `www.`, or a bare domain with a
/// path. Deliberately broad: a guest's name or note never needs one.
fn has_link(s: &str) -> bool {
    let lower = s.to_lowercase();
    lower.contains("://")
        || lower.contains("www.")
        || ["http:", "https:", "mailto:", "ftp:", "javascript:", "data:"].iter().any(|p| lower.contains(p))
        || lower.split_whitespace().any(|w| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric());
            w.contains('/') && w.split('/').next().is_some_and(|host| host.contains('.'))
        })
}

fn text(raw: &str, max: usize, lines_allowed: bool) -> Result<String, GuestTextError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(GuestTextError::Empty);
    }
    if s.chars().count() > max {
        return Err(GuestTextError::TooLong(max));
    }
    if has_forbidden_char(s, lines_allowed) {
        return Err(GuestTextError::ControlCharacter);
    }
    if has_link(s) {
        return Err(GuestTextError::Link);
    }
    Ok(s.to_owned())
}

/// The guest's name as it will be greeted. PII: `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestName(String);

impl GuestName {
    pub fn parse(raw: &str) -> Result<Self, GuestTextError> {
        text(raw, NAME_MAX_CHARS, false).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-text notes for the restaurant (may span lines). PII: `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestNotes(String);

impl GuestNotes {
    /// `None` for absent or blank notes.
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, GuestTextError> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => text(s, NOTES_MAX_CHARS, true).map(|t| Some(Self(t))),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number as typed: digits and `+ - ( )` and spaces. PII: `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestPhone(String);

impl GuestPhone {
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, GuestTextError> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(p) if p.len() <= PHONE_MAX_CHARS && p.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c)) => {
                Ok(Some(Self(p.to_owned())))
            }
            Some(_) => Err(GuestTextError::NotAPhoneNumber),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! redacted_debug {
    ($($t:ty),+) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(<redacted>)"))
            }
        }
    )+};
}
redacted_debug!(GuestName, GuestNotes, GuestPhone);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_bidi_and_links() {
        assert_eq!(GuestName::parse("  Ada Lovelace ").map(|n| n.as_str().to_owned()), Ok("Ada Lovelace".into()));
        assert_eq!(GuestName::parse("José Ñúñez-O'Brien").map(|n| !n.0.is_empty()), Ok(true));
        for bad in ["Ada\u{0}", "Ada\u{7}", "Ada\u{1b}[31m", "Ada\u{202E}evil", "Ada\u{2066}x", "Ada\nLovelace"] {
            assert_eq!(GuestName::parse(bad), Err(GuestTextError::ControlCharacter), "{bad:?}");
        }
        for bad in
            ["see http://evil.example", "HTTPS://x", "www.evil.example", "evil.example/login", "javascript:alert(1)"]
        {
            assert_eq!(GuestName::parse(bad), Err(GuestTextError::Link), "{bad:?}");
        }
        assert_eq!(GuestName::parse(" "), Err(GuestTextError::Empty));
        assert_eq!(GuestName::parse(&"a".repeat(201)), Err(GuestTextError::TooLong(NAME_MAX_CHARS)));
        assert!(GuestName::parse("Dr. A. Smith / B. Jones").is_ok(), "a slash is not a link");
    }

    #[test]
    fn notes_allow_lines_but_not_links_or_controls() {
        assert!(GuestNotes::parse(Some("window seat\nbirthday\ttable")).expect("ok").is_some());
        assert_eq!(GuestNotes::parse(Some("  ")), Ok(None));
        assert_eq!(GuestNotes::parse(None), Ok(None));
        assert_eq!(GuestNotes::parse(Some("call me at http://x.y")), Err(GuestTextError::Link));
        assert_eq!(GuestNotes::parse(Some("a\u{0}b")), Err(GuestTextError::ControlCharacter));
        assert_eq!(GuestNotes::parse(Some(&"n".repeat(1001))), Err(GuestTextError::TooLong(NOTES_MAX_CHARS)));
    }

    #[test]
    fn every_hostile_character_is_forbidden_and_lines_only_where_allowed() {
        let hostile = [
            '\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\r', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
            '\u{FFFD}',
        ];
        for c in hostile {
            assert!(forbidden_char(c, false) && forbidden_char(c, true), "{c:?}");
            assert!(has_forbidden_char(&format!("Ada{c}"), true), "{c:?}");
        }
        assert!(forbidden_char('\n', false) && !forbidden_char('\n', true));
        assert!(forbidden_char('\t', false) && !forbidden_char('\t', true));
        assert!(!has_forbidden_char("José Ñúñez-O'Brien 😀 عربي", false));
    }

    #[test]
    fn debug_never_shows_the_text() {
        let n = GuestName::parse("Ada").expect("ok");
        assert_eq!(format!("{n:?}"), "GuestName(<redacted>)");
    }
}
