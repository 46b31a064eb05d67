//! holdfast's adapters: everything that talks to the outside world (PostgreSQL, SQS, SSM,
//! CloudWatch, Datadog, email providers), behind small traits where the domain needs them.

pub mod aws;
pub mod config;
pub mod db;
pub mod events;
pub mod flags;
pub mod http;
pub mod identity;
pub mod outbox;
pub mod routes;
pub mod secrets;
pub mod sql;
pub mod telemetry;
