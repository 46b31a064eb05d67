//! A complete, validated set of flag values for one environment.

use super::registry::{lookup, names, FlagDef, REDACTED, REGISTRY};
use super::value::{FlagValue, FlagValueError};
use super::Environment;
use std::collections::HashSet;
use std::fmt;
use thiserror::Error;

/// Every registered flag with a value valid for its type. Invariant (upheld by every
/// constructor): one entry per registry flag, in registry order, each passing `FlagDef::check`.
/// That is why the typed getters cannot fail.
#[derive(Clone, PartialEq, Eq)]
pub struct FlagSet {
    entries: Vec<(&'static FlagDef, FlagValue)>,
}

/// Something wrong in the raw values read from SSM. The set still loads (with defaults in
/// place of the bad values); the loader logs these and emits a metric.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlagProblem {
    #[error("unknown flag `{name}` in SSM (not in the registry); ignored")]
    UnknownFlag { name: String },
    #[error("{error}; using the default `{default}`")]
    InvalidValue { error: FlagValueError, default: String },
    #[error("flag `{name}` given more than once; using the default `{default}`")]
    Duplicate { name: &'static str, default: String },
}

impl FlagProblem {
    /// A stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownFlag { .. } => "unknown_flag",
            Self::InvalidValue { .. } => "invalid_value",
            Self::Duplicate { .. } => "duplicate_flag",
        }
    }
}

/// Why [`FlagSet::with`] refused a value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlagSetError {
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    #[error(transparent)]
    InvalidValue(#[from] FlagValueError),
}

impl FlagSet {
    /// The safe defaults of `env`.
    pub fn defaults(env: Environment) -> Self {
        Self::defaults_of(REGISTRY, env)
    }

    fn defaults_of(registry: &'static [FlagDef], env: Environment) -> Self {
        Self { entries: registry.iter().map(|d| (d, d.default_for(env))).collect() }
    }

    /// Builds the set from raw SSM values (`(flag name, raw value)`, names relative to the
    /// environment's `flags/` path). Missing flags take the default. Unknown names, invalid
    /// values and duplicates are reported; invalid and duplicated flags take the default,
    /// because a guessed value is worse than the known-safe one. Never panics.
    pub fn from_raw(env: Environment, raw: &[(String, String)]) -> (FlagSet, Vec<FlagProblem>) {
        let mut set = Self::defaults(env);
        let mut problems = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut duplicated: HashSet<&'static str> = HashSet::new();
        for (name, value) in raw {
            let Some(def) = lookup(name) else {
                problems.push(FlagProblem::UnknownFlag { name: name.clone() });
                continue;
            };
            if !seen.insert(def.name) {
                if duplicated.insert(def.name) {
                    set.put(def, def.default_for(env));
                    problems.push(FlagProblem::Duplicate {
                        name: def.name,
                        default: def.display_value(&def.default_for(env)),
                    });
                }
                continue;
            }
            match def.parse(value) {
                Ok(v) => set.put(def, v),
                Err(error) => problems
                    .push(FlagProblem::InvalidValue { error, default: def.display_value(&def.default_for(env)) }),
            }
        }
        // A duplicate seen after a valid first value must still end on the default.
        for name in duplicated {
            if let Some(def) = lookup(name) {
                set.put(def, def.default_for(env));
            }
        }
        (set, problems)
    }

    /// A copy with one flag changed; the value must be valid for the flag.
    pub fn with(&self, name: &str, value: FlagValue) -> Result<FlagSet, FlagSetError> {
        let def = self
            .entries
            .iter()
            .map(|(d, _)| *d)
            .find(|d| d.name == name)
            .ok_or_else(|| FlagSetError::UnknownFlag(name.to_owned()))?;
        def.check(&value)?;
        let mut next = self.clone();
        next.put(def, value);
        Ok(next)
    }

    /// A copy with one flag changed from a raw SSM string.
    pub fn with_raw(&self, name: &str, raw: &str) -> Result<FlagSet, FlagSetError> {
        let def = lookup(name).ok_or_else(|| FlagSetError::UnknownFlag(name.to_owned()))?;
        self.with(name, def.parse(raw)?)
    }

