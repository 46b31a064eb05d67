//! The typed registry: every flag the system reads, with its safe default per environment.

use super::value::{excerpt, FlagType, FlagValue, FlagValueError};
use super::Environment;

/// How much damage a wrong value can do; decides how many approvals a change needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SafetyClass {
    /// A wrong value can double-book, mis-assign tables or disable a safety net.
    Critical,
    /// A wrong value degrades a service (timing, delivery, observability) but loses no booking.
    Operational,
    /// Presentation only.
    Cosmetic,
}

impl SafetyClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Operational => "operational",
            Self::Cosmetic => "cosmetic",
        }
    }
}

/// A default value that can live in a `static` (a `FlagValue::Text` owns a `String`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    Bool(bool),
    Int(i64),
    Text(&'static str),
}

impl DefaultValue {
    pub fn to_value(self) -> FlagValue {
        match self {
            Self::Bool(b) => FlagValue::Bool(b),
            Self::Int(i) => FlagValue::Int(i),
            Self::Text(s) => FlagValue::Text(s.to_owned()),
        }
    }
}

/// One column of the safe default matrix per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub dev: DefaultValue,
    pub staging: DefaultValue,
    pub prod: DefaultValue,
}

impl Defaults {
    /// The same default in every environment.
    pub const fn all(v: DefaultValue) -> Self {
        Self { dev: v, staging: v, prod: v }
    }

    pub fn get(&self, env: Environment) -> DefaultValue {
        match env {
            Environment::Dev => self.dev,
            Environment::Staging => self.staging,
            Environment::Prod => self.prod,
        }
    }
}

/// The definition of one flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDef {
    /// The flag name, which is also the last segment of its SSM parameter name.
    pub name: &'static str,
    pub ty: FlagType,
    /// What the flag does at runtime.
    pub description: &'static str,
    pub owner: &'static str,
    pub safety: SafetyClass,
    pub defaults: Defaults,
    /// Secret values are never printed (docs, reports, errors, Debug).
    pub secret: bool,
    /// `Some` for a kill switch: a flag whose "off" value stops a feature safely, which one
    /// `holdfast-ops` member may apply alone (break-glass) during an incident. Only the off
    /// value may be applied that way; turning the feature back on is a normal proposal.
    pub kill_switch: Option<KillSwitch>,
    /// Minutes a prod change of this flag bakes once applied: an SLO burn-rate alarm entering
    /// ALARM in that time reverts the change automatically (`flag-review-sweep`, see
    /// [`crate::flags::bake_window`]). 0: never baked, for flags whose effect no burn-rate
    /// alarm watches.
    pub bake_minutes: u16,
}

/// Bake of a prod change to a flag a wrong value of which shows in the holds SLO.
pub const BAKE_MINUTES: u16 = 10;
/// Bake of a prod change to a critical flag: longer, for the slower burn of a partial rollout.
pub const BAKE_MINUTES_CRITICAL: u16 = 15;
/// No bake: no burn-rate alarm watches what the flag does.
pub const NO_BAKE: u16 = 0;
/// The longest bake the registry may ask for (the bake check reads alarms every minute).
pub const MAX_BAKE_MINUTES: u16 = 60;

/// What makes a flag a kill switch (see [`FlagDef::kill_switch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSwitch {
    /// The value that turns the feature off (the only value break-glass may write).
    pub off: DefaultValue,
    /// A text flag that must say why the switch was pulled; break-glass may set it (to a
    /// non-blank value) in the same proposal as the switch.
    pub reason_flag: Option<&'static str>,
}

/// What is printed instead of a secret flag's value.
pub(crate) const REDACTED: &str = "<redacted>";

impl FlagDef {
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The kill switch's off value, if this flag is a kill switch.
    pub fn kill_value(&self) -> Option<FlagValue> {
        self.kill_switch.map(|k| k.off.to_value())
    }

    /// The safe default of this flag in `env`.
    pub fn default_for(&self, env: Environment) -> FlagValue {
        self.defaults.get(env).to_value()
    }

    /// Parses a raw SSM string as this flag's type.
    pub fn parse(&self, raw: &str) -> Result<FlagValue, FlagValueError> {
        self.ty.parse(raw).ok_or_else(|| self.error(excerpt(raw)))
    }

