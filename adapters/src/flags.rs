//! The one cached flag loader every function uses.
//!
//! Reads the environment's flags from SSM by path, validates them against the registry, caches
//! them for a TTL, and never fails: when SSM is unreachable it serves the last good set, and
//! before any good read the registry's safe defaults. The first read after a cold start goes to
//! SSM (the old system returned the default there).
//!
//! A contradictory set read from SSM (an out-of-band edit: the flag approver refuses such
//! changes) is served as read, logged as a warning on every refresh, and recorded once per
//! change (per container) as a `flags.contradiction` event: the `FlagContradictions` alarm's
//! source. A deployed function's loader is built with [`FlagLoader::new`], which takes the
//! recorder, so none can forget it; [`FlagLoader::unrecorded`] is for benchmarks and tests.

use crate::events::EventRecorder;
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Operation, Outcome, Source};
use holdfast_shared::flags::{self, Environment, FlagProblem, FlagSet, RuleViolation, Severity};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Where the set being served came from (visible in logs and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOrigin {
    Ssm,
    LastGood,
    Defaults,
}

#[derive(Debug, Clone)]
pub struct FlagSnapshot {
    pub set: Arc<FlagSet>,
    pub origin: FlagOrigin,
    /// Invalid or unknown values seen in SSM (each fell back to its default).
    pub problems: Vec<FlagProblem>,
    /// Contradiction rules the effective set violates (logged as a warning; never fatal).
    pub violations: Vec<RuleViolation>,
}

/// One flag parameter as stored in SSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    /// The flag name (the parameter name relative to `<prefix>/flags/`).
    pub flag: String,
    pub value: String,
    /// SSM's version of the parameter (1 for the first write).
    pub version: i64,
}

/// A failed SSM read. The message is SDK diagnostics (no parameter values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSM read failed: {0}")]
pub struct SsmReadError(pub String);

/// Reads every flag parameter under `<prefix>/flags/` (decrypted), one `GetParametersByPath`
/// call per page of 10. Parameters that are not flags of this prefix are skipped. `calls` counts
/// the SSM requests made.
pub async fn read_flag_parameters(
    ssm: &aws_sdk_ssm::Client,
    prefix: &str,
    calls: &AtomicU64,
) -> Result<Vec<RawFlag>, SsmReadError> {
    let path = flags::ssm_flags_path(prefix);
    let mut out = Vec::new();
    let mut pages =
        ssm.get_parameters_by_path().path(&path).recursive(true).with_decryption(true).into_paginator().send();
    while let Some(page) = pages.next().await {
        calls.fetch_add(1, Ordering::Relaxed);
        let page = page.map_err(|e| SsmReadError(format!("{}", aws_sdk_ssm::error::DisplayErrorContext(&e))))?;
        for p in page.parameters.unwrap_or_default() {
            if let (Some(name), Some(value)) = (p.name, p.value) {
                if let Some(flag) = flags::flag_name_from_parameter(prefix, &name) {
                    out.push(RawFlag { flag: flag.to_string(), value, version: p.version });
                }
            }
        }
    }
    Ok(out)
}

struct Cache {
    fetched_at: Instant,
    snapshot: FlagSnapshot,
    last_good: Option<Arc<FlagSet>>,
    /// Rule ids of the last contradiction event recorded (to record once per change).
    reported: Vec<&'static str>,
}

pub struct FlagLoader {
    ssm: aws_sdk_ssm::Client,
    env: Environment,
    prefix: String,
    ttl: Duration,
    cache: Mutex<Option<Cache>>,
    /// `None` only for [`FlagLoader::unrecorded`].
    recorder: Option<(EventRecorder, Source)>,
    ssm_calls: AtomicU64,
}

