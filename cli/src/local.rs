//! The whole system on one machine: migrate, seed, then serve the HTTP functions on loopback
//! through the API Gateway stand-in (and, as they land, feed the email sender from the
//! emulator's SQS and tick the scheduled functions).

use crate::gateway::{self, Handler, Routes};
use crate::Res;
use deadpool_postgres::Pool;
use holdfast_adapters::config::Config;
use holdfast_shared::ids::RestaurantId;
use holdfast_shared::policy::BookingPolicy;
use std::sync::Arc;

/// The demo restaurant's fixed id (its tables come from `BookingPolicy::demo`).
pub const DEMO_RESTAURANT: &str = "5d2c1f3e-0000-4000-8000-00000000d3e0";

/// The runtime role's pool (`DATABASE_URL`, or the secret): what the functions connect as.
pub async fn pool(cfg: &Config) -> Result<Pool, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    Ok(holdfast_adapters::db::pool_from_config(cfg, &ssm).await?)
}

/// Apply pending migrations as the schema owner (`HOLDFAST_OWNER_DATABASE_URL`); the runtime
/// role's settings are not needed.
pub async fn migrate() -> Res<usize> {
    let cfg = holdfast_adapters::config::OwnerConfig::from_env()?;
    let owner = holdfast_adapters::db::owner_pool_from_config(&cfg, 1)?;
    Ok(holdfast_adapters::db::migrate(&owner).await?)
}

/// A throwaway database for a bench or a drill, used the way the functions use theirs.
pub struct Scratch {
    /// The runtime role's URL and pool (the code under measurement runs as it), straight to
    /// PostgreSQL (`HOLDFAST_DIRECT_DATABASE_URL`).
    pub url: String,
    pub pool: Pool,
    /// The schema owner's pool, for setup the runtime role may not do (DDL, TRUNCATE).
    pub owner: Pool,
}

/// (Re)create database `name` as the schema owner and migrate it; see [`Scratch`].
pub async fn scratch_database(name: &str, size: usize) -> Res<Scratch> {
    use holdfast_adapters::db::{pool_from_url, replace_dbname, DbSetupError};
    let owner_base = std::env::var("HOLDFAST_OWNER_DATABASE_URL").map_err(|_| DbSetupError::NoOwner)?;
    {
        let creator = pool_from_url(&owner_base, 1)?;
        let c = creator.get().await?;
        // PgBouncer keeps idle server connections to the last run's database for its
        // server_idle_timeout (10 s locally), and the owner may not end the runtime role's
        // sessions (DROP … WITH (FORCE)): wait for them to close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await {
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await
                }
                other => break other?,
            }
        }
        c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    }
    let owner = pool_from_url(&replace_dbname(&owner_base, name), 2)?;
    holdfast_adapters::db::migrate(&owner).await?;
    // Straight to PostgreSQL (the pgbench baselines prepare named statements, which transaction
    // pooling does not carry); a bench that measures the pooler asks for it (`--via pooler`).
    let runtime = std::env::var("HOLDFAST_DIRECT_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(|| std::env::var("DATABASE_URL"), Ok)?;
    let url = replace_dbname(&runtime, name);
    let pool = pool_from_url(&url, size)?;
    Ok(Scratch { url, pool, owner })
}

pub async fn seed_demo(pool: &Pool) -> Res {
    let c = pool.get().await?;
    let restaurant: RestaurantId = DEMO_RESTAURANT.parse()?;
    holds_api::store::publish_policy(&c, restaurant, "Demo Bistro", &BookingPolicy::demo(1)).await?;
    Ok(())
}

