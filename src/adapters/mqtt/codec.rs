//! JSON payloads of the MQTT contract ⇄ Rust values. Decoding is strict: unknown shapes are refused
//! with a reason that goes to the dead-letter table.

use crate::domain::budget::{self, BudgetError};
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

/// Why a payload is refused: a stable reason (the dead letter's) and details for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `oversized`, `too_deep`, `malformed`, `invalid_signal`, `too_many_signals` ...
    pub reason: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl Refused {
    /// A refusal for `reason`.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl From<BudgetError> for Refused {
    fn from(e: BudgetError) -> Self {
        let reason = match e {
            BudgetError::TooDeep => "too_deep",
            BudgetError::TooBig { .. } => "oversized",
        };
        Self::new(reason, e.to_string())
    }
}

/// Decodes a JSON payload of at most [`MAX_PAYLOAD`] bytes, nested at most [`budget::MAX_DEPTH`]
/// levels (checked on the text, before it is parsed).
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Refused> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Refused::new("oversized", format!("payload of {} bytes exceeds {MAX_PAYLOAD}", payload.len())));
    }
    // PostgreSQL stores no NUL in text or jsonb: refuse it here rather than fail the whole batch.
    if payload.contains(&0) || payload.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Err(Refused::new("malformed", "payload contains a NUL character"));
    }
    budget::check_text(payload)?;
    serde_json::from_slice(payload).map_err(|e| Refused::new("malformed", format!("malformed payload: {e}")))
}

/// Checks a free-form value a vehicle sent (a command's result, an event's data).
pub fn check_value(value: &Value) -> Result<(), Refused> {
    Ok(budget::check_value(value, budget::MAX_VALUE_BYTES)?)
}

/// Largest VSS path accepted, in bytes.
pub const MAX_SIGNAL_PATH: usize = 255;

/// Checks a signal name: a COVESA VSS path, dot-separated segments of an ASCII letter followed by
/// letters, digits or `_` (`Vehicle.Cabin.Door.Row1.DriverSide.IsOpen`), at least two segments and at
/// most [`MAX_SIGNAL_PATH`] bytes.
pub fn valid_signal_path(path: &str) -> bool {
    let segment = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    path.len() <= MAX_SIGNAL_PATH && path.split('.').count() >= 2 && path.split('.').all(segment)
}

/// Checks the signals of a state report: at most `max_signals`, each named by a VSS path.
pub fn check_signals(signals: &Map<String, Value>, max_signals: usize) -> Result<(), Refused> {
    if signals.is_empty() {
        return Err(Refused::new("malformed", "a state report needs at least one signal"));
    }
    if signals.len() > max_signals {
        let detail = format!("{} signals in one report, at most {max_signals}", signals.len());
        return Err(Refused::new("too_many_signals", detail));
    }
    match signals.keys().find(|k| !valid_signal_path(k)) {
        Some(bad) => {
            let shown: String = bad.chars().take(64).collect();
            Err(Refused::new("invalid_signal", format!("'{shown}' is not a VSS path (Branch.Leaf, A-Z a-z 0-9 _)")))
        }
        None => Ok(()),
    }
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
        assert!(decode::<StateReport>(&huge).unwrap_err().detail.contains("exceeds"));
    }

    #[test]
    fn a_payload_nested_deeper_than_the_budget_is_refused_before_it_is_parsed() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let raw = format!(r#"{{"msg_id":"m","ts":"2026-01-01T00:00:00Z","data":{deep}}}"#);
        assert_eq!(decode::<VehicleEventReport>(raw.as_bytes()).unwrap_err().reason, "too_deep");
        let big = serde_json::json!({"blob": "x".repeat(budget::MAX_VALUE_BYTES)});
        assert_eq!(check_value(&big).unwrap_err().reason, "oversized");
    }

    #[test]
    fn signal_names_are_vss_paths_and_a_report_has_a_bounded_number() {
        for good in ["Vehicle.Speed", "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", "Vehicle.OBD.O2_WR"] {
            assert!(valid_signal_path(good), "{good}");
        }
        let long = format!("Vehicle.{}", "A".repeat(MAX_SIGNAL_PATH));
        for bad in [
            "",
            "Speed",
            "Vehicle..Speed",
            "Vehicle.1Speed",
            "Vehicle.Spe ed",
            "Vehicle.Speed.",
            "Vehicle.Spëed",
            long.as_str(),
        ] {
            assert!(!valid_signal_path(bad), "{bad}");
        }
        let signals = |n: usize| (0..n).map(|i| (format!("Vehicle.S{i}"), Value::from(i))).collect::<Map<_, _>>();
        assert_eq!(check_signals(&signals(3), 3), Ok(()));
        assert_eq!(check_signals(&signals(4), 3).unwrap_err().reason, "too_many_signals");
        assert_eq!(check_signals(&signals(0), 3).unwrap_err().reason, "malformed");
        let mut named = signals(1);
        named.insert("speed".into(), Value::from(1));
        assert_eq!(check_signals(&named, 3).unwrap_err().reason, "invalid_signal");
    }

    #[test]
    fn nul_characters_are_refused() {
        let raw = br#"{"msg_id":"m","ts":"2026-01-01T00:00:00Z","signals":{"Vehicle.Speed":"a\u0000b"}}"#;
        assert!(decode::<StateReport>(raw).unwrap_err().detail.contains("NUL"));
    }

    #[test]
    fn a_last_will_without_a_timestamp_decodes() {
        let will: ConnectionReport = decode(br#"{"state":"offline"}"#).expect("valid will");
        assert_eq!(will.state, ConnectionState::Offline);
    }
}
