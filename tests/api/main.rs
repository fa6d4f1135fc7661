//! The integration test binary: tacho on each store (a fresh SQLite file, or a fresh database on the
//! real PostgreSQL, per test), with the embedded broker or the real Mosquitto for MQTT tests.

mod helpers;

mod audit;
mod auth;
mod bad_input;
mod commands;
mod consents;
mod devices;
mod embedded;
mod log;
mod mqtt;
mod openapi;
mod replay;
mod vehicles;
