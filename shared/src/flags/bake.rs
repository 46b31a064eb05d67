//! Bake and automatic revert, the pure rules. A change applied in prod bakes for the longest
//! `bake_minutes` of its flags; an SLO burn-rate alarm that enters ALARM inside that window
//! reverts it: every flag back to what the change replaced, all of them or none. A revert is
//! never written blindly: not when a flag was changed again since the apply wrote it (the
//! revert would undo someone else's change), nor when the reverted set would newly break an
//! error rule. The scheduled check that applies these rules is the flag approver's
//! `check_bakes`.

use super::registry::{lookup, FlagDef};
use super::rules::{check, Severity};
use super::set::FlagSet;
use super::workflow::Proposal;
use super::Environment;
use chrono::{DateTime, Duration, Utc};

/// How long `p` bakes once applied: `None` outside prod, or when none of its flags bakes.
pub fn bake_window(p: &Proposal) -> Option<Duration> {
    if p.env != Environment::Prod {
        return None;
    }
    let minutes = p.changes.iter().filter_map(|c| lookup(&c.flag)).map(|d| d.bake_minutes).max()?;
    (minutes > 0).then(|| Duration::minutes(i64::from(minutes)))
}

/// An alarm in ALARM now, and when it entered that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlarm {
    pub name: String,
    pub since: DateTime<Utc>,
}

/// The alarm that reverts a change baking from `applied_at` to `until`: the first one to enter
/// ALARM inside the window. One already in ALARM when the change was applied is not the
/// change's doing (e.g. the incident a kill switch answers) and reverts nothing.
pub fn revert_trigger(firing: &[FiringAlarm], applied_at: DateTime<Utc>, until: DateTime<Utc>) -> Option<&FiringAlarm> {
    firing.iter().filter(|a| a.since >= applied_at && a.since <= until).min_by_key(|a| a.since)
}

/// One flag of a revert: the raw value to put back (`None`: the parameter did not exist, so
/// it is deleted and the default applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertWrite {
    pub def: &'static FlagDef,
    pub value: Option<String>,
    /// SSM already holds it: an earlier revert attempt wrote it.
    pub already: bool,
}

/// Why a triggered revert is not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertRefused {
    /// The flag's parameter is no longer what the apply wrote (another change since).
    ChangedSince { flag: &'static str },
    /// The reverted set would break these error rules, which the current one does not.
    Contradiction { rule_ids: Vec<&'static str> },
    /// The registry no longer knows the flag.
    UnknownFlag { flag: String },
}

impl RevertRefused {
    /// A stable code for the audit log and the event.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChangedSince { .. } => "changed_since",
            Self::Contradiction { .. } => "contradiction",
            Self::UnknownFlag { .. } => "unknown_flag",
        }
    }

    /// The audit detail: the code and what it concerns (flag names, rule ids; never values).
    pub fn detail(&self) -> String {
        match self {
            Self::ChangedSince { flag } => format!("changed_since: {flag}"),
            Self::Contradiction { rule_ids } => format!("contradiction: {}", rule_ids.join(",")),
            Self::UnknownFlag { flag } => format!("unknown_flag: {flag}"),
        }
    }
}