    // Only called with a checked value, which keeps the invariant.
    fn put(&mut self, def: &FlagDef, value: FlagValue) {
        if let Some(entry) = self.entries.iter_mut().find(|(d, _)| d.name == def.name) {
            entry.1 = value;
        }
    }

    pub fn get(&self, name: &str) -> Option<&FlagValue> {
        self.entries.iter().find(|(d, _)| d.name == name).map(|(_, v)| v)
    }

    /// Every flag with its value, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static FlagDef, &FlagValue)> + '_ {
        self.entries.iter().map(|(d, v)| (*d, v))
    }

    // The fallbacks below are unreachable while the invariant holds; they are the prod
    // defaults so that even a broken invariant fails safe rather than panicking.
    fn bool_or(&self, name: &str, fallback: bool) -> bool {
        self.get(name).and_then(FlagValue::as_bool).unwrap_or(fallback)
    }

    fn int_or(&self, name: &str, fallback: i64) -> i64 {
        self.get(name).and_then(FlagValue::as_int).unwrap_or(fallback)
    }

    fn text_or<'a>(&'a self, name: &str, fallback: &'a str) -> &'a str {
        self.get(name).and_then(FlagValue::as_text).unwrap_or(fallback)
    }

    pub fn strict_conflicts(&self) -> bool {
        self.bool_or(names::HOLDS_STRICT_CONFLICTS, true)
    }

    pub fn strict_rollout_percent(&self) -> u8 {
        let v = self.int_or(names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, 100);
        u8::try_from(v.clamp(0, 100)).unwrap_or(100)
    }

    pub fn kill_switch_reason(&self) -> &str {
        self.text_or(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "")
    }

    pub fn hold_ttl_seconds(&self) -> u32 {
        u32::try_from(self.int_or(names::HOLDS_TTL_SECONDS, 180)).unwrap_or(180)
    }

    pub fn merges_enabled(&self) -> bool {
        self.bool_or(names::ALLOCATOR_MERGES_ENABLED, true)
    }

    pub fn require_adjacency(&self) -> bool {
        self.bool_or(names::ALLOCATOR_REQUIRE_ADJACENCY, true)
    }

    pub fn request_received_delay_minutes(&self) -> u32 {
        u32::try_from(self.int_or(names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES, 5)).unwrap_or(5)
    }

    pub fn email_provider(&self) -> &str {
        self.text_or(names::EMAIL_PROVIDER, "ses")
    }

    pub fn datadog_enabled(&self) -> bool {
        self.bool_or(names::METRICS_DATADOG_ENABLED, true)
    }

    pub fn late_event_grace_seconds(&self) -> u32 {
        u32::try_from(self.int_or(names::METRICS_LATE_EVENT_GRACE_SECONDS, 120)).unwrap_or(120)
    }
}

impl fmt::Debug for FlagSet {
    // Redacts secret flags, so logging a set never leaks one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (def, value) in &self.entries {
            if def.is_secret() {
                m.entry(&def.name, &REDACTED);
            } else {
                m.entry(&def.name, value);
            }
        }
        m.finish()
    }
}

