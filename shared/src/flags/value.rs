//! Flag types and values, and parsing of the raw strings stored in SSM.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// The type (and allowed range) of a flag. Every SSM value is parsed against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagType {
    Bool,
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// Single-line text of at most `max_len` characters (empty allowed).
    Text {
        max_len: usize,
    },
    /// Exactly one of the listed strings; the value is a [`FlagValue::Text`].
    Choice(&'static [&'static str]),
}

impl FlagType {
    /// Short form for docs: `bool`, `int 0..=100`, `text (max 200 chars)`, `one of ses, resend`.
    pub fn describe(&self) -> String {
        match self {
            Self::Bool => "bool".to_owned(),
            Self::Int { min, max } => format!("int {min}..={max}"),
            Self::Text { max_len } => format!("text (max {max_len} chars)"),
            Self::Choice(options) => format!("one of {}", options.join(", ")),
        }
    }

    /// What a valid value looks like, for error messages.
    pub fn expected(&self) -> String {
        match self {
            Self::Bool => "`true` or `false`".to_owned(),
            Self::Int { min, max } => format!("an integer in {min}..={max}"),
            Self::Text { max_len } => {
                format!("single-line text of at most {max_len} characters")
            }
            Self::Choice(options) => {
                let quoted: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
                format!("one of {}", quoted.join(", "))
            }
        }
    }

    /// Parses a raw SSM string. Booleans and integers tolerate surrounding whitespace (console
    /// edits add newlines); text and choices are taken verbatim because whitespace is content.
    pub fn parse(&self, raw: &str) -> Option<FlagValue> {
        let value = match self {
            Self::Bool => match raw.trim() {
                "true" => FlagValue::Bool(true),
                "false" => FlagValue::Bool(false),
                _ => return None,
            },
            Self::Int { .. } => FlagValue::Int(raw.trim().parse().ok()?),
            Self::Text { .. } | Self::Choice(_) => FlagValue::Text(raw.to_owned()),
        };
        self.accepts(&value).then_some(value)
    }

    /// Whether a typed value is of this type and within its range.
    pub fn accepts(&self, value: &FlagValue) -> bool {
        match (self, value) {
            (Self::Bool, FlagValue::Bool(_)) => true,
            (Self::Int { min, max }, FlagValue::Int(v)) => (*min..=*max).contains(v),
            // Control characters would break the one-line audit log and the Markdown docs.
            (Self::Text { max_len }, FlagValue::Text(s)) => {
                s.chars().count() <= *max_len && !s.chars().any(char::is_control)
            }
            (Self::Choice(options), FlagValue::Text(s)) => options.contains(&s.as_str()),
            _ => false,
        }
    }
}

/// A typed flag value. `Choice` flags hold `Text`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl FlagValue {
    /// The canonical string written to SSM; parses back to the same value.
    pub fn to_ssm_string(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Text(s) => s.clone(),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ssm_string())
    }
}

/// A value that is not valid for a flag. `found` is already redacted for secret flags and
/// shortened, so the error is safe to log and to return to API callers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("flag `{flag}` expects {expected}, got {found}")]
pub struct FlagValueError {
    pub flag: &'static str,
    pub expected: String,
    pub found: String,
}

/// Longest excerpt of an invalid value echoed in an error.
const FOUND_EXCERPT_CHARS: usize = 40;

