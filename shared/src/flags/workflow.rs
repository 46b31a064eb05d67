//! The flag change workflow as a pure state machine; the flag-approver Lambda persists it,
//! writes SSM and appends the audit log.
//!
//! A proposal carries one or more flag changes of one environment, validated together
//! (contradiction rules over the combined result), approved together and applied together
//! (all SSM writes or none).
//!
//! Pending ──approve (enough approvals)──▶ Approved ──mark_applied──▶ Applied
//!    │                                       │  ▲
//!    ├─reject─▶ Rejected                      mark_apply_failed / retry
//!    └─past expires_at─▶ Expired             ▼  │
//!                                          ApplyFailed
//! Approved and ApplyFailed can also be rejected (abandoned) or expire.
//!
//! Break-glass: a proposal made only of kill switches turned off (and their reasons) may be
//! created already `Approved` by one ops member; it opens a [`Review`] that a second person must
//! acknowledge within [`REVIEW_DEADLINE`].

use super::registry::{approvals_required, lookup, FlagDef};
use super::rules::{check, Severity};
use super::set::FlagSet;
use super::value::{FlagValue, FlagValueError};
use super::Environment;
use crate::auth::Subject;
use crate::ids::ProposalId;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// How long a proposal may wait for approvals and be applied.
pub const PROPOSAL_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// How long a second person has to acknowledge a break-glass change.
pub const REVIEW_DEADLINE: TimeDelta = TimeDelta::hours(24);

/// Most flag changes one proposal may carry.
pub const MAX_CHANGES: usize = 10;

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

    /// The actor of an authenticated subject (already NFKC + case folded).
    pub fn of_subject(subject: &Subject) -> Self {
        Self(subject.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compared as [`Subject`]s (NFKC + case folding): `Alice@x`, `ａｌｉｃｅ@x` and `alice@x` are
    /// one person, so a look-alike spelling of the proposer is still the proposer.
    pub fn is_same_person(&self, other: &Actor) -> bool {
        match (Subject::parse(&self.0), Subject::parse(&other.0)) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.0 == other.0,
        }
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
    #[error("a proposal needs 1..={MAX_CHANGES} changes")]
    ChangeCount,
    #[error("flag `{flag}` appears more than once in the proposal")]
    DuplicateFlag { flag: &'static str },
    /// Break-glass is only for turning kill switches off (with their reason).
    #[error("break-glass refused for `{flag}`: {why}")]
    BreakGlassNotAllowed { flag: String, why: String },
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
            Self::ChangeCount => "change_count",
            Self::DuplicateFlag { .. } => "duplicate_flag",
            Self::BreakGlassNotAllowed { .. } => "break_glass_not_allowed",
        }
    }
}

/// One requested change: a flag and its new value as a raw string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub flag: String,
    pub value: String,
}

impl ChangeRequest {
    pub fn new(flag: impl Into<String>, value: impl Into<String>) -> Self {
        Self { flag: flag.into(), value: value.into() }
    }
}

