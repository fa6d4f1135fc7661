//! The integration test binary: tacho against the real PostgreSQL, one fresh database per test.

mod helpers;

mod audit;
mod auth;
mod bad_input;
mod commands;
mod consents;
mod devices;
mod log;
mod mqtt;
mod openapi;
mod vehicles;
