//! Email providers: Amazon SES v2, Resend (HTTPS JSON API) and a local sink, behind one trait.
//!
//! Errors carry machine codes only (`ses_throttled`, `http_503`, …), never the provider's
//! message: a provider may echo the recipient address back in its error text.
//!
//! A failure is one of three kinds ([`SendError`]): transient (certainly not sent: refused
//! before the request went out, throttled), permanent (refused for good), or ambiguous (the
//! request may have been accepted: a timeout after sending, a 5xx, the connection lost). Only a
//! provider that deduplicates by idempotency key ([`EmailProvider::dedupe_window`], Resend) may
//! be retried after an ambiguous outcome; the handler suppresses SES resends instead.

use futures::future::BoxFuture;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::secrets::{SecretError, SsmSecret};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The SES message tag that carries the attempt id (`email_send_attempts.attempt_id`), so an
/// operator can match an ambiguous attempt against SES's own event stream.
pub const ATTEMPT_TAG: &str = "holdfast_attempt";

/// How long Resend remembers an `Idempotency-Key` (its documented 24 hours).
pub const RESEND_IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// One email to send. Holds PII (the address, the bodies): its `Debug` redacts them.
#[derive(Clone)]
pub struct OutgoingEmail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The job's dedupe key; passed to providers that support idempotency keys.
    pub idempotency_key: String,
    /// This attempt's id, recorded in the ledger before the send (SES message tag).
    pub attempt_id: Uuid,
}

impl std::fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("idempotency_key", &self.idempotency_key)
            .field("attempt_id", &self.attempt_id)
            .finish_non_exhaustive()
    }
}

/// Why a send failed. The code is a valid event code (`[a-z][a-z0-9_.]*`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Certainly not sent, worth retrying: throttling, the provider unreachable (refused before
    /// the request went out), account-level problems that an operator fixes before redriving
    /// the DLQ.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: invalid address, validation errors, unknown booking.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The request went out and no answer says whether it was accepted: a timeout after
    /// sending, a 5xx, the connection lost mid-request. A blind retry may send twice.
    #[error("ambiguous: {0}")]
    Ambiguous(String),
}

impl SendError {
    pub fn transient(code: &str) -> Self {
        Self::Transient(code.to_string())
    }
    pub fn permanent(code: &str) -> Self {
        Self::Permanent(code.to_string())
    }
    pub fn ambiguous(code: &str) -> Self {
        Self::Ambiguous(code.to_string())
    }
    pub fn code(&self) -> &str {
        match self {
            Self::Transient(c) | Self::Permanent(c) | Self::Ambiguous(c) => c,
        }
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Ambiguous(_))
    }
}

/// The provider accepted the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: &'static str,
    pub message_id: Option<String>,
}

pub trait EmailProvider: Send + Sync {
    /// Recorded with each attempt (`[a-z][a-z0-9_-]{0,31}`).
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>>;
    /// How long the provider drops a repeat of a request with the same `idempotency_key`
    /// (Resend: 24 h). `None` (SES): a retry after an ambiguous outcome may send twice.
    fn dedupe_window(&self) -> Option<chrono::Duration> {
        None
    }
    /// The provider that carries a send made now: `None` when this one sends itself; a router
    /// (the flag-selected provider) answers with its current choice, so the attempt is recorded
    /// under the provider that really sends it.
    fn route<'a>(&'a self) -> BoxFuture<'a, Result<Option<&'a dyn EmailProvider>, SendError>> {
        Box::pin(async { Ok(None) })
    }
}

pub use holdfast_shared::email::plausible_address;

// ---------------------------------------------------------------------------------------------
// Amazon SES v2

pub struct SesProvider {
    client: aws_sdk_sesv2::Client,
}

impl SesProvider {
    /// The client's own retries are turned off: the SDK would repeat a `SendEmail` after a
    /// timeout or a 5xx, which is exactly the blind resend that can deliver twice. The queue
    /// retries what is certainly unsent; the handler decides about the rest.
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        use aws_sdk_sesv2::config::retry::RetryConfig;
        let conf = client.config().to_builder().retry_config(RetryConfig::disabled()).build();
        Self { client: aws_sdk_sesv2::Client::from_conf(conf) }
    }

    async fn send_inner(&self, e: &OutgoingEmail) -> Result<Receipt, SendError> {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
        let content = |data: &str| {
            Content::builder().data(data).charset("UTF-8").build().map_err(|_| SendError::permanent("render_invalid"))
        };
        let message = Message::builder()
            .subject(content(&e.subject)?)
            .body(Body::builder().text(content(&e.text)?).html(content(&e.html)?).build())
            .build();
        let tag = MessageTag::builder()
            .name(ATTEMPT_TAG)
            .value(e.attempt_id.to_string())
            .build()
            .map_err(|_| SendError::permanent("ses_tag_invalid"))?;
        let out = self
            .client
            .send_email()
            .from_email_address(&e.from)
            .destination(Destination::builder().to_addresses(&e.to).build())
            .content(EmailContent::builder().simple(message).build())
            .email_tags(tag)
            .send()
            .await
            .map_err(classify_ses)?;
        Ok(Receipt { provider: "ses", message_id: out.message_id })
    }
}

