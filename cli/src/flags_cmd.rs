//! `holdfast flags …`: the registry doc, the audit trail, the effective matrix, the local
//! handler for the flag approver, and the flag-evaluation benchmark.

use crate::gateway::Handler;
use crate::Res;
use clap::Subcommand;
use flag_approver::ssm::SsmFlags;
use flag_approver::store::{AuditQuery, AUDIT_MAX_LIMIT};
use holdfast_adapters::config::Config;
use holdfast_adapters::flags::FlagLoader;
use holdfast_shared::flags::{self, Environment};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum FlagsCmd {
    /// Regenerate docs/feature-flags/registry.md from the registry.
    Doc {
        #[arg(long, default_value = "docs/feature-flags/registry.md")]
        out: std::path::PathBuf,
    },
    /// Print the flag audit trail (newest first) from the database (DATABASE_URL).
    Audit {
        #[arg(long)]
        flag: Option<String>,
        #[arg(long)]
        environment: Option<Environment>,
        /// Only the rows of one proposal.
        #[arg(long)]
        proposal: Option<holdfast_shared::ids::ProposalId>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective value of every flag in every environment, read from SSM under
    /// HOLDFAST_SSM_ROOT (default /holdfast), with the rules each environment breaks.
    Matrix {
        #[arg(long)]
        json: bool,
    },
    /// Time the runbook's prod kill-switch procedure end to end (docs/runbooks/feature-flags.md,
    /// "Kill switch"): one ops member's break-glass through the flag approver's handler until a
    /// warm holds-API flag cache (30 s TTL, just refreshed: the worst case) serves strict
    /// conflicts off; then the reviewer's acknowledgement. Uses a throwaway database
    /// (`holdfast_flags_drill`, recreated) and a throwaway SSM root on the configured SSM.
    KillSwitchDrill {
        /// Repetitions; each is reported, then the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Measure cached flag evaluation (FlagLoader::get warm, typed getters) and SSM calls per
    /// warm call, against the configured SSM (the emulator locally).
    Bench {
        /// Warm calls per run.
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
}

pub async fn run(cmd: FlagsCmd) -> Res {
    match cmd {
        FlagsCmd::Doc { out } => {
            std::fs::write(&out, holdfast_shared::flags::render_registry_markdown())?;
            println!("wrote {}", out.display());
            Ok(())
        }
        FlagsCmd::Audit { flag, environment, proposal, limit, json } => {
            audit(
                AuditQuery {
                    flag,
                    env: environment,
                    proposal,
                    before_id: None,
                    limit: limit.clamp(1, AUDIT_MAX_LIMIT),
                },
                json,
            )
            .await
        }
        FlagsCmd::Matrix { json } => matrix(json).await,
        FlagsCmd::Bench { iterations, runs } => bench(iterations, runs.max(1)).await,
        FlagsCmd::KillSwitchDrill { runs } => kill_switch_drill(runs.max(1)).await,
    }
}

/// The flag approver behind the local gateway (`holdfast local`), under `/flags`.
pub async fn local_handler(cfg: &Config) -> Res<Handler> {
    let svc = Arc::new(flag_approver::build(cfg).await?);
    Ok(Arc::new(move |req| {
        let svc = svc.clone();
        Box::pin(async move { flag_approver::api::handle(&svc, req).await })
    }))
}

async fn audit(q: AuditQuery, json: bool) -> Res {
    let cfg = Config::from_env()?;
    let pool = crate::local::pool(&cfg).await?;
    let client = pool.get().await?;
    let rows = flag_approver::store::read_audit(&client, &q).await.map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no audit rows match");
        return Ok(());
    }
    println!(
        "{:<6} {:<20} {:<16} {:<8} {:<36} {:<22} {:<16} {:<16} detail / reason",
        "id", "at (UTC)", "action", "env", "flag", "actor", "before", "after"
    );
    for r in rows {
        let cut = |s: Option<&str>, n: usize| {
            let s = s.unwrap_or("-");
            if s.chars().count() > n {
                format!("{}…", s.chars().take(n - 1).collect::<String>())
            } else {
                s.to_string()
            }
        };
        let note = [r.detail.as_deref(), r.reason.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" / ");
        println!(
            "{:<6} {:<20} {:<16} {:<8} {:<36} {:<22} {:<16} {:<16} {}",
            r.id,
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.action,
            r.environment,
            cut(Some(&r.flag), 36),
            cut(Some(&r.actor), 22),
            cut(r.before.as_deref(), 16),
            cut(r.after.as_deref(), 16),
            note.replace('\n', " ")
        );
    }
    Ok(())
}

async fn matrix(json: bool) -> Res {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = SsmFlags::new(aws_sdk_ssm::Client::new(&sdk), flag_approver::ssm_root_from_env())?;
    let m = flag_approver::service::matrix(&ssm).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!("SSM root {}   (* set in SSM, ! invalid in SSM: default used, ? SSM unavailable)", ssm.root());
    println!("{:<42} {:<22} {:<22} {:<22}", "flag", "dev", "staging", "prod");
    for f in &m.flags {
        let cell = |env: Environment| {
            f.values.get(&env).map_or("-".to_string(), |c| {
                let mark = match c.source {
                    "ssm" => "*",
                    "invalid" => "!",
                    "unavailable" => "?",
                    _ => "",
                };
                let v = c.value.as_deref().unwrap_or("?");
                let v = if v.is_empty() { "\"\"" } else { v };
                let v: String = v.chars().take(20).collect();
                format!("{v}{mark}")
            })
        };
        println!(
            "{:<42} {:<22} {:<22} {:<22}",
            f.name,
            cell(Environment::Dev),
            cell(Environment::Staging),
            cell(Environment::Prod)
        );
    }
    for e in &m.environments {
        let rules: Vec<String> =
            e.violations.iter().map(|v| format!("{} ({}, {})", v.rule_id, v.severity, v.title)).collect();
        println!(
            "{}: ssm {}; rules broken: {}; invalid values: {}",
            e.environment,
            e.ssm,
            if rules.is_empty() { "none".to_string() } else { rules.join("; ") },
            e.problems.len()
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Benchmark of the cached loader as every function uses it. Baseline in the same run: one
/// uncached SSM read (GetParametersByPath), which is what every call would cost without the
/// cache.
async fn bench(iterations: u32, runs: usize) -> Res {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let prefix = format!("/holdfast-bench/{}/prod", uuid::Uuid::new_v4().simple());
    // A realistic set: a few overrides, the rest defaults.
    let overrides =
        [(flags::names::HOLDS_TTL_SECONDS, "240"), (flags::names::EMAIL_REQUEST_RECEIVED_DELAY_MINUTES, "10")];
    for (name, value) in overrides {
        client
            .put_parameter()
            .name(flags::ssm_parameter_name(&prefix, name))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await?;
    }
    let loader = FlagLoader::unrecorded(client.clone(), Environment::Prod, prefix.clone(), Duration::from_secs(3600));

    // Baseline: uncached reads (a fresh loader each time, so every get goes to SSM).
    let mut cold_ms = Vec::new();
    for _ in 0..runs {
        let fresh =
            FlagLoader::unrecorded(client.clone(), Environment::Prod, prefix.clone(), Duration::from_secs(3600));
        let t = Instant::now();
        let snap = fresh.get().await;
        cold_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if snap.origin != holdfast_adapters::flags::FlagOrigin::Ssm {
            return Err("SSM unreachable: start the emulator (./scripts/services.sh) and source .local/env".into());
        }
    }

    let first = loader.get().await; // cold start: the one SSM read
    assert_eq!(first.set.hold_ttl_seconds(), 240, "the first read is the real value");
    let calls_after_warmup = loader.ssm_calls();

    let mut get_ns = Vec::new();
    let mut getter_ns = Vec::new();
    let mut both_ns = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..iterations {
            black_box(loader.get().await);
        }
        get_ns.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));

        let set = loader.get().await.set;
        let t = Instant::now();
        for _ in 0..iterations {
            let s = black_box(&set);
            black_box(s.hold_ttl_seconds());
        }
        getter_ns.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));

        // What a handler does per invocation: get the snapshot, read three flags.
        let t = Instant::now();
        for _ in 0..iterations {
            let snap = loader.get().await;
            black_box((snap.set.strict_conflicts(), snap.set.strict_rollout_percent(), snap.set.hold_ttl_seconds()));
        }
        both_ns.push(t.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    let warm_calls = loader.ssm_calls() - calls_after_warmup;
    let warm_invocations = u64::from(iterations) * 2 * runs as u64;

    for (name, _) in overrides {
        let _ = client.delete_parameter().name(flags::ssm_parameter_name(&prefix, name)).send().await;
    }

    let cold = median(cold_ms);
    let get = median(get_ns);
    let getter = median(getter_ns);
    let both = median(both_ns);
    println!("flag evaluation benchmark ({runs} runs x {iterations} warm calls; medians)");
    println!("  baseline: uncached SSM read (GetParametersByPath)   {cold:>10.3} ms");
    println!(
        "  FlagLoader::get, warm (cache hit)                  {get:>10.1} ns   ({:.0}x cheaper than the read)",
        cold * 1e6 / get
    );
    println!("  typed getter (FlagSet::hold_ttl_seconds)           {getter:>10.1} ns");
    println!("  per invocation: get + 3 typed getters              {both:>10.1} ns");
    println!("  SSM calls during {warm_invocations} warm invocations:   {warm_calls}  (per warm invocation: {:.6}; target 0)", warm_calls as f64 / warm_invocations as f64);
    Ok(())
}

const DRILL_DB: &str = "holdfast_flags_drill";

/// A request as API Gateway hands it to the flag approver; `who` is a dev token
/// `sub;groups=a,b`, turned into the claims `sub` and `groups` as the local gateway does.
fn drill_request(method: &str, path: &str, body: &str, who: &str) -> Result<lambda_http::Request, String> {
    use lambda_http::http::{header, HeaderMap, HeaderValue, Method};
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let ev = holdfast_adapters::http::apigw_v2_http_request(method, path, "", &headers, body, Some(who));
    holdfast_adapters::http::lambda_request(&ev).map_err(|e| e.to_string())
}

async fn drill_call(
    svc: &flag_approver::FlagApprover,
    method: &str,
    path: &str,
    body: &str,
    who: &str,
) -> Res<(u16, serde_json::Value)> {
    let resp = flag_approver::api::handle(svc, drill_request(method, path, body, who)?).await;
    let status = resp.status().as_u16();
    let v = match resp.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t)?,
        lambda_http::Body::Binary(b) => serde_json::from_slice(b)?,
        _ => serde_json::Value::Null,
    };
    Ok((status, v))
}

