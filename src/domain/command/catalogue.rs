//! The command catalogue: names vehicles understand and the parameters each takes.

use crate::domain::budget;
use serde_json::{Map, Value};

/// Default seconds to wait for a final answer.
pub const DEFAULT_TIMEOUT_S: u32 = 30;
/// Largest timeout.
pub const MAX_TIMEOUT_S: u32 = 3600;
/// Default store-and-forward time to live.
pub const DEFAULT_TTL_S: u32 = 3600;
/// Largest time to live: 7 days.
pub const MAX_TTL_S: u32 = 7 * 24 * 3600;

/// Every command name vehicles accept.
pub const NAMES: [&str; 9] = [
    "lock_doors",
    "unlock_doors",
    "flash_lights",
    "honk",
    "start_charging",
    "stop_charging",
    "set_climate",
    "set_charge_limit",
    "configure",
];

/// Why a command request does not fit the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogueError {
    /// The name is not in the catalogue.
    UnknownCommand(String),
    /// The parameters are missing, extra or out of range.
    InvalidParameters(String),
}

/// Checks `params` for `name` and returns them normalized (`{}` for commands without parameters).
pub fn validate(name: &str, params: &Value) -> Result<Value, CatalogueError> {
    let empty = Map::new();
    let object = match params {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return Err(invalid("params must be a JSON object")),
    };
    match name {
        "lock_doors" | "unlock_doors" | "flash_lights" | "honk" | "start_charging" | "stop_charging" => {
            only_fields(object, &[])?;
            Ok(Value::Object(Map::new()))
        }
        "set_climate" => {
            only_fields(object, &["temperature_c", "on"])?;
            let temperature = object
                .get("temperature_c")
                .and_then(Value::as_f64)
                .ok_or_else(|| invalid("set_climate needs temperature_c, a number from 16.0 to 30.0"))?;
            if !(16.0..=30.0).contains(&temperature) {
                return Err(invalid(&format!("temperature_c {temperature} is outside 16.0..30.0")));
            }
            let on =
                object.get("on").and_then(Value::as_bool).ok_or_else(|| invalid("set_climate needs on, a boolean"))?;
            Ok(serde_json::json!({ "temperature_c": temperature, "on": on }))
        }
        "set_charge_limit" => {
            only_fields(object, &["percent"])?;
            let percent = object
                .get("percent")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid("set_charge_limit needs percent, an integer from 50 to 100"))?;
            if !(50..=100).contains(&percent) {
                return Err(invalid(&format!("percent {percent} is outside 50..100")));
            }
            Ok(serde_json::json!({ "percent": percent }))
        }
        "configure" => {
            only_fields(object, &["key", "value"])?;
            let key =
                object.get("key").and_then(Value::as_str).ok_or_else(|| invalid("configure needs key, a string"))?;
            if key.is_empty() || key.len() > 128 {
                return Err(invalid("configure key must be 1 to 128 characters"));
            }
            let value = object.get("value").ok_or_else(|| invalid("configure needs value, any JSON"))?;
            budget::check_value(value, budget::MAX_VALUE_BYTES)
                .map_err(|e| invalid(&format!("configure value: {e}")))?;
            Ok(serde_json::json!({ "key": key, "value": value }))
        }
        other => Err(CatalogueError::UnknownCommand(other.to_owned())),
    }
}

fn invalid(message: &str) -> CatalogueError {
    CatalogueError::InvalidParameters(message.to_owned())
}

fn only_fields(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), CatalogueError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(invalid(&format!("unknown parameter '{extra}'"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_without_parameters_take_none() {
        assert_eq!(validate("lock_doors", &Value::Null), Ok(json!({})));
        assert!(matches!(validate("honk", &json!({"loud": true})), Err(CatalogueError::InvalidParameters(_))));
    }

    #[test]
    fn climate_temperature_must_be_between_16_and_30() {
        assert!(validate("set_climate", &json!({"temperature_c": 21.5, "on": true})).is_ok());
        assert!(validate("set_climate", &json!({"temperature_c": 35, "on": true})).is_err());
        assert!(validate("set_climate", &json!({"temperature_c": 20})).is_err());
    }

    #[test]
    fn charge_limit_must_be_between_50_and_100() {
        assert!(validate("set_charge_limit", &json!({"percent": 80})).is_ok());
        assert!(validate("set_charge_limit", &json!({"percent": 40})).is_err());
        assert!(validate("set_charge_limit", &json!({"percent": 80.5})).is_err());
    }

    #[test]
    fn configure_takes_a_key_and_any_value() {
        assert!(validate("configure", &json!({"key": "telemetry.rate_hz", "value": {"a": 1}})).is_ok());
        assert!(validate("configure", &json!({"value": 1})).is_err());
    }

    #[test]
    fn a_configure_value_over_its_budget_is_refused() {
        let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(33), "]".repeat(33))).unwrap();
        assert!(
            matches!(validate("configure", &json!({"key": "k", "value": deep})), Err(CatalogueError::InvalidParameters(m)) if m.contains("deeper"))
        );
        let big = json!({"key": "k", "value": "x".repeat(budget::MAX_VALUE_BYTES)});
        assert!(
            matches!(validate("configure", &big), Err(CatalogueError::InvalidParameters(m)) if m.contains("exceeds"))
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            validate("self_destruct", &Value::Null),
            Err(CatalogueError::UnknownCommand("self_destruct".into()))
        );
    }
}