    /// Checks a typed value against this flag's type and range.
    pub fn check(&self, value: &FlagValue) -> Result<(), FlagValueError> {
        if self.ty.accepts(value) {
            Ok(())
        } else {
            let found = match value {
                FlagValue::Bool(b) => format!("bool {b}"),
                FlagValue::Int(i) => format!("int {i}"),
                FlagValue::Text(s) => format!("text {}", excerpt(s)),
            };
            Err(self.error(found))
        }
    }

    fn error(&self, found: String) -> FlagValueError {
        FlagValueError {
            flag: self.name,
            expected: self.ty.expected(),
            found: if self.secret { REDACTED.to_owned() } else { found },
        }
    }

    /// A value as it may be shown in docs, reports and audit output.
    pub fn display_value(&self, value: &FlagValue) -> String {
        if self.secret {
            REDACTED.to_owned()
        } else {
            value.to_ssm_string()
        }
    }

    /// A raw SSM string as it may be shown in docs, reports and audit output.
    pub fn display_raw(&self, raw: &str) -> String {
        if self.secret {
            REDACTED.to_owned()
        } else {
            raw.to_owned()
        }
    }
}

/// Flag names as constants, so callers cannot misspell them.
pub mod names {
    pub const HOLDS_STRICT_CONFLICTS: &str = "holds.strictConflicts";
    pub const HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT: &str = "holds.strictConflicts.rolloutPercent";
    pub const HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON: &str = "holds.strictConflicts.killSwitchReason";
    pub const HOLDS_TTL_SECONDS: &str = "holds.ttlSeconds";
    pub const ALLOCATOR_MERGES_ENABLED: &str = "allocator.mergesEnabled";
    pub const ALLOCATOR_REQUIRE_ADJACENCY: &str = "allocator.requireAdjacency";
    pub const EMAIL_REQUEST_RECEIVED_DELAY_MINUTES: &str = "email.requestReceivedDelayMinutes";
    pub const EMAIL_PROVIDER: &str = "email.provider";
    pub const METRICS_DATADOG_ENABLED: &str = "metrics.datadogEnabled";
    pub const METRICS_LATE_EVENT_GRACE_SECONDS: &str = "metrics.lateEventGraceSeconds";
}

/// The email providers `email.provider` may select.
pub(crate) const EMAIL_PROVIDERS: &[&str] = &["ses", "resend"];

use DefaultValue::{Bool, Int, Text};