/// See [`FlagsCmd::KillSwitchDrill`].
async fn kill_switch_drill(runs: usize) -> Res {
    let pool = crate::local::scratch_database(DRILL_DB, 4).await?.pool;
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let ops = "olga;groups=holdfast-ops";
    let reviewer = "amir;groups=holdfast-flag-approvers";
    let mut effective_s = Vec::new();
    println!(
        "kill-switch drill: prod strict conflicts off by break-glass; holds-API flag cache TTL {} s",
        holds_api::FLAG_TTL.as_secs()
    );
    for run in 1..=runs {
        let root = format!("/holdfast-drill/{}", uuid::Uuid::new_v4().simple());
        let svc = flag_approver::FlagApprover::new(pool.clone(), SsmFlags::new(client.clone(), root.clone())?);
        let prefix = format!("{root}/prod");
        // A warm holds-API container that has just refreshed its flags: the longest wait.
        let holds = FlagLoader::unrecorded(client.clone(), Environment::Prod, prefix.clone(), holds_api::FLAG_TTL);
        if !holds.get().await.set.strict_conflicts() {
            return Err("strict conflicts should start on".into());
        }
        let t0 = Instant::now();
        // Step 1: look at the matrix (strict conflicts on in prod).
        let (s, _) = drill_call(&svc, "GET", "/flags/matrix", "", ops).await?;
        let t_matrix = t0.elapsed();
        // Step 2: break-glass, one request, one person.
        let body = serde_json::json!({
            "environment": "prod",
            "changes": [
                { "flag": flags::names::HOLDS_STRICT_CONFLICTS, "value": false },
                { "flag": flags::names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON, "value": "DRILL false 409s, @olga" }
            ],
            "reason": "DRILL false 409s, @olga"
        });
        let (s2, p) = drill_call(&svc, "POST", "/flags/break-glass", &body.to_string(), ops).await?;
        let t_applied = t0.elapsed();
        if s != 200 || s2 != 201 || p["status"] != "applied" {
            return Err(format!("drill failed: matrix {s}, break-glass {s2}: {p}").into());
        }
        // Step 3: the holds API serves it (poll the warm cache as a request would).
        while holds.get().await.set.strict_conflicts() {
            if t0.elapsed() > Duration::from_secs(120) {
                return Err("the holds-API cache never saw the kill switch".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t_effective = t0.elapsed();
        // Afterwards: the reviewer acknowledges (not part of the incident clock).
        let id = p["id"].as_str().unwrap_or_default().to_string();
        let r0 = Instant::now();
        let (s3, _) = drill_call(&svc, "GET", "/flags/reviews", "", reviewer).await?;
        let (s4, r) = drill_call(
            &svc,
            "POST",
            &format!("/flags/reviews/{id}/acknowledge"),
            r#"{"reason":"drill reviewed"}"#,
            reviewer,
        )
        .await?;
        let t_review = r0.elapsed();
        if s3 != 200 || s4 != 200 || r["status"] != "acknowledged" {
            return Err(format!("review failed: {s3} {s4}: {r}").into());
        }
        println!(
            "  run {run}: matrix {:.1} ms, break-glass applied {:.1} ms, holds API serving it {:.2} s; review ack {:.1} ms",
            t_matrix.as_secs_f64() * 1e3,
            (t_applied - t_matrix).as_secs_f64() * 1e3,
            t_effective.as_secs_f64(),
            t_review.as_secs_f64() * 1e3
        );
        effective_s.push(t_effective.as_secs_f64());
        for name in [flags::names::HOLDS_STRICT_CONFLICTS, flags::names::HOLDS_STRICT_CONFLICTS_KILL_SWITCH_REASON] {
            let _ = client.delete_parameter().name(flags::ssm_parameter_name(&prefix, name)).send().await;
        }
    }
    println!(
        "median: {:.2} s from the first request to strict conflicts off in a warm holds-API container (target <= 60 s); people: 1 ops member, then 1 reviewer",
        median(effective_s)
    );
    Ok(())
}
