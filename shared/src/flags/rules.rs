//! Contradiction rules: flag combinations that are unsafe or misleading.

use super::set::FlagSet;
use super::Environment;

/// Whether a rule blocks changes or only warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// A change whose result newly violates the rule is refused.
    Error,
    /// Reported (loader logs, approver shows it) but never blocks a change: some safe
    /// sequences must pass through it, e.g. the prod kill switch sets the reason before
    /// turning strict conflicts off.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// A contradiction rule. The id is stable: it appears in API errors, logs and the docs.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub explanation: &'static str,
    pub severity: Severity,
    violated: fn(&FlagSet, Environment) -> bool,
}

impl Rule {
    pub fn is_violated(&self, set: &FlagSet, env: Environment) -> bool {
        (self.violated)(set, env)
    }
}

/// One rule a set breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    pub rule_id: &'static str,
    pub title: &'static str,
    pub explanation: &'static str,
    pub severity: Severity,
}

/// Every rule, in id order.
pub static RULES: &[Rule] = &[
    Rule {
        id: "FR001",
        title: "Merges without adjacency",
        explanation: "`allocator.mergesEnabled=true` with `allocator.requireAdjacency=false` lets \
            the allocator merge tables anywhere in the room and seat one party apart. Keep \
            adjacency required, or turn merges off.",
        severity: Severity::Error,
        violated: |s, _| s.merges_enabled() && !s.require_adjacency(),
    },
    Rule {
        id: "FR002",
        title: "Strict conflicts off in prod without a reason",
        explanation: "`holds.strictConflicts=false` in prod requires a non-blank \
            `holds.strictConflicts.killSwitchReason`, so on-call knows why the double-booking \
            guard is off and when to turn it back on. Set the reason first.",
        severity: Severity::Error,
        violated: |s, env| {
            env == Environment::Prod && !s.strict_conflicts() && s.kill_switch_reason().trim().is_empty()
        },
    },
    Rule {
        id: "FR003",
        title: "Stale kill-switch reason",
        explanation: "`holds.strictConflicts=true` while `holds.strictConflicts.killSwitchReason` \
            is set: the flags say strict conflicts were killed, but they are on, which misleads \
            on-call. Clear the reason. (A warning only: the kill switch passes through this \
            state when the reason is set before turning strict conflicts off.)",
        severity: Severity::Warning,
        violated: |s, _| s.strict_conflicts() && !s.kill_switch_reason().trim().is_empty(),
    },
    Rule {
        id: "FR004",
        title: "Strict conflicts on at 0% in prod",
        explanation: "`holds.strictConflicts=true` with `holds.strictConflicts.rolloutPercent=0` \
            in prod enforces nothing while looking enabled. To stop strict conflicts use the \
            kill switch (`holds.strictConflicts=false` with a reason); otherwise roll out to at \
            least 10%.",
        severity: Severity::Error,
        violated: |s, env| env == Environment::Prod && s.strict_conflicts() && s.strict_rollout_percent() == 0,
    },
];

/// Every rule `set` violates in `env`, in rule order.
pub fn check(set: &FlagSet, env: Environment) -> Vec<RuleViolation> {
    RULES
        .iter()
        .filter(|r| r.is_violated(set, env))
        .map(|r| RuleViolation { rule_id: r.id, title: r.title, explanation: r.explanation, severity: r.severity })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::names;

    fn set(env: Environment, pairs: &[(&str, &str)]) -> FlagSet {
        pairs.iter().fold(FlagSet::defaults(env), |s, (n, v)| s.with_raw(n, v).expect("valid test value"))
    }

    fn ids(set: &FlagSet, env: Environment) -> Vec<&'static str> {
        check(set, env).into_iter().map(|v| v.rule_id).collect()
    }

    #[test]
    fn safe_default_matrix_passes_every_rule_in_every_environment() {
        for env in Environment::ALL {
            assert_eq!(check(&FlagSet::defaults(env), env), vec![], "defaults of {env}");
        }
    }

    #[test]
    fn rule_ids_are_unique_stable_and_explained() {
        let ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids, ["FR001", "FR002", "FR003", "FR004"]);
        for r in RULES {
            assert!(r.explanation.len() > 40 && !r.title.is_empty(), "{}", r.id);
        }
    }

    #[test]
    fn fr001_merges_without_adjacency() {
        let merges = names::ALLOCATOR_MERGES_ENABLED;
        let adj = names::ALLOCATOR_REQUIRE_ADJACENCY;
        for env in Environment::ALL {
            assert_eq!(ids(&set(env, &[(merges, "true"), (adj, "false")]), env), ["FR001"]);
            assert!(ids(&set(env, &[(merges, "false"), (adj, "false")]), env).is_empty());
            assert!(ids(&set(env, &[(merges, "false"), (adj, "true")]), env).is_empty());
            assert!(ids(&set(env, &[(merges, "true"), (adj, "true")]), env).is_empty());
        }
    }

    #[test]
    fn fr002_strict_off_in_prod_needs_a_reason() {
        let strict = names::HOLDS_STRICT_CONFLICTS;
        let reason = names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON;
        let p = Environment::Prod;
        assert_eq!(ids(&set(p, &[(strict, "false")]), p), ["FR002"]);
        assert_eq!(ids(&set(p, &[(strict, "false"), (reason, "   ")]), p), ["FR002"]);
        assert!(ids(&set(p, &[(strict, "false"), (reason, "INC-7")]), p).is_empty());
        for env in [Environment::Dev, Environment::Staging] {
            assert!(ids(&set(env, &[(strict, "false")]), env).is_empty(), "{env}");
        }
    }

    #[test]
    fn fr003_reason_while_strict_is_on_warns() {
        let reason = names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON;
        for env in Environment::ALL {
            let s = set(env, &[(reason, "INC-7")]);
            let v = check(&s, env);
            assert_eq!(v.len(), 1);
            assert_eq!((v[0].rule_id, v[0].severity), ("FR003", Severity::Warning));
            assert!(ids(&set(env, &[(reason, " ")]), env).is_empty(), "blank is no reason");
        }
    }

    #[test]
    fn fr004_zero_percent_while_on_in_prod() {
        let strict = names::HOLDS_STRICT_CONFLICTS;
        let pct = names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT;
        let reason = names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON;
        let p = Environment::Prod;
        assert_eq!(ids(&set(p, &[(pct, "0")]), p), ["FR004"]);
        assert!(ids(&set(p, &[(pct, "1")]), p).is_empty());
        assert!(ids(&set(p, &[(pct, "0"), (strict, "false"), (reason, "INC-7")]), p).is_empty());
        for env in [Environment::Dev, Environment::Staging] {
            assert!(ids(&set(env, &[(pct, "0")]), env).is_empty(), "{env}");
        }
    }

    #[test]
    fn several_violations_are_all_reported_in_order() {
        let p = Environment::Prod;
        let s = set(
            p,
            &[
                (names::ALLOCATOR_REQUIRE_ADJACENCY, "false"),
                (names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "0"),
                (names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "old"),
            ],
        );
        assert_eq!(ids(&s, p), ["FR001", "FR003", "FR004"]);
    }
}
