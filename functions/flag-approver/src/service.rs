//! The change workflow with its IO: validate against SSM, persist proposals, apply to SSM,
//! append the audit log. The rules themselves are `holdfast_shared::flags` (pure).

use crate::error::ApproverError;
use crate::ssm::{EnvFlags, SsmFlags};
use crate::store::{self, AuditAction, AuditEntry, AuditQuery, AuditRow, StoredProposal};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::flags::{
    self, lookup, names, Actor, ApprovalOutcome, ChangeRefused, Environment, FlagDef, FlagValue, ProposalStatus,
    WorkflowError,
};
use holdfast_shared::ids::ProposalId;
use serde::Serialize;
use std::collections::BTreeMap;

/// Who is acting, from the API Gateway authorizer, and the request id for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub request_id: Option<String>,
}

/// The actor recorded for steps nobody took explicitly (expiry).
const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone)]
pub struct ProposeInput {
    pub flag: String,
    pub env: Environment,
    /// The new value as a raw string (canonicalised by the registry).
    pub value: String,
    pub reason: String,
}

/// A proposal as the API shows it. Values go through the registry's redaction.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    pub id: ProposalId,
    pub flag: String,
    pub environment: Environment,
    /// The SSM value when proposed; `null` when the parameter was absent (default applied).
    pub before: Option<String>,
    pub after: String,
    pub reason: String,
    pub proposer: String,
    pub approvals: Vec<String>,
    pub approvals_required: u8,
    pub approvals_missing: u8,
    pub rejected_by: Option<String>,
    /// As of now (a live proposal past `expires_at` shows `expired`).
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub ssm_version: Option<i64>,
    /// Code of the last failed or refused apply, e.g. `ssm_unavailable`, `stale_proposal`.
    pub last_error: Option<String>,
}

impl ProposalView {
    pub fn of(s: &StoredProposal, now: DateTime<Utc>) -> Self {
        let p = &s.proposal;
        let required = p.approvals_required().unwrap_or(1);
        let have = u8::try_from(p.approvals.len()).unwrap_or(u8::MAX);
        Self {
            id: p.id,
            flag: p.flag.clone(),
            environment: p.env,
            before: p.audit_old(),
            after: p.audit_new(),
            reason: s.reason.clone(),
            proposer: p.proposer.to_string(),
            approvals: p.approvals.iter().map(ToString::to_string).collect(),
            approvals_required: required,
            approvals_missing: required.saturating_sub(have),
            rejected_by: p.rejected_by.as_ref().map(ToString::to_string),
            status: p.status_at(now),
            created_at: p.created_at,
            expires_at: p.expires_at,
            applied_at: s.applied_at,
            ssm_version: s.ssm_version,
            last_error: s.last_error.clone(),
        }
    }
}

/// How an apply attempt ended. The proposal row has been updated and audited in every case.
#[derive(Debug)]
enum ApplyOutcome {
    Applied,
    /// SSM could not be read or written: the proposal is `apply_failed`, retriable.
    Failed,
    /// The change may no longer be written (stale base, new contradiction).
    Refused(ChangeRefused),
}

pub struct FlagApprover {
    pool: Pool,
    ssm: SsmFlags,
}

impl FlagApprover {
    pub fn new(pool: Pool, ssm: SsmFlags) -> Self {
        Self { pool, ssm }
    }

    pub fn ssm(&self) -> &SsmFlags {
        &self.ssm
    }

