//! The flag change workflow as a pure state machine; the flag-approver Lambda persists it,
//! writes SSM and appends the audit log.
//!
//! Pending ──approve (enough approvals)──▶ Approved ──mark_applied──▶ Applied
//!    │                                       │  ▲
//!    ├─reject─▶ Rejected                      mark_apply_failed / retry
//!    └─past expires_at─▶ Expired             ▼  │
//!                                          ApplyFailed
//! Approved and ApplyFailed can also be rejected (abandoned) or expire.

use super::registry::{approvals_required, lookup, FlagDef};
use super::rules::{check, Severity};
use super::set::FlagSet;
use super::value::{FlagValue, FlagValueError};
use super::Environment;
use crate::ids::ProposalId;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// How long a proposal may wait for approvals and be applied.
pub const PROPOSAL_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// Longest accepted identity.
const ACTOR_MAX_CHARS: usize = 200;

/// Who proposed, approved or rejected. Always taken from the API Gateway authorizer, never
/// from the request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ActorError {
    #[error("actor identity is empty")]
    Empty,
    #[error("actor identity is {0} characters long; at most 200 are allowed")]
    TooLong(usize),
    #[error("actor identity contains control characters")]
    ControlCharacter,
}

impl Actor {
    /// Trims surrounding whitespace; refuses empty, over-long and control-character identities.
    pub fn new(raw: &str) -> Result<Self, ActorError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ActorError::Empty);
        }
        let chars = s.chars().count();
        if chars > ACTOR_MAX_CHARS {
            return Err(ActorError::TooLong(chars));
        }
        if s.chars().any(char::is_control) {
            return Err(ActorError::ControlCharacter);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Case-insensitive: emails and IAM user names are, so `Alice@x` must not approve the
    /// proposal of `alice@x`.
    pub fn is_same_person(&self, other: &Actor) -> bool {
        self.0.to_lowercase() == other.0.to_lowercase()
    }
}

impl TryFrom<String> for Actor {
    type Error = ActorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> Self {
        a.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Approved,
    Rejected,
    Applied,
    /// Writing SSM failed; the proposal stays applicable (retry) until it expires.
    ApplyFailed,
    Expired,
}

impl ProposalStatus {
    pub const ALL: [ProposalStatus; 6] =
        [Self::Pending, Self::Approved, Self::Rejected, Self::Applied, Self::ApplyFailed, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Applied => "applied",
            Self::ApplyFailed => "apply_failed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Rejected | Self::Applied | Self::Expired)
    }

