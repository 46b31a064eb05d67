//! `auto-assigner`: the scheduled Lambda (EventBridge, every minute) that runs the durable
//! auto-assign jobs of pending booking requests (`booking_assignments`, issue 13).
//!
//! EventBridge's shortest rate is one minute, but the retry rule wants attempts 5 s, 15 s and
//! 45 s apart: so one invocation runs `run_due_assignments` about once a second for up to
//! ~50 s (inside the 60 s timeout, and ending before the next scheduled run starts; reserved
//! concurrency 1 keeps it a singleton either way). A full batch runs again at once; an empty
//! or short one waits for the next second. It stops early when the invocation's deadline
//! draws near or the process is told to shut down (SIGTERM/SIGINT). A job leased by a run that
//! dies mid-attempt is picked up again when its lease ends (`store::claim_due`).
//!
//! The log line is counts only: no booking ids, no guest data.

use holdfast_adapters::config::Config;
use holdfast_adapters::telemetry::{self, FunctionTelemetry};
use holds_api::bookings::AssignReport;
use holds_api::HoldsService;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// Jobs claimed per step.
const BATCH: i64 = 50;
/// Pause between steps that found less than a full batch.
const TICK: Duration = Duration::from_secs(1);
/// The longest one invocation keeps stepping (the function's timeout is 60 s).
const RUN_BUDGET: Duration = Duration::from_secs(50);
/// Room left before the invocation's deadline: the last step's attempts and the return.
const DEADLINE_MARGIN: Duration = Duration::from_secs(8);

/// What one invocation did, summed over its steps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
struct RunTotals {
    steps: usize,
    failed_steps: usize,
    attempted: usize,
    confirmed: usize,
    retrying: usize,
    gave_up: usize,
    stopped_by_shutdown: bool,
}

impl RunTotals {
    fn add(&mut self, r: &AssignReport) {
        self.attempted += r.attempted;
        self.confirmed += r.confirmed;
        self.retrying += r.retrying;
        self.gave_up += r.gave_up;
    }
}

/// Step until `budget` has passed or `shutdown` turns true. `step` returns the report, or the
/// error's code (a failed step is counted and the loop goes on: the next one may succeed).
async fn run_for<F, Fut>(
    budget: Duration,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut step: F,
) -> RunTotals
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<AssignReport, &'static str>>,
{
    let started = Instant::now();
    let mut totals = RunTotals::default();
    loop {
        if *shutdown.borrow() {
            totals.stopped_by_shutdown = true;
            break;
        }
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let full = match step().await {
            Ok(r) => {
                totals.add(&r);
                r.attempted as i64 >= BATCH
            }
            Err(code) => {
                totals.failed_steps += 1;
                tracing::warn!(code, "auto-assign step failed; trying again next tick");
                false
            }
        };
        totals.steps += 1;
        if !full {
            let pause = tick.min(budget.saturating_sub(started.elapsed()));
            // A closed channel (no signal handler) disables the second branch: just sleep.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                Ok(()) = shutdown.changed() => {}
            }
        }
    }
    totals
}

/// This invocation's budget: `RUN_BUDGET`, less if the deadline is nearer.
fn budget(deadline: SystemTime) -> Duration {
    let remaining = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    remaining.saturating_sub(DEADLINE_MARGIN).min(RUN_BUDGET)
}

async fn handle(svc: &HoldsService, shutdown: watch::Receiver<bool>, deadline: SystemTime) -> Result<RunTotals, Error> {
    let totals = run_for(budget(deadline), TICK, shutdown, || async {
        svc.run_due_assignments(BATCH).await.map_err(|e| e.code())
    })
    .await;
    tracing::info!(
        steps = totals.steps,
        failed_steps = totals.failed_steps,
        attempted = totals.attempted,
        confirmed = totals.confirmed,
        retrying = totals.retrying,
        gave_up = totals.gave_up,
        stopped_by_shutdown = totals.stopped_by_shutdown,
        "auto-assign run"
    );
    // A failed step makes the invocation an error, so the function's Errors metric (and its
    // alarm, 3 of 5 minutes) sees a database or code problem; the jobs stay durable either way.
    if totals.failed_steps > 0 {
        return Err(format!("{} of {} auto-assign steps failed", totals.failed_steps, totals.steps).into());
    }
    Ok(totals)
}