/// Every flag the system reads. The defaults form the safe default matrix: they are what every
/// function uses when SSM is unreachable or holds an invalid value, and they pass every
/// contradiction rule in every environment (tested).
pub static REGISTRY: &[FlagDef] = &[
    FlagDef {
        name: names::HOLDS_STRICT_CONFLICTS,
        ty: FlagType::Bool,
        description: "true: holds and confirmations of restaurants inside \
            `holds.strictConflicts.rolloutPercent` are checked by the database exclusion \
            constraint, and an overlapping hold or booking is refused with 409 and alternatives. \
            false: kill switch, takes effect without a deploy; no restaurant uses strict \
            conflicts (the pre-rollout path). Set `holds.strictConflicts.killSwitchReason` in the \
            same proposal (or first). A kill switch: one ops member may turn it off alone \
            (break-glass).",
        owner: "team-holds",
        safety: SafetyClass::Critical,
        defaults: Defaults::all(Bool(true)),
        secret: false,
        kill_switch: Some(KillSwitch {
            off: Bool(false),
            reason_flag: Some(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON),
        }),
        bake_minutes: BAKE_MINUTES_CRITICAL,
    },
    FlagDef {
        name: names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT,
        ty: FlagType::Int { min: 0, max: 100 },
        description: "Share of restaurants (deterministic per restaurant id) that use strict \
            conflicts while `holds.strictConflicts` is true. The staged rollout (10 → 50 → 100) \
            is done by approved changes of this flag; the default of 100 is the safe fallback.",
        owner: "team-holds",
        safety: SafetyClass::Critical,
        defaults: Defaults::all(Int(100)),
        secret: false,
        kill_switch: None,
        bake_minutes: BAKE_MINUTES_CRITICAL,
    },
    FlagDef {
        name: names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON,
        ty: FlagType::Text { max_len: 200 },
        description: "Why strict conflicts were turned off (incident link, who, when), for \
            on-call reading the flags; no effect on holds. Must be non-blank while strict \
            conflicts are off in prod (FR002) and empty while they are on (FR003).",
        owner: "team-holds",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(Text("")),
        secret: false,
        kill_switch: None,
        bake_minutes: NO_BAKE,
    },
    FlagDef {
        name: names::HOLDS_TTL_SECONDS,
        ty: FlagType::Int { min: 60, max: 900 },
        description: "How long a new hold reserves its tables while the guest confirms. Expired \
            holds never block, so a shorter TTL frees tables sooner and a longer one gives \
            guests more time.",
        owner: "team-holds",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(Int(180)),
        secret: false,
        kill_switch: None,
        bake_minutes: BAKE_MINUTES,
    },
    FlagDef {
        name: names::ALLOCATOR_MERGES_ENABLED,
        ty: FlagType::Bool,
        description: "true: a quote may combine several tables for a party too large for one \
            table, where the restaurant's policy allows merges. false: only single tables are \
            quoted.",
        owner: "team-holds",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(Bool(true)),
        secret: false,
        kill_switch: None,
        bake_minutes: BAKE_MINUTES,
    },
    FlagDef {
        name: names::ALLOCATOR_REQUIRE_ADJACENCY,
        ty: FlagType::Bool,
        description: "true: merged tables must be adjacent in the floor plan. false: the \
            allocator may merge tables anywhere in the room, seating one party apart.",
        owner: "team-holds",
        safety: SafetyClass::Critical,
        defaults: Defaults::all(Bool(true)),
        secret: false,
        kill_switch: None,
        bake_minutes: BAKE_MINUTES_CRITICAL,
    },
    FlagDef {
        name: names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES,
        ty: FlagType::Int { min: 0, max: 1440 },
        description: "How many minutes the \"request received\" email waits before it is sent \
            (0 sends at once). Deferral is durable: it survives restarts and delays beyond \
            SQS's 15-minute maximum.",
        owner: "team-notifications",
        safety: SafetyClass::Operational,
        defaults: Defaults { dev: Int(1), staging: Int(5), prod: Int(5) },
        secret: false,
        kill_switch: None,
        bake_minutes: NO_BAKE,
    },
    FlagDef {
        name: names::EMAIL_PROVIDER,
        ty: FlagType::Choice(EMAIL_PROVIDERS),
        description: "Which provider the email sender delivers booking emails through.",
        owner: "team-notifications",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(Text("ses")),
        secret: false,
        kill_switch: None,
        bake_minutes: NO_BAKE,
    },
    FlagDef {
        name: names::METRICS_DATADOG_ENABLED,
        ty: FlagType::Bool,
        description: "true: the metrics aggregator publishes every window to Datadog as well as \
            CloudWatch. false: CloudWatch only.",
        owner: "team-platform",
        safety: SafetyClass::Operational,
        defaults: Defaults { dev: Bool(false), staging: Bool(true), prod: Bool(true) },
        secret: false,
        kill_switch: None,
        bake_minutes: NO_BAKE,
    },
    FlagDef {
        name: names::METRICS_LATE_EVENT_GRACE_SECONDS,
        ty: FlagType::Int { min: 0, max: 900 },
        description: "How long the metrics aggregator waits after a window ends before \
            publishing it, so events written late still count in their window.",
        owner: "team-platform",
        safety: SafetyClass::Operational,
        defaults: Defaults::all(Int(120)),
        secret: false,
        kill_switch: None,
        bake_minutes: NO_BAKE,
    },
];

