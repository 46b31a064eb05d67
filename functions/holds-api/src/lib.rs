//! holds API: quote, hold, confirm and release tables. Double booking is made impossible by
//! the database (`table_claims_no_overlap`); conflicts are 409 answers with alternatives.

pub mod api;
pub mod backfill;
pub mod bookings;
mod confirm;
pub mod dto;
pub mod error;
mod hold;
pub mod idempotency;
mod observe;
pub mod outcome;
mod quote;
mod release;
pub mod service;
pub mod store;
mod views;

pub use service::HoldsService;

use holdfast_adapters::config::Config;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::FlagLoader;
use holdfast_shared::events::Source;
use std::sync::Arc;
use std::time::Duration;

/// How long a warm container trusts its cached flags before re-reading SSM.
pub const FLAG_TTL: Duration = Duration::from_secs(30);

/// Build the service once per container: SDK config, SSM-backed flags (recording
/// contradictions), the pool.
pub async fn build(cfg: &Config) -> Result<HoldsService, Box<dyn std::error::Error + Send + Sync>> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &ssm).await?;
    let recorder = EventRecorder::new(pool.clone());
    let flags =
        Arc::new(FlagLoader::new(ssm, cfg.environment, cfg.ssm_prefix.clone(), FLAG_TTL, recorder, Source::HoldsApi));
    Ok(HoldsService::new(pool, flags))
}
