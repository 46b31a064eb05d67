//! The holds service: what every use case shares (pool, flags, event recorder, the
//! enforcement check, the current policy, the quote-and-alternatives step). Each use case lives
//! in a file of its own (`quote`, `hold`, `confirm`, `release`, `views`) and reads top to
//! bottom: load → pure domain decision → write → event.

use crate::error::HoldsError;
use crate::store::HoldRow;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use holdfast_adapters::events::EventRecorder;
use holdfast_adapters::flags::FlagLoader;
use holdfast_adapters::sql::Sql;
use holdfast_adapters::telemetry::FunctionTelemetry;
use holdfast_shared::allocator::{self, AllocatorSettings, Alternative, QuoteRejection, QuoteRequest, Selection};
use holdfast_shared::auth::{authorize, Action, Caller, Decision, Resource};
use holdfast_shared::events::{EventContext, EventType, ObservabilityEvent, Severity, Source};
use holdfast_shared::flags::FlagSet;
use holdfast_shared::ids::{RestaurantId, TableId};
use holdfast_shared::local_time::StartTime;
use holdfast_shared::policy::BookingPolicy;
use holdfast_shared::window::Window;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// At most this many alternatives are offered with a conflict.
pub(crate) const MAX_ALTERNATIVES: usize = 5;

pub struct HoldsService {
    pub(crate) pool: Pool,
    pub(crate) recorder: EventRecorder,
    pub(crate) flags: Arc<FlagLoader>,
    enforcement: OnceCell<bool>,
    /// The holds API function's name and cold-start flag, for its log lines.
    telemetry: FunctionTelemetry,
}

pub(crate) fn settings(flags: &FlagSet) -> AllocatorSettings {
    AllocatorSettings { merges_enabled: flags.merges_enabled(), require_adjacency: flags.require_adjacency() }
}

/// The window a quote looks at around `start` (4 h, enough for any seating and buffer). A
/// start so far out that the window is not representable is the client's `start` at fault.
pub(crate) fn probe_window(start: DateTime<Utc>) -> Result<Window, HoldsError> {
    start
        .checked_add_signed(Duration::hours(4))
        .and_then(|end| Window::new(start, end).ok())
        .ok_or_else(|| HoldsError::invalid("start", "is outside the range of supported times"))
}

/// The authorization table on a hold: anything but Allow is "no such hold", so a stranger
/// cannot even learn that it exists.
pub(crate) fn may_act_on(caller: &Caller, action: Action, row: &HoldRow) -> Result<(), HoldsError> {
    let resource = Resource::Owned { restaurant: row.restaurant_id, owner: row.owner.as_ref() };
    match authorize(caller, action, &resource) {
        Decision::Allow => Ok(()),
        Decision::NotFound | Decision::Forbidden => Err(HoldsError::NotFound("hold")),
    }
}

/// The authorization table on a restaurant's booking surface (quote, new hold).
pub(crate) fn may_book_at(caller: &Caller, action: Action, restaurant: RestaurantId) -> Result<(), HoldsError> {
    match authorize(caller, action, &Resource::Restaurant(restaurant)) {
        Decision::Allow => Ok(()),
        Decision::NotFound | Decision::Forbidden => Err(HoldsError::NotFound("restaurant")),
    }
}

/// A start as the client sent it (instant, or the restaurant's wall-clock time) as an instant
/// on this restaurant's clock: a wall-clock time its clocks skip is a 422 naming `start`.
pub(crate) fn resolve_start(policy: &BookingPolicy, start: StartTime) -> Result<DateTime<Utc>, HoldsError> {
    start.resolve(&policy.clock()).map_err(|e| HoldsError::from(holdfast_shared::policy::StartError::LocalTime(e)))
}

/// "No table fits" as an answer, with the alternatives the allocator finds.
pub(crate) fn no_table(code: &'static str, message: &str, alternatives: Vec<Alternative>) -> HoldsError {
    HoldsError::Conflict { code, message: message.into(), alternatives }
}