/// The definition of a flag by name.
pub fn lookup(name: &str) -> Option<&'static FlagDef> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// Approvals needed besides the proposer: a second person always, a third for critical flags
/// in prod.
pub fn approvals_required(def: &FlagDef, env: Environment) -> u8 {
    match (def.safety, env) {
        (SafetyClass::Critical, Environment::Prod) => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_valid_ssm_segments() {
        let mut seen = HashSet::new();
        for def in REGISTRY {
            assert!(seen.insert(def.name), "duplicate flag {}", def.name);
            assert!(!def.name.is_empty() && def.name.len() <= 200, "{}", def.name);
            // SSM allows a-zA-Z0-9_.- in a path segment; `/` would change the hierarchy.
            assert!(
                def.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
                "{} has characters SSM or our path scheme rejects",
                def.name
            );
        }
    }

    #[test]
    fn every_default_is_valid_for_its_type() {
        for def in REGISTRY {
            for env in Environment::ALL {
                let v = def.default_for(env);
                assert_eq!(def.check(&v), Ok(()), "{} in {env}", def.name);
                assert_eq!(def.parse(&v.to_ssm_string()), Ok(v), "{} in {env}", def.name);
            }
        }
    }

    #[test]
    fn every_flag_is_documented_and_owned() {
        for def in REGISTRY {
            assert!(def.description.len() >= 40, "{} needs a runtime description", def.name);
            assert!(def.owner.starts_with("team-"), "{} owner {}", def.name, def.owner);
            assert!(!def.is_secret(), "{} is not a secret", def.name);
        }
    }

    #[test]
    fn required_flags_have_the_specified_shape() {
        let get = |n| lookup(n).expect("registered");
        let all = |def: &FlagDef, v: DefaultValue| {
            for env in Environment::ALL {
                assert_eq!(def.defaults.get(env), v, "{} in {env}", def.name);
            }
        };
        let d = get(names::HOLDS_STRICT_CONFLICTS);
        assert_eq!((d.ty, d.safety, d.owner), (FlagType::Bool, SafetyClass::Critical, "team-holds"));
        all(d, Bool(true));
        let d = get(names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT);
        assert_eq!((d.ty, d.safety), (FlagType::Int { min: 0, max: 100 }, SafetyClass::Critical));
        all(d, Int(100));
        let d = get(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON);
        assert_eq!(d.ty, FlagType::Text { max_len: 200 });
        all(d, Text(""));
        let d = get(names::HOLDS_TTL_SECONDS);
        assert_eq!(d.ty, FlagType::Int { min: 60, max: 900 });
        all(d, Int(180));
        all(get(names::ALLOCATOR_MERGES_ENABLED), Bool(true));
        all(get(names::ALLOCATOR_REQUIRE_ADJACENCY), Bool(true));
        let d = get(names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES);
        assert_eq!(d.ty, FlagType::Int { min: 0, max: 1440 });
        assert_eq!(d.defaults, Defaults { dev: Int(1), staging: Int(5), prod: Int(5) });
        let d = get(names::EMAIL_PROVIDER);
        assert_eq!(d.ty, FlagType::Choice(&["ses", "resend"]));
        all(d, Text("ses"));
        let d = get(names::METRICS_DATADOG_ENABLED);
        assert_eq!(d.defaults, Defaults { dev: Bool(false), staging: Bool(true), prod: Bool(true) });
        let d = get(names::METRICS_LATE_EVENT_GRACE_SECONDS);
        assert_eq!(d.ty, FlagType::Int { min: 0, max: 900 });
        all(d, Int(120));
        assert_eq!(REGISTRY.len(), 10);
    }

    #[test]
    fn kill_switches_are_the_documented_off_switches() {
        // docs/runbooks/holds.md "Rollback / kill switch": strict conflicts off, with a reason.
        let switches: Vec<&str> = REGISTRY.iter().filter(|d| d.kill_switch.is_some()).map(|d| d.name).collect();
        assert_eq!(switches, [names::HOLDS_STRICT_CONFLICTS]);
        for def in REGISTRY.iter().filter(|d| d.kill_switch.is_some()) {
            let off = def.kill_value().expect("kill switch");
            assert_eq!(def.check(&off), Ok(()), "{}", def.name);
            for env in Environment::ALL {
                assert_ne!(def.default_for(env), off, "{}: the safe default is on; the switch turns it off", def.name);
            }
            if let Some(reason) = def.kill_switch.and_then(|k| k.reason_flag) {
                let r = lookup(reason).expect("reason flag registered");
                assert!(matches!(r.ty, FlagType::Text { .. }), "{reason}");
                assert!(r.kill_switch.is_none());
            }
        }
    }

    #[test]
    fn prod_changes_bake_where_a_burn_rate_alarm_watches_their_effect() {
        for def in REGISTRY {
            assert!(def.bake_minutes <= MAX_BAKE_MINUTES, "{}", def.name);
            if def.safety == SafetyClass::Critical {
                assert_eq!(def.bake_minutes, BAKE_MINUTES_CRITICAL, "{}", def.name);
            }
        }
        let baked: Vec<&str> = REGISTRY.iter().filter(|d| d.bake_minutes > 0).map(|d| d.name).collect();
        // The holds SLO's burn-rate alarms see what these do to holds and confirms; nothing
        // watches email timing, the provider choice, or metrics publishing that way.
        assert_eq!(
            baked,
            [
                names::HOLDS_STRICT_CONFLICTS,
                names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT,
                names::HOLDS_TTL_SECONDS,
                names::ALLOCATOR_MERGES_ENABLED,
                names::ALLOCATOR_REQUIRE_ADJACENCY,
            ]
        );
        assert_eq!(lookup(names::HOLDS_TTL_SECONDS).map(|d| d.bake_minutes), Some(BAKE_MINUTES));
    }

    #[test]
    fn lookup_is_exact() {
        assert!(lookup("holds.strictConflicts").is_some());
        assert!(lookup("holds.strictconflicts").is_none());
        assert!(lookup(" holds.strictConflicts").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn approvals_two_only_for_critical_in_prod() {
        let crit = lookup(names::HOLDS_STRICT_CONFLICTS).expect("registered");
        let op = lookup(names::HOLDS_TTL_SECONDS).expect("registered");
        assert_eq!(approvals_required(crit, Environment::Prod), 2);
        assert_eq!(approvals_required(crit, Environment::Staging), 1);
        assert_eq!(approvals_required(crit, Environment::Dev), 1);
        for env in Environment::ALL {
            assert_eq!(approvals_required(op, env), 1);
        }
        let cosmetic = FlagDef { safety: SafetyClass::Cosmetic, ..*op };
        assert_eq!(approvals_required(&cosmetic, Environment::Prod), 1);
    }

    #[test]
    fn parse_errors_name_flag_and_expectation() {
        let d = lookup(names::HOLDS_TTL_SECONDS).expect("registered");
        let e = d.parse("30").expect_err("below range");
        assert_eq!(e.flag, "holds.ttlSeconds");
        assert_eq!(e.to_string(), "flag `holds.ttlSeconds` expects an integer in 60..=900, got \"30\"");
        let e = d.check(&FlagValue::Bool(true)).expect_err("wrong type");
        assert_eq!(e.found, "bool true");
        let d = lookup(names::HOLDS_STRICT_CONFLICTS).expect("registered");
        assert_eq!(
            d.parse("yes").expect_err("not a bool").to_string(),
            "flag `holds.strictConflicts` expects `true` or `false`, got \"yes\""
        );
    }

    #[test]
    fn secret_values_are_never_displayed() {
        let secret = FlagDef {
            name: "test.secretToken",
            ty: FlagType::Text { max_len: 8 },
            description: "test only",
            owner: "team-test",
            safety: SafetyClass::Operational,
            defaults: Defaults::all(Text("")),
            secret: true,
            kill_switch: None,
            bake_minutes: NO_BAKE,
        };
        assert!(secret.is_secret());
        let e = secret.parse("hunter2-too-long").expect_err("too long");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.found, REDACTED);
        let e = secret.check(&FlagValue::Text("hunter2-too-long".into())).expect_err("too long");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(secret.display_value(&FlagValue::Text("hunter2".into())), REDACTED);
        assert_eq!(secret.display_raw("hunter2"), REDACTED);
        let public = lookup(names::EMAIL_PROVIDER).expect("registered");
        assert_eq!(public.display_raw("ses"), "ses");
        assert_eq!(public.display_value(&FlagValue::Text("ses".into())), "ses");
    }
}