    /// May be written to SSM (first attempt or retry).
    pub fn is_applicable(self) -> bool {
        matches!(self, Self::Approved | Self::ApplyFailed)
    }
}

impl fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a change cannot be proposed (or applied).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChangeRefused {
    #[error("unknown flag `{flag}`")]
    UnknownFlag { flag: String },
    #[error(transparent)]
    InvalidValue(#[from] FlagValueError),
    #[error("flag `{flag}` already has this value")]
    NoChange { flag: &'static str },
    #[error("the change would break {}: {}", rule_ids.join(", "), explanations.join(" "))]
    Contradiction { rule_ids: Vec<&'static str>, explanations: Vec<&'static str> },
    /// The flag changed after the proposal was made; approvers saw another "before".
    #[error("flag `{flag}` is now `{current}`, not `{expected}` as when proposed; propose again")]
    StaleProposal { flag: &'static str, expected: String, current: String },
}

impl ChangeRefused {
    /// A stable code for API responses and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownFlag { .. } => "unknown_flag",
            Self::InvalidValue(_) => "invalid_value",
            Self::NoChange { .. } => "no_change",
            Self::Contradiction { .. } => "contradiction",
            Self::StaleProposal { .. } => "stale_proposal",
        }
    }
}

/// Validates setting `flag` to `raw_new` in `env`, given the `current` values; returns the
/// typed new value.
///
/// A change is refused when the resulting set breaks an error-severity rule that `current`
/// does not already break. Pre-existing violations (an out-of-band SSM edit) are the loader's
/// to report: refusing every change because of them would also block the fix and the kill
/// switch. Warnings never block (see [`Severity::Warning`]).
pub fn validate_change(
    current: &FlagSet,
    env: Environment,
    flag: &str,
    raw_new: &str,
) -> Result<FlagValue, ChangeRefused> {
    let def = lookup(flag).ok_or_else(|| ChangeRefused::UnknownFlag { flag: flag.to_owned() })?;
    let value = def.parse(raw_new)?;
    if current.get(def.name) == Some(&value) {
        return Err(ChangeRefused::NoChange { flag: def.name });
    }
    let next = current.with(def.name, value.clone()).map_err(|e| match e {
        super::set::FlagSetError::UnknownFlag(flag) => ChangeRefused::UnknownFlag { flag },
        super::set::FlagSetError::InvalidValue(e) => ChangeRefused::InvalidValue(e),
    })?;
    let before: Vec<&str> = check(current, env).iter().map(|v| v.rule_id).collect();
    let (rule_ids, explanations) = check(&next, env)
        .into_iter()
        .filter(|v| v.severity == Severity::Error && !before.contains(&v.rule_id))
        .map(|v| (v.rule_id, v.explanation))
        .unzip::<_, _, Vec<_>, Vec<_>>();
    if rule_ids.is_empty() {
        Ok(value)
    } else {
        Err(ChangeRefused::Contradiction { rule_ids, explanations })
    }
}

/// Validates a change and opens a proposal for it. `old_raw` is what the SSM parameter holds
/// now (`None`: absent, so the default applies). The stored `new_raw` is canonical.
#[allow(clippy::too_many_arguments)] // each is a distinct, required fact of the proposal
pub fn propose(
    current: &FlagSet,
    env: Environment,
    flag: &str,
    old_raw: Option<String>,
    raw_new: &str,
    proposer: Actor,
    id: ProposalId,
    now: DateTime<Utc>,
) -> Result<Proposal, ChangeRefused> {
    let value = validate_change(current, env, flag, raw_new)?;
    let flag = lookup(flag).map_or(flag, |d| d.name);
    Ok(Proposal {
        id,
        flag: flag.to_owned(),
        env,
        old_raw,
        new_raw: value.to_ssm_string(),
        proposer,
        approvals: Vec::new(),
        rejected_by: None,
        status: ProposalStatus::Pending,
        created_at: now,
        expires_at: now + PROPOSAL_LIFETIME,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// This many more approvals (by other people) are needed.
    NeedsMore(u8),
    /// Enough approvals: the status is now `Approved`; write SSM.
    ReadyToApply,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkflowError {
    #[error("the proposer cannot approve their own change")]
    SelfApproval,
    #[error("{0} has already approved this change")]
    DuplicateApproval(Actor),
    #[error("the proposal is {0}, not pending")]
    NotPending(ProposalStatus),
    #[error("the proposal is {0}, not approved")]
    NotApproved(ProposalStatus),
    #[error("the proposal is {0}; it cannot become {1}")]
    InvalidTransition(ProposalStatus, ProposalStatus),
    #[error("the proposal has expired")]
    Expired,
    #[error("the proposal names unknown flag `{0}`")]
    UnknownFlag(String),
}

impl WorkflowError {
    /// A stable code for API responses and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SelfApproval => "self_approval",
            Self::DuplicateApproval(_) => "duplicate_approval",
            Self::NotPending(_) => "not_pending",
            Self::NotApproved(_) => "not_approved",
            Self::InvalidTransition(..) => "invalid_transition",
            Self::Expired => "expired",
            Self::UnknownFlag(_) => "unknown_flag",
        }
    }
}

/// A proposed change of one flag in one environment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub flag: String,
    pub env: Environment,
    /// The SSM value when proposed; `None` when the parameter did not exist (default applied).
    pub old_raw: Option<String>,
    pub new_raw: String,
    pub proposer: Actor,
    /// Approvers in order; never contains the proposer or anyone twice.
    pub approvals: Vec<Actor>,
    pub rejected_by: Option<Actor>,
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Proposal {
    fn def(&self) -> Result<&'static FlagDef, WorkflowError> {
        lookup(&self.flag).ok_or_else(|| WorkflowError::UnknownFlag(self.flag.clone()))
    }

    fn is_due(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Approvals needed in total (besides the proposer).
    pub fn approvals_required(&self) -> Result<u8, WorkflowError> {
        Ok(approvals_required(self.def()?, self.env))
    }

    /// The status as of `now`: a live proposal past `expires_at` is expired even if no one
    /// has persisted that yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ProposalStatus {
        if !self.status.is_terminal() && self.is_due(now) {
            ProposalStatus::Expired
        } else {
            self.status
        }
    }

    /// Persists expiry (for a sweeper or any read path). Returns whether the status changed.
    pub fn expire_if_due(&mut self, now: DateTime<Utc>) -> bool {
        let at = self.status_at(now);
        let changed = at != self.status;
        self.status = at;
        changed
    }

    /// Records an approval by someone other than the proposer. On error nothing changes.
    pub fn approve(&mut self, approver: Actor, now: DateTime<Utc>) -> Result<ApprovalOutcome, WorkflowError> {
        match self.status_at(now) {
            ProposalStatus::Pending => {}
            ProposalStatus::Expired => return Err(WorkflowError::Expired),
            other => return Err(WorkflowError::NotPending(other)),
        }
        if approver.is_same_person(&self.proposer) {
            return Err(WorkflowError::SelfApproval);
        }
        if self.approvals.iter().any(|a| a.is_same_person(&approver)) {
            return Err(WorkflowError::DuplicateApproval(approver));
        }
        let required = self.approvals_required()?;
        self.approvals.push(approver);
        let have = u8::try_from(self.approvals.len()).unwrap_or(u8::MAX);
        if have >= required {
            self.status = ProposalStatus::Approved;
            Ok(ApprovalOutcome::ReadyToApply)
        } else {
            Ok(ApprovalOutcome::NeedsMore(required - have))
        }
    }

    /// Rejects a pending proposal, or abandons an approved / failed one. Anyone may, the
    /// proposer included (withdrawal): stopping a change is always safe.
    pub fn reject(&mut self, by: Actor, now: DateTime<Utc>) -> Result<(), WorkflowError> {
        match self.status_at(now) {
            ProposalStatus::Pending | ProposalStatus::Approved | ProposalStatus::ApplyFailed => {
                self.status = ProposalStatus::Rejected;
                self.rejected_by = Some(by);
                Ok(())
            }
            ProposalStatus::Expired => Err(WorkflowError::Expired),
            other => Err(WorkflowError::NotPending(other)),
        }
    }

    /// Call before writing SSM: approved (or failed before) and not expired.
    pub fn check_can_apply(&self, now: DateTime<Utc>) -> Result<(), WorkflowError> {
        match self.status_at(now) {
            s if s.is_applicable() => Ok(()),
            ProposalStatus::Expired => Err(WorkflowError::Expired),
            other => Err(WorkflowError::NotApproved(other)),
        }
    }

    /// Re-validates against the values just before writing: refuses if the flag changed since
    /// the proposal (the approvers judged another "before") or if the change now contradicts
    /// other flags changed in the meantime. Returns the value to write.
    pub fn validate_for_apply(&self, current: &FlagSet) -> Result<FlagValue, ChangeRefused> {
        let def = lookup(&self.flag).ok_or_else(|| ChangeRefused::UnknownFlag { flag: self.flag.clone() })?;
        // An absent or invalid stored value meant the default was in effect.
        let expected =
            self.old_raw.as_deref().and_then(|raw| def.parse(raw).ok()).unwrap_or_else(|| def.default_for(self.env));
        if let Some(now) = current.get(def.name) {
            if *now != expected {
                return Err(ChangeRefused::StaleProposal {
                    flag: def.name,
                    expected: def.display_value(&expected),
                    current: def.display_value(now),
                });
            }
        }
        validate_change(current, self.env, def.name, &self.new_raw)
    }

    /// The SSM write succeeded. Allowed from `Approved` or `ApplyFailed` even after expiry:
    /// it records what happened.
    pub fn mark_applied(&mut self) -> Result<(), WorkflowError> {
        self.transition_from_applicable(ProposalStatus::Applied)
    }

    /// The SSM write failed; the proposal stays retriable until it expires.
    pub fn mark_apply_failed(&mut self) -> Result<(), WorkflowError> {
        self.transition_from_applicable(ProposalStatus::ApplyFailed)
    }

    fn transition_from_applicable(&mut self, to: ProposalStatus) -> Result<(), WorkflowError> {
        if self.status.is_applicable() {
            self.status = to;
            Ok(())
        } else {
            Err(WorkflowError::InvalidTransition(self.status, to))
        }
    }

    /// `old_raw` as it may appear in the audit log (redacted for secret flags).
    pub fn audit_old(&self) -> Option<String> {
        let def = lookup(&self.flag);
        self.old_raw.as_deref().map(|raw| def.map_or_else(|| raw.to_owned(), |d| d.display_raw(raw)))
    }

    /// `new_raw` as it may appear in the audit log (redacted for secret flags).
    pub fn audit_new(&self) -> String {
        lookup(&self.flag).map_or_else(|| self.new_raw.clone(), |d| d.display_raw(&self.new_raw))
    }
}

impl fmt::Debug for Proposal {
    // Values go through the audit redaction, so logging a proposal never leaks a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proposal")
            .field("id", &self.id)
            .field("flag", &self.flag)
            .field("env", &self.env)
            .field("old_raw", &self.audit_old())
            .field("new_raw", &self.audit_new())
            .field("proposer", &self.proposer)
            .field("approvals", &self.approvals)
            .field("rejected_by", &self.rejected_by)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::names;
    use chrono::TimeZone;