impl HoldsService {
    pub fn new(pool: Pool, flags: Arc<FlagLoader>) -> Self {
        let recorder = EventRecorder::new(pool.clone());
        let telemetry = FunctionTelemetry::new("holds-api");
        Self { pool, recorder, flags, enforcement: OnceCell::new(), telemetry }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn telemetry(&self) -> &FunctionTelemetry {
        &self.telemetry
    }

    /// Cold-start check that the database enforces the no-overlap constraint. A database that
    /// is down is not "unenforced": the check is retried on the next write.
    pub async fn verify_enforcement(&self) -> Result<bool, HoldsError> {
        let v = self
            .enforcement
            .get_or_try_init(|| async {
                let ok = crate::store::verify_enforcement(&self.pool.get().await?).await?;
                if !ok {
                    tracing::error!(
                        constraint = holdfast_adapters::db::constraints::TABLE_CLAIMS_NO_OVERLAP,
                        "database does not enforce table conflicts; hold writes refused"
                    );
                    let ctx = EventContext::new().error_code_str("strict_constraint_missing");
                    let ev = ObservabilityEvent::new(Source::HoldsApi, EventType::StrictVerifyFailed)
                        .severity(Severity::Error)
                        .context(ctx);
                    self.recorder.record(&ev).await;
                }
                Ok::<bool, HoldsError>(ok)
            })
            .await?;
        Ok(*v)
    }

    pub(crate) async fn require_enforcement(&self) -> Result<(), HoldsError> {
        match self.verify_enforcement().await? {
            true => Ok(()),
            false => Err(HoldsError::EnforcementUnverified),
        }
    }

    pub(crate) async fn policy_of(&self, c: &impl Sql, r: RestaurantId) -> Result<BookingPolicy, HoldsError> {
        crate::store::current_policy(c, r).await?.ok_or(HoldsError::NotFound("restaurant"))
    }

    /// [`Self::quote_now_at`] at the current time.
    pub(crate) async fn quote_now(
        &self,
        c: &impl Sql,
        restaurant: RestaurantId,
        policy: &BookingPolicy,
        flags: &FlagSet,
        req: &QuoteRequest,
    ) -> Result<Selection, HoldsError> {
        self.quote_now_at(c, restaurant, policy, flags, req, Utc::now()).await
    }

    /// Check the start against the policy's booking horizon at `now` (a 422 naming `start`,
    /// before any read: an extreme timestamp never reaches the database), then probe the
    /// restaurant's busy tables around the request and quote: a selection, or a conflict
    /// carrying the bookable alternatives the same busy set allows.
    pub(crate) async fn quote_now_at(
        &self,
        c: &impl Sql,
        restaurant: RestaurantId,
        policy: &BookingPolicy,
        flags: &FlagSet,
        req: &QuoteRequest,
        now: DateTime<Utc>,
    ) -> Result<Selection, HoldsError> {
        policy.check_start(req.start, now)?;
        let probe = probe_window(req.start)?;
        let busy = crate::store::busy(c, restaurant, &probe, None).await?;
        match allocator::quote(policy, settings(flags), req, &busy) {
            Ok(selection) => Ok(selection),
            Err(QuoteRejection::NoTableAvailable) => Err(no_table(
                "no_table_available",
                "no table fits this party at that time",
                allocator::alternatives_bookable(policy, settings(flags), req, &busy, &[], MAX_ALTERNATIVES, now),
            )),
            Err(rej) => Err(HoldsError::Rejected(rej)),
        }
    }

    /// Alternatives after a lost race, read on a fresh connection (the losing transaction is
    /// gone). Best effort: a failure here offers none rather than failing the answer. Only
    /// starts bookable now (booking horizon) are offered.
    pub(crate) async fn alternatives(
        &self,
        restaurant: RestaurantId,
        policy: &BookingPolicy,
        flags: &FlagSet,
        req: &QuoteRequest,
        exclude: &[TableId],
        seated: &Window,
    ) -> Vec<Alternative> {
        let busy = match self.pool.get().await {
            Ok(c) => crate::store::busy(&c, restaurant, seated, None).await.unwrap_or_default(),
            Err(_) => vec![],
        };
        allocator::alternatives_bookable(policy, settings(flags), req, &busy, exclude, MAX_ALTERNATIVES, Utc::now())
    }
}
