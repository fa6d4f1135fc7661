//! JSON payloads of the MQTT contract ⇄ Rust values. Decoding is strict: unknown shapes are refused
//! with a reason that goes to the dead-letter table.

use crate::domain::command::AnswerStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Largest inbound payload accepted.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// `vehicles/{vin}/commands/{name}/request`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Command id (also the v5 correlation data).
    pub command_id: Uuid,
    /// Catalogue name.
    pub name: String,
    /// Parameters.
    pub params: Value,
    /// When tacho published it.
    pub issued_at: DateTime<Utc>,
    /// After this the vehicle should not start it.
    pub expires_at: DateTime<Utc>,
}

/// `vehicles/{vin}/commands/{name}/response`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// Command id.
    pub command_id: Uuid,
    /// accepted, in_progress, succeeded, failed or rejected.
    pub status: AnswerStatus,
    /// Error or rejection code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Result of a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Vehicle time.
    pub ts: DateTime<Utc>,
}

/// `vehicles/{vin}/state`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateReport {
    /// Vehicle-side message id (duplicates are dropped).
    pub msg_id: String,
    /// Vehicle time.
    pub ts: DateTime<Utc>,
    /// COVESA VSS path → value.
    pub signals: Map<String, Value>,
}

/// `vehicles/{vin}/events/{type}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleEventReport {
    /// Vehicle-side message id.
    pub msg_id: String,
    /// Vehicle time.
    pub ts: DateTime<Utc>,
    /// Event data.
    #[serde(default)]
    pub data: Value,
}

/// online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Connected.
    Online,
    /// Disconnected (also the Last Will).
    Offline,
}

/// `vehicles/{vin}/connection`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// The state.
    pub state: ConnectionState,
    /// Vehicle time (a Last Will written at connect time may carry none).
    #[serde(default)]
    pub ts: Option<DateTime<Utc>>,
}

/// `broadcast/{topic...}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    /// Broadcast id.
    pub broadcast_id: Uuid,
    /// Topic below `broadcast/`.
    pub topic: String,
    /// Payload.
    pub payload: Value,
    /// When tacho published it.
    pub issued_at: DateTime<Utc>,
    /// When it stops being relevant.
    pub expires_at: DateTime<Utc>,
}

/// Decodes a JSON payload of at most [`MAX_PAYLOAD`] bytes.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("payload of {} bytes exceeds {MAX_PAYLOAD}", payload.len()));
    }
    // PostgreSQL stores no NUL in text or jsonb: refuse it here rather than fail the whole batch.
    if payload.contains(&0) || payload.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err("payload contains a NUL character".to_owned());
    }
    serde_json::from_slice(payload).map_err(|e| format!("malformed payload: {e}"))
}

/// Checks a vehicle-side message id: 1 to 128 printable characters.
pub fn valid_msg_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_decodes_with_optional_fields() {
        let raw = br#"{"command_id":"00000000-0000-0000-0000-000000000007","status":"succeeded","result":{"locked":true},"ts":"2026-01-01T00:00:00Z"}"#;
        let response: CommandResponse = decode(raw).expect("valid response");
        assert_eq!(response.status, AnswerStatus::Succeeded);
        assert_eq!(response.code, None);
    }

    #[test]
    fn malformed_and_oversized_payloads_are_refused() {
        assert!(decode::<CommandResponse>(b"{\"status\":\"done\"}").is_err());
        assert!(decode::<StateReport>(b"not json").is_err());
        let huge = vec![b' '; MAX_PAYLOAD + 1];
        assert!(decode::<StateReport>(&huge).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn nul_characters_are_refused() {
        let raw = br#"{"msg_id":"m","ts":"2026-01-01T00:00:00Z","signals":{"Vehicle.Speed":"a\u0000b"}}"#;
        assert!(decode::<StateReport>(raw).unwrap_err().contains("NUL"));
    }

    #[test]
    fn a_last_will_without_a_timestamp_decodes() {
        let will: ConnectionReport = decode(br#"{"state":"offline"}"#).expect("valid will");
        assert_eq!(will.state, ConnectionState::Offline);
    }
}
