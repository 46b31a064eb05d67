//! Synthetic rush against a holds API (the local gateway or a deployed stage), then a summary
//! with an independent SQL double-booking check and the emails it caused, by type.
//!
//! Two modes. `hold`: each flow is quote → hold → confirm (on a 409, one try with the offered
//! alternative). `request`: each flow is one `POST /bookings` (the pending request and its
//! inline auto-assign attempt); a request answered `requested` is then polled with
//! `GET /bookings/{id}` until the auto-assign job confirms it or the wait runs out.
//!
//! Flows can spread over several restaurants (`holds seed-restaurants`) and days, and arrive
//! open-loop within a window (the reservation drop, `crate::drop_bench`).

use crate::Res;
use holdfast_adapters::sql::Sql;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RushMode {
    /// quote → hold → confirm
    Hold,
    /// POST /bookings, then poll GET /bookings/{id} while it is `requested`
    Request,
}

pub struct RushArgs {
    pub mode: RushMode,
    pub base_url: String,
    pub token: String,
    /// Flow `i` books at `restaurants[i % len]` (one or many restaurants).
    pub restaurants: Vec<String>,
    pub flows: usize,
    pub concurrency: usize,
    /// Distinct half-hour start times per day the flows compete for (fewer = more contention).
    pub slots: usize,
    /// Consecutive days the flows spread over (a reservation drop opens a month at once).
    pub days: usize,
    pub party: u16,
    pub start: chrono::DateTime<chrono::Utc>,
    /// Open-loop arrivals: flow `i` starts no earlier than `i / flows` of this after the start
    /// (e.g. 5 000 guests within one second); `None` = as fast as the workers go.
    pub arrival: Option<Duration>,
    /// Request mode: how long a guest keeps polling a `requested` booking.
    pub wait: Duration,
    /// Request mode: the pause between two polls.
    pub poll_every: Duration,
    /// Request mode: every Nth guest confirmed inline cancels `cancel_after` later (0 = none),
    /// freeing a table for the pending requests' auto-assign job.
    pub cancel_every: usize,
    pub cancel_after: Duration,
}

/// What a request flow does after its POST.
enum Then {
    Done,
    /// `requested`: poll it.
    Poll(String),
    /// Confirmed inline, and this guest cancels (`cancel_every`).
    Cancel(String),
}

#[derive(Default)]
struct FlowResult {
    /// HTTP requests that got an answer (quote, hold attempts, confirm).
    answered: usize,
    quote_ms: Option<f64>,
    hold_ms: Option<f64>,
    confirm_ms: Option<f64>,
    hold_status: Option<u16>,
    /// A 409 whose first alternative was then held: what a real guest does with the answer.
    won_on_alternative: bool,
    no_quote: bool,
    confirmed: bool,
    server_errors: usize,
    transport_errors: usize,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Each flow is its own guest (`<token>-<flow>`): a reservation drop is thousands of people,
/// and one guest may only hold a few tables at a time.
async fn post(
    client: &reqwest::Client,
    a: &RushArgs,
    flow: usize,
    path: &str,
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value, f64), reqwest::Error> {
    let t = Instant::now();
    let resp = client
        .post(format!("{}{}", a.base_url, path))
        .header("authorization", format!("Bearer {}-{flow}", a.token))
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, v, t.elapsed().as_secs_f64() * 1000.0))
}

/// GET as flow `flow`'s guest.
async fn get(
    client: &reqwest::Client,
    a: &RushArgs,
    flow: usize,
    path: &str,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let resp = client
        .get(format!("{}{}", a.base_url, path))
        .header("authorization", format!("Bearer {}-{flow}", a.token))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
}