impl EmailProvider for SesProvider {
    fn name(&self) -> &'static str {
        "ses"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(self.send_inner(email))
    }
}

type SesSendError = aws_sdk_sesv2::error::SdkError<
    aws_sdk_sesv2::operation::send_email::SendEmailError,
    aws_sdk_sesv2::config::http::HttpResponse,
>;

/// SES errors → transient/permanent/ambiguous. Only a failure to connect proves the request
/// never left; a timeout, a lost connection, an unreadable answer or a 5xx may follow SES
/// accepting the email.
pub fn classify_ses(e: SesSendError) -> SendError {
    use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_sesv2::operation::send_email::SendEmailError as E;
    match &e {
        SdkError::TimeoutError(_) => SendError::ambiguous("ses_timeout"),
        SdkError::DispatchFailure(_) if never_connected(&e) => SendError::transient("ses_unreachable"),
        SdkError::DispatchFailure(_) => SendError::ambiguous("ses_connection_lost"),
        SdkError::ResponseError(_) => SendError::ambiguous("ses_bad_response"),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match se.err() {
                E::TooManyRequestsException(_) | E::LimitExceededException(_) => SendError::transient("ses_throttled"),
                // Account/sender problems: every job fails until an operator fixes it; keep the
                // jobs (DLQ, then redrive) rather than dropping them.
                E::SendingPausedException(_) => SendError::transient("ses_sending_paused"),
                E::AccountSuspendedException(_) => SendError::transient("ses_account_suspended"),
                E::MailFromDomainNotVerifiedException(_) => SendError::transient("ses_sender_not_verified"),
                E::MessageRejected(_) => SendError::permanent("ses_message_rejected"),
                E::BadRequestException(_) => SendError::permanent("ses_bad_request"),
                E::NotFoundException(_) => SendError::permanent("ses_not_found"),
                other => match (status, other.code()) {
                    (s, _) if s >= 500 => SendError::ambiguous("ses_5xx"),
                    (_, Some("Throttling" | "ThrottlingException" | "RequestTimeout")) => {
                        SendError::transient("ses_throttled")
                    }
                    _ => SendError::permanent("ses_rejected"),
                },
            }
        }
        // The request could not even be built: nothing went out.
        _ => SendError::transient("ses_error"),
    }
}

/// Whether the error chain says the connection was never made (refused, no route, DNS, connect
/// timeout): then the request cannot have reached the provider.
pub fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<hyper_util::client::legacy::Error>().is_some_and(|h| h.is_connect()) {
            return true;
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable))
        {
            return true;
        }
        next = err.source();
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Resend

pub const RESEND_DEFAULT_BASE_URL: &str = "https://api.resend.com";

/// An API key: never printed (`expose` is the only way to read it).
pub use holdfast_adapters::secrets::ApiKey;

#[derive(Debug)]
pub struct ResendProvider {
    http: reqwest::Client,
    base_url: String,
    key: ApiKey,
}

impl ResendProvider {
    pub fn new(base_url: &str, key: ApiKey) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(8))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_string(), key })
    }

    /// Read the API key from an SSM SecureString (decrypted; never logged).
    pub async fn from_ssm(ssm: &aws_sdk_ssm::Client, param: &str, base_url: &str) -> Result<Self, String> {
        let secret = SsmSecret::new(ssm.clone(), param);
        let key = secret.get().await.map_err(|e| match e {
            SecretError::Unreadable(detail) => format!("reading the Resend API key parameter failed: {detail}"),
            SecretError::Empty => "the Resend API key parameter is empty".to_string(),
        })?;
        Self::new(base_url, key.clone())
    }

    async fn send_inner(&self, e: &OutgoingEmail) -> Result<Receipt, SendError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            from: &'a str,
            to: [&'a str; 1],
            subject: &'a str,
            html: &'a str,
            text: &'a str,
        }
        #[derive(serde::Deserialize)]
        struct Resp {
            id: Option<String>,
        }
        // The attempt id is deliberately not in the body: Resend answers a repeated
        // Idempotency-Key with a different payload by refusing it, so a retry must send the
        // same request.
        let resp = self
            .http
            .post(format!("{}/emails", self.base_url))
            .bearer_auth(self.key.expose())
            .header("Idempotency-Key", &e.idempotency_key)
            .json(&Body { from: &e.from, to: [&e.to], subject: &e.subject, html: &e.html, text: &e.text })
            .send()
            .await
            .map_err(|err| {
                if err.is_connect() {
                    SendError::transient("resend_unreachable")
                } else if err.is_timeout() {
                    SendError::ambiguous("resend_timeout")
                } else {
                    SendError::ambiguous("resend_transport")
                }
            })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                let id = resp.json::<Resp>().await.ok().and_then(|r| r.id);
                Ok(Receipt { provider: "resend", message_id: id })
            }
            s => Err(classify_http("resend", s)),
        }
    }
}

