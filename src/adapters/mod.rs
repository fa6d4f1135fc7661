//! Adapters: the technologies behind the ports (PostgreSQL, HTTP).

pub mod http;
pub mod mqtt;
pub mod postgres;