    fn actor(s: &str) -> Actor {
        Actor::new(s).expect("valid actor")
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 11, 6, 12, 0, 0).single().expect("valid time")
    }

    fn proposal(env: Environment, flag: &str, raw: &str) -> Proposal {
        propose(
            &FlagSet::defaults(env),
            env,
            flag,
            None,
            raw,
            actor("alice@example.com"),
            ProposalId::new_random(),
            t0(),
        )
        .expect("valid proposal")
    }

    // ---- Actor ----

    #[test]
    fn actor_is_trimmed_and_bounded() {
        assert_eq!(actor("  bob  ").as_str(), "bob");
        assert_eq!(Actor::new(""), Err(ActorError::Empty));
        assert_eq!(Actor::new(" \t\n"), Err(ActorError::Empty));
        assert!(Actor::new(&"a".repeat(200)).is_ok());
        assert_eq!(Actor::new(&"a".repeat(201)), Err(ActorError::TooLong(201)));
        assert!(Actor::new(&"é".repeat(200)).is_ok(), "counted in characters");
        assert_eq!(Actor::new("bob\u{0}x"), Err(ActorError::ControlCharacter));
        assert_eq!(actor("bob").to_string(), "bob");
    }

    #[test]
    fn actor_deserialization_validates() {
        let a: Actor = serde_json::from_str("\" carol \"").expect("valid");
        assert_eq!(a.as_str(), "carol");
        assert!(serde_json::from_str::<Actor>("\"  \"").is_err());
        assert_eq!(serde_json::to_string(&a).expect("json"), "\"carol\"");
    }