#[cfg(test)]
impl FlagSet {
    /// Defaults of a test-only registry (e.g. one holding a secret flag).
    pub(crate) fn defaults_in(registry: &'static [FlagDef], env: Environment) -> Self {
        Self::defaults_of(registry, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::registry::{DefaultValue, Defaults, SafetyClass};
    use crate::flags::value::FlagType;

    fn raw(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn defaults_are_complete_and_typed_getters_match() {
        for env in Environment::ALL {
            let set = FlagSet::defaults(env);
            assert_eq!(set.iter().count(), REGISTRY.len());
            for (def, v) in set.iter() {
                assert_eq!(*v, def.default_for(env));
            }
            assert!(set.strict_conflicts());
            assert_eq!(set.strict_rollout_percent(), 100);
            assert_eq!(set.kill_switch_reason(), "");
            assert_eq!(set.hold_ttl_seconds(), 180);
            assert!(set.merges_enabled());
            assert!(set.require_adjacency());
            assert_eq!(set.email_provider(), "ses");
            assert_eq!(set.late_event_grace_seconds(), 120);
        }
        assert_eq!(FlagSet::defaults(Environment::Dev).request_received_delay_minutes(), 1);
        assert_eq!(FlagSet::defaults(Environment::Staging).request_received_delay_minutes(), 5);
        assert_eq!(FlagSet::defaults(Environment::Prod).request_received_delay_minutes(), 5);
        assert!(!FlagSet::defaults(Environment::Dev).datadog_enabled());
        assert!(FlagSet::defaults(Environment::Staging).datadog_enabled());
        assert!(FlagSet::defaults(Environment::Prod).datadog_enabled());
    }

    #[test]
    fn from_raw_applies_every_valid_value() {
        let (set, problems) = FlagSet::from_raw(
            Environment::Prod,
            &raw(&[
                ("holds.strictConflicts", "false"),
                ("holds.strictConflicts.rolloutPercent", "10"),
                ("holds.strictConflicts.killSwitchReason", "INC-42 false 409s"),
                ("holds.ttlSeconds", "300"),
                ("allocator.mergesEnabled", "false"),
                ("allocator.requireAdjacency", "false"),
                ("email.requestReceivedDelayMinutes", "1440"),
                ("email.provider", "resend"),
                ("metrics.datadogEnabled", "false"),
                ("metrics.lateEventGraceSeconds", "0"),
            ]),
        );
        assert_eq!(problems, vec![]);
        assert!(!set.strict_conflicts());
        assert_eq!(set.strict_rollout_percent(), 10);
        assert_eq!(set.kill_switch_reason(), "INC-42 false 409s");
        assert_eq!(set.hold_ttl_seconds(), 300);
        assert!(!set.merges_enabled());
        assert!(!set.require_adjacency());
        assert_eq!(set.request_received_delay_minutes(), 1440);
        assert_eq!(set.email_provider(), "resend");
        assert!(!set.datadog_enabled());
        assert_eq!(set.late_event_grace_seconds(), 0);
    }

    #[test]
    fn from_raw_reports_unknown_and_invalid_and_falls_back() {
        let (set, problems) = FlagSet::from_raw(
            Environment::Dev,
            &raw(&[
                ("holds.ttlSeconds", "5"),
                ("holds.strictconflicts", "false"),
                ("email.provider", "smtp"),
                ("email.requestReceivedDelayMinutes", "3"),
            ]),
        );
        assert_eq!(set.hold_ttl_seconds(), 180);
        assert!(set.strict_conflicts(), "misspelt name must not switch anything off");
        assert_eq!(set.email_provider(), "ses");
        assert_eq!(set.request_received_delay_minutes(), 3);
        let codes: Vec<_> = problems.iter().map(FlagProblem::code).collect();
        assert_eq!(codes, ["invalid_value", "unknown_flag", "invalid_value"]);
        assert_eq!(
            problems[0].to_string(),
            "flag `holds.ttlSeconds` expects an integer in 60..=900, got \"5\"; using the default `180`"
        );
        assert_eq!(
            problems[1].to_string(),
            "unknown flag `holds.strictconflicts` in SSM (not in the registry); ignored"
        );
    }

    #[test]
    fn from_raw_duplicates_fall_back_whatever_the_order() {
        for pairs in [
            [("holds.ttlSeconds", "300"), ("holds.ttlSeconds", "600")],
            [("holds.ttlSeconds", "bad"), ("holds.ttlSeconds", "600")],
            [("holds.ttlSeconds", "600"), ("holds.ttlSeconds", "bad")],
        ] {
            let (set, problems) = FlagSet::from_raw(Environment::Prod, &raw(&pairs));
            assert_eq!(set.hold_ttl_seconds(), 180, "{pairs:?}");
            assert!(problems.iter().any(|p| p.code() == "duplicate_flag"), "{pairs:?}");
        }
        let (_, problems) = FlagSet::from_raw(
            Environment::Prod,
            &raw(&[("holds.ttlSeconds", "300"), ("holds.ttlSeconds", "300"), ("holds.ttlSeconds", "300")]),
        );
        assert_eq!(problems.len(), 1, "one problem per duplicated flag: {problems:?}");
    }

    #[test]
    fn from_raw_never_panics_on_garbage() {
        let garbage = raw(&[
            ("", ""),
            ("holds.strictConflicts", ""),
            ("holds.strictConflicts.rolloutPercent", "-9223372036854775808"),
            ("holds.strictConflicts.killSwitchReason", &"x".repeat(10_000)),
            ("metrics.lateEventGraceSeconds", "\u{0}"),
            ("allocator.mergesEnabled", "🙂"),
        ]);
        let (set, problems) = FlagSet::from_raw(Environment::Prod, &garbage);
        assert_eq!(set, FlagSet::defaults(Environment::Prod));
        assert_eq!(problems.len(), garbage.len());
        // The 10 000-char value is not echoed in full.
        assert!(problems.iter().all(|p| p.to_string().len() < 300), "{problems:?}");
    }

    #[test]
    fn empty_raw_is_the_defaults() {
        let (set, problems) = FlagSet::from_raw(Environment::Staging, &[]);
        assert_eq!(set, FlagSet::defaults(Environment::Staging));
        assert!(problems.is_empty());
    }

    #[test]
    fn with_validates_and_leaves_original_untouched() {
        let base = FlagSet::defaults(Environment::Prod);
        let next = base.with(names::HOLDS_TTL_SECONDS, FlagValue::Int(600)).expect("valid");
        assert_eq!(next.hold_ttl_seconds(), 600);
        assert_eq!(base.hold_ttl_seconds(), 180);
        assert_eq!(
            base.with(names::HOLDS_TTL_SECONDS, FlagValue::Int(901)).map(|_| ()),
            Err(FlagSetError::InvalidValue(FlagValueError {
                flag: "holds.ttlSeconds",
                expected: "an integer in 60..=900".into(),
                found: "int 901".into(),
            }))
        );
        assert!(matches!(
            base.with(names::HOLDS_TTL_SECONDS, FlagValue::Bool(true)),
            Err(FlagSetError::InvalidValue(_))
        ));
        assert_eq!(base.with("nope", FlagValue::Bool(true)).map(|_| ()), Err(FlagSetError::UnknownFlag("nope".into())));
        let next = base.with_raw(names::EMAIL_PROVIDER, "resend").expect("valid");
        assert_eq!(next.email_provider(), "resend");
        assert!(base.with_raw(names::EMAIL_PROVIDER, "smtp").is_err());
        assert!(base.with_raw("nope", "x").is_err());
    }

    #[test]
    fn get_and_iter_follow_registry_order() {
        let set = FlagSet::defaults(Environment::Prod);
        let order: Vec<_> = set.iter().map(|(d, _)| d.name).collect();
        let registry: Vec<_> = REGISTRY.iter().map(|d| d.name).collect();
        assert_eq!(order, registry);
        assert_eq!(set.get(names::HOLDS_STRICT_CONFLICTS), Some(&FlagValue::Bool(true)));
        assert_eq!(set.get("nope"), None);
    }

    static SECRET_REGISTRY: &[FlagDef] = &[FlagDef {
        name: "test.apiToken",
        ty: FlagType::Text { max_len: 64 },
        description: "test only",
        owner: "team-test",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(DefaultValue::Text("hunter2")),
        secret: true,
        kill_switch: None,
        bake_minutes: 0,
    }];

    #[test]
    fn debug_redacts_secret_flags() {
        let set = FlagSet::defaults_in(SECRET_REGISTRY, Environment::Prod);
        let dbg = format!("{set:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("test.apiToken"), "{dbg}");
        let public = format!("{:?}", FlagSet::defaults(Environment::Prod));
        assert!(public.contains("holds.ttlSeconds") && public.contains("180"), "{public}");
    }

    #[test]
    fn getters_fail_safe_on_a_foreign_registry() {
        // A set without the real flags (test registry) must still not panic.
        let set = FlagSet::defaults_in(SECRET_REGISTRY, Environment::Prod);
        assert!(set.strict_conflicts());
        assert_eq!(set.strict_rollout_percent(), 100);
        assert_eq!(set.hold_ttl_seconds(), 180);
        assert!(set.require_adjacency());
        assert_eq!(set.email_provider(), "ses");
    }
}
