//! `oxbow-service`: the actor-based microservice framework the lab-booking services are built on.
//!
//! - [`subscription`]: binds (topics, consumer group) to an actix actor; records are decoded and delivered
//!   in batches, committed only after the handler succeeded, retried with backoff, and sent to a
//!   dead-letter topic when they keep failing or cannot be decoded.
//! - [`sink`]: exactly-once into a database: a batch's rows and its consumed offsets in one transaction,
//!   resumed from the stored offsets after a rebalance or crash, with an outbox for records to publish.
//! - [`config`]: defaults, an optional file and `SERVICE__SECTION__KEY` environment overrides.
//! - [`telemetry`]: human or JSON logs, and Prometheus metrics.
//! - [`http`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`db`]: PostgreSQL, or an embedded SQLite file when no URL is configured, with migrations.
//! - [`startup`]: the start-up steps every service shares (topics, dead-letter topics, cluster handle).

pub mod config;
pub mod db;
pub mod http;
pub mod shutdown;
pub mod sink;
pub mod startup;
pub mod subscription;
pub mod telemetry;