/// HTTP status → transient/permanent/ambiguous, for HTTPS providers.
pub fn classify_http(provider: &str, status: u16) -> SendError {
    let code = format!("{provider}_http_{status}");
    match status {
        // Throttled; an idempotent request still in flight; request timeout: not processed.
        429 | 409 | 408 => SendError::Transient(code),
        // Bad or missing key: every job fails until an operator fixes it; keep them for redrive.
        401 | 403 => SendError::Transient(code),
        // The server failed somewhere after receiving the request: it may have sent it.
        500..=599 => SendError::Ambiguous(code),
        // 400/404/422…: validation (invalid address, bad payload). Retrying cannot help.
        _ => SendError::Permanent(code),
    }
}

impl EmailProvider for ResendProvider {
    fn name(&self) -> &'static str {
        "resend"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(self.send_inner(email))
    }
    fn dedupe_window(&self) -> Option<chrono::Duration> {
        Some(RESEND_IDEMPOTENCY_WINDOW)
    }
}

// ---------------------------------------------------------------------------------------------
// Local sink

/// Accepts everything and keeps only a count (benchmarks, local runs without a provider).
#[derive(Debug, Default)]
pub struct SinkProvider {
    sent: AtomicU64,
}

impl SinkProvider {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl EmailProvider for SinkProvider {
    fn name(&self) -> &'static str {
        "sink"
    }
    fn send<'a>(&'a self, _email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        Box::pin(async move { Ok(Receipt { provider: "sink", message_id: Some(format!("sink-{n}")) }) })
    }
}

// ---------------------------------------------------------------------------------------------
// Flag-selected provider

/// Chooses SES or Resend per send from the `email.provider` flag, so switching providers is an
/// approved flag change, not a deploy. Resend's key is read from SSM on first use only.
pub struct FlagSelectedProvider {
    flags: Arc<FlagLoader>,
    ses: SesProvider,
    resend_param: Option<String>,
    resend_base_url: String,
    ssm: aws_sdk_ssm::Client,
    resend: OnceCell<ResendProvider>,
}

impl FlagSelectedProvider {
    pub fn new(
        flags: Arc<FlagLoader>,
        ses: SesProvider,
        ssm: aws_sdk_ssm::Client,
        resend_param: Option<String>,
        resend_base_url: String,
    ) -> Self {
        Self { flags, ses, resend_param, resend_base_url, ssm, resend: OnceCell::new() }
    }

    /// The provider the flag selects now.
    async fn choose(&self) -> Result<&dyn EmailProvider, SendError> {
        let choice = self.flags.get().await.set.email_provider().to_string();
        if choice != "resend" {
            return Ok(&self.ses);
        }
        let Some(param) = self.resend_param.as_deref() else {
            return Err(SendError::transient("resend_unconfigured"));
        };
        let resend = self
            .resend
            .get_or_try_init(|| ResendProvider::from_ssm(&self.ssm, param, &self.resend_base_url))
            .await
            .map_err(|msg| {
                tracing::error!(error = %msg, "Resend provider unavailable");
                SendError::transient("resend_key_unavailable")
            })?;
        Ok(resend)
    }
}

impl EmailProvider for FlagSelectedProvider {
    fn name(&self) -> &'static str {
        "flag-selected"
    }
    fn send<'a>(&'a self, email: &'a OutgoingEmail) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move { self.choose().await?.send(email).await })
    }
    fn route<'a>(&'a self) -> BoxFuture<'a, Result<Option<&'a dyn EmailProvider>, SendError>> {
        Box::pin(async move { self.choose().await.map(Some) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_classify() {
        for s in [429, 409, 408, 401, 403] {
            assert!(classify_http("resend", s).is_transient(), "{s}");
        }
        for s in [500, 502, 503, 504] {
            assert!(classify_http("resend", s).is_ambiguous(), "{s}");
        }
        for s in [400, 404, 422] {
            let e = classify_http("resend", s);
            assert!(!e.is_transient() && !e.is_ambiguous(), "{s}");
        }
        assert_eq!(classify_http("resend", 503).code(), "resend_http_503");
        assert!(holdfast_shared::events::is_valid_code(classify_http("resend", 422).code()));
    }

    #[test]
    fn addresses_are_checked_and_secrets_redacted() {
        assert!(plausible_address("jane.doe@example.com"));
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@localhost",
            "a b@example.com",
            "x@y.com\r\nBcc: z@w.com",
            "a@b.",
            "<a@b.c>",
        ] {
            assert!(!plausible_address(bad), "{bad:?}");
        }
        assert_eq!(format!("{:?}", ApiKey::new("re_live_secret")), "ApiKey(<redacted>)");
        let e = OutgoingEmail {
            to: "jane@example.com".into(),
            from: "b@example.com".into(),
            subject: "s".into(),
            text: "Jane".into(),
            html: "Jane".into(),
            idempotency_key: "k".into(),
            attempt_id: Uuid::nil(),
        };
        assert!(!format!("{e:?}").contains("jane"));
    }
}
