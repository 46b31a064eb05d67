//! `holdfast holds …`

use crate::rush::{EmailTypeFigures, RushMode};
use crate::Res;
use clap::Subcommand;
use holdfast_adapters::config::Config;
use std::collections::BTreeMap;

#[derive(Subcommand)]
pub enum HoldsCmd {
    /// Repair live holds written before metadata was required (policy hash, tables, snapshot).
    BackfillMetadata {
        /// Report what would change without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Benchmark hold throughput through the handler vs pgbench running the same SQL and the
    /// bare claim insert; `--instances N`: N Lambda-like instances (pool of 1) via the pooler.
    Bench {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Simulated Lambda instances, each its own service with a pool of one connection.
        #[arg(long)]
        instances: Option<usize>,
        /// With --instances: through the pooler, directly, or both.
        #[arg(long, value_enum, default_value = "both")]
        via: crate::holds_bench::Via,
        /// The runtime role's URL through PgBouncer (set by scripts/services.sh).
        #[arg(long, env = "HOLDFAST_PGBOUNCER_URL")]
        pooler_url: Option<String>,
        /// PgBouncer's admin console URL (default: the pooler URL, database `pgbouncer`).
        #[arg(long, env = "HOLDFAST_PGBOUNCER_ADMIN_URL")]
        pooler_admin_url: Option<String>,
    },
    /// Publish N benchmark restaurants (the demo floor plan, tables of their own; idempotent)
    /// for `holds rush --restaurants N`.
    SeedRestaurants {
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// Floor plan: the demo's 8 tables × this.
        #[arg(long, default_value_t = 1)]
        table_groups: usize,
    },
    /// Reservation drop: N guests within a second for one restaurant's next days, quote → hold
    /// → confirm through a holds API, and the same flows at a low concurrency, in one run.
    Drop {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value = "dev:drop")]
        token: String,
        #[arg(long, default_value_t = 5000)]
        guests: usize,
        /// The guests arrive evenly within this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        within_ms: u64,
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        baseline_concurrency: usize,
        #[arg(long, default_value_t = 30)]
        days: usize,
        /// Half-hour start times per evening (from 17:00 UTC).
        #[arg(long, default_value_t = 7)]
        slots: usize,
        /// Floor plan: the demo's 8 tables × this.
        #[arg(long, default_value_t = 1)]
        table_groups: usize,
        #[arg(long, default_value_t = 2)]
        party: u16,
    },
    /// Drive N concurrent guest flows against a holds API and summarise: quote → hold →
    /// confirm (`--mode hold`), or booking requests with auto-assign (`--mode request`).
    Rush {
        /// `hold`: quote → hold → confirm. `request`: POST /bookings, then poll
        /// GET /bookings/{id} while it is `requested` (the auto-assign job's retries).
        #[arg(long, value_enum, default_value = "hold")]
        mode: crate::rush::RushMode,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token (the local gateway accepts `dev:<name>`).
        #[arg(long, default_value = "dev:rush")]
        token: String,
        #[arg(long, default_value = crate::local::DEMO_RESTAURANT)]
        restaurant: String,
        /// Spread the flows over the N restaurants `holds seed-restaurants` made (instead of
        /// --restaurant).
        #[arg(long)]
        restaurants: Option<usize>,
        #[arg(long, default_value_t = 1000)]
        flows: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Distinct half-hour start times competed for (fewer = more conflicts).
        #[arg(long, default_value_t = 8)]
        slots: usize,
        /// Consecutive days the flows spread over (from --start).
        #[arg(long, default_value_t = 1)]
        days: usize,
        #[arg(long, default_value_t = 2)]
        party: u16,
        /// First start time (RFC 3339); defaults to 19:00 UTC a week from today.
        #[arg(long)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// How long to wait for the run's due emails to be sent before reporting.
        #[arg(long, default_value_t = 60)]
        settle_seconds: u64,
        /// Request mode: how long a guest polls a `requested` booking (the job's retries come
        /// 5 s, 15 s and 45 s apart: ~70 s until it gives up).
        #[arg(long, default_value_t = 90)]
        wait_seconds: u64,
        /// Request mode: seconds between two polls of one booking.
        #[arg(long, default_value_t = 2)]
        poll_seconds: u64,
        /// Request mode: every Nth guest confirmed inline cancels (0 = none), which frees
        /// tables for the pending requests' auto-assign job.
        #[arg(long, default_value_t = 0)]
        cancel_every: usize,
        /// Request mode: seconds after its request that a cancelling guest cancels.
        #[arg(long, default_value_t = 10)]
        cancel_after_seconds: u64,
    },
}

