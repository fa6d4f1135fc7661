//! Adapters: the technologies behind the ports (PostgreSQL or SQLite, MQTT, HTTP).
//!
//! `sql`, `log`, `store`, `queries`, `facts`, `idempotency` and `verify` work on either store;
//! `postgres` and `sqlite` hold what only one of them needs (connecting, migrations, wake-ups).

pub mod embedded_broker;
pub mod facts;
pub mod http;
pub mod idempotency;
pub mod log;
pub mod mqtt;
pub mod postgres;
pub mod queries;
pub mod sql;
pub mod sqlite;
mod store;
pub mod verify;

pub use store::{EventStores, Frameworks};
