//! tacho: an event-sourced command and vehicle-state service for connected vehicles.
//!
//! Architecture map (what each module owns, and what it must not import):
//! - [`domain`]: the aggregates Vehicle, Device, Consent and Command. Pure decide/apply logic;
//!   imports no sqlx, axum or rumqttc and never reads a clock.
//! - [`projections`]: the subscription runner (checkpointed catch-up readers of the log) and one
//!   module per read model. Knows the log's rows, not HTTP.
//! - [`adapters`]: the technology: the store (PostgreSQL or the embedded SQLite behind one handle:
//!   event store, log reader, facts, queries, migrations), MQTT (confirmed publishing, the inbound
//!   consumer, the dispatcher and lifecycle processes, the embedded broker) and HTTP (axum router,
//!   auth, problem+json, OpenAPI). Adapters may import the domain and projections, never each
//!   other's internals but through the types they export.
//! - [`config`]: the only place that reads the environment.
//! - [`app`]: the composition root: pools, frameworks, subscriptions, MQTT, HTTP, shutdown.
//! - [`metrics`]: counters for `/metrics`. [`sim`]: simulated vehicles. [`bench`]: `tacho bench`.
//!   [`demo`]: the start-up banner and `serve --demo`. [`maintenance`]: `audit verify`, `projections rebuild`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod adapters;
pub mod app;
pub mod bench;
pub mod config;
pub mod demo;
pub mod domain;
pub mod maintenance;
pub mod metrics;
pub mod projections;
pub mod sim;
