-- A booking's whole life (issue 13): request (pending) -> auto-assign -> confirmed; change;
-- cancel. `revision` counts changes: an email about an older revision is superseded, so a
-- changed booking gets one "updated" email and one reminder, at its new time.
ALTER TABLE bookings ADD COLUMN revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1);
ALTER TABLE bookings ADD COLUMN cancelled_at timestamptz;

-- The durable auto-assign job of a pending request: tried inline, then by the scheduled
-- assigner at `not_before` (never an in-process timer). `state` ends as 'done' (confirmed,
-- or the booking left 'requested'), 'exhausted' (attempts used up or a hard failure: ops get
-- one "pending attention" notice) — the booking then stays pending for a human.
CREATE TABLE booking_assignments (
    booking_id   uuid PRIMARY KEY REFERENCES bookings (id),
    state        text NOT NULL CHECK (state IN ('pending', 'done', 'exhausted')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before   timestamptz NOT NULL,
    last_error   text CHECK (length(last_error) <= 64),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX booking_assignments_due ON booking_assignments (not_before) WHERE state = 'pending';
