//! Quote: which table(s) the restaurant's current policy would give this party at this time.
//! Read-only: nothing is reserved until a hold.

use crate::dto::{self, QuoteBody};
use crate::error::HoldsError;
use crate::observe::Observed;
use crate::outcome::Quoted;
use crate::service::{may_book_at, resolve_start, HoldsService};
use chrono::Utc;
use holdfast_adapters::telemetry::Correlation;
use holdfast_shared::allocator::QuoteRequest;
use holdfast_shared::auth::{Action, Caller};
use holdfast_shared::events::{EventType, Operation};
use holdfast_shared::ids::RestaurantId;

impl HoldsService {
    pub async fn quote(
        &self,
        caller: &Caller,
        restaurant: RestaurantId,
        body: QuoteBody,
        corr: &Correlation,
    ) -> Result<Quoted, HoldsError> {
        let mut o = Observed::new(Operation::Quote);
        o.correlation = Some(corr.id());
        o.restaurant = Some(restaurant);
        o.party = Some(body.party_size);
        let result = match may_book_at(caller, Action::Quote, restaurant) {
            Ok(()) => self.quote_inner(&mut o, restaurant, body).await,
            Err(e) => Err(e),
        };
        self.finish(&o, EventType::QuoteCompleted, result).await
    }

    async fn quote_inner(
        &self,
        o: &mut Observed,
        restaurant: RestaurantId,
        body: QuoteBody,
    ) -> Result<Quoted, HoldsError> {
        let party = dto::party("party_size", body.party_size)?;
        let flags = self.flags.get().await.set;
        let c = self.pool.get().await?;
        let policy = self.policy_of(&c, restaurant).await?;
        o.policy_version = Some(policy.version);
        let req = QuoteRequest { party, start: resolve_start(&policy, body.start)? };
        let selection = self.quote_now_at(&c, restaurant, &policy, &flags, &req, Utc::now()).await?;
        o.tables = Some(selection.table_ids.len());
        Ok(Quoted::new(restaurant, selection))
    }
}