impl FlagLoader {
    /// The loader of a deployed function: a contradictory set read from SSM is recorded through
    /// `recorder` as a `flags.contradiction` event from `source` (metric `FlagContradictions`).
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        env: Environment,
        prefix: impl Into<String>,
        ttl: Duration,
        recorder: EventRecorder,
        source: Source,
    ) -> Self {
        Self::build(ssm, env, prefix.into(), ttl, Some((recorder, source)))
    }

    /// A loader that records no events, for benchmarks and tests that do not look at them.
    /// Never for a deployed function: its contradictions would reach no alarm.
    pub fn unrecorded(ssm: aws_sdk_ssm::Client, env: Environment, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self::build(ssm, env, prefix.into(), ttl, None)
    }

    fn build(
        ssm: aws_sdk_ssm::Client,
        env: Environment,
        prefix: String,
        ttl: Duration,
        recorder: Option<(EventRecorder, Source)>,
    ) -> Self {
        Self { ssm, env, prefix, ttl, cache: Mutex::new(None), recorder, ssm_calls: AtomicU64::new(0) }
    }

    pub fn environment(&self) -> Environment {
        self.env
    }

    /// SSM requests made so far by this loader (for benchmarks and tests: a warm call makes
    /// none).
    pub fn ssm_calls(&self) -> u64 {
        self.ssm_calls.load(Ordering::Relaxed)
    }

    /// The current flags. Warm calls within the TTL make no SSM call. Concurrent callers after
    /// expiry share one refresh (the mutex), so a burst does not stampede SSM.
    pub async fn get(&self) -> FlagSnapshot {
        let mut guard = self.cache.lock().await;
        if let Some(c) = guard.as_ref() {
            // A fallback snapshot is retried sooner, so recovery does not wait a full TTL.
            let ttl =
                if c.snapshot.origin == FlagOrigin::Ssm { self.ttl } else { self.ttl.min(Duration::from_secs(5)) };
            if c.fetched_at.elapsed() < ttl {
                return c.snapshot.clone();
            }
        }
        let last_good = guard.as_ref().and_then(|c| c.last_good.clone());
        let mut reported = guard.as_ref().map(|c| c.reported.clone()).unwrap_or_default();
        let snapshot = match self.fetch().await {
            Ok(raw) => {
                let (set, problems) = FlagSet::from_raw(self.env, &raw);
                let violations = flags::check(&set, self.env);
                if !problems.is_empty() {
                    tracing::warn!(env = %self.env, problems = ?problems.iter().map(|p| p.code()).collect::<Vec<_>>(), "invalid flag values in SSM; defaults used for them");
                }
                if !violations.is_empty() {
                    tracing::warn!(env = %self.env, rules = ?violations.iter().map(|v| v.rule_id).collect::<Vec<_>>(), "effective flag set is contradictory");
                }
                FlagSnapshot { set: Arc::new(set), origin: FlagOrigin::Ssm, problems, violations }
            }
            Err(e) => {
                let (set, origin) = match &last_good {
                    Some(s) => (s.clone(), FlagOrigin::LastGood),
                    None => (Arc::new(FlagSet::defaults(self.env)), FlagOrigin::Defaults),
                };
                tracing::warn!(error = %e, origin = ?origin, "SSM unreachable; serving fallback flags");
                FlagSnapshot { set, origin, problems: vec![], violations: vec![] }
            }
        };
        // Record a contradiction event when the set of violated rules read from SSM changes.
        let mut to_record = None;
        if snapshot.origin == FlagOrigin::Ssm {
            let ids: Vec<&'static str> = snapshot.violations.iter().map(|v| v.rule_id).collect();
            if ids != reported {
                if !ids.is_empty() {
                    to_record = Some(snapshot.violations.clone());
                }
                reported = ids;
            }
        }
        let last_good = if snapshot.origin == FlagOrigin::Ssm { Some(snapshot.set.clone()) } else { last_good };
        *guard = Some(Cache { fetched_at: Instant::now(), snapshot: snapshot.clone(), last_good, reported });
        drop(guard);
        if let (Some(violations), Some((recorder, source))) = (to_record, &self.recorder) {
            recorder.record(&contradiction_event(*source, &violations)).await;
        }
        snapshot
    }

    /// Drop the cache so the next `get` reads SSM (after this process changed a flag).
    pub async fn invalidate(&self) {
        if let Some(c) = self.cache.lock().await.as_mut() {
            c.fetched_at = Instant::now() - self.ttl - Duration::from_secs(3600);
        }
    }

    async fn fetch(&self) -> Result<Vec<(String, String)>, SsmReadError> {
        let raw = read_flag_parameters(&self.ssm, &self.prefix, &self.ssm_calls).await?;
        Ok(raw.into_iter().map(|r| (r.flag, r.value)).collect())
    }
}

/// The `flags.contradiction` event: the first error-severity rule id (else the first warning)
/// as the error code, e.g. `fr001`. Rule ids are codes, never values.
fn contradiction_event(source: Source, violations: &[RuleViolation]) -> ObservabilityEvent {
    let first = violations.iter().find(|v| v.severity == Severity::Error).or_else(|| violations.first());
    let code = first.map(|v| v.rule_id.to_ascii_lowercase()).unwrap_or_default();
    ObservabilityEvent::new(source, EventType::FlagsContradiction)
        .context(EventContext::new().operation(Operation::FlagChange).outcome(Outcome::Error).error_code_str(&code))
}