/// Flow `i`'s restaurant and start: restaurants in turn, then (within a restaurant) days in
/// turn, then the half-hour slots of the evening.
fn flow_target(a: &RushArgs, i: usize) -> (&str, chrono::DateTime<chrono::Utc>) {
    let n = a.restaurants.len().max(1);
    let j = i / n;
    let (days, slots) = (a.days.max(1), a.slots.max(1));
    let start = a.start
        + chrono::Duration::days((j % days) as i64)
        + chrono::Duration::minutes(30 * ((j / days) % slots) as i64);
    (a.restaurants.get(i % n).map_or("", String::as_str), start)
}

/// Synthetic guest: reserved .invalid domain, no real person.
fn guest(i: usize) -> serde_json::Value {
    serde_json::json!({"name": format!("Rush Guest {i}"), "email": format!("rush+{i}@example.invalid")})
}

async fn hold_flow(client: &reqwest::Client, a: &RushArgs, i: usize) -> FlowResult {
    let mut r = FlowResult::default();
    let (restaurant, start) = flow_target(a, i);
    let q = post(
        client,
        a,
        i,
        &format!("/restaurants/{restaurant}/quotes"),
        serde_json::json!({"party_size": a.party, "start": start}),
    )
    .await;
    let tables = match q {
        Ok((s, v, ms)) => {
            r.answered += 1;
            r.quote_ms = Some(ms);
            if s >= 500 {
                r.server_errors += 1;
            }
            if s != 200 {
                r.no_quote = s == 409 || s == 422;
                return r;
            }
            v["table_ids"].clone()
        }
        Err(_) => {
            r.transport_errors += 1;
            return r;
        }
    };
    let mut body =
        serde_json::json!({"restaurant_id": restaurant, "party_size": a.party, "start": start, "table_ids": tables});
    let mut hold_id = None;
    // One try as quoted, then (on 409) one try with the first alternative the API offered.
    for attempt in 0..2 {
        match post(client, a, i, "/holds", body.clone()).await {
            Ok((s, v, ms)) => {
                r.answered += 1;
                if s >= 500 {
                    r.server_errors += 1;
                }
                if attempt == 0 {
                    r.hold_ms = Some(ms);
                    r.hold_status = Some(s);
                }
                if s == 201 {
                    r.won_on_alternative = attempt == 1;
                    hold_id = v["hold_id"].as_str().map(str::to_string);
                    break;
                }
                let alt = &v["error"]["alternatives"][0];
                if s != 409 || attempt == 1 || alt.is_null() {
                    break;
                }
                body["start"] = alt["start"].clone();
                body["table_ids"] = alt["table_ids"].clone();
            }
            Err(_) => {
                r.transport_errors += 1;
                break;
            }
        }
    }
    let Some(hold_id) = hold_id else { return r };
    match post(client, a, i, &format!("/holds/{hold_id}/confirm"), serde_json::json!({"guest": guest(i)})).await {
        Ok((s, _, ms)) => {
            r.answered += 1;
            r.confirm_ms = Some(ms);
            r.confirmed = s == 200;
            if s >= 500 {
                r.server_errors += 1;
            }
        }
        Err(_) => r.transport_errors += 1,
    }
    r
}

/// How a booking request ended, as its guest saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum RequestEnd {
    /// No usable answer to the POST (transport error or 5xx).
    #[default]
    NoAnswer,
    /// The POST answered 4xx (e.g. 422 no table could ever fit, 429 a guest limit).
    Refused(u16),
    /// The POST answered `confirmed`: the inline attempt won.
    ConfirmedInline,
    /// `requested`, then a poll saw `confirmed`: the auto-assign job won.
    ConfirmedByJob,
    /// Confirmed inline, then cancelled by its guest (`cancel_every`).
    CancelledByGuest,
    /// Still `requested` when the wait ran out.
    StillPending,
    /// Some other status (e.g. cancelled by someone else) or an unexpected answer.
    Other,
}

#[derive(Default)]
struct RequestResult {
    request_ms: Option<f64>,
    end: RequestEnd,
    /// From sending the request to the poll that saw it confirmed (job confirmations only).
    job_confirm_s: Option<f64>,
    polls: usize,
    server_errors: usize,
    transport_errors: usize,
}

