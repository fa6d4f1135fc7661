//! MQTT: the topic contract (the publishing and receiving side comes with the MQTT adapter).

pub mod topics;