    #[test]
    fn same_person_ignores_case() {
        assert!(actor("Alice@Example.com").is_same_person(&actor("alice@example.com")));
        assert!(!actor("alice").is_same_person(&actor("alice2")));
    }

    // ---- Status ----

    #[test]
    fn status_round_trips() {
        for s in ProposalStatus::ALL {
            assert_eq!(ProposalStatus::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(ProposalStatus::parse("Pending"), None);
        assert_eq!(ProposalStatus::parse("applyfailed"), None);
    }

    // ---- validate_change ----

    #[test]
    fn validate_change_returns_the_typed_value() {
        let set = FlagSet::defaults(Environment::Prod);
        assert_eq!(
            validate_change(&set, Environment::Prod, names::HOLDS_TTL_SECONDS, " 300 "),
            Ok(FlagValue::Int(300))
        );
    }

    #[test]
    fn validate_change_refuses_unknown_invalid_and_no_change() {
        let env = Environment::Staging;
        let set = FlagSet::defaults(env);
        let e = validate_change(&set, env, "holds.nope", "true").expect_err("unknown");
        assert_eq!((e.code(), e.to_string()), ("unknown_flag", "unknown flag `holds.nope`".into()));
        let e = validate_change(&set, env, names::HOLDS_TTL_SECONDS, "901").expect_err("range");
        assert_eq!(e.code(), "invalid_value");
        assert!(e.to_string().contains("60..=900"), "{e}");
        let e = validate_change(&set, env, names::HOLDS_TTL_SECONDS, "180").expect_err("same");
        assert_eq!(e, ChangeRefused::NoChange { flag: "holds.ttlSeconds" });
        // Equality is by typed value, not by string.
        let e = validate_change(&set, env, names::HOLDS_STRICT_CONFLICTS, " true\n");
        assert_eq!(e.map_err(|e| e.code()), Err("no_change"));
    }

    #[test]
    fn validate_change_refuses_contradictions_fr001() {
        for env in Environment::ALL {
            let set = FlagSet::defaults(env);
            let e = validate_change(&set, env, names::ALLOCATOR_REQUIRE_ADJACENCY, "false").expect_err("FR001");
            let ChangeRefused::Contradiction { rule_ids, explanations } = &e else {
                panic!("expected a contradiction, got {e:?}");
            };
            assert_eq!(rule_ids, &["FR001"]);
            assert_eq!(explanations.len(), 1);
            assert!(e.to_string().starts_with("the change would break FR001: "), "{e}");
            // With merges off first, dropping adjacency is fine.
            let no_merges = set.with_raw(names::ALLOCATOR_MERGES_ENABLED, "false").expect("valid");
            assert!(validate_change(&no_merges, env, names::ALLOCATOR_REQUIRE_ADJACENCY, "false").is_ok());
        }
    }

    #[test]
    fn prod_kill_switch_and_recovery_are_reachable_one_flag_at_a_time() {
        let env = Environment::Prod;
        let strict = names::HOLDS_STRICT_CONFLICTS;
        let reason = names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON;
        let on = FlagSet::defaults(env);
        // Turning off without a reason: FR002.
        let e = validate_change(&on, env, strict, "false").expect_err("FR002");
        assert!(matches!(&e, ChangeRefused::Contradiction { rule_ids, .. } if rule_ids == &["FR002"]));
        // Reason first (FR003 is only a warning), then off.
        validate_change(&on, env, reason, "INC-7 false 409s").expect("reason first");
        let with_reason = on.with_raw(reason, "INC-7 false 409s").expect("valid");
        validate_change(&with_reason, env, strict, "false").expect("then off");
        let off = with_reason.with_raw(strict, "false").expect("valid");
        // Clearing the reason while off: FR002.
        let e = validate_change(&off, env, reason, "").expect_err("FR002");
        assert_eq!(e.code(), "contradiction");
        // Recovery: on (warning only), then clear the reason.
        validate_change(&off, env, strict, "true").expect("back on");
        let back_on = off.with_raw(strict, "true").expect("valid");
        validate_change(&back_on, env, reason, "").expect("clear reason");
    }

    #[test]
    fn validate_change_refuses_fr004_only_in_prod() {
        let pct = names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT;
        let e = validate_change(&FlagSet::defaults(Environment::Prod), Environment::Prod, pct, "0");
        assert!(matches!(e, Err(ChangeRefused::Contradiction { ref rule_ids, .. }) if rule_ids == &["FR004"]));
        for step in ["10", "50"] {
            assert!(validate_change(&FlagSet::defaults(Environment::Prod), Environment::Prod, pct, step).is_ok());
        }
        assert!(validate_change(&FlagSet::defaults(Environment::Staging), Environment::Staging, pct, "0").is_ok());
    }

    #[test]
    fn pre_existing_violations_do_not_block_unrelated_changes_or_the_fix() {
        let env = Environment::Prod;
        // An out-of-band SSM edit left FR001 in place.
        let (broken, _) =
            FlagSet::from_raw(env, &[(names::ALLOCATOR_REQUIRE_ADJACENCY.to_owned(), "false".to_owned())]);
        assert!(validate_change(&broken, env, names::HOLDS_TTL_SECONDS, "240").is_ok());
        assert!(validate_change(&broken, env, names::ALLOCATOR_REQUIRE_ADJACENCY, "true").is_ok());
        // But a change that adds a new violation is still refused.
        let e = validate_change(&broken, env, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "0").expect_err("FR004");
        assert!(matches!(e, ChangeRefused::Contradiction { ref rule_ids, .. } if rule_ids == &["FR004"]));
    }

    // ---- propose ----

    #[test]
    fn propose_stores_canonical_value_and_lifetime() {
        let p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, " 300\n");
        assert_eq!(p.new_raw, "300");
        assert_eq!(p.flag, "holds.ttlSeconds");
        assert_eq!(p.status, ProposalStatus::Pending);
        assert!(p.approvals.is_empty());
        assert_eq!(p.expires_at - p.created_at, TimeDelta::hours(24));
        assert_eq!(p.old_raw, None);
    }

    #[test]
    fn propose_refuses_what_validate_change_refuses() {
        let env = Environment::Prod;
        let r = propose(
            &FlagSet::defaults(env),
            env,
            names::ALLOCATOR_REQUIRE_ADJACENCY,
            Some("true".into()),
            "false",
            actor("alice"),
            ProposalId::new_random(),
            t0(),
        );
        assert_eq!(r.map(|_| ()).map_err(|e| e.code()), Err("contradiction"));
    }

    // ---- approvals ----

    #[test]
    fn operational_flag_needs_one_other_person() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        assert_eq!(p.approvals_required(), Ok(1));
        assert_eq!(p.approve(actor("bob"), t0()), Ok(ApprovalOutcome::ReadyToApply));
        assert_eq!(p.status, ProposalStatus::Approved);
        assert_eq!(p.approve(actor("carol"), t0()), Err(WorkflowError::NotPending(ProposalStatus::Approved)));
    }

