//! `holdfast email …`: DLQ inspect/redrive and the email handler benchmark.

use crate::Res;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use clap::{Subcommand, ValueEnum};
use email_sender::clock::SystemClock;
use email_sender::handler::{EmailSender, Settings};
use email_sender::provider::SinkProvider;
use email_sender::sqs as q;
use email_sender::store::{ClaimRequest, Finish, SendStore};
use futures::StreamExt;
use holdfast_adapters::sql::Sql;
use holdfast_shared::email::{EmailJob, EmailType};
use holdfast_shared::events::{EventType, ObservabilityEvent, Source};
use holdfast_shared::ids::BookingId;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum EmailCmd {
    /// The email dead-letter queue.
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Jobs per second through the real handler with a local sink provider, and database
    /// round trips per job, against a SQL-only baseline (see BENCHMARKS.md).
    Bench {
        #[arg(long, default_value_t = 2000)]
        jobs: usize,
        #[arg(long, default_value_t = 10)]
        batch: usize,
        /// Concurrent batches (the event source mapping's maximum concurrency).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[derive(Subcommand)]
pub enum DlqCmd {
    /// Show the DLQ depth and up to --max messages (ids only; messages stay in the DLQ).
    Inspect {
        #[arg(long, env = "EMAIL_DLQ_URL")]
        dlq_url: String,
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
    /// Move DLQ messages back to the email queue.
    Redrive {
        #[arg(long, env = "EMAIL_DLQ_URL")]
        dlq_url: String,
        #[arg(long, env = "EMAIL_QUEUE_URL")]
        queue_url: String,
        /// move-task: SQS StartMessageMoveTask (AWS). resend: receive, re-send, then delete
        /// (for the emulator, which lacks move tasks, or to move only --max messages).
        #[arg(long, value_enum, default_value_t = RedriveMode::MoveTask)]
        mode: RedriveMode,
        /// resend mode: at most this many messages.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// move-task mode: throttle (messages per second), to spare the providers.
        #[arg(long)]
        max_per_second: Option<i32>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RedriveMode {
    MoveTask,
    Resend,
}

pub async fn run(cmd: EmailCmd) -> Res {
    match cmd {
        EmailCmd::Dlq { cmd } => dlq(cmd).await,
        EmailCmd::Bench { jobs, batch, concurrency, runs } => {
            bench(jobs, batch.clamp(1, 10), concurrency.max(1), runs.max(1)).await
        }
    }
}

async fn dlq(cmd: DlqCmd) -> Res {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    match cmd {
        DlqCmd::Inspect { dlq_url, max } => {
            let (depth, entries) = q::inspect_dlq(&sqs, &dlq_url, max).await?;
            println!("DLQ depth (approximate): {depth}");
            for e in entries {
                println!(
                    "{}  receives={}  sent_ms={}  {}",
                    e.message_id,
                    e.receive_count.unwrap_or_default(),
                    e.sent_timestamp.unwrap_or_default(),
                    e.body
                );
            }
            Ok(())
        }
        DlqCmd::Redrive { dlq_url, queue_url, mode, max, max_per_second } => match mode {
            RedriveMode::MoveTask => {
                let dlq_arn = q::queue_arn(&sqs, &dlq_url).await?;
                let queue_arn = q::queue_arn(&sqs, &queue_url).await?;
                let handle = q::redrive_move_task(&sqs, &dlq_arn, &queue_arn, max_per_second).await?;
                println!("move task started: {handle}");
                println!("follow it with: aws sqs list-message-move-tasks --source-arn {dlq_arn}");
                Ok(())
            }
            RedriveMode::Resend => {
                let moved = q::redrive_resend(&sqs, &dlq_url, &queue_url, max).await?;
                println!("redriven by receive-and-resend: {moved}");
                Ok(())
            }
        },
    }
}

const BENCH_DB: &str = "holdfast_bench_email";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `n` fresh confirmed bookings (one INSERT … SELECT), returned as jobs.
async fn fresh_jobs(pool: &deadpool_postgres::Pool, restaurant: Uuid, n: usize) -> Res<Vec<EmailJob>> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let c = pool.get().await?;
    c.run(
        "INSERT INTO bookings (id, restaurant_id, status, party_size, starts_at, ends_at, guest_name, guest_email)
         SELECT id, $2, 'confirmed', 2, '2030-01-07 19:00Z', '2030-01-07 21:00Z', 'Bench Guest', 'guest@example.com'
         FROM unnest($1::uuid[]) AS id",
        &[&ids, &restaurant],
    )
    .await?;
    Ok(ids.into_iter().map(|id| EmailJob::for_booking(EmailType::BookingConfirmed, BookingId(id))).collect())
}

fn event_for(jobs: &[EmailJob]) -> SqsEvent {
    let mut ev = SqsEvent::default();
    ev.records = jobs
        .iter()
        .map(|j| {
            let mut m = SqsMessage::default();
            m.message_id = Some(Uuid::new_v4().to_string());
            m.receipt_handle = Some(format!("bench-{}", Uuid::new_v4()));
            m.body = serde_json::to_string(j).ok();
            m.attributes.insert("ApproximateReceiveCount".into(), "1".into());
            m.event_source = Some("aws:sqs".into());
            m.event_source_arn = Some("arn:aws:sqs:eu-west-1:000000000000:bench".into());
            m.aws_region = Some("eu-west-1".into());
            m
        })
        .collect();
    ev
}

async fn bench(jobs: usize, batch: usize, concurrency: usize, runs: usize) -> Res {
    let pool = crate::local::scratch_database(BENCH_DB, concurrency + 2).await?.pool;
    let restaurant = Uuid::new_v4();
    pool.get().await?.run("INSERT INTO restaurants (id, name) VALUES ($1, 'Bench Bistro')", &[&restaurant]).await?;

    let sdk = holdfast_adapters::aws::sdk_config().await;
    let sink = Arc::new(SinkProvider::default());
    let sender = Arc::new(EmailSender::new(
        SendStore::new(pool.clone()),
        sink.clone(),
        aws_sdk_sqs::Client::new(&sdk), // never called: no failures, no deferrals
        Arc::new(SystemClock),
        Settings::production("http://unused.invalid/queue".into(), "bookings@holdfast.bench".into(), None),
    ));
    let baseline = Arc::new(SendStore::new(pool.clone()));

    let (mut handler_rates, mut baseline_rates, mut per_job, mut claims_per_batch) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        // Handler: the real handle() over real SQS event shapes, `concurrency` batches at once.
        let js = fresh_jobs(&pool, restaurant, jobs).await?;
        let events: Vec<SqsEvent> = js.chunks(batch).map(event_for).collect();
        let n_batches = events.len();
        let (stmts0, sent0) = (sender.store().statements(), sink.sent());
        let t = Instant::now();
        let failures: usize = futures::stream::iter(events)
            .map(|ev| {
                let s = sender.clone();
                async move { s.handle(ev).await.batch_item_failures.len() }
            })
            .buffer_unordered(concurrency)
            .fold(0, |a, b| async move { a + b })
            .await;
        let secs = t.elapsed().as_secs_f64();
        let sent = sink.sent() - sent0;
        if failures > 0 || sent != jobs as u64 {
            return Err(format!("run {run}: {failures} failures, {sent} of {jobs} sent").into());
        }
        let stmts = sender.store().statements() - stmts0;
        handler_rates.push(jobs as f64 / secs);
        per_job.push(stmts as f64 / jobs as f64);

        // Baseline: the same three statements per batch (claim, outcomes, events) issued
        // directly, no parsing, rendering or provider.
        let js = fresh_jobs(&pool, restaurant, jobs).await?;
        let batches: Vec<Vec<EmailJob>> = js.chunks(batch).map(|c| c.to_vec()).collect();
        let b0 = baseline.statements();
        let t = Instant::now();
        let results: Vec<Res> = futures::stream::iter(batches)
            .map(|b| {
                let store = baseline.clone();
                async move {
                    let token = Uuid::new_v4();
                    let now = chrono::Utc::now();
                    let reqs: Vec<ClaimRequest> = b
                        .iter()
                        .map(|j| ClaimRequest {
                            dedupe_key: j.key(),
                            email_type: j.email_type,
                            booking_id: j.booking_id.map(|x| x.as_uuid()),
                            restaurant_id: None,
                        })
                        .collect();
                    let rows = store.claim(&reqs, token, now, now + chrono::Duration::seconds(120)).await?;
                    let fin: Vec<(_, Finish)> = rows
                        .into_iter()
                        .map(|r| (r.dedupe_key, Finish::Sent { provider: "sink".into(), message_id: None }))
                        .collect();
                    let evs: Vec<ObservabilityEvent> =
                        b.iter().map(|_| ObservabilityEvent::new(Source::EmailSender, EventType::EmailSent)).collect();
                    store.finish(&fin, token, now, &evs).await?;
                    Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Res>()?;
        let bsecs = t.elapsed().as_secs_f64();
        baseline_rates.push(jobs as f64 / bsecs);
        claims_per_batch.push((baseline.statements() - b0) as f64 / n_batches as f64);
        println!(
            "run {run}: handler {:.0} jobs/s, SQL-only baseline {:.0} jobs/s, {:.2} statements/job ({} batches of {batch})",
            jobs as f64 / secs,
            jobs as f64 / bsecs,
            stmts as f64 / jobs as f64,
            n_batches
        );
    }
    let (h, b) = (median(handler_rates), median(baseline_rates));
    println!(
        "median over {runs} runs ({jobs} jobs, batches of {batch}, concurrency {concurrency}): handler {h:.0} jobs/s, \
         baseline {b:.0} jobs/s, ratio {:.2}; database round trips {:.2}/job = 1 claim + 1 outcome + 1 events statement \
         per batch ({:.1} statements/batch in the baseline)",
        h / b,
        median(per_job),
        median(claims_per_batch)
    );
    Ok(())
}
