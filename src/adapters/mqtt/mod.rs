//! MQTT (v5, QoS 1): publishing with PUBACK confirmation, the inbound consumer, the topic contract
//! and payload codec, the link commands leave through, and the embedded broker.

pub mod admission;
pub mod broker;
pub mod codec;
pub mod embedded;
pub mod inbound;
pub mod link;
pub mod publisher;
pub mod topics;
