//! holdfast's domain rules. Pure: no AWS, no database types, no async.
//!
//! Adapters (PostgreSQL, SQS, SSM, CloudWatch, Datadog, email providers) live in
//! `holdfast-adapters`; the Lambda handlers in `functions/` glue the two together.

pub mod alerts;
pub mod allocator;
pub mod auth;
pub mod booking;
pub mod correlation;
pub mod email;
pub mod events;
pub mod flags;
pub mod guest;
pub mod hold;
pub mod ids;
pub mod local_time;
pub mod metrics;
pub mod policy;
pub mod rollout;
pub mod window;