pub async fn run(cmd: HoldsCmd) -> Res {
    match cmd {
        HoldsCmd::BackfillMetadata { dry_run } => {
            let cfg = Config::from_env()?;
            let pool = crate::local::pool(&cfg).await?;
            let c = pool.get().await?;
            let r = holds_api::backfill::backfill_hold_metadata(&c, dry_run).await?;
            println!(
                "{}candidates: {}, repaired: {}, unrepairable (no claims or no policy): {}",
                if dry_run { "[dry run] " } else { "" },
                r.candidates,
                r.repaired,
                r.unrepairable
            );
            Ok(())
        }
        HoldsCmd::Bench { seconds, clients, rounds, instances, via, pooler_url, pooler_admin_url } => {
            let args = crate::holds_bench::BenchArgs {
                seconds,
                clients,
                rounds,
                instances,
                via,
                pooler_url,
                pooler_admin_url,
            };
            crate::holds_bench::run(args).await
        }
        HoldsCmd::SeedRestaurants { count, table_groups } => {
            let pool = crate::local::pool(&Config::from_env()?).await?;
            let ids = crate::bench_seed::seed(&pool, count, table_groups).await?;
            let first = ids.first().map(ToString::to_string).unwrap_or_default();
            let last = ids.last().map(ToString::to_string).unwrap_or_default();
            println!("seeded {} restaurants ({} tables each): {first} … {last}", ids.len(), 8 * table_groups.max(1));
            Ok(())
        }
        HoldsCmd::Drop {
            url,
            token,
            guests,
            within_ms,
            concurrency,
            baseline_concurrency,
            days,
            slots,
            table_groups,
            party,
        } => {
            crate::drop_bench::run(crate::drop_bench::DropArgs {
                base_url: url.trim_end_matches('/').to_string(),
                token,
                guests,
                within: std::time::Duration::from_millis(within_ms),
                concurrency,
                baseline_concurrency,
                days,
                slots,
                table_groups,
                party,
            })
            .await
        }
        HoldsCmd::Rush {
            mode,
            url,
            token,
            restaurant,
            restaurants,
            flows,
            concurrency,
            slots,
            days,
            party,
            start,
            settle_seconds,
            wait_seconds,
            poll_seconds,
            cancel_every,
            cancel_after_seconds,
        } => {
            let start = start.unwrap_or_else(|| {
                let day = (chrono::Utc::now() + chrono::Duration::days(7)).date_naive();
                day.and_hms_opt(19, 0, 0).map(|t| t.and_utc()).unwrap_or_else(chrono::Utc::now)
            });
            // The database (when reachable) for the independent checks; its clock marks the
            // run's start, so the email figures are this run's.
            let db = match Config::from_env() {
                Ok(cfg) => {
                    let pool = crate::local::pool(&cfg).await?;
                    let since = crate::rush::db_now(&pool).await?;
                    Some((cfg, pool, since))
                }
                Err(_) => None,
            };
            let s = crate::rush::run(crate::rush::RushArgs {
                mode,
                base_url: url.trim_end_matches('/').to_string(),
                token,
                restaurants: match restaurants {
                    Some(n) => (0..n).map(|k| crate::bench_seed::seeded_restaurant(k).to_string()).collect(),
                    None => vec![restaurant],
                },
                flows,
                concurrency,
                slots,
                days,
                party,
                start,
                arrival: None,
                wait: std::time::Duration::from_secs(wait_seconds),
                poll_every: std::time::Duration::from_secs(poll_seconds.max(1)),
                cancel_every,
                cancel_after: std::time::Duration::from_secs(cancel_after_seconds),
            })
            .await?;
            let mode_name = match s.mode {
                RushMode::Hold => "hold",
                RushMode::Request => "request",
            };
            println!(
                "rush summary ({mode_name} mode, {} flows, concurrency {concurrency}, {:.1} s)",
                s.flows,
                s.elapsed.as_secs_f64()
            );
            match s.mode {
                RushMode::Hold => {
                    println!(
                        "  holds won {} / lost (409) {} / then won on the offered alternative {} / no table quoted {}",
                        s.holds_won, s.holds_lost, s.won_on_alternative, s.no_quote
                    );
                    println!("  bookings confirmed {}", s.confirmed);
                }
                RushMode::Request => {
                    let r = &s.requests;
                    let refused: Vec<String> = r.refused.iter().map(|(st, n)| format!("{st}: {n}")).collect();
                    println!(
                        "  requests accepted (201) {} / refused {}",
                        r.accepted,
                        if refused.is_empty() { "0".to_string() } else { refused.join(", ") }
                    );
                    println!(
                        "  bookings confirmed {}: inline {} / by the auto-assign job {} / still pending after {wait_seconds} s {}{}",
                        s.confirmed,
                        r.confirmed_inline,
                        r.confirmed_by_job,
                        r.still_pending,
                        if r.other_status > 0 { format!(" / other status {}", r.other_status) } else { String::new() }
                    );
                    if r.cancelled > 0 {
                        println!("  confirmed inline, then cancelled by their guest (--cancel-every) {}", r.cancelled);
                    }
                    let (p50, p95, max) = r.job_confirm_s;
                    if r.confirmed_by_job > 0 {
                        println!(
                            "  request → confirmed by the job, s  p50 {p50:.1}  p95 {p95:.1}  max {max:.1}  (polled every {poll_seconds} s, {} polls)",
                            r.polls
                        );
                    }
                }
            }
            println!("  5xx responses {} / transport errors {}", s.server_errors, s.transport_errors);
            match s.mode {
                RushMode::Hold => {
                    let (p50, p95, p99) = s.hold_latency_ms;
                    println!("  hold latency ms  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}");
                    let ((q50, _, q99), (c50, _, c99)) = (s.quote_latency_ms, s.confirm_latency_ms);
                    println!("  quote ms  p50 {q50:.1}  p99 {q99:.1}; confirm ms  p50 {c50:.1}  p99 {c99:.1}");
                    println!("  throughput {:.0} requests/s ({} answered)", s.throughput(), s.answered);
                    let (p50, p95, p99) = s.all_latency_ms;
                    println!("  all requests ms  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}");
                }
                RushMode::Request => {
                    let (p50, p95, p99) = s.requests.request_latency_ms;
                    println!(
                        "  POST /bookings ms  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}  (inline attempt included)"
                    );
                }
            }
            match db {
                Some((cfg, pool, since)) => {
                    // The relay and the sender run on their own ticks: wait (bounded) until
                    // this run's due emails are settled before reporting.
                    let f = crate::rush::settle(&pool, since, std::time::Duration::from_secs(settle_seconds)).await?;
                    println!("  double bookings found by SQL: {}", f.overlaps);
                    if !f.assignment_jobs.is_empty() {
                        let jobs: Vec<String> = f.assignment_jobs.iter().map(|(st, n)| format!("{st} {n}")).collect();
                        println!("  auto-assign jobs (this run): {}", jobs.join(", "));
                    }
                    print_emails_by_type(&f.by_type);
                    println!(
                        "  all time: email outbox published {}, pending {}; emails sent {}, failed permanently {}",
                        f.outbox_published, f.outbox_pending, f.emails_sent, f.emails_failed
                    );
                    match dlq_depth(&cfg).await {
                        Ok(n) => println!("  email DLQ messages: {n}"),
                        Err(e) => println!("  email DLQ messages: unknown ({e})"),
                    }
                    println!("  observability events recorded: {}", f.events);
                    println!("  metric windows published (per sink): {}", f.metric_windows_published);
                    if f.overlaps > 0 {
                        return Err("double booking detected".into());
                    }
                }
                None => println!("  (set DATABASE_URL/HOLDFAST_ENV to check double bookings by SQL)"),
            }
            if s.server_errors > 0 {
                return Err(format!("{} server errors", s.server_errors).into());
            }
            Ok(())
        }
    }
}