/// Plans the revert of the applied proposal `p`. `written[i]` is the SSM version the apply
/// wrote for change `i` (`None`: it deleted the parameter); `stored(flag)` is what SSM holds
/// now (raw value and version, `None` when absent); `current` is the effective set now.
pub fn plan_revert(
    p: &Proposal,
    written: &[Option<i64>],
    stored: &dyn Fn(&str) -> Option<(String, i64)>,
    current: &FlagSet,
) -> Result<Vec<RevertWrite>, RevertRefused> {
    let mut plan = Vec::with_capacity(p.changes.len());
    let mut next = current.clone();
    for (i, c) in p.changes.iter().enumerate() {
        let def = lookup(&c.flag).ok_or_else(|| RevertRefused::UnknownFlag { flag: c.flag.clone() })?;
        let now = stored(def.name);
        let already = now.as_ref().map(|(v, _)| v.as_str()) == c.old_raw.as_deref();
        let as_written = match (written.get(i).copied().flatten(), &now) {
            (Some(version), Some((_, v))) => *v == version,
            (None, None) => true,
            _ => false,
        };
        if !already && !as_written {
            return Err(RevertRefused::ChangedSince { flag: def.name });
        }
        // An absent or invalid old value meant the default was in effect.
        let old = c.old_raw.as_deref().and_then(|raw| def.parse(raw).ok()).unwrap_or_else(|| def.default_for(p.env));
        if let Ok(s) = next.with(def.name, old) {
            next = s;
        }
        plan.push(RevertWrite { def, value: c.old_raw.clone(), already });
    }
    let before: Vec<&str> = check(current, p.env).iter().map(|v| v.rule_id).collect();
    let rule_ids: Vec<&'static str> = check(&next, p.env)
        .into_iter()
        .filter(|v| v.severity == Severity::Error && !before.contains(&v.rule_id))
        .map(|v| v.rule_id)
        .collect();
    if rule_ids.is_empty() {
        Ok(plan)
    } else {
        Err(RevertRefused::Contradiction { rule_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::workflow::{Actor, Change, ProposalStatus};
    use crate::flags::{names, REGISTRY};
    use crate::ids::ProposalId;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn proposal(env: Environment, changes: &[(&str, Option<&str>, &str)]) -> Proposal {
        let at = t("2030-01-07T19:00:00Z");
        Proposal {
            id: ProposalId::new_random(),
            env,
            changes: changes
                .iter()
                .map(|(f, old, new)| Change {
                    flag: f.to_string(),
                    old_raw: old.map(str::to_owned),
                    new_raw: new.to_string(),
                })
                .collect(),
            proposer: Actor::new("alice").expect("actor"),
            approvals: vec![],
            rejected_by: None,
            status: ProposalStatus::Applied,
            created_at: at,
            expires_at: at + Duration::hours(24),
            break_glass: false,
        }
    }

    #[test]
    fn only_prod_changes_of_baking_flags_bake_for_their_longest_window() {
        let ttl = (names::HOLDS_TTL_SECONDS, Some("180"), "240");
        let adjacency = (names::ALLOCATOR_REQUIRE_ADJACENCY, None, "false");
        let provider = (names::EMAIL_PROVIDER, None, "resend");
        assert_eq!(bake_window(&proposal(Environment::Prod, &[ttl])), Some(Duration::minutes(10)));
        assert_eq!(bake_window(&proposal(Environment::Prod, &[ttl, adjacency])), Some(Duration::minutes(15)));
        assert_eq!(bake_window(&proposal(Environment::Prod, &[provider])), None);
        assert_eq!(bake_window(&proposal(Environment::Staging, &[ttl])), None);
        assert!(REGISTRY.iter().any(|d| d.bake_minutes == 0), "some flags never bake");
    }

    #[test]
    fn only_an_alarm_entering_alarm_inside_the_window_triggers() {
        let (applied, until) = (t("2030-01-07T19:00:00Z"), t("2030-01-07T19:10:00Z"));
        let alarm = |name: &str, since: &str| FiringAlarm { name: name.into(), since: t(since) };
        let before = alarm("already-firing", "2030-01-07T18:59:00Z");
        let after = alarm("late", "2030-01-07T19:10:01Z");
        assert_eq!(revert_trigger(&[before.clone(), after.clone()], applied, until), None);
        let inside = alarm("fast-burn", "2030-01-07T19:04:00Z");
        let edge = alarm("slow-burn", "2030-01-07T19:10:00Z");
        let firing = [before, edge, inside.clone(), after];
        assert_eq!(revert_trigger(&firing, applied, until), Some(&inside));
    }

    #[test]
    fn a_revert_restores_old_values_and_deletes_what_was_absent() {
        let env = Environment::Prod;
        let p = proposal(
            env,
            &[
                (names::HOLDS_TTL_SECONDS, Some("180"), "240"),
                (names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, None, "50"),
            ],
        );
        let current = FlagSet::defaults(env)
            .with_raw(names::HOLDS_TTL_SECONDS, "240")
            .and_then(|s| s.with_raw(names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "50"))
            .expect("valid");
        let stored = |f: &str| match f {
            names::HOLDS_TTL_SECONDS => Some(("240".to_string(), 2)),
            names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT => Some(("50".to_string(), 1)),
            _ => None,
        };
        let plan = plan_revert(&p, &[Some(2), Some(1)], &stored, &current).expect("revertible");
        let got: Vec<_> = plan.iter().map(|w| (w.def.name, w.value.as_deref(), w.already)).collect();
        assert_eq!(
            got,
            [
                (names::HOLDS_TTL_SECONDS, Some("180"), false),
                (names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, None, false)
            ]
        );
        // A second attempt after a partial revert: what is back already is marked so.
        let stored = |f: &str| match f {
            names::HOLDS_TTL_SECONDS => Some(("180".to_string(), 3)),
            names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT => Some(("50".to_string(), 1)),
            _ => None,
        };
        let plan = plan_revert(&p, &[Some(2), Some(1)], &stored, &current).expect("revertible");
        assert_eq!(plan.iter().map(|w| w.already).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn a_flag_changed_since_the_apply_is_not_reverted() {
        let env = Environment::Prod;
        let p = proposal(env, &[(names::HOLDS_TTL_SECONDS, Some("180"), "240")]);
        let current = FlagSet::defaults(env).with_raw(names::HOLDS_TTL_SECONDS, "300").expect("valid");
        let stored = |_: &str| Some(("300".to_string(), 3));
        let refused = plan_revert(&p, &[Some(2)], &stored, &current).expect_err("changed since");
        assert_eq!(refused, RevertRefused::ChangedSince { flag: names::HOLDS_TTL_SECONDS });
        assert_eq!((refused.code(), refused.detail()), ("changed_since", "changed_since: holds.ttlSeconds".into()));
        // Deleted by the apply, since created by someone else: changed too.
        let p = proposal(env, &[(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, Some("INC-1"), "")]);
        let stored = |_: &str| Some(("INC-2".to_string(), 1));
        let refused = plan_revert(&p, &[None], &stored, &FlagSet::defaults(env)).expect_err("changed since");
        assert_eq!(refused.code(), "changed_since");
    }

    #[test]
    fn a_revert_that_would_newly_break_an_error_rule_is_refused() {
        // Merges turned off (the change), then adjacency dropped outside the approver: putting
        // merges back on would be FR001.
        let env = Environment::Prod;
        let p = proposal(env, &[(names::ALLOCATOR_MERGES_ENABLED, None, "false")]);
        let current = FlagSet::defaults(env)
            .with_raw(names::ALLOCATOR_MERGES_ENABLED, "false")
            .and_then(|s| s.with_raw(names::ALLOCATOR_REQUIRE_ADJACENCY, "false"))
            .expect("valid");
        let stored = |f: &str| (f == names::ALLOCATOR_MERGES_ENABLED).then(|| ("false".to_string(), 1));
        let refused = plan_revert(&p, &[Some(1)], &stored, &current).expect_err("contradiction");
        assert_eq!(refused, RevertRefused::Contradiction { rule_ids: vec!["FR001"] });
        assert_eq!(refused.detail(), "contradiction: FR001");
    }
}
