//! MQTT (v5, QoS 1): publishing with PUBACK confirmation, the inbound consumer, the topic contract
//! and payload codec, and the dispatcher that turns command events into requests to vehicles.

pub mod broker;
pub mod codec;
pub mod dispatcher;
pub mod inbound;
pub mod lifecycle;
pub mod publisher;
pub mod topics;
