//! tacho: an event-sourced command and vehicle-state service for connected vehicles.
//!
//! Architecture map. Imports run one way, each layer using only those to its left:
//! `domain ← store ← projections ← processes / audit / adapters ← app ← main`.
//! - [`domain`]: the aggregates Vehicle, Device, Consent and Command. Pure decide/apply logic;
//!   imports no sqlx, axum or rumqttc and never reads a clock.
//! - [`store`]: the one handle over PostgreSQL or SQLite and everything kept in it: the event log
//!   (appends, commit-ordered reads, stored events), checkpoints and their locks, seal hashing, the
//!   cqrs-es repositories, idempotency keys, vehicle facts, named queries; dialects in pairs under
//!   `store/postgres` and `store/sqlite`. The only module that writes SQL, with the read models.
//! - [`projections`]: the subscription runner (checkpointed readers of the log) and one module per
//!   read model; imports the store, never a transport.
//! - [`processes`]: side effects driven by the log: the dispatcher, the vehicle processes (Last
//!   Will, consent revoked), the clock's sweep. Commands leave through their port, [`processes::CommandLink`].
//! - [`audit`]: `audit verify` and what it reports.
//! - [`auth`]: roles, token claims and keys.
//! - [`adapters`]: transports only, with no SQL: HTTP (axum router, auth extractor, problem+json,
//!   OpenAPI) and MQTT (confirmed publishing, the inbound consumer, the command link, the embedded
//!   broker). Adapters may import processes (the link implements their port) and audit.
//! - [`config`]: the only place that reads the environment.
//! - [`app`]: the composition root: pools, frameworks, subscriptions, MQTT, HTTP, shutdown.
//! - [`metrics`]: counters for `/metrics`. [`sim`]: simulated vehicles. [`bench`]: `tacho bench`.
//!   [`demo`]: the start-up banner and `serve --demo`. [`maintenance`]: `audit verify`, `projections rebuild`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod adapters;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod config;
pub mod demo;
pub mod domain;
pub mod maintenance;
pub mod metrics;
pub mod processes;
pub mod projections;
pub mod sim;
pub mod store;
pub mod webhooks;