    /// Validates the change against the target environment's flags as SSM holds them now, and
    /// opens a proposal. A refused change is audited (for registry flags) and answered with the
    /// rule ids.
    pub async fn propose(&self, who: &Caller, input: ProposeInput) -> Result<ProposalView, ApproverError> {
        let def = lookup(&input.flag).ok_or_else(|| ChangeRefused::UnknownFlag { flag: input.flag.clone() });
        let def = def.map_err(ApproverError::Refused)?;
        let env = input.env;
        let current = self.read_ssm(env).await?;
        let old_raw = current.raw_value(def.name).map(|r| r.value.clone());
        let now = Utc::now();
        let result = empty_value_check(def, env, &input.value).and_then(|()| {
            flags::propose(
                &current.set,
                env,
                def.name,
                old_raw.clone(),
                &input.value,
                who.actor.clone(),
                ProposalId::new_random(),
                now,
            )
        });
        let client = self.pool.get().await?;
        let proposal = match result {
            Ok(p) => p,
            Err(refused) => {
                let after = def.parse(&input.value).ok().map(|v| def.display_value(&v));
                store::append_audit(
                    &client,
                    &AuditEntry {
                        action: AuditAction::ProposeRefused,
                        proposal_id: None,
                        actor: who.actor.as_str(),
                        flag: def.name,
                        env,
                        before: old_raw.as_deref().map(|r| def.display_raw(r)),
                        after,
                        reason: Some(&input.reason),
                        request_id: who.request_id.as_deref(),
                        detail: Some(refusal_detail(&refused)),
                    },
                )
                .await?;
                tracing::info!(flag = def.name, env = %env, code = refused.code(), "flag change refused");
                return Err(ApproverError::Refused(refused));
            }
        };
        let mut client = client;
        let tx = client.transaction().await?;
        store::insert_proposal(&tx, &proposal, &input.reason).await?;
        store::append_audit(
            &tx,
            &AuditEntry {
                action: AuditAction::Proposed,
                proposal_id: Some(proposal.id),
                actor: who.actor.as_str(),
                flag: def.name,
                env,
                before: proposal.audit_old(),
                after: Some(proposal.audit_new()),
                reason: Some(&input.reason),
                request_id: who.request_id.as_deref(),
                detail: None,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(proposal = %proposal.id, flag = def.name, env = %env, "flag change proposed");
        let stored = StoredProposal {
            proposal,
            reason: input.reason,
            applied_at: None,
            ssm_version: None,
            last_error: None,
            version: 1,
        };
        Ok(ProposalView::of(&stored, now))
    }

    /// Records an approval by someone other than the proposer; with enough approvals the change
    /// is applied to SSM at once (same transaction, proposal row locked). The answer is the
    /// proposal: `applied`, `pending` (more approvals needed), `apply_failed` (SSM down; retry
    /// with `apply`) or `approved` with `last_error` (refused at apply, e.g. stale).
    pub async fn approve(
        &self,
        who: &Caller,
        id: ProposalId,
        reason: Option<String>,
    ) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        let outcome = match s.proposal.approve(who.actor.clone(), now) {
            Ok(o) => o,
            Err(e) => {
                audit(&tx, &s, AuditAction::ApproveRefused, who, reason.as_deref(), Some(e.code().to_string())).await?;
                tx.commit().await?;
                tracing::info!(proposal = %id, code = e.code(), "approval refused");
                return Err(ApproverError::Workflow(e));
            }
        };
        store::update_proposal(&tx, &mut s).await?;
        let detail = match outcome {
            ApprovalOutcome::NeedsMore(n) => format!("needs {n} more approval(s)"),
            ApprovalOutcome::ReadyToApply => "approved".to_string(),
        };
        audit(&tx, &s, AuditAction::Approved, who, reason.as_deref(), Some(detail)).await?;
        if outcome == ApprovalOutcome::ReadyToApply {
            // Whatever the apply's outcome, it has been recorded: commit the approval with it.
            let _ = self.apply_locked(&tx, &mut s, who, now).await?;
        }
        tx.commit().await?;
        tracing::info!(proposal = %id, status = %s.proposal.status, "flag change approved");
        Ok(ProposalView::of(&s, now))
    }

    /// Rejects a pending proposal or abandons an approved/failed one (anyone may, the proposer
    /// included: stopping a change is always safe).
    pub async fn reject(&self, who: &Caller, id: ProposalId, reason: String) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        s.proposal.reject(who.actor.clone(), now).map_err(ApproverError::Workflow)?;
        store::update_proposal(&tx, &mut s).await?;
        audit(&tx, &s, AuditAction::Rejected, who, Some(&reason), None).await?;
        tx.commit().await?;
        tracing::info!(proposal = %id, "flag change rejected");
        Ok(ProposalView::of(&s, now))
    }

