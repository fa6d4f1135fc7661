//! MQTT (v5, QoS 1): publishing with PUBACK confirmation, the inbound consumer, the topic contract
//! and payload codec, the link commands leave through, the embedded broker, and the devices' rights
//! at the broker (Mosquitto's Dynamic Security plugin).

pub mod admission;
pub mod broker;
pub mod codec;
pub mod dynsec;
pub mod embedded;
pub mod inbound;
pub mod link;
pub mod publisher;
pub mod rights;
pub mod topics;