    #[test]
    fn critical_flag_in_prod_needs_two_other_people() {
        let mut p = proposal(Environment::Prod, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "50");
        assert_eq!(p.approve(actor("bob"), t0()), Ok(ApprovalOutcome::NeedsMore(1)));
        assert_eq!(p.status, ProposalStatus::Pending);
        let e = p.approve(actor("BOB"), t0()).expect_err("same approver twice");
        assert_eq!(e.code(), "duplicate_approval");
        assert_eq!(p.approvals.len(), 1, "a refused approval changes nothing");
        assert_eq!(p.approve(actor("carol"), t0()), Ok(ApprovalOutcome::ReadyToApply));
        assert_eq!(p.status, ProposalStatus::Approved);
        // In staging one approval is enough.
        let mut s = proposal(Environment::Staging, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "50");
        assert_eq!(s.approve(actor("bob"), t0()), Ok(ApprovalOutcome::ReadyToApply));
    }

    #[test]
    fn proposer_can_never_approve() {
        let mut p = proposal(Environment::Dev, names::HOLDS_TTL_SECONDS, "300");
        for who in ["alice@example.com", " ALICE@example.com "] {
            let e = p.approve(actor(who), t0()).expect_err("self approval");
            assert_eq!(e, WorkflowError::SelfApproval);
            assert_eq!(e.code(), "self_approval");
        }
        assert!(p.approvals.is_empty());
        assert_eq!(p.status, ProposalStatus::Pending);
    }