pub async fn run(listen: std::net::SocketAddr) -> Res {
    let cfg = Config::from_env()?;
    let n = migrate().await?;
    println!("migrated ({n} new)");
    let pool = pool(&cfg).await?;
    seed_demo(&pool).await?;
    // Email: queue + DLQ on the emulator, SQS-shaped polling of the sender, relay tick every 5 s.
    let (email_q, _email_task) =
        email_sender::run_local_consumer(&cfg, pool.clone(), std::time::Duration::from_secs(5)).await?;
    println!("email queue    {}", email_q.queue_url);
    // Metrics: EventBridge schedules never fire in the emulator, so tick the aggregator here.
    let _metrics_task = metrics_aggregator::spawn_local_ticker(
        Config { email_dlq_url: Some(email_q.dlq_url.clone()), ..cfg.clone() },
        std::time::Duration::from_secs(20),
    );

    let holds = Arc::new(holds_api::build(&cfg).await?);
    holds.verify_enforcement().await?;
    // Auto-assign: the deployed auto-assigner steps every second inside its scheduled run;
    // here a background task does the same for the whole session.
    let _assign_task = spawn_assign_ticker(holds.clone(), std::time::Duration::from_secs(1));
    let holds_handler: Handler = Arc::new(move |req| {
        let holds = holds.clone();
        Box::pin(async move { holds_api::api::handle(&holds, req).await })
    });
    let flags = crate::flags_cmd::local_handler(&cfg).await?; // flag approver, under /flags
    let routes = Arc::new(Routes {
        routes: vec![
            ("/restaurants", holds_handler.clone()),
            ("/holds", holds_handler.clone()),
            ("/bookings", holds_handler),
            ("/flags", flags),
        ],
    });

    println!("holdfast is running locally");
    println!(
        "  holds API       http://{listen}/restaurants/…/quotes, /holds, /bookings  (Authorization: Bearer dev:<you>)"
    );
    println!("  auto-assign     pending booking requests retried every second (the auto-assigner's schedule)");
    println!("  flag approver   http://{listen}/flags/…  (dev:<you>;groups=holdfast-ops proposes, dev:<other>;groups=holdfast-flag-approvers approves)");
    println!(
        "  staff           Bearer dev:<you>;groups=restaurant:{DEMO_RESTAURANT}:staff sees the restaurant's holds"
    );
    println!("  demo restaurant {DEMO_RESTAURANT}");
    println!("  email queue     {}  (sender polls it; relay ticks every 5 s)", email_q.queue_url);
    println!("  email DLQ       {}  (redrive: holdfast email dlq redrive)", email_q.dlq_url);
    println!(
        "  metrics         aggregator ticks every 20 s; CloudWatch on the emulator, namespace {}",
        cfg.metrics_namespace
    );
    println!("  services        PostgreSQL (TLS; runtime role DATABASE_URL through PgBouncer, owner HOLDFAST_OWNER_DATABASE_URL direct) and the AWS emulator (AWS_ENDPOINT_URL), in .local/env");
    // The demo policy's booking horizon is the default (15 min .. 180 days ahead): a week out.
    let example = (chrono::Utc::now() + chrono::Duration::days(7)).format("%Y-%m-%dT19:00:00Z");
    println!("try:");
    println!("  A='Authorization: Bearer dev:alice'; J='content-type: application/json'");
    println!("  curl -s -H \"$A\" -H \"$J\" -d '{{\"party_size\":2,\"start\":\"{example}\"}}' http://{listen}/restaurants/{DEMO_RESTAURANT}/quotes");
    println!("  curl -s -H \"$A\" -H \"$J\" -d '{{\"restaurant_id\":\"{DEMO_RESTAURANT}\",\"party_size\":2,\"start\":\"{example}\"}}' http://{listen}/holds");
    println!("  curl -s -H \"$A\" -H \"$J\" -d '{{\"guest\":{{\"name\":\"Test Guest\",\"email\":\"guest@example.invalid\"}}}}' http://{listen}/holds/<hold_id>/confirm");
    println!("  curl -s -H \"$A\" -H \"$J\" -H 'Idempotency-Key: req-1' -d '{{\"restaurant_id\":\"{DEMO_RESTAURANT}\",\"party_size\":2,\"start\":\"{example}\",\"guest\":{{\"name\":\"Test Guest\",\"email\":\"guest@example.invalid\"}}}}' http://{listen}/bookings");
    println!("  curl -s -H \"$A\" http://{listen}/bookings/<booking_id>     # requested -> confirmed by auto-assign");
    println!("  curl -s -H 'Authorization: Bearer dev:olga;groups=holdfast-ops' http://{listen}/flags/matrix");
    println!("  ./target/debug/holdfast holds rush --flows 1000     # synthetic rush, in another terminal");
    println!("  ./target/debug/holdfast holds rush --mode request --flows 200   # POST /bookings + auto-assign");
    gateway::serve(listen, routes).await?;
    Ok(())
}

/// The local stand-in for the auto-assigner's schedule (the emulator's EventBridge never
/// fires): run the due auto-assign jobs every `every`, at once again after a full batch.
fn spawn_assign_ticker(holds: Arc<holds_api::HoldsService>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    const BATCH: i64 = 50;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                match holds.run_due_assignments(BATCH).await {
                    Ok(r) if r.attempted > 0 => {
                        tracing::debug!(
                            attempted = r.attempted,
                            confirmed = r.confirmed,
                            retrying = r.retrying,
                            gave_up = r.gave_up,
                            "auto-assign tick"
                        );
                        if (r.attempted as i64) < BATCH {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(code = e.code(), "auto-assign tick failed");
                        break;
                    }
                }
            }
        }
    })
}
