//! One outcome event per request: what a use case learned along the way (`Observed`) and the
//! event it records at the end, success or failure.

use crate::error::HoldsError;
use crate::service::HoldsService;
use holdfast_shared::correlation::CorrelationId;
use holdfast_shared::events::{
    EventContext, EventType, ObservabilityEvent, Operation, Outcome, Severity, Source, StrictMode,
};
use holdfast_shared::hold::MAX_CONFIRM_ATTEMPTS;
use holdfast_shared::ids::{BookingId, HoldId, RestaurantId};
use std::time::Instant;

pub(crate) struct Observed {
    pub op: Operation,
    pub restaurant: Option<RestaurantId>,
    pub booking: Option<BookingId>,
    pub hold: Option<HoldId>,
    pub attempt: u8,
    pub mode: Option<StrictMode>,
    pub policy_version: Option<i32>,
    pub tables: Option<usize>,
    pub party: Option<u16>,
    /// The booking's (or the request's) correlation id, on the event's context.
    pub correlation: Option<CorrelationId>,
    pub started: Instant,
}

impl Observed {
    pub fn new(op: Operation) -> Self {
        Self {
            op,
            restaurant: None,
            booking: None,
            hold: None,
            attempt: 1,
            mode: None,
            policy_version: None,
            tables: None,
            party: None,
            correlation: None,
            started: Instant::now(),
        }
    }

    fn context(&self, outcome: Outcome, code: Option<&str>) -> EventContext {
        let mut ctx = EventContext::new()
            .operation(self.op)
            .outcome(outcome)
            .duration_ms(self.started.elapsed().as_millis() as u64)
            .attempt(self.attempt);
        if self.op == Operation::Confirm {
            // Lets the aggregator count cutoffs (attempt == max_attempts and failed).
            ctx = ctx.max_attempts(MAX_CONFIRM_ATTEMPTS);
        }
        if let Some(c) = code {
            ctx = ctx.error_code_str(c);
        }
        if let Some(m) = self.mode {
            ctx = ctx.strict_mode(m);
        }
        if let Some(v) = self.policy_version {
            ctx = ctx.policy_version(v);
        }
        if let Some(n) = self.tables {
            ctx = ctx.table_count(n as u16);
        }
        if let Some(p) = self.party {
            ctx = ctx.party_size(p);
        }
        if let Some(h) = self.hold {
            ctx = ctx.hold_id(h);
        }
        ctx.correlation_id(self.correlation.clone())
    }
}

impl HoldsService {
    pub(crate) async fn record(&self, o: &Observed, event: EventType, outcome: Outcome, code: Option<&str>) {
        let severity = match outcome {
            Outcome::Error => Severity::Error,
            Outcome::Conflict | Outcome::Rejected => Severity::Warning,
            Outcome::Success => Severity::Info,
        };
        let mut ev =
            ObservabilityEvent::new(Source::HoldsApi, event).severity(severity).context(o.context(outcome, code));
        if let Some(r) = o.restaurant {
            ev = ev.restaurant(r);
        }
        if let Some(b) = o.booking {
            ev = ev.booking(b);
        }
        self.recorder.record(&ev).await;
    }

    /// Record the failure event matching `err` and hand the error back.
    pub(crate) async fn fail(&self, o: &Observed, err: HoldsError) -> HoldsError {
        let (event, outcome) = match &err {
            HoldsError::Conflict { .. } => (EventType::HoldConflict, Outcome::Conflict),
            HoldsError::MetadataIncomplete { .. } => (EventType::HoldMetadataRejected, Outcome::Rejected),
            e if e.is_fault() => (EventType::HoldFailed, Outcome::Error),
            _ => (EventType::HoldFailed, Outcome::Rejected),
        };
        if err.is_fault() {
            tracing::warn!(operation = ?o.op, code = err.code(), error = %err, "request failed");
        }
        self.record(o, event, outcome, Some(err.code())).await;
        err
    }

    /// Record `result`'s outcome: `success` on Ok, the matching failure event on Err.
    pub(crate) async fn finish<T>(
        &self,
        o: &Observed,
        success: EventType,
        result: Result<T, HoldsError>,
    ) -> Result<T, HoldsError> {
        match result {
            Ok(v) => {
                self.record(o, success, Outcome::Success, None).await;
                Ok(v)
            }
            Err(e) => Err(self.fail(o, e).await),
        }
    }
}