/// POST /bookings as flow `i`'s guest (its own Idempotency-Key). Returns the booking id when
/// the answer is `requested` (to be polled).
async fn request_post(client: &reqwest::Client, a: &RushArgs, i: usize, run_id: &str) -> (RequestResult, Then) {
    let mut r = RequestResult::default();
    let (restaurant, start) = flow_target(a, i);
    let body = serde_json::json!({
        "restaurant_id": restaurant, "party_size": a.party, "start": start, "guest": guest(i),
    });
    let t = Instant::now();
    let sent = client
        .post(format!("{}/bookings", a.base_url))
        .header("authorization", format!("Bearer {}-{i}", a.token))
        .header("idempotency-key", format!("rush-{run_id}-{i}"))
        .json(&body)
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(_) => {
            r.transport_errors += 1;
            return (r, Then::Done);
        }
    };
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    r.request_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
    if status >= 500 {
        r.server_errors += 1;
        return (r, Then::Done);
    }
    if status != 201 {
        r.end = RequestEnd::Refused(status);
        return (r, Then::Done);
    }
    match (v["status"].as_str(), v["booking_id"].as_str()) {
        (Some("confirmed"), Some(id)) if a.cancel_every > 0 && i.is_multiple_of(a.cancel_every) => {
            r.end = RequestEnd::ConfirmedInline;
            return (r, Then::Cancel(id.to_string()));
        }
        (Some("confirmed"), _) => r.end = RequestEnd::ConfirmedInline,
        (Some("requested"), Some(id)) => {
            r.end = RequestEnd::StillPending;
            return (r, Then::Poll(id.to_string()));
        }
        _ => r.end = RequestEnd::Other,
    }
    (r, Then::Done)
}

/// Poll a `requested` booking until it is confirmed (or leaves `requested` another way), or
/// until `a.wait` after `sent`.
async fn poll_booking(
    client: &reqwest::Client,
    a: &RushArgs,
    i: usize,
    id: &str,
    sent: Instant,
    mut r: RequestResult,
) -> RequestResult {
    while sent.elapsed() + a.poll_every <= a.wait {
        tokio::time::sleep(a.poll_every).await;
        r.polls += 1;
        match get(client, a, i, &format!("/bookings/{id}")).await {
            Ok((200, v)) => match v["status"].as_str() {
                Some("requested") => {}
                Some("confirmed") => {
                    r.end = RequestEnd::ConfirmedByJob;
                    r.job_confirm_s = Some(sent.elapsed().as_secs_f64());
                    return r;
                }
                _ => {
                    r.end = RequestEnd::Other;
                    return r;
                }
            },
            Ok((s, _)) if s >= 500 => r.server_errors += 1,
            Ok(_) => {
                r.end = RequestEnd::Other;
                return r;
            }
            Err(_) => r.transport_errors += 1,
        }
    }
    r.end = RequestEnd::StillPending;
    r
}

/// The guest of a booking confirmed inline cancels it, `a.cancel_after` after the request.
async fn cancel_booking(
    client: &reqwest::Client,
    a: &RushArgs,
    i: usize,
    id: &str,
    sent: Instant,
    mut r: RequestResult,
) -> RequestResult {
    tokio::time::sleep(a.cancel_after.saturating_sub(sent.elapsed())).await;
    match post(client, a, i, &format!("/bookings/{id}/cancel"), serde_json::json!({})).await {
        Ok((200, v, _)) if v["status"] == "cancelled" => r.end = RequestEnd::CancelledByGuest,
        Ok((s, _, _)) => {
            r.server_errors += usize::from(s >= 500);
            r.end = RequestEnd::Other;
        }
        Err(_) => {
            r.transport_errors += 1;
            r.end = RequestEnd::Other;
        }
    }
    r
}