/// This run's emails, one line per type: the sender's outcome, then the outbox rows not yet
/// delivered.
fn print_emails_by_type(by_type: &BTreeMap<String, EmailTypeFigures>) {
    if by_type.is_empty() {
        println!("  emails by type (this run): none");
        return;
    }
    println!("  emails by type (this run):");
    let width = by_type.keys().map(String::len).max().unwrap_or(0);
    for (t, f) in by_type {
        let mut parts = vec![format!("sent {}", f.sent)];
        if f.failed > 0 {
            parts.push(format!("failed {}", f.failed));
        }
        if f.in_progress > 0 {
            parts.push(format!("in progress {}", f.in_progress));
        }
        if !f.skipped.is_empty() {
            let why: Vec<String> = f.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            parts.push(format!("skipped ({})", why.join(", ")));
        }
        let mut outbox = Vec::new();
        if f.outbox_due > 0 {
            outbox.push(format!("due {}", f.outbox_due));
        }
        if f.outbox_deferred > 0 {
            outbox.push(format!("deferred {}", f.outbox_deferred));
        }
        if f.outbox_dead > 0 {
            outbox.push(format!("dead {}", f.outbox_dead));
        }
        if !outbox.is_empty() {
            parts.push(format!("outbox pending: {}", outbox.join(", ")));
        }
        println!("    {t:<width$}  {}", parts.join(" / "));
    }
}

/// Visible + in-flight + delayed messages in the email DLQ (`EMAIL_DLQ_URL`, or the local
/// run's DLQ by name).
async fn dlq_depth(cfg: &Config) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = match &cfg.email_dlq_url {
        Some(u) => u.clone(),
        None => {
            let (_, dlq) = email_sender::local_queue_names(cfg.environment.as_str());
            sqs.get_queue_url().queue_name(&dlq).send().await?.queue_url.ok_or("no DLQ url")?
        }
    };
    let (visible, in_flight, delayed) = email_sender::sqs::queue_depth(&sqs, &url).await?;
    Ok(visible + in_flight + delayed)
}
