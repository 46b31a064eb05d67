//! Synthetic rush: N concurrent quote → hold → confirm flows against a holds API (the local
//! gateway or a deployed stage), then a summary with an independent SQL double-booking check.

use crate::Res;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RushArgs {
    pub base_url: String,
    pub token: String,
    pub restaurant: String,
    pub flows: usize,
    pub concurrency: usize,
    /// Distinct start times the flows compete for (fewer = more contention).
    pub slots: usize,
    pub party: u16,
    pub start: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct FlowResult {
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

async fn flow(client: &reqwest::Client, a: &RushArgs, i: usize) -> FlowResult {
    let mut r = FlowResult::default();
    let start = a.start + chrono::Duration::minutes(30 * (i % a.slots.max(1)) as i64);
    let q = post(
        client,
        a,
        i,
        &format!("/restaurants/{}/quotes", a.restaurant),
        serde_json::json!({"party_size": a.party, "start": start}),
    )
    .await;
    let tables = match q {
        Ok((s, v, ms)) => {
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
        serde_json::json!({"restaurant_id": a.restaurant, "party_size": a.party, "start": start, "table_ids": tables});
    let mut hold_id = None;
    // One try as quoted, then (on 409) one try with the first alternative the API offered.
    for attempt in 0..2 {
        match post(client, a, i, "/holds", body.clone()).await {
            Ok((s, v, ms)) => {
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
    // Synthetic guest: reserved .invalid domain, no real person.
    let guest =
        serde_json::json!({"guest": {"name": format!("Rush Guest {i}"), "email": format!("rush+{i}@example.invalid")}});
    match post(client, a, i, &format!("/holds/{hold_id}/confirm"), guest).await {
        Ok((s, _, ms)) => {
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

pub struct RushSummary {
    pub flows: usize,
    pub holds_won: usize,
    pub holds_lost: usize,
    pub won_on_alternative: usize,
    pub no_quote: usize,
    pub confirmed: usize,
    pub server_errors: usize,
    pub transport_errors: usize,
    pub hold_latency_ms: (f64, f64, f64),
    pub all_latency_ms: (f64, f64, f64),
    pub elapsed: Duration,
}

pub async fn run(a: RushArgs) -> Result<RushSummary, Box<dyn std::error::Error + Send + Sync>> {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).timeout(Duration::from_secs(30)).build()?;
    let a = Arc::new(a);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (a, next, done, client) = (a.clone(), next.clone(), done.clone(), client.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.flows {
                    break;
                }
                out.push(flow(&client, &a, i).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let progress = {
        let (done, total) = (done.clone(), a.flows);
        tokio::spawn(async move {
            loop {
                let d = done.load(Ordering::Relaxed);
                let width = 40;
                let filled = (d * width).checked_div(total).unwrap_or(width).min(width);
                eprint!("\r[{}{}] {d}/{total} flows", "#".repeat(filled), ".".repeat(width - filled));
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
    for w in workers {
        results.extend(w.await?);
    }
    let _ = progress.await;
    let elapsed = started.elapsed();
    let mut hold: Vec<f64> = results.iter().filter_map(|r| r.hold_ms).collect();
    let mut all: Vec<f64> = results.iter().flat_map(|r| [r.quote_ms, r.hold_ms, r.confirm_ms]).flatten().collect();
    hold.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    let p = |v: &[f64]| (percentile(v, 50.0), percentile(v, 95.0), percentile(v, 99.0));
    Ok(RushSummary {
        flows: a.flows,
        holds_won: results.iter().filter(|r| r.hold_status == Some(201)).count(),
        holds_lost: results.iter().filter(|r| r.hold_status == Some(409)).count(),
        won_on_alternative: results.iter().filter(|r| r.won_on_alternative).count(),
        no_quote: results.iter().filter(|r| r.no_quote).count(),
        confirmed: results.iter().filter(|r| r.confirmed).count(),
        server_errors: results.iter().map(|r| r.server_errors).sum(),
        transport_errors: results.iter().map(|r| r.transport_errors).sum(),
        hold_latency_ms: p(&hold),
        all_latency_ms: p(&all),
        elapsed,
    })
}

/// What the database says after a rush: the independent double-booking check and the
/// downstream effects (emails, metrics).
pub struct DatabaseFigures {
    /// Overlapping active exclusive claims on one table: must be 0.
    pub overlaps: i64,
    pub outbox_published: i64,
    pub outbox_pending: i64,
    pub emails_sent: i64,
    pub emails_failed: i64,
    pub events: i64,
    pub metric_windows_published: i64,
}

pub async fn database_figures(pool: &deadpool_postgres::Pool) -> Res<DatabaseFigures> {
    let c = pool.get().await?;
    let row = c
        .query_one(
            "SELECT
               (SELECT count(*) FROM table_claims a JOIN table_claims b
                  ON a.table_id = b.table_id AND a.id < b.id AND a.during && b.during
                WHERE a.active AND b.active AND a.exclusive AND b.exclusive),
               (SELECT count(*) FROM email_outbox WHERE published_at IS NOT NULL),
               (SELECT count(*) FROM email_outbox WHERE published_at IS NULL AND dead_at IS NULL),
               (SELECT count(*) FROM email_sends WHERE state = 'sent'),
               (SELECT count(*) FROM email_sends WHERE state = 'failed_permanent'),
               (SELECT count(*) FROM observability_events),
               (SELECT count(*) FROM metrics_publications WHERE status = 'published')",
            &[],
        )
        .await?;
    Ok(DatabaseFigures {
        overlaps: row.get(0),
        outbox_published: row.get(1),
        outbox_pending: row.get(2),
        emails_sent: row.get(3),
        emails_failed: row.get(4),
        events: row.get(5),
        metric_windows_published: row.get(6),
    })
}

/// Poll the database figures until every confirmed booking's email has settled (sent or failed
/// for good) and the outbox is empty, or `timeout` passes; returns the last figures either way.
pub async fn settle(pool: &deadpool_postgres::Pool, confirmed: i64, timeout: Duration) -> Res<DatabaseFigures> {
    let deadline = Instant::now() + timeout;
    loop {
        let f = database_figures(pool).await?;
        let settled = f.outbox_pending == 0 && f.emails_sent + f.emails_failed >= confirmed;
        if settled || Instant::now() >= deadline {
            if !settled {
                eprintln!("  (emails not settled after {timeout:?}; figures as they stand)");
            }
            return Ok(f);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
