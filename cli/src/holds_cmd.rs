//! `holdfast holds …`

use crate::Res;
use clap::Subcommand;
use holdfast_adapters::config::Config;

#[derive(Subcommand)]
pub enum HoldsCmd {
    /// Repair live holds written before metadata was required (policy hash, tables, snapshot).
    BackfillMetadata {
        /// Report what would change without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Benchmark hold throughput through the handler vs pgbench running the same SQL.
    Bench {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Drive N concurrent quote → hold → confirm flows against a holds API and summarise.
    Rush {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token (the local gateway accepts `dev:<name>`).
        #[arg(long, default_value = "dev:rush")]
        token: String,
        #[arg(long, default_value = crate::local::DEMO_RESTAURANT)]
        restaurant: String,
        #[arg(long, default_value_t = 1000)]
        flows: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Distinct half-hour start times competed for (fewer = more conflicts).
        #[arg(long, default_value_t = 8)]
        slots: usize,
        #[arg(long, default_value_t = 2)]
        party: u16,
        /// First start time (RFC 3339); defaults to 19:00 UTC a week from today.
        #[arg(long)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// How long to wait for the confirmed bookings' emails to be sent before reporting.
        #[arg(long, default_value_t = 60)]
        settle_seconds: u64,
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
        HoldsCmd::Bench { seconds, clients, rounds } => {
            crate::holds_bench::run(crate::holds_bench::BenchArgs { seconds, clients, rounds }).await
        }
        HoldsCmd::Rush { url, token, restaurant, flows, concurrency, slots, party, start, settle_seconds } => {
            let start = start.unwrap_or_else(|| {
                let day = (chrono::Utc::now() + chrono::Duration::days(7)).date_naive();
                day.and_hms_opt(19, 0, 0).map(|t| t.and_utc()).unwrap_or_else(chrono::Utc::now)
            });
            let s = crate::rush::run(crate::rush::RushArgs {
                base_url: url.trim_end_matches('/').to_string(),
                token,
                restaurant,
                flows,
                concurrency,
                slots,
                party,
                start,
            })
            .await?;
            println!("rush summary ({} flows, concurrency {concurrency}, {:.1} s)", s.flows, s.elapsed.as_secs_f64());
            println!(
                "  holds won {} / lost (409) {} / then won on the offered alternative {} / no table quoted {}",
                s.holds_won, s.holds_lost, s.won_on_alternative, s.no_quote
            );
            println!("  bookings confirmed {}", s.confirmed);
            println!("  5xx responses {} / transport errors {}", s.server_errors, s.transport_errors);
            let (p50, p95, p99) = s.hold_latency_ms;
            println!("  hold latency ms  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}");
            let (p50, p95, p99) = s.all_latency_ms;
            println!("  all requests ms  p50 {p50:.1}  p95 {p95:.1}  p99 {p99:.1}");
            match Config::from_env() {
                Ok(cfg) => {
                    let pool = crate::local::pool(&cfg).await?;
                    // The relay and the sender run on their own ticks: wait (bounded) until
                    // every confirmed booking's email is settled before reporting.
                    let f =
                        crate::rush::settle(&pool, s.confirmed as i64, std::time::Duration::from_secs(settle_seconds))
                            .await?;
                    println!("  double bookings found by SQL: {}", f.overlaps);
                    println!("  email outbox: published {}, pending {}", f.outbox_published, f.outbox_pending);
                    println!("  emails sent {}, failed permanently {}", f.emails_sent, f.emails_failed);
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
                Err(_) => println!("  (set DATABASE_URL/HOLDFAST_ENV to check double bookings by SQL)"),
            }
            if s.server_errors > 0 {
                return Err(format!("{} server errors", s.server_errors).into());
            }
            Ok(())
        }
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
