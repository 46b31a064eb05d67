//! Feature flags: the typed registry, the safe default matrix, contradiction rules, the
//! two-person change workflow and the generated registry doc.
//!
//! Flags live in SSM under `<prefix>/flags/<flag name>` (e.g.
//! `/holdfast/prod/flags/holds.strictConflicts`). The environment is always explicit: the old
//! system keyed overrides by runtime mode, which made staging impossible to target.
//!
//! Everything here is pure; the SSM loader and the flag-approver Lambda do the IO.

mod bake;
mod doc;
mod registry;
mod rules;
mod set;
mod value;
mod workflow;

pub use bake::{bake_window, plan_revert, revert_trigger, FiringAlarm, RevertRefused, RevertWrite};
pub use doc::{render_flag_set_report, render_registry_markdown};
pub use registry::{
    approvals_required, lookup, names, DefaultValue, Defaults, FlagDef, KillSwitch, SafetyClass, BAKE_MINUTES,
    BAKE_MINUTES_CRITICAL, MAX_BAKE_MINUTES, NO_BAKE, REGISTRY,
};
pub use rules::{check, Rule, RuleViolation, Severity, RULES};
pub use set::{FlagProblem, FlagSet, FlagSetError};
pub use value::{FlagType, FlagValue, FlagValueError};
pub use workflow::{
    break_glass, check_break_glass, propose, propose_changes, validate_change, validate_changes, Actor, ActorError,
    ApprovalOutcome, Change, ChangeRefused, ChangeRequest, PlannedWrite, Proposal, ProposalStatus, Review,
    WorkflowError, MAX_CHANGES, PROPOSAL_LIFETIME, REVIEW_DEADLINE,
};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A deployment environment. Overrides are keyed by this, never by a runtime mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Dev,
    Staging,
    Prod,
}

impl Environment {
    pub const ALL: [Environment; 3] = [Environment::Dev, Environment::Staging, Environment::Prod];

    /// Exact, lowercase names only: a typo must not silently select another environment.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dev" => Some(Self::Dev),
            "staging" => Some(Self::Staging),
            "prod" => Some(Self::Prod),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Staging => "staging",
            Self::Prod => "prod",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("unknown environment `{s}` (expected dev, staging or prod)"))
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The path segment between the environment prefix and the flag name.
const FLAGS_SEGMENT: &str = "/flags/";

/// The SSM path holding every flag of an environment, for `GetParametersByPath`:
/// `"/holdfast/prod"` → `"/holdfast/prod/flags/"`. A trailing `/` on the prefix is tolerated.
pub fn ssm_flags_path(prefix: &str) -> String {
    format!("{}{FLAGS_SEGMENT}", prefix.trim_end_matches('/'))
}

/// `("/holdfast/prod", "holds.strictConflicts")` → `"/holdfast/prod/flags/holds.strictConflicts"`.
pub fn ssm_parameter_name(prefix: &str, flag: &str) -> String {
    format!("{}{flag}", ssm_flags_path(prefix))
}

/// The inverse of [`ssm_parameter_name`]: the flag name of a parameter under `prefix`, or
/// `None` when the parameter belongs to another prefix/environment, is not a flag, or is nested
/// deeper (flag names never contain `/`).
pub fn flag_name_from_parameter<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix.trim_end_matches('/'))?;
    let flag = rest.strip_prefix(FLAGS_SEGMENT)?;
    if flag.is_empty() || flag.contains('/') {
        return None;
    }
    Some(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_round_trips_and_rejects_other_spellings() {
        for env in Environment::ALL {
            assert_eq!(Environment::parse(env.as_str()), Some(env));
            assert_eq!(env.to_string(), env.as_str());
            assert_eq!(env.as_str().parse::<Environment>(), Ok(env));
        }
        assert!("production".parse::<Environment>().is_err());
        for bad in ["", "Prod", "PROD", "production", " prod", "test", "local"] {
            assert_eq!(Environment::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn environment_serde_is_lowercase() {
        let json = serde_json::to_string(&Environment::Staging).expect("serialize");
        assert_eq!(json, "\"staging\"");
        let back: Environment = serde_json::from_str("\"prod\"").expect("deserialize");
        assert_eq!(back, Environment::Prod);
    }

    #[test]
    fn ssm_names_are_built_per_environment_prefix() {
        assert_eq!(
            ssm_parameter_name("/holdfast/prod", "holds.strictConflicts"),
            "/holdfast/prod/flags/holds.strictConflicts"
        );
        assert_eq!(
            ssm_parameter_name("/holdfast/staging/", "holds.ttlSeconds"),
            "/holdfast/staging/flags/holds.ttlSeconds"
        );
        assert_eq!(ssm_flags_path("/holdfast/dev"), "/holdfast/dev/flags/");
    }

    #[test]
    fn flag_name_from_parameter_is_the_inverse() {
        for def in REGISTRY {
            for prefix in ["/holdfast/prod", "/holdfast/prod/"] {
                let p = ssm_parameter_name(prefix, def.name);
                assert_eq!(flag_name_from_parameter(prefix, &p), Some(def.name));
            }
        }
    }

    #[test]
    fn flag_name_from_parameter_rejects_foreign_names() {
        let prefix = "/holdfast/prod";
        for name in [
            "/holdfast/staging/flags/holds.ttlSeconds",    // other environment
            "/holdfast/production/flags/holds.ttlSeconds", // prefix is only a string prefix
            "/holdfast/prod/flags/",
            "/holdfast/prod/flags",
            "/holdfast/prod/secrets/db",
            "/holdfast/prod/flags/a/b",
            "holds.ttlSeconds",
        ] {
            assert_eq!(flag_name_from_parameter(prefix, name), None, "{name}");
        }
    }
}