/// Quotes an invalid value for an error message, shortened so a huge value cannot flood logs.
pub(crate) fn excerpt(raw: &str) -> String {
    let mut chars = raw.chars();
    let head: String = chars.by_ref().take(FOUND_EXCERPT_CHARS).collect();
    let total = FOUND_EXCERPT_CHARS + chars.count();
    if total > FOUND_EXCERPT_CHARS {
        format!("{head:?}… ({total} chars)")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT: FlagType = FlagType::Int { min: 60, max: 900 };
    const TEXT: FlagType = FlagType::Text { max_len: 5 };
    const CHOICE: FlagType = FlagType::Choice(&["ses", "resend"]);

    #[test]
    fn bool_accepts_only_true_and_false() {
        assert_eq!(FlagType::Bool.parse("true"), Some(FlagValue::Bool(true)));
        assert_eq!(FlagType::Bool.parse("false"), Some(FlagValue::Bool(false)));
        assert_eq!(FlagType::Bool.parse(" true\n"), Some(FlagValue::Bool(true)));
        for bad in ["", "TRUE", "True", "1", "0", "yes", "on", "t", "truee"] {
            assert_eq!(FlagType::Bool.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn int_parses_within_range_inclusive() {
        assert_eq!(INT.parse("60"), Some(FlagValue::Int(60)));
        assert_eq!(INT.parse("900"), Some(FlagValue::Int(900)));
        assert_eq!(INT.parse(" 180\n"), Some(FlagValue::Int(180)));
        for bad in ["59", "901", "-1", "", "abc", "180s", "1.5", "1e3", "99999999999999999999"] {
            assert_eq!(INT.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_is_verbatim_bounded_and_single_line() {
        assert_eq!(TEXT.parse(""), Some(FlagValue::Text(String::new())));
        assert_eq!(TEXT.parse(" ab "), Some(FlagValue::Text(" ab ".into())));
        // Counted in characters, not bytes.
        assert_eq!(TEXT.parse("ééééé"), Some(FlagValue::Text("ééééé".into())));
        assert_eq!(TEXT.parse("abcdef"), None);
        assert_eq!(TEXT.parse("a\nb"), None);
        assert_eq!(TEXT.parse("a\tb"), None);
    }

    #[test]
    fn choice_accepts_exact_members_only() {
        assert_eq!(CHOICE.parse("ses"), Some(FlagValue::Text("ses".into())));
        assert_eq!(CHOICE.parse("resend"), Some(FlagValue::Text("resend".into())));
        for bad in ["", "SES", " ses", "smtp"] {
            assert_eq!(CHOICE.parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn accepts_rejects_wrong_variants() {
        assert!(!FlagType::Bool.accepts(&FlagValue::Int(1)));
        assert!(!INT.accepts(&FlagValue::Bool(true)));
        assert!(!INT.accepts(&FlagValue::Text("100".into())));
        assert!(!TEXT.accepts(&FlagValue::Int(1)));
        assert!(!CHOICE.accepts(&FlagValue::Bool(false)));
    }

    #[test]
    fn ssm_string_round_trips() {
        for (ty, v) in [
            (FlagType::Bool, FlagValue::Bool(true)),
            (FlagType::Bool, FlagValue::Bool(false)),
            (INT, FlagValue::Int(60)),
            (TEXT, FlagValue::Text(String::new())),
            (TEXT, FlagValue::Text(" a b ".into())),
            (CHOICE, FlagValue::Text("resend".into())),
        ] {
            assert_eq!(ty.parse(&v.to_ssm_string()), Some(v.clone()));
            assert_eq!(v.to_string(), v.to_ssm_string());
        }
    }

    #[test]
    fn accessors_match_variants() {
        assert_eq!(FlagValue::Bool(true).as_bool(), Some(true));
        assert_eq!(FlagValue::Bool(true).as_int(), None);
        assert_eq!(FlagValue::Int(3).as_int(), Some(3));
        assert_eq!(FlagValue::Int(3).as_text(), None);
        assert_eq!(FlagValue::Text("x".into()).as_text(), Some("x"));
        assert_eq!(FlagValue::Text("x".into()).as_bool(), None);
    }

    #[test]
    fn descriptions_name_the_type_and_range() {
        assert_eq!(FlagType::Bool.describe(), "bool");
        assert_eq!(INT.describe(), "int 60..=900");
        assert_eq!(TEXT.describe(), "text (max 5 chars)");
        assert_eq!(CHOICE.describe(), "one of ses, resend");
        assert_eq!(INT.expected(), "an integer in 60..=900");
        assert_eq!(CHOICE.expected(), "one of `ses`, `resend`");
    }

    #[test]
    fn excerpt_quotes_and_shortens() {
        assert_eq!(excerpt("abc"), "\"abc\"");
        let long = "x".repeat(100);
        let e = excerpt(&long);
        assert!(e.starts_with(&format!("{:?}", "x".repeat(40))), "{e}");
        assert!(e.ends_with("(100 chars)"), "{e}");
    }

    #[test]
    fn serde_is_plain_json() {
        assert_eq!(serde_json::to_string(&FlagValue::Bool(true)).expect("json"), "true");
        assert_eq!(serde_json::to_string(&FlagValue::Int(5)).expect("json"), "5");
        assert_eq!(serde_json::to_string(&FlagValue::Text("a".into())).expect("json"), "\"a\"");
    }
}