    /// (Re)tries writing an approved change to SSM: the retry path after `apply_failed`.
    pub async fn apply(&self, who: &Caller, id: ProposalId) -> Result<ProposalView, ApproverError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut s = store::lock_proposal(&tx, id).await?;
        let now = Utc::now();
        if self.expire_if_due(&tx, &mut s, now, who).await? {
            tx.commit().await?;
            return Err(ApproverError::Workflow(WorkflowError::Expired));
        }
        let outcome = self.apply_locked(&tx, &mut s, who, now).await;
        tx.commit().await?;
        match outcome? {
            ApplyOutcome::Applied => Ok(ProposalView::of(&s, now)),
            ApplyOutcome::Failed => Err(ApproverError::SsmUnavailable { status: Some(s.proposal.status) }),
            ApplyOutcome::Refused(r) => Err(ApproverError::Refused(r)),
        }
    }

    pub async fn get(&self, id: ProposalId) -> Result<ProposalView, ApproverError> {
        let client = self.pool.get().await?;
        let s = store::get_proposal(&client, id).await?;
        Ok(ProposalView::of(&s, Utc::now()))
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, ApproverError> {
        let client = self.pool.get().await?;
        store::read_audit(&client, q).await
    }

    /// The effective matrix (see [`matrix`]).
    pub async fn matrix(&self) -> Matrix {
        matrix(&self.ssm).await
    }

    async fn read_ssm(&self, env: Environment) -> Result<EnvFlags, ApproverError> {
        self.ssm.read(env).await.map_err(|e| {
            tracing::warn!(env = %env, error = %e, "SSM read failed");
            ApproverError::SsmUnavailable { status: None }
        })
    }

    /// Persists and audits expiry of a live proposal past its deadline.
    async fn expire_if_due<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        now: DateTime<Utc>,
        who: &Caller,
    ) -> Result<bool, ApproverError> {
        if !s.proposal.expire_if_due(now) {
            return Ok(false);
        }
        store::update_proposal(c, s).await?;
        let by = Caller { actor: Actor::new(SYSTEM_ACTOR).expect("a valid constant identity"), ..who.clone() };
        audit(c, s, AuditAction::Expired, &by, None, Some("expired".into())).await?;
        tracing::info!(proposal = %s.proposal.id, "flag change expired");
        Ok(true)
    }

    /// Writes an approved change to SSM. Runs in the caller's transaction with the proposal row
    /// locked; takes the per-flag lock so applies of one flag never interleave. Every outcome is
    /// persisted and audited before returning.
    async fn apply_locked<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        now: DateTime<Utc>,
    ) -> Result<ApplyOutcome, ApproverError> {
        if let Err(e) = s.proposal.check_can_apply(now) {
            audit(c, s, AuditAction::ApplyRefused, who, None, Some(e.code().to_string())).await?;
            return Err(ApproverError::Workflow(e));
        }
        let env = s.proposal.env;
        let def = lookup(&s.proposal.flag).ok_or_else(|| WorkflowError::UnknownFlag(s.proposal.flag.clone()));
        let def = def.map_err(ApproverError::Workflow)?;
        store::lock_flag(c, env, def.name).await?;
        let current = match self.ssm.read(env).await {
            Ok(cur) => cur,
            Err(e) => {
                tracing::warn!(proposal = %s.proposal.id, error = %e, "apply: SSM read failed");
                return self.apply_failed(c, s, who, def, "ssm read failed").await;
            }
        };
        let before = current.raw_value(def.name).map(|r| def.display_raw(&r.value));
        let new_value: Option<FlagValue> = def.parse(&s.proposal.new_raw).ok();
        // An earlier attempt whose outcome we did not learn (timeout) may have written it.
        if s.proposal.status == ProposalStatus::ApplyFailed
            && new_value.is_some()
            && current.set.get(def.name) == new_value.as_ref()
            && (current.raw_value(def.name).is_some() || s.proposal.new_raw.is_empty())
        {
            let version = current.raw_value(def.name).map(|r| r.version);
            return self.applied(c, s, who, def, now, before, version, "already in SSM (earlier attempt)").await;
        }
        let value = match s.proposal.validate_for_apply(&current.set) {
            Ok(v) => v,
            Err(refused) => {
                s.last_error = Some(refused.code().to_string());
                store::update_proposal(c, s).await?;
                let mut e = entry(s, AuditAction::ApplyRefused, who, None, Some(refusal_detail(&refused)));
                e.before = before;
                store::append_audit(c, &e).await?;
                tracing::info!(proposal = %s.proposal.id, code = refused.code(), "apply refused");
                return Ok(ApplyOutcome::Refused(refused));
            }
        };
        match self.ssm.put(env, def, &value.to_ssm_string()).await {
            Ok(version) => self.applied(c, s, who, def, now, before, version, "written to SSM").await,
            Err(e) => {
                tracing::warn!(proposal = %s.proposal.id, error = %e, "apply: SSM write failed");
                self.apply_failed(c, s, who, def, "ssm write failed").await
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // private helper; each is one fact of the audit row
    async fn applied<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        def: &FlagDef,
        now: DateTime<Utc>,
        before: Option<String>,
        version: Option<i64>,
        detail: &str,
    ) -> Result<ApplyOutcome, ApproverError> {
        s.proposal.mark_applied().map_err(ApproverError::Workflow)?;
        s.applied_at = Some(now);
        s.ssm_version = version;
        s.last_error = None;
        store::update_proposal(c, s).await?;
        let mut e = entry(s, AuditAction::Applied, who, None, Some(detail.to_string()));
        e.before = before;
        store::append_audit(c, &e).await?;
        let mut ctx = EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Success);
        ctx = with_request_id(ctx, who);
        if def.name == names::HOLDS_STRICT_CONFLICTS_ROLLOUT_PERCENT {
            if let Some(pct) = def.parse(&s.proposal.new_raw).ok().and_then(|v| v.as_int()) {
                ctx = ctx.rollout_percent(u8::try_from(pct).unwrap_or(100));
            }
        }
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsChanged).context(ctx);
        holdfast_adapters::events::record_with(c, &ev).await?;
        tracing::info!(proposal = %s.proposal.id, flag = def.name, env = %s.proposal.env, "flag change applied");
        Ok(ApplyOutcome::Applied)
    }

    async fn apply_failed<C: GenericClient>(
        &self,
        c: &C,
        s: &mut StoredProposal,
        who: &Caller,
        def: &FlagDef,
        detail: &str,
    ) -> Result<ApplyOutcome, ApproverError> {
        s.proposal.mark_apply_failed().map_err(ApproverError::Workflow)?;
        s.last_error = Some("ssm_unavailable".into());
        store::update_proposal(c, s).await?;
        audit(c, s, AuditAction::ApplyFailed, who, None, Some(format!("ssm_unavailable: {detail}"))).await?;
        let ctx = EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Error);
        let ctx = with_request_id(ctx.error_code_str("ssm_unavailable"), who);
        let ev = ObservabilityEvent::new(Source::FlagApprover, EventType::FlagsChanged)
            .severity(holdfast_shared::events::Severity::Warning)
            .context(ctx);
        holdfast_adapters::events::record_with(c, &ev).await?;
        tracing::warn!(proposal = %s.proposal.id, flag = def.name, "flag change approved but not applied; retriable");
        Ok(ApplyOutcome::Failed)
    }
}

