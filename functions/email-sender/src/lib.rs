//! The email sender (SQS-triggered) and the outbox relay (scheduled), with their providers.
//!
//! - [`handler::EmailSender`]: one SQS batch in, a partial batch response out. Idempotent per
//!   dedupe key through the `email_sends` ledger (one claim statement per batch, which also
//!   records each attempt before it is made; an unknown SES outcome is suppressed, not resent), deferrals
//!   re-queued hop by hop (≤ 900 s each), transient failures backed off by visibility timeout,
//!   permanent ones recorded, a panic isolated to its record.
//! - [`relay::OutboxRelay`]: publishes the transactional outbox to the queue.
//! - [`provider`]: SES v2, Resend, a local sink, and the flag-selected provider.
//! - [`sqs`]: event shapes, delete-on-success, queue + DLQ creation, DLQ inspect/redrive.
//! - [`error::EmailError`]: the crate's one error type (the binaries hand it to the runtime).

pub mod clock;
pub mod error;
pub mod handler;
pub mod provider;
pub mod relay;
pub mod sqs;
pub mod store;

use clock::{Clock, SystemClock};
use deadpool_postgres::Pool;
use error::EmailError;
use handler::{EmailSender, Settings};
use holdfast_adapters::config::Config;
use holdfast_adapters::flags::FlagLoader;
use provider::{EmailProvider, FlagSelectedProvider, SesProvider, RESEND_DEFAULT_BASE_URL};
use relay::OutboxRelay;
use std::sync::Arc;
use std::time::Duration;
use store::SendStore;

const FLAG_TTL: Duration = Duration::from_secs(60);

/// The production provider: SES or Resend per the `email.provider` flag.
pub fn flag_selected_provider(
    cfg: &Config,
    sdk: &aws_config::SdkConfig,
    flags: Arc<FlagLoader>,
) -> Arc<dyn EmailProvider> {
    Arc::new(FlagSelectedProvider::new(
        flags,
        SesProvider::new(aws_sdk_sesv2::Client::new(sdk)),
        aws_sdk_ssm::Client::new(sdk),
        cfg.resend_api_key_param.clone(),
        cfg.resend_api_url.clone().unwrap_or_else(|| RESEND_DEFAULT_BASE_URL.into()),
    ))
}

/// The sender's flag loader: contradictions it reads are recorded as the email sender's.
fn flag_loader(cfg: &Config, ssm: aws_sdk_ssm::Client, pool: &Pool) -> Arc<FlagLoader> {
    let recorder = holdfast_adapters::events::EventRecorder::new(pool.clone());
    let source = holdfast_shared::events::Source::EmailSender;
    Arc::new(FlagLoader::new(ssm, cfg.environment, cfg.ssm_prefix.clone(), FLAG_TTL, recorder, source))
}

/// Everything the Lambda builds once per container.
pub async fn build_sender(cfg: &Config) -> Result<EmailSender, EmailError> {
    let queue_url = cfg.email_queue_url.clone().ok_or(EmailError::MissingSetting("EMAIL_QUEUE_URL"))?;
    let from = cfg.ses_from_address.clone().ok_or(EmailError::MissingSetting("SES_FROM_ADDRESS"))?;
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &ssm).await?;
    let provider = flag_selected_provider(cfg, &sdk, flag_loader(cfg, ssm, &pool));
    Ok(EmailSender::new(
        SendStore::new(pool),
        provider,
        aws_sdk_sqs::Client::new(&sdk),
        Arc::new(SystemClock),
        Settings::production(queue_url, from, cfg.email_ops_address.clone()),
    ))
}

pub async fn build_relay(cfg: &Config) -> Result<OutboxRelay, EmailError> {
    let queue_url = cfg.email_queue_url.clone().ok_or(EmailError::MissingSetting("EMAIL_QUEUE_URL"))?;
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let pool = holdfast_adapters::db::pool_from_config(cfg, &ssm).await?;
    Ok(OutboxRelay::new(pool, aws_sdk_sqs::Client::new(&sdk), queue_url, Arc::new(SystemClock)))
}

/// Create the SES sender identity (the emulator needs one before it sends; in AWS identities
/// are verified out of band and this is not called).
pub async fn ensure_ses_identity(sdk: &aws_config::SdkConfig, address: &str) -> Result<(), EmailError> {
    let ses = aws_sdk_sesv2::Client::new(sdk);
    match ses.create_email_identity().email_identity(address).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok(()),
        Err(e) => Err(EmailError::ses("CreateEmailIdentity")(e)),
    }
}

/// The queue names the local run uses (the stack names its queues the same way).
pub fn local_queue_names(env: &str) -> (String, String) {
    (format!("holdfast-{env}-email"), format!("holdfast-{env}-email-dlq"))
}

/// The local runner's email pipeline: creates the queue + DLQ on the emulator (same redrive
/// policy as infra), then in the background polls the queue and invokes the handler with real
/// SQS event shapes (deleting what succeeded, as the event source mapping does), and ticks the
/// outbox relay every `relay_every`. Sends through SES on the emulator (or Resend, by flag).
pub async fn run_local_consumer(
    cfg: &Config,
    pool: Pool,
    relay_every: Duration,
) -> Result<(sqs::QueuePair, tokio::task::JoinHandle<()>), EmailError> {
    let sdk = holdfast_adapters::aws::sdk_config().await;
    let sqs_client = aws_sdk_sqs::Client::new(&sdk);
    let env = cfg.environment.as_str();
    let (queue, dlq) = local_queue_names(env);
    let pair = sqs::create_queue_pair(&sqs_client, &queue, &dlq, 180).await?;
    let from = cfg.ses_from_address.clone().unwrap_or_else(|| "bookings@holdfast.local".into());
    ensure_ses_identity(&sdk, &from).await?;
    let flags = flag_loader(cfg, aws_sdk_ssm::Client::new(&sdk), &pool);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sender = EmailSender::new(
        SendStore::new(pool.clone()),
        flag_selected_provider(cfg, &sdk, flags),
        sqs_client.clone(),
        clock.clone(),
        Settings::production(
            pair.queue_url.clone(),
            from,
            cfg.email_ops_address.clone().or_else(|| Some("ops@holdfast.local".into())),
        ),
    );
    let relay = OutboxRelay::new(pool, sqs_client.clone(), pair.queue_url.clone(), clock);
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_else(|| "eu-west-1".into());
    let p = pair.clone();
    let task = tokio::spawn(async move {
        let mut last_tick: Option<tokio::time::Instant> = None;
        loop {
            if last_tick.is_none_or(|t| t.elapsed() >= relay_every) {
                if let Err(e) = relay.tick().await {
                    tracing::warn!(error = %e, "local outbox relay tick failed");
                }
                last_tick = Some(tokio::time::Instant::now());
            }
            match sqs::poll_once(&sqs_client, &sender, &p.queue_url, &p.queue_arn, &region, 1).await {
                Ok(d) if d.received > 0 => {
                    tracing::info!(
                        received = d.received,
                        failed = d.failed.len(),
                        "local email consumer delivered a batch"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "local email consumer poll failed");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
    Ok((pair, task))
}

// Compile-time check: the Lambda runtime and `tokio::spawn` need these futures to be `Send`.
#[allow(dead_code)]
fn _assert_send(r: &'static OutboxRelay, s: &'static EmailSender) {
    fn is_send<T: Send>(_: T) {}
    is_send(r.tick());
    is_send(s.handle(Default::default()));
}