/// Request mode's figures (zero in hold mode).
#[derive(Default)]
pub struct RequestFigures {
    /// POSTs answered 201.
    pub accepted: usize,
    pub confirmed_inline: usize,
    pub confirmed_by_job: usize,
    /// Confirmed inline, then cancelled by the guest (`--cancel-every`).
    pub cancelled: usize,
    pub still_pending: usize,
    pub other_status: usize,
    /// POSTs answered 4xx, by status.
    pub refused: BTreeMap<u16, usize>,
    pub polls: usize,
    pub request_latency_ms: (f64, f64, f64),
    /// Request → confirmed by the job, seconds: p50, p95, max (to the polling interval).
    pub job_confirm_s: (f64, f64, f64),
}

pub struct RushSummary {
    pub mode: RushMode,
    pub flows: usize,
    pub holds_won: usize,
    pub holds_lost: usize,
    pub won_on_alternative: usize,
    pub no_quote: usize,
    /// Bookings confirmed (hold mode: by confirm; request mode: inline or by the job).
    pub confirmed: usize,
    pub server_errors: usize,
    pub transport_errors: usize,
    pub hold_latency_ms: (f64, f64, f64),
    /// Hold mode, per request type: p50, p95, p99 (the hold's first attempt).
    pub quote_latency_ms: (f64, f64, f64),
    pub confirm_latency_ms: (f64, f64, f64),
    pub all_latency_ms: (f64, f64, f64),
    /// Hold mode: HTTP requests answered (quotes, hold attempts, confirms).
    pub answered: usize,
    pub requests: RequestFigures,
    pub elapsed: Duration,
}