    #[test]
    fn expired_proposals_cannot_be_approved_or_rejected() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        let just_before = p.expires_at - TimeDelta::seconds(1);
        assert_eq!(p.status_at(just_before), ProposalStatus::Pending);
        assert_eq!(p.status_at(p.expires_at), ProposalStatus::Expired);
        let at = p.expires_at;
        assert_eq!(p.approve(actor("bob"), at), Err(WorkflowError::Expired));
        assert_eq!(p.reject(actor("bob"), at), Err(WorkflowError::Expired));
        assert_eq!(p.status, ProposalStatus::Pending, "errors do not mutate");
        assert!(p.expire_if_due(at));
        assert_eq!(p.status, ProposalStatus::Expired);
        assert!(!p.expire_if_due(at), "already expired");
        assert_eq!(WorkflowError::Expired.code(), "expired");
    }

    #[test]
    fn expire_if_due_leaves_terminal_and_fresh_proposals_alone() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        assert!(!p.expire_if_due(t0()));
        p.approve(actor("bob"), t0()).expect("approve");
        p.mark_applied().expect("applied");
        assert!(!p.expire_if_due(p.expires_at + TimeDelta::days(30)));
        assert_eq!(p.status, ProposalStatus::Applied);
    }

    #[test]
    fn reject_and_withdraw() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        p.reject(actor("alice@example.com"), t0()).expect("proposer may withdraw");
        assert_eq!(p.status, ProposalStatus::Rejected);
        assert_eq!(p.rejected_by, Some(actor("alice@example.com")));
        assert_eq!(p.reject(actor("bob"), t0()), Err(WorkflowError::NotPending(ProposalStatus::Rejected)));
        assert_eq!(p.approve(actor("bob"), t0()).map_err(|e| e.code()), Err("not_pending"));
        // An approved (or failed) proposal may be abandoned.
        let mut q = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        q.approve(actor("bob"), t0()).expect("approve");
        q.mark_apply_failed().expect("failed");
        q.reject(actor("carol"), t0()).expect("abandon");
        assert_eq!(q.check_can_apply(t0()), Err(WorkflowError::NotApproved(ProposalStatus::Rejected)));
    }

    // ---- apply ----

    #[test]
    fn apply_lifecycle_with_retry() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        assert_eq!(p.check_can_apply(t0()), Err(WorkflowError::NotApproved(ProposalStatus::Pending)));
        assert_eq!(
            p.mark_applied(),
            Err(WorkflowError::InvalidTransition(ProposalStatus::Pending, ProposalStatus::Applied))
        );
        p.approve(actor("bob"), t0()).expect("approve");
        p.check_can_apply(t0()).expect("approved");
        p.mark_apply_failed().expect("first write failed");
        assert_eq!(p.status, ProposalStatus::ApplyFailed);
        p.check_can_apply(t0()).expect("retriable");
        p.mark_apply_failed().expect("failed again");
        p.mark_applied().expect("retry succeeded");
        assert_eq!(p.status, ProposalStatus::Applied);
        let e = p.mark_applied().expect_err("applied is terminal");
        assert_eq!(e.code(), "invalid_transition");
        assert_eq!(p.mark_apply_failed().map_err(|e| e.code()), Err("invalid_transition"));
        assert_eq!(p.check_can_apply(t0()).map_err(|e| e.code()), Err("not_approved"));
    }

    #[test]
    fn approved_proposal_expires_for_apply_but_can_record_an_inflight_write() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        p.approve(actor("bob"), t0()).expect("approve");
        assert_eq!(p.check_can_apply(p.expires_at), Err(WorkflowError::Expired));
        p.mark_applied().expect("a write that happened is recorded");
    }

    #[test]
    fn validate_for_apply_detects_stale_base_and_new_contradictions() {
        let env = Environment::Prod;
        let p = proposal(env, names::HOLDS_TTL_SECONDS, "300");
        let current = FlagSet::defaults(env);
        assert_eq!(p.validate_for_apply(&current), Ok(FlagValue::Int(300)));
        // Someone changed the flag meanwhile.
        let moved = current.with_raw(names::HOLDS_TTL_SECONDS, "240").expect("valid");
        assert_eq!(
            p.validate_for_apply(&moved),
            Err(ChangeRefused::StaleProposal {
                flag: "holds.ttlSeconds",
                expected: "180".into(),
                current: "240".into(),
            })
        );
        // old_raw is compared by typed value; an invalid stored value meant the default.
        let mut q = p.clone();
        q.old_raw = Some(" 180 ".into());
        assert!(q.validate_for_apply(&current).is_ok());
        q.old_raw = Some("garbage".into());
        assert!(q.validate_for_apply(&current).is_ok());
        // Another flag changed meanwhile so that this change now contradicts it.
        // Proposed while merges were off; merges were turned back on before the apply, so
        // writing "adjacency=false" now would break FR001.
        let no_merges = current.with_raw(names::ALLOCATOR_MERGES_ENABLED, "false").expect("valid");
        let drop_adjacency = propose(
            &no_merges,
            env,
            names::ALLOCATOR_REQUIRE_ADJACENCY,
            Some("true".into()),
            "false",
            actor("alice"),
            ProposalId::new_random(),
            t0(),
        )
        .expect("valid with merges off");
        assert_eq!(drop_adjacency.validate_for_apply(&current).map_err(|e| e.code()), Err("contradiction"));
        assert!(drop_adjacency.validate_for_apply(&no_merges).is_ok());
    }

    #[test]
    fn workflow_error_codes_are_stable() {
        let codes = [
            WorkflowError::SelfApproval.code(),
            WorkflowError::DuplicateApproval(actor("x")).code(),
            WorkflowError::NotPending(ProposalStatus::Applied).code(),
            WorkflowError::NotApproved(ProposalStatus::Pending).code(),
            WorkflowError::InvalidTransition(ProposalStatus::Pending, ProposalStatus::Applied).code(),
            WorkflowError::Expired.code(),
            WorkflowError::UnknownFlag("x".into()).code(),
        ];
        assert_eq!(
            codes,
            [
                "self_approval",
                "duplicate_approval",
                "not_pending",
                "not_approved",
                "invalid_transition",
                "expired",
                "unknown_flag"
            ]
        );
    }

    #[test]
    fn rehydrated_proposal_with_unknown_flag_cannot_be_approved() {
        let mut p = proposal(Environment::Prod, names::HOLDS_TTL_SECONDS, "300");
        p.flag = "removed.flag".into();
        assert_eq!(p.approve(actor("bob"), t0()), Err(WorkflowError::UnknownFlag("removed.flag".into())));
        assert!(p.approvals.is_empty());
        assert_eq!(
            p.validate_for_apply(&FlagSet::defaults(Environment::Prod)).map_err(|e| e.code()),
            Err("unknown_flag")
        );
    }

    #[test]
    fn proposal_serde_round_trips() {
        let mut p = proposal(Environment::Prod, names::EMAIL_PROVIDER, "resend");
        p.approve(actor("bob"), t0()).expect("approve");
        let json = serde_json::to_string(&p).expect("json");
        assert!(json.contains("\"status\":\"approved\""), "{json}");
        let back: Proposal = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, p);
        assert_eq!(p.audit_new(), "resend");
        assert_eq!(p.audit_old(), None);
        assert!(format!("{p:?}").contains("resend"));
    }
}