/// Validates setting several flags of `env` at once, given the `current` values; returns the
/// typed new values in request order.
///
/// Each change must name a registered flag, parse, differ from the current value, and appear
/// once. The combined result is then checked against the rules: it is refused when it breaks
/// an error-severity rule that `current` does not already break. Pre-existing violations (an
/// out-of-band SSM edit) are the loader's to report: refusing every change because of them would
/// also block the fix and the kill switch. Warnings never block (see [`Severity::Warning`]).
pub fn validate_changes(
    current: &FlagSet,
    env: Environment,
    requests: &[ChangeRequest],
) -> Result<Vec<(&'static FlagDef, FlagValue)>, ChangeRefused> {
    if requests.is_empty() || requests.len() > MAX_CHANGES {
        return Err(ChangeRefused::ChangeCount);
    }
    let mut out: Vec<(&'static FlagDef, FlagValue)> = Vec::with_capacity(requests.len());
    for r in requests {
        let def = lookup(&r.flag).ok_or_else(|| ChangeRefused::UnknownFlag { flag: r.flag.clone() })?;
        let value = def.parse(&r.value)?;
        if out.iter().any(|(d, _)| d.name == def.name) {
            return Err(ChangeRefused::DuplicateFlag { flag: def.name });
        }
        if current.get(def.name) == Some(&value) {
            return Err(ChangeRefused::NoChange { flag: def.name });
        }
        out.push((def, value));
    }
    check_combined(current, env, &out)?;
    Ok(out)
}

/// Refuses `changes` applied on top of `current` when the result newly breaks an error rule.
fn check_combined(
    current: &FlagSet,
    env: Environment,
    changes: &[(&'static FlagDef, FlagValue)],
) -> Result<(), ChangeRefused> {
    let mut next = current.clone();
    for (def, value) in changes {
        next = next.with(def.name, value.clone()).map_err(|e| match e {
            super::set::FlagSetError::UnknownFlag(flag) => ChangeRefused::UnknownFlag { flag },
            super::set::FlagSetError::InvalidValue(e) => ChangeRefused::InvalidValue(e),
        })?;
    }
    let before: Vec<&str> = check(current, env).iter().map(|v| v.rule_id).collect();
    let (rule_ids, explanations) = check(&next, env)
        .into_iter()
        .filter(|v| v.severity == Severity::Error && !before.contains(&v.rule_id))
        .map(|v| (v.rule_id, v.explanation))
        .unzip::<_, _, Vec<_>, Vec<_>>();
    if rule_ids.is_empty() {
        Ok(())
    } else {
        Err(ChangeRefused::Contradiction { rule_ids, explanations })
    }
}

/// Validates setting one flag (see [`validate_changes`]).
pub fn validate_change(
    current: &FlagSet,
    env: Environment,
    flag: &str,
    raw_new: &str,
) -> Result<FlagValue, ChangeRefused> {
    let mut v = validate_changes(current, env, &[ChangeRequest::new(flag, raw_new)])?;
    Ok(v.remove(0).1)
}

/// Whether already-validated `changes` may be applied by one person alone: every change turns a
/// kill switch off (to its registered off value), or sets the reason flag of a kill switch
/// turned off in the same proposal to a non-blank value.
pub fn check_break_glass(changes: &[(&'static FlagDef, FlagValue)]) -> Result<(), ChangeRefused> {
    let refuse = |def: &FlagDef, why: String| Err(ChangeRefused::BreakGlassNotAllowed { flag: def.name.into(), why });
    for (def, value) in changes {
        if let Some(off) = def.kill_value() {
            if *value != off {
                return refuse(
                    def,
                    format!(
                        "break-glass may only turn it off (`{}`); turning it on needs approval",
                        off.to_ssm_string()
                    ),
                );
            }
            continue;
        }
        let switched_off = changes.iter().any(|(k, v)| {
            k.kill_switch.is_some_and(|ks| ks.reason_flag == Some(def.name)) && k.kill_value().as_ref() == Some(v)
        });
        if !switched_off {
            return refuse(def, "not a kill switch (or the reason of one turned off in the same proposal)".into());
        }
        if value.to_ssm_string().trim().is_empty() {
            return refuse(def, "the kill switch's reason must not be blank".into());
        }
    }
    Ok(())
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
    propose_changes(current, env, &[ChangeRequest::new(flag, raw_new)], |_| old_raw.clone(), proposer, id, now)
}

/// Validates several changes together and opens one proposal for them. `old_raw(flag)` is what
/// the flag's SSM parameter holds now (`None`: absent).
pub fn propose_changes(
    current: &FlagSet,
    env: Environment,
    requests: &[ChangeRequest],
    old_raw: impl Fn(&str) -> Option<String>,
    proposer: Actor,
    id: ProposalId,
    now: DateTime<Utc>,
) -> Result<Proposal, ChangeRefused> {
    let valid = validate_changes(current, env, requests)?;
    Ok(Proposal {
        id,
        env,
        changes: valid
            .iter()
            .map(|(def, value)| Change {
                flag: def.name.to_owned(),
                old_raw: old_raw(def.name),
                new_raw: value.to_ssm_string(),
            })
            .collect(),
        proposer,
        approvals: Vec::new(),
        rejected_by: None,
        status: ProposalStatus::Pending,
        created_at: now,
        expires_at: now + PROPOSAL_LIFETIME,
        break_glass: false,
    })
}

/// A break-glass proposal: validated like any other, allowed only for kill switches turned off
/// ([`check_break_glass`]), and created `Approved` by `actor` alone. The caller applies it at
/// once and opens its [`Review`].
pub fn break_glass(
    current: &FlagSet,
    env: Environment,
    requests: &[ChangeRequest],
    old_raw: impl Fn(&str) -> Option<String>,
    actor: Actor,
    id: ProposalId,
    now: DateTime<Utc>,
) -> Result<Proposal, ChangeRefused> {
    let valid = validate_changes(current, env, requests)?;
    check_break_glass(&valid)?;
    let mut p = propose_changes(current, env, requests, old_raw, actor, id, now)?;
    p.status = ProposalStatus::Approved;
    p.break_glass = true;
    Ok(p)
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
    #[error("the person who broke glass cannot acknowledge their own review")]
    SelfReview,
    #[error("the review was already acknowledged")]
    AlreadyAcknowledged,
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
            Self::SelfReview => "self_review",
            Self::AlreadyAcknowledged => "already_acknowledged",
        }
    }
}

/// One flag change of a proposal.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub flag: String,
    /// The SSM value when proposed; `None` when the parameter did not exist (default applied).
    pub old_raw: Option<String>,
    /// Canonical.
    pub new_raw: String,
}

impl Change {
    fn def(&self) -> Result<&'static FlagDef, WorkflowError> {
        lookup(&self.flag).ok_or_else(|| WorkflowError::UnknownFlag(self.flag.clone()))
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

impl fmt::Debug for Change {
    // Values go through the audit redaction, so logging a proposal never leaks a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("flag", &self.flag)
            .field("old_raw", &self.audit_old())
            .field("new_raw", &self.audit_new())
            .finish()
    }
}

/// What applying one change means right now (see [`Proposal::plan_apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    pub def: &'static FlagDef,
    pub value: FlagValue,
    /// SSM already holds the new value: an earlier attempt of this proposal wrote it.
    pub already: bool,
}

/// A proposed change of one or more flags in one environment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: ProposalId,
    pub env: Environment,
    /// At least one, each flag at most once, in the order proposed.
    pub changes: Vec<Change>,
    pub proposer: Actor,
    /// Approvers in order; never contains the proposer or anyone twice.
    pub approvals: Vec<Actor>,
    pub rejected_by: Option<Actor>,
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Applied by the proposer alone under the kill-switch rule; reviewed afterwards.
    #[serde(default)]
    pub break_glass: bool,
}

