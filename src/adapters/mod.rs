//! Adapters: the transports (HTTP for clients, MQTT for vehicles). They hold no SQL: handlers and
//! consumers call named functions of the store, and processes through their ports.

pub mod http;
pub mod mqtt;