/// The effective value of every flag in every environment, with defaults, where each value
/// comes from, and the rules each environment's set breaks. An environment whose SSM read
/// fails is reported as unavailable (the others are still shown).
pub async fn matrix(ssm: &SsmFlags) -> Matrix {
    let (dev, staging, prod) =
        tokio::join!(ssm.read(Environment::Dev), ssm.read(Environment::Staging), ssm.read(Environment::Prod));
    let reads = [(Environment::Dev, dev), (Environment::Staging, staging), (Environment::Prod, prod)];
    let mut environments = Vec::new();
    let mut cells: BTreeMap<&'static str, BTreeMap<Environment, MatrixCell>> = BTreeMap::new();
    for (env, read) in reads {
        match read {
            Ok(current) => {
                environments.push(EnvSummary {
                    environment: env,
                    prefix: ssm.prefix(env),
                    ssm: "ok",
                    violations: flags::check(&current.set, env)
                        .into_iter()
                        .map(|v| ViolationView { rule_id: v.rule_id, severity: v.severity.as_str(), title: v.title })
                        .collect(),
                    problems: current
                        .problems
                        .iter()
                        .map(|p| ProblemView { code: p.code(), message: p.to_string() })
                        .collect(),
                });
                for (def, value) in current.set.iter() {
                    let source = match current.raw_value(def.name) {
                        None => "default",
                        Some(r) if def.parse(&r.value).is_ok() => "ssm",
                        Some(_) => "invalid",
                    };
                    cells.entry(def.name).or_default().insert(
                        env,
                        MatrixCell {
                            value: Some(def.display_value(value)),
                            default: def.display_value(&def.default_for(env)),
                            source,
                        },
                    );
                }
            }
            Err(e) => {
                tracing::warn!(env = %env, error = %e, "matrix: SSM read failed");
                environments.push(EnvSummary {
                    environment: env,
                    prefix: ssm.prefix(env),
                    ssm: "unavailable",
                    violations: vec![],
                    problems: vec![],
                });
                for def in flags::REGISTRY {
                    cells.entry(def.name).or_default().insert(
                        env,
                        MatrixCell {
                            value: None,
                            default: def.display_value(&def.default_for(env)),
                            source: "unavailable",
                        },
                    );
                }
            }
        }
    }
    let flags = flags::REGISTRY
        .iter()
        .map(|def| FlagRow {
            name: def.name,
            r#type: def.ty.describe(),
            safety: def.safety.as_str(),
            owner: def.owner,
            secret: def.is_secret(),
            values: cells.remove(def.name).unwrap_or_default(),
        })
        .collect();
    Matrix { generated_at: Utc::now(), environments, flags }
}