impl Proposal {
    fn is_due(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// The flags this proposal changes, in order.
    pub fn flags(&self) -> Vec<&str> {
        self.changes.iter().map(|c| c.flag.as_str()).collect()
    }

    /// Approvals needed in total (besides the proposer): the most any of its changes needs.
    /// A break-glass proposal needs none.
    pub fn approvals_required(&self) -> Result<u8, WorkflowError> {
        if self.break_glass {
            return Ok(0);
        }
        let mut n = 1;
        for c in &self.changes {
            n = n.max(approvals_required(c.def()?, self.env));
        }
        Ok(n)
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

    /// Re-validates against the values just before writing and returns what to write, in
    /// order. Refused if a flag changed since the proposal (the approvers judged another
    /// "before") or if the combined result now contradicts flags changed in the meantime.
    /// After a failed attempt (`ApplyFailed`) a flag that already holds its new value is ours
    /// (an attempt whose outcome was not learned, or a rollback that did not complete) and is
    /// marked `already` instead of stale.
    pub fn plan_apply(&self, current: &FlagSet) -> Result<Vec<PlannedWrite>, ChangeRefused> {
        let mut plan = Vec::with_capacity(self.changes.len());
        for c in &self.changes {
            let def = lookup(&c.flag).ok_or_else(|| ChangeRefused::UnknownFlag { flag: c.flag.clone() })?;
            let value = def.parse(&c.new_raw)?;
            // An absent or invalid stored value meant the default was in effect.
            let expected =
                c.old_raw.as_deref().and_then(|raw| def.parse(raw).ok()).unwrap_or_else(|| def.default_for(self.env));
            let now = current.get(def.name).cloned().unwrap_or_else(|| def.default_for(self.env));
            let already = self.status == ProposalStatus::ApplyFailed && now == value;
            if !already && now != expected {
                return Err(ChangeRefused::StaleProposal {
                    flag: def.name,
                    expected: def.display_value(&expected),
                    current: def.display_value(&now),
                });
            }
            plan.push(PlannedWrite { def, value, already });
        }
        let pending: Vec<(&'static FlagDef, FlagValue)> =
            plan.iter().filter(|w| !w.already).map(|w| (w.def, w.value.clone())).collect();
        check_combined(current, self.env, &pending)?;
        Ok(plan)
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
}

impl fmt::Debug for Proposal {
    // Values go through the audit redaction (Change's Debug), so logging never leaks a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proposal")
            .field("id", &self.id)
            .field("env", &self.env)
            .field("changes", &self.changes)
            .field("proposer", &self.proposer)
            .field("approvals", &self.approvals)
            .field("rejected_by", &self.rejected_by)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("break_glass", &self.break_glass)
            .finish()
    }
}

/// The mandatory review of a break-glass proposal: a second person (not the actor, compared as
/// [`Subject`]s) acknowledges it within [`REVIEW_DEADLINE`]; past it, unacknowledged, it is
/// overdue and alarms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub proposal_id: ProposalId,
    pub env: Environment,
    /// Who broke glass.
    pub actor: Actor,
    pub opened_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub acknowledged_by: Option<Actor>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl Review {
    /// Opens the review of a break-glass proposal at `now`.
    pub fn open(p: &Proposal, now: DateTime<Utc>) -> Self {
        Self {
            proposal_id: p.id,
            env: p.env,
            actor: p.proposer.clone(),
            opened_at: now,
            due_at: now + REVIEW_DEADLINE,
            acknowledged_by: None,
            acknowledged_at: None,
        }
    }

    /// Records the second person's acknowledgement. On error nothing changes.
    pub fn acknowledge(&mut self, by: Actor, now: DateTime<Utc>) -> Result<(), WorkflowError> {
        if self.acknowledged_at.is_some() {
            return Err(WorkflowError::AlreadyAcknowledged);
        }
        if by.is_same_person(&self.actor) {
            return Err(WorkflowError::SelfReview);
        }
        self.acknowledged_by = Some(by);
        self.acknowledged_at = Some(now);
        Ok(())
    }

    /// Unacknowledged at or past its deadline.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.acknowledged_at.is_none() && now >= self.due_at
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
        // NFKC + case folding: full-width and ß spellings are the same person.
        assert!(actor("ａｌｉｃｅ@example.com").is_same_person(&actor("Alice@Example.com")));
        assert!(actor("STRASSE").is_same_person(&actor("straße")));
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
        assert_eq!(p.changes[0].new_raw, "300");
        assert_eq!(p.flags(), ["holds.ttlSeconds"]);
        assert_eq!(p.status, ProposalStatus::Pending);
        assert!(p.approvals.is_empty());
        assert_eq!(p.expires_at - p.created_at, TimeDelta::hours(24));
        assert_eq!(p.changes[0].old_raw, None);
        assert!(!p.break_glass);
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

    fn values(plan: Result<Vec<PlannedWrite>, ChangeRefused>) -> Result<Vec<(String, bool)>, ChangeRefused> {
        plan.map(|p| p.into_iter().map(|w| (w.value.to_ssm_string(), w.already)).collect())
    }

    #[test]
    fn plan_apply_detects_stale_base_and_new_contradictions() {
        let env = Environment::Prod;
        let p = proposal(env, names::HOLDS_TTL_SECONDS, "300");
        let current = FlagSet::defaults(env);
        assert_eq!(values(p.plan_apply(&current)), Ok(vec![("300".into(), false)]));
        // Someone changed the flag meanwhile.
        let moved = current.with_raw(names::HOLDS_TTL_SECONDS, "240").expect("valid");
        assert_eq!(
            values(p.plan_apply(&moved)),
            Err(ChangeRefused::StaleProposal {
                flag: "holds.ttlSeconds",
                expected: "180".into(),
                current: "240".into(),
            })
        );
        // old_raw is compared by typed value; an invalid stored value meant the default.
        let mut q = p.clone();
        q.changes[0].old_raw = Some(" 180 ".into());
        assert!(q.plan_apply(&current).is_ok());
        q.changes[0].old_raw = Some("garbage".into());
        assert!(q.plan_apply(&current).is_ok());
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
        assert_eq!(drop_adjacency.plan_apply(&current).map_err(|e| e.code()), Err("contradiction"));
        assert!(drop_adjacency.plan_apply(&no_merges).is_ok());
    }

    #[test]
    fn plan_apply_after_a_failed_attempt_treats_our_own_values_as_written() {
        let env = Environment::Dev;
        let mut p = proposal(env, names::HOLDS_TTL_SECONDS, "300");
        let written = FlagSet::defaults(env).with_raw(names::HOLDS_TTL_SECONDS, "300").expect("valid");
        // First attempt: the new value already there means someone else wrote it: stale.
        assert_eq!(p.plan_apply(&written).map_err(|e| e.code()), Err("stale_proposal"));
        p.approve(actor("bob"), t0()).expect("approve");
        p.mark_apply_failed().expect("failed");
        assert_eq!(values(p.plan_apply(&written)), Ok(vec![("300".into(), true)]));
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
        p.changes[0].flag = "removed.flag".into();
        assert_eq!(p.approve(actor("bob"), t0()), Err(WorkflowError::UnknownFlag("removed.flag".into())));
        assert!(p.approvals.is_empty());
        assert_eq!(p.plan_apply(&FlagSet::defaults(Environment::Prod)).map_err(|e| e.code()), Err("unknown_flag"));
    }

    #[test]
    fn proposal_serde_round_trips() {
        let mut p = proposal(Environment::Prod, names::EMAIL_PROVIDER, "resend");
        p.approve(actor("bob"), t0()).expect("approve");
        let json = serde_json::to_string(&p).expect("json");
        assert!(json.contains("\"status\":\"approved\""), "{json}");
        let back: Proposal = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, p);
        assert_eq!(p.changes[0].audit_new(), "resend");
        assert_eq!(p.changes[0].audit_old(), None);
        assert!(format!("{p:?}").contains("resend"));
    }

    // ---- grouped proposals ----

    fn req(flag: &str, value: &str) -> ChangeRequest {
        ChangeRequest::new(flag, value)
    }

    #[test]
    fn grouped_changes_are_validated_over_the_combined_result() {
        let env = Environment::Prod;
        let set = FlagSet::defaults(env);
        // Alone, dropping adjacency breaks FR001; together with merges off it is fine.
        let group = [req(names::ALLOCATOR_MERGES_ENABLED, "false"), req(names::ALLOCATOR_REQUIRE_ADJACENCY, "false")];
        let v = validate_changes(&set, env, &group).expect("combined result is consistent");
        assert_eq!(v.len(), 2);
        // The prod kill switch is one proposal: strict conflicts off with its reason.
        let kill = [
            req(names::HOLDS_STRICT_CONFLICTS, "false"),
            req(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "INC-9 false 409s"),
        ];
        validate_changes(&set, env, &kill).expect("FR002 satisfied by the group");
        let e = validate_changes(&set, env, &kill[..1]).expect_err("FR002 alone");
        assert_eq!(e.code(), "contradiction");
        // Shape errors.
        assert_eq!(validate_changes(&set, env, &[]), Err(ChangeRefused::ChangeCount));
        let many: Vec<ChangeRequest> = (0..=MAX_CHANGES).map(|_| req(names::HOLDS_TTL_SECONDS, "300")).collect();
        assert_eq!(validate_changes(&set, env, &many), Err(ChangeRefused::ChangeCount));
        let dup = [req(names::HOLDS_TTL_SECONDS, "300"), req(names::HOLDS_TTL_SECONDS, "240")];
        assert_eq!(validate_changes(&set, env, &dup), Err(ChangeRefused::DuplicateFlag { flag: "holds.ttlSeconds" }));
        let same = [req(names::HOLDS_TTL_SECONDS, "300"), req(names::EMAIL_PROVIDER, "ses")];
        assert_eq!(validate_changes(&set, env, &same).map_err(|e| e.code()), Err("no_change"));
    }

    #[test]
    fn a_grouped_proposal_needs_the_most_any_change_needs_and_one_round() {
        let env = Environment::Prod;
        let group = [req(names::HOLDS_TTL_SECONDS, "300"), req(names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT, "50")];
        let mut p = propose_changes(
            &FlagSet::defaults(env),
            env,
            &group,
            |f| (f == names::HOLDS_TTL_SECONDS).then(|| "180".to_string()),
            actor("alice"),
            ProposalId::new_random(),
            t0(),
        )
        .expect("valid");
        assert_eq!(p.flags(), [names::HOLDS_TTL_SECONDS, names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT]);
        assert_eq!(p.changes[0].old_raw.as_deref(), Some("180"));
        assert_eq!(p.changes[1].old_raw, None);
        assert_eq!(p.approvals_required(), Ok(2), "critical in prod");
        assert_eq!(p.approve(actor("bob"), t0()), Ok(ApprovalOutcome::NeedsMore(1)));
        assert_eq!(p.approve(actor("carol"), t0()), Ok(ApprovalOutcome::ReadyToApply));
        assert_eq!(values(p.plan_apply(&FlagSet::defaults(env))).map(|v| v.len()), Ok(2));
    }

    // ---- break-glass ----

    fn kill_group() -> [ChangeRequest; 2] {
        [req(names::HOLDS_STRICT_CONFLICTS, "false"), req(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "INC-9")]
    }

    #[test]
    fn break_glass_is_only_for_kill_switches_turned_off() {
        let env = Environment::Prod;
        let set = FlagSet::defaults(env);
        let p = break_glass(&set, env, &kill_group(), |_| None, actor("olga"), ProposalId::new_random(), t0())
            .expect("kill switch off with its reason");
        assert_eq!((p.status, p.break_glass, p.approvals_required()), (ProposalStatus::Approved, true, Ok(0)));
        p.check_can_apply(t0()).expect("applicable at once");
        let refused = |group: &[ChangeRequest]| {
            break_glass(&set, env, group, |_| None, actor("olga"), ProposalId::new_random(), t0())
                .map(|_| ())
                .map_err(|e| e.code())
        };
        // Not a kill switch at all.
        assert_eq!(refused(&[req(names::HOLDS_TTL_SECONDS, "300")]), Err("break_glass_not_allowed"));
        assert_eq!(refused(&[req(names::METRICS_DATADOG_ENABLED, "false")]), Err("break_glass_not_allowed"));
        // A kill switch plus an unrelated flag.
        let mut extra = kill_group().to_vec();
        extra.push(req(names::HOLDS_TTL_SECONDS, "300"));
        assert_eq!(refused(&extra), Err("break_glass_not_allowed"));
        // The reason alone, or with a blank value, is not a kill switch pulled.
        assert_eq!(refused(&kill_group()[1..]), Err("break_glass_not_allowed"));
        // Still validated: off without a reason breaks FR002 in prod.
        assert_eq!(refused(&kill_group()[..1]), Err("contradiction"));
        // Turning the switch back on is never break-glass.
        let off = set
            .with_raw(names::HOLDS_STRICT_CONFLICTS, "false")
            .and_then(|s| s.with_raw(names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "INC-9"))
            .expect("valid");
        let e = break_glass(
            &off,
            env,
            &[req(names::HOLDS_STRICT_CONFLICTS, "true")],
            |_| None,
            actor("olga"),
            ProposalId::new_random(),
            t0(),
        )
        .expect_err("on needs approval");
        assert_eq!(e.code(), "break_glass_not_allowed");
        // In staging the switch alone is enough (FR002 is prod only).
        let staging = Environment::Staging;
        break_glass(
            &FlagSet::defaults(staging),
            staging,
            &kill_group()[..1],
            |_| None,
            actor("olga"),
            ProposalId::new_random(),
            t0(),
        )
        .expect("staging");
    }

    #[test]
    fn review_needs_a_second_person_within_24_hours() {
        let env = Environment::Prod;
        let p = break_glass(
            &FlagSet::defaults(env),
            env,
            &kill_group(),
            |_| None,
            actor("olga"),
            ProposalId::new_random(),
            t0(),
        )
        .expect("valid");
        let mut r = Review::open(&p, t0());
        assert_eq!(r.due_at - r.opened_at, TimeDelta::hours(24));
        assert!(!r.is_overdue(t0() + TimeDelta::hours(23)));
        assert!(r.is_overdue(t0() + TimeDelta::hours(24)));
        for me in ["olga", "OLGA", "ｏｌｇａ"] {
            assert_eq!(r.acknowledge(actor(me), t0()), Err(WorkflowError::SelfReview), "{me}");
        }
        assert_eq!(r.acknowledged_by, None);
        r.acknowledge(actor("amir"), t0() + TimeDelta::hours(30)).expect("late but acknowledged");
        assert!(!r.is_overdue(t0() + TimeDelta::hours(48)), "acknowledged is never overdue");
        assert_eq!(r.acknowledge(actor("bob"), t0()), Err(WorkflowError::AlreadyAcknowledged));
        assert_eq!(WorkflowError::SelfReview.code(), "self_review");
        assert_eq!(WorkflowError::AlreadyAcknowledged.code(), "already_acknowledged");
    }
}