impl RushSummary {
    /// Answered requests per second over the whole run (hold mode).
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// What one worker brings back: finished flows, and request flows still going on (polling a
/// `requested` booking, or waiting to cancel).
#[derive(Default)]
struct WorkerOut {
    holds: Vec<FlowResult>,
    requests: Vec<RequestResult>,
    polling: Vec<tokio::task::JoinHandle<RequestResult>>,
}

pub async fn run(a: RushArgs) -> Result<RushSummary, Box<dyn std::error::Error + Send + Sync>> {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).timeout(Duration::from_secs(30)).build()?;
    let a = Arc::new(a);
    let run_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (a, next, done, waiting, client, run_id) =
            (a.clone(), next.clone(), done.clone(), waiting.clone(), client.clone(), run_id.clone());
        workers.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.flows {
                    break;
                }
                if let Some(window) = a.arrival {
                    let at = started + window.mul_f64(i as f64 / a.flows as f64);
                    tokio::time::sleep_until(at.into()).await;
                }
                match a.mode {
                    RushMode::Hold => out.holds.push(hold_flow(&client, &a, i).await),
                    RushMode::Request => {
                        let sent = Instant::now();
                        let (r, then) = request_post(&client, &a, i, &run_id).await;
                        let polls = matches!(then, Then::Poll(_));
                        let id = match then {
                            Then::Done => {
                                out.requests.push(r);
                                done.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Then::Poll(id) | Then::Cancel(id) => id,
                        };
                        // The guest keeps polling (or cancels later); the worker takes the next.
                        if polls {
                            waiting.fetch_add(1, Ordering::Relaxed);
                        }
                        let (a, done, waiting, client) = (a.clone(), done.clone(), waiting.clone(), client.clone());
                        out.polling.push(tokio::spawn(async move {
                            let r = if polls {
                                let r = poll_booking(&client, &a, i, &id, sent, r).await;
                                waiting.fetch_sub(1, Ordering::Relaxed);
                                r
                            } else {
                                cancel_booking(&client, &a, i, &id, sent, r).await
                            };
                            done.fetch_add(1, Ordering::Relaxed);
                            r
                        }));
                        continue;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let progress = {
        let (done, waiting, total) = (done.clone(), waiting.clone(), a.flows);
        tokio::spawn(async move {
            loop {
                let d = done.load(Ordering::Relaxed);
                let w = waiting.load(Ordering::Relaxed);
                let width = 40;
                let filled = (d * width).checked_div(total).unwrap_or(width).min(width);
                let polling = if w > 0 { format!(", {w} requested, polling") } else { String::new() };
                eprint!(
                    "\r[{}{}] {d}/{total} flows{polling}            ",
                    "#".repeat(filled),
                    ".".repeat(width - filled)
                );
                let _ = std::io::stderr().flush();
                if d >= total {
                    eprintln!();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut results = Vec::new();
    let mut requests = Vec::new();
    let mut polling = Vec::new();
    for w in workers {
        let out = w.await?;
        results.extend(out.holds);
        requests.extend(out.requests);
        polling.extend(out.polling);
    }
    for p in polling {
        requests.push(p.await?);
    }
    let _ = progress.await;
    let elapsed = started.elapsed();
    let sorted = |f: fn(&FlowResult) -> Option<f64>| {
        let mut v: Vec<f64> = results.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (quote, hold, confirm) = (sorted(|r| r.quote_ms), sorted(|r| r.hold_ms), sorted(|r| r.confirm_ms));
    let mut all: Vec<f64> = results.iter().flat_map(|r| [r.quote_ms, r.hold_ms, r.confirm_ms]).flatten().collect();
    all.sort_by(f64::total_cmp);
    let p = |v: &[f64]| (percentile(v, 50.0), percentile(v, 95.0), percentile(v, 99.0));
    let req = request_figures(&requests);
    let confirmed = match a.mode {
        RushMode::Hold => results.iter().filter(|r| r.confirmed).count(),
        RushMode::Request => req.confirmed_inline + req.confirmed_by_job,
    };
    Ok(RushSummary {
        mode: a.mode,
        flows: a.flows,
        holds_won: results.iter().filter(|r| r.hold_status == Some(201)).count(),
        holds_lost: results.iter().filter(|r| r.hold_status == Some(409)).count(),
        won_on_alternative: results.iter().filter(|r| r.won_on_alternative).count(),
        no_quote: results.iter().filter(|r| r.no_quote).count(),
        confirmed,
        server_errors: results.iter().map(|r| r.server_errors).sum::<usize>()
            + requests.iter().map(|r| r.server_errors).sum::<usize>(),
        transport_errors: results.iter().map(|r| r.transport_errors).sum::<usize>()
            + requests.iter().map(|r| r.transport_errors).sum::<usize>(),
        hold_latency_ms: p(&hold),
        quote_latency_ms: p(&quote),
        confirm_latency_ms: p(&confirm),
        all_latency_ms: p(&all),
        answered: results.iter().map(|r| r.answered).sum(),
        requests: req,
        elapsed,
    })
}

fn request_figures(rs: &[RequestResult]) -> RequestFigures {
    let count = |e: RequestEnd| rs.iter().filter(|r| r.end == e).count();
    let mut refused = BTreeMap::new();
    for r in rs {
        if let RequestEnd::Refused(s) = r.end {
            *refused.entry(s).or_insert(0) += 1;
        }
    }
    let mut latency: Vec<f64> = rs.iter().filter_map(|r| r.request_ms).collect();
    latency.sort_by(f64::total_cmp);
    let mut job: Vec<f64> = rs.iter().filter_map(|r| r.job_confirm_s).collect();
    job.sort_by(f64::total_cmp);
    RequestFigures {
        accepted: rs.iter().filter(|r| !matches!(r.end, RequestEnd::NoAnswer | RequestEnd::Refused(_))).count(),
        confirmed_inline: count(RequestEnd::ConfirmedInline),
        confirmed_by_job: count(RequestEnd::ConfirmedByJob),
        cancelled: count(RequestEnd::CancelledByGuest),
        still_pending: count(RequestEnd::StillPending),
        other_status: count(RequestEnd::Other),
        refused,
        polls: rs.iter().map(|r| r.polls).sum(),
        request_latency_ms: (percentile(&latency, 50.0), percentile(&latency, 95.0), percentile(&latency, 99.0)),
        job_confirm_s: (percentile(&job, 50.0), percentile(&job, 95.0), job.last().copied().unwrap_or(f64::NAN)),
    }
}

/// This run's emails of one type: what the sender recorded, what it skipped (and why), and
/// where the outbox rows stand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EmailTypeFigures {
    pub sent: i64,
    pub failed: i64,
    pub in_progress: i64,
    /// Skipped by the sender (superseded, cancelled, a redelivery of a sent one …), by reason.
    pub skipped: BTreeMap<String, i64>,
    pub outbox_published: i64,
    /// Unpublished and due: the relay has not got to them yet.
    pub outbox_due: i64,
    /// Unpublished, not before a later time (deferred emails, reminders).
    pub outbox_deferred: i64,
    pub outbox_dead: i64,
}

/// What the database says after a rush: the independent double-booking check and the
/// downstream effects (emails, metrics). The first figures are the whole database's; the
/// `by_type` and `assignment_jobs` ones are this run's: the outbox rows (and jobs) created
/// since it began, and what the sender did with those rows.
pub struct DatabaseFigures {
    /// Overlapping active exclusive claims on one table: must be 0.
    pub overlaps: i64,
    pub outbox_published: i64,
    pub outbox_pending: i64,
    pub emails_sent: i64,
    pub emails_failed: i64,
    pub events: i64,
    pub metric_windows_published: i64,
    /// This run's emails by type (`EmailType::as_str`).
    pub by_type: BTreeMap<String, EmailTypeFigures>,
    /// This run's auto-assign jobs by state (`pending`, `done`, `exhausted`).
    pub assignment_jobs: BTreeMap<String, i64>,
    /// Published rows of this run that are due, and how many of them the sender has settled
    /// (sent, failed for good, or skipped): equal when every delivered job is done.
    published_due: i64,
    settled: i64,
}

/// Skip reasons that are about a redelivery of a job already settled, not the job's fate.
const REDELIVERY_SKIPS: [&str; 3] = ["already_sent", "already_failed", "duplicate_in_batch"];

pub async fn database_figures(
    pool: &deadpool_postgres::Pool,
    since: chrono::DateTime<chrono::Utc>,
) -> Res<DatabaseFigures> {
    let c = pool.get().await?;
    let row = c
        .fetch_one(
            "SELECT
               (SELECT count(*) FROM table_claims a JOIN table_claims b
                  ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
                WHERE a.active AND b.active AND a.exclusive AND b.exclusive),
               (SELECT count(*) FROM email_outbox WHERE published_at IS NOT NULL),
               (SELECT count(*) FROM email_outbox WHERE published_at IS NULL AND dead_at IS NULL),
               (SELECT count(*) FROM email_sends WHERE state = 'sent'),
               (SELECT count(*) FROM email_sends WHERE state = 'failed_permanent'),
               (SELECT count(*) FROM observability_events),
               (SELECT count(*) FROM metrics_publications WHERE status = 'published'),
               (SELECT count(*) FROM email_outbox
                 WHERE created_at >= $1 AND published_at IS NOT NULL AND not_before <= now())",
            &[&since],
        )
        .await?;
    let mut by_type: BTreeMap<String, EmailTypeFigures> = BTreeMap::new();
    let sends = c
        .fetch(
            "SELECT s.email_type, s.state, count(*) FROM email_sends s
               JOIN email_outbox o ON o.dedupe_key = s.dedupe_key
              WHERE o.created_at >= $1 GROUP BY 1, 2",
            &[&since],
        )
        .await?;
    for r in &sends {
        let f = by_type.entry(r.get(0)).or_default();
        let n: i64 = r.get(2);
        match r.get::<_, &str>(1) {
            "sent" => f.sent += n,
            "failed_permanent" => f.failed += n,
            _ => f.in_progress += n,
        }
    }
    let outbox = c
        .fetch(
            "SELECT email_type,
                    count(*) FILTER (WHERE published_at IS NOT NULL),
                    count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL AND not_before <= now()),
                    count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL AND not_before > now()),
                    count(*) FILTER (WHERE dead_at IS NOT NULL)
               FROM email_outbox WHERE created_at >= $1 GROUP BY 1",
            &[&since],
        )
        .await?;
    for r in &outbox {
        let f = by_type.entry(r.get(0)).or_default();
        (f.outbox_published, f.outbox_due, f.outbox_deferred, f.outbox_dead) = (r.get(1), r.get(2), r.get(3), r.get(4));
    }
    // A skip leaves no email_sends row, only an `email.skipped` event (with the type and the
    // reason) about a job of this run; distinct per booking, so a redelivered skip counts once.
    let skips = c
        .fetch(
            "SELECT coalesce(e.context->>'email_type', 'unknown'), coalesce(e.context->>'error_code', 'unknown'),
                    count(DISTINCT coalesce(e.booking_id::text, e.id::text))
               FROM observability_events e
              WHERE e.event_type = 'email.skipped' AND e.created_at >= $1
                AND EXISTS (SELECT 1 FROM email_outbox o
                             WHERE o.created_at >= $1 AND o.email_type = e.context->>'email_type'
                               AND o.booking_id IS NOT DISTINCT FROM e.booking_id)
              GROUP BY 1, 2",
            &[&since],
        )
        .await?;
    let mut skipped_final = 0;
    for r in &skips {
        let (t, reason, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        if !REDELIVERY_SKIPS.contains(&reason.as_str()) {
            skipped_final += n;
        }
        by_type.entry(t).or_default().skipped.insert(reason, n);
    }
    let jobs =
        c.fetch("SELECT state, count(*) FROM booking_assignments WHERE created_at >= $1 GROUP BY 1", &[&since]).await?;
    let assignment_jobs = jobs.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect();
    let settled = by_type.values().map(|f| f.sent + f.failed).sum::<i64>() + skipped_final;
    Ok(DatabaseFigures {
        overlaps: row.get(0),
        outbox_published: row.get(1),
        outbox_pending: row.get(2),
        emails_sent: row.get(3),
        emails_failed: row.get(4),
        events: row.get(5),
        metric_windows_published: row.get(6),
        by_type,
        assignment_jobs,
        published_due: row.get(7),
        settled,
    })
}

impl DatabaseFigures {
    /// Every email of this run that is due has been published and settled by the sender (sent,
    /// failed for good, or skipped), and none is mid-send. Deferred ones (reminders, a
    /// "request received" still inside its delay) are not waited for.
    pub fn emails_settled(&self) -> bool {
        let due: i64 = self.by_type.values().map(|f| f.outbox_due).sum();
        let in_progress: i64 = self.by_type.values().map(|f| f.in_progress).sum();
        due == 0 && in_progress == 0 && self.settled >= self.published_due
    }
}

/// Poll the database figures until this run's due emails have settled, or `timeout` passes;
/// returns the last figures either way.
pub async fn settle(
    pool: &deadpool_postgres::Pool,
    since: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
) -> Res<DatabaseFigures> {
    let deadline = Instant::now() + timeout;
    loop {
        let f = database_figures(pool, since).await?;
        let settled = f.emails_settled();
        if settled || Instant::now() >= deadline {
            if !settled {
                eprintln!("  (emails not settled after {timeout:?}; figures as they stand)");
            }
            return Ok(f);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The database's clock: the start of a run, for "rows created since".
pub async fn db_now(pool: &deadpool_postgres::Pool) -> Res<chrono::DateTime<chrono::Utc>> {
    Ok(pool.get().await?.fetch_one("SELECT now()", &[]).await?.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(end: RequestEnd) -> RequestResult {
        RequestResult { request_ms: Some(10.0), end, ..RequestResult::default() }
    }

    fn args(restaurants: usize, days: usize, slots: usize) -> RushArgs {
        RushArgs {
            mode: RushMode::Hold,
            base_url: String::new(),
            token: String::new(),
            restaurants: (0..restaurants).map(|k| format!("r{k}")).collect(),
            flows: 0,
            concurrency: 1,
            slots,
            days,
            party: 2,
            start: "2030-01-07T19:00:00Z".parse().expect("start"),
            arrival: None,
            wait: Duration::ZERO,
            poll_every: Duration::from_secs(1),
            cancel_every: 0,
            cancel_after: Duration::ZERO,
        }
    }

    #[test]
    fn flows_cover_every_restaurant_day_and_slot_evenly() {
        use std::collections::BTreeSet;
        // 50 restaurants × 8 slots (gcd 2): every restaurant still sees every slot.
        let a = args(50, 1, 8);
        let seen: BTreeSet<_> = (0..400).map(|i| flow_target(&a, i)).collect();
        assert_eq!(seen.len(), 400);
        let a = args(1, 30, 7);
        let first: BTreeSet<_> = (0..210).map(|i| flow_target(&a, i).1).collect();
        assert_eq!(first.len(), 210, "30 days × 7 slots, each once");
        assert_eq!(flow_target(&a, 0).1, a.start);
        assert_eq!(flow_target(&a, 1).1, a.start + chrono::Duration::days(1));
        assert_eq!(flow_target(&a, 30).1, a.start + chrono::Duration::minutes(30));
        // One restaurant, one day: the old slot rotation.
        let a = args(1, 1, 8);
        assert_eq!(flow_target(&a, 9).1, a.start + chrono::Duration::minutes(30));
    }

    #[test]
    fn request_figures_count_each_ending_once() {
        let mut by_job = ended(RequestEnd::ConfirmedByJob);
        by_job.job_confirm_s = Some(7.0);
        by_job.polls = 4;
        let rs = vec![
            ended(RequestEnd::ConfirmedInline),
            ended(RequestEnd::ConfirmedInline),
            by_job,
            ended(RequestEnd::StillPending),
            ended(RequestEnd::CancelledByGuest),
            ended(RequestEnd::Refused(422)),
            ended(RequestEnd::Refused(429)),
            RequestResult { transport_errors: 1, ..RequestResult::default() },
        ];
        let f = request_figures(&rs);
        assert_eq!((f.confirmed_inline, f.confirmed_by_job, f.still_pending), (2, 1, 1));
        assert_eq!(f.accepted, 5);
        assert_eq!(f.cancelled, 1);
        assert_eq!(f.refused, BTreeMap::from([(422, 1), (429, 1)]));
        assert_eq!(f.polls, 4);
        assert_eq!(f.job_confirm_s.2, 7.0);
    }

    #[test]
    fn emails_are_settled_when_nothing_due_is_left() {
        let mut f = DatabaseFigures {
            overlaps: 0,
            outbox_published: 0,
            outbox_pending: 0,
            emails_sent: 0,
            emails_failed: 0,
            events: 0,
            metric_windows_published: 0,
            by_type: BTreeMap::new(),
            assignment_jobs: BTreeMap::new(),
            published_due: 3,
            settled: 2,
        };
        assert!(!f.emails_settled(), "a published job not yet sent");
        f.settled = 3;
        assert!(f.emails_settled());
        f.by_type.insert("reminder".into(), EmailTypeFigures { outbox_deferred: 5, ..Default::default() });
        assert!(f.emails_settled(), "deferred reminders are not waited for");
        f.by_type.insert("booking_confirmed".into(), EmailTypeFigures { outbox_due: 1, ..Default::default() });
        assert!(!f.emails_settled(), "a due row the relay has not published");
    }
}