fn with_request_id(ctx: EventContext, who: &Caller) -> EventContext {
    match who.request_id.as_deref().and_then(|r| uuid::Uuid::parse_str(r).ok()) {
        Some(id) => ctx.request_id(id),
        None => ctx,
    }
}

/// SSM cannot store an empty string: an empty value is written by deleting the parameter,
/// which is only right when the default is empty too.
fn empty_value_check(def: &FlagDef, env: Environment, raw: &str) -> Result<(), ChangeRefused> {
    let Ok(value) = def.parse(raw) else { return Ok(()) }; // the type check reports it
    if value.to_ssm_string().is_empty() && def.default_for(env).to_ssm_string() != "" {
        return Err(ChangeRefused::InvalidValue(holdfast_shared::flags::FlagValueError {
            flag: def.name,
            expected: "a non-empty value (this flag's default is not empty)".into(),
            found: "an empty value".into(),
        }));
    }
    Ok(())
}

/// The audit `detail` of a refusal: its code, and the rule ids for contradictions.
fn refusal_detail(r: &ChangeRefused) -> String {
    match r {
        ChangeRefused::Contradiction { rule_ids, .. } => format!("{}: {}", r.code(), rule_ids.join(",")),
        other => other.code().to_string(),
    }
}

fn entry<'a>(
    s: &'a StoredProposal,
    action: AuditAction,
    who: &'a Caller,
    reason: Option<&'a str>,
    detail: Option<String>,
) -> AuditEntry<'a> {
    let p = &s.proposal;
    AuditEntry {
        action,
        proposal_id: Some(p.id),
        actor: who.actor.as_str(),
        flag: &p.flag,
        env: p.env,
        before: p.audit_old(),
        after: Some(p.audit_new()),
        reason,
        request_id: who.request_id.as_deref(),
        detail,
    }
}

async fn audit<C: GenericClient>(
    c: &C,
    s: &StoredProposal,
    action: AuditAction,
    who: &Caller,
    reason: Option<&str>,
    detail: Option<String>,
) -> Result<(), ApproverError> {
    store::append_audit(c, &entry(s, action, who, reason, detail)).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub generated_at: DateTime<Utc>,
    pub environments: Vec<EnvSummary>,
    pub flags: Vec<FlagRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvSummary {
    pub environment: Environment,
    pub prefix: String,
    /// `ok` or `unavailable`.
    pub ssm: &'static str,
    pub violations: Vec<ViolationView>,
    pub problems: Vec<ProblemView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ViolationView {
    pub rule_id: &'static str,
    pub severity: &'static str,
    pub title: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemView {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagRow {
    pub name: &'static str,
    pub r#type: String,
    pub safety: &'static str,
    pub owner: &'static str,
    pub secret: bool,
    pub values: BTreeMap<Environment, MatrixCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    /// The effective value (redacted for secret flags); `null` when SSM was unavailable.
    pub value: Option<String>,
    pub default: String,
    /// `ssm` (set and valid), `default` (not set), `invalid` (set but invalid: the default
    /// applies) or `unavailable`.
    pub source: &'static str,
}
