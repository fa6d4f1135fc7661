//! The integration test binary: tacho on each store (a fresh SQLite file, or a fresh database on the
//! real PostgreSQL, per test), with the embedded broker or the real Mosquitto for MQTT tests.

/// Runs `$body` with `$p` bound to the pool of a `&Db` (`&PgPool` or `&SqlitePool`): tests reach
/// into the database as someone with its password could.
macro_rules! on_db {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            tacho::store::Db::Postgres($p) => $body,
            tacho::store::Db::Sqlite(embedded) => {
                let $p = &embedded.pool;
                $body
            }
        }
    };
}

mod helpers;
mod hostile;

mod audit;
mod auth;
mod bad_input;
mod commands;
mod connection;
mod consents;
mod devices;
mod dispatch;
mod embedded;
mod faults;
mod fencing;
mod fuzz;
mod limits;
mod log;
mod mqtt;
mod openapi;
mod pki;
mod replay;
mod secured;
mod servers;
mod vehicles;
mod webhooks;