/// A watch that turns true on SIGTERM or SIGINT, after which the process exits. (Lambda sends
/// SIGTERM at shutdown only when an extension is registered; without one the invocation's
/// deadline bounds the run.)
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("shutdown signals unavailable; runs end at their budget");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // The running step ends its transaction (or the database rolls it back when the
        // connection drops; the job's lease then lapses and the next run retries it).
        let _ = tx.send(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::process::exit(0);
    });
    rx
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda_logs();
    let cfg = Config::from_env()?;
    // Once per container: SDK config, SSM-backed flags, the pool (as the holds API).
    let svc = holds_api::build(&cfg).await?;
    let (svc, function) = (&svc, &FunctionTelemetry::new("auto-assigner"));
    let shutdown = shutdown_signal();
    let shutdown = &shutdown;
    run(service_fn(move |ev: LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent>| async move {
        // Each job's lines also carry its booking's correlation id (`run_due_assignments`).
        let span = function.invocation(Some(&ev.context), None);
        handle(svc, shutdown.clone(), ev.context.deadline()).instrument(span).await
    }))
    .await
}

#[cfg(test)]
mod tests {
    //! Real time, scaled down (a tick of 20 ms): the loop's shape, not its clock.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T: Duration = Duration::from_millis(20);

    fn report(attempted: usize, confirmed: usize) -> AssignReport {
        AssignReport { attempted, confirmed, retrying: attempted - confirmed, gave_up: 0 }
    }

    #[tokio::test]
    async fn steps_about_once_a_tick_until_the_budget_and_sums_the_reports() {
        let (_tx, rx) = watch::channel(false);
        let started = Instant::now();
        let t = run_for(10 * T, T, rx, || async { Ok(report(2, 1)) }).await;
        assert!((5..=11).contains(&t.steps), "{t:?}");
        assert_eq!(t.attempted, 2 * t.steps);
        assert_eq!((t.confirmed, t.retrying), (t.steps, t.steps));
        assert!(!t.stopped_by_shutdown);
        assert!(started.elapsed() >= 10 * T && started.elapsed() < 40 * T, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_full_batch_runs_again_without_waiting() {
        let (_tx, rx) = watch::channel(false);
        let calls = AtomicUsize::new(0);
        let t = run_for(3 * T, 100 * T, rx, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(if n < 3 { report(BATCH as usize, 0) } else { report(0, 0) }) }
        })
        .await;
        // Three full batches back to back, then one short step whose pause ends at the budget.
        assert_eq!(t.attempted, 3 * BATCH as usize);
        assert_eq!(t.steps, 4, "{t:?}");
    }

    #[tokio::test]
    async fn a_failed_step_is_counted_and_the_loop_goes_on() {
        let (_tx, rx) = watch::channel(false);
        let calls = AtomicUsize::new(0);
        let t = run_for(5 * T, T, rx, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("database_unavailable")
                } else {
                    Ok(report(1, 1))
                }
            }
        })
        .await;
        assert_eq!(t.failed_steps, 1);
        assert!(t.steps >= 2 && t.confirmed == t.steps - 1, "{t:?}");
    }

    #[tokio::test]
    async fn shutdown_stops_the_run_early() {
        let (tx, rx) = watch::channel(false);
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(3 * T).await;
            let _ = tx.send(true);
        });
        let t = run_for(Duration::from_secs(30), Duration::from_secs(10), rx, || async { Ok(report(0, 0)) }).await;
        assert!(t.stopped_by_shutdown);
        assert_eq!(t.steps, 1, "{t:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn without_a_signal_handler_it_still_waits_a_tick_between_steps() {
        let (tx, rx) = watch::channel(false);
        drop(tx);
        let t = run_for(5 * T, T, rx, || async { Ok(report(0, 0)) }).await;
        assert!(t.steps <= 6, "a closed channel must not spin: {t:?}");
        assert!(!t.stopped_by_shutdown);
    }

    #[test]
    fn the_budget_leaves_room_before_the_deadline() {
        let b = budget(SystemTime::now() + Duration::from_secs(20));
        assert!(b <= Duration::from_secs(12) && b >= Duration::from_secs(11), "{b:?}");
        assert_eq!(budget(SystemTime::now() + Duration::from_secs(600)), RUN_BUDGET);
        assert_eq!(budget(SystemTime::UNIX_EPOCH), Duration::ZERO);
    }
}
