-- Who a hold and the booking made from it belong to: the authenticated subject that created
-- the hold (NFKC + case-folded, as `holdfast_shared::auth::Subject` stores it). Rows written
-- before owners were stored keep NULL: "owner unknown", which only the restaurant's staff and
-- ops may act on (see holdfast_shared::auth::authorize).
ALTER TABLE holds ADD COLUMN owner_subject text CHECK (length(owner_subject) BETWEEN 1 AND 800);
ALTER TABLE bookings ADD COLUMN owner_subject text CHECK (length(owner_subject) BETWEEN 1 AND 800);

-- Abuse limits are counted here, not in a Lambda's memory: live holds per subject and
-- restaurant, and confirmations per subject and restaurant in the last hour.
CREATE INDEX holds_owner_live ON holds (restaurant_id, owner_subject, expires_at)
    WHERE status = 'held' AND owner_subject IS NOT NULL;
CREATE INDEX bookings_owner_recent ON bookings (restaurant_id, owner_subject, created_at)
    WHERE owner_subject IS NOT NULL;
