//! Budgets of the JSON values that enter tacho from clients and vehicles, checked at every edge
//! before anything is written.
//!
//! Why: serde_json reads at most 128 levels of nesting, and the log wraps every value it stores 2–3
//! levels deeper than it arrived (`{"CommandRequested": {"params": …}}`). A value accepted near that
//! limit could be written and never read back. The budgets sit far inside what storage round-trips.

use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects accepted in any JSON document or value (a scalar is depth 0,
/// `[1]` depth 1).
pub const MAX_DEPTH: usize = 32;

/// Largest free-form JSON value (command parameters and results, reported event data, broadcast
/// payloads, a vehicle's data-collection configuration), serialized.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Why a value is over its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Larger than its size budget.
    #[error("JSON value of {bytes} bytes exceeds {limit} bytes")]
    TooBig {
        /// Its serialized size.
        bytes: usize,
        /// The budget.
        limit: usize,
    },
}

/// Checks the nesting of a JSON text without parsing it (so a hostile document costs one pass and
/// no recursion): brackets outside strings. Malformed text is left to the parser.
pub fn check_text(text: &[u8]) -> Result<(), BudgetError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(BudgetError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The nesting depth of `value`, without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {
                deepest = deepest.max(level);
                continue;
            }
        }
        deepest = deepest.max(level + 1);
    }
    deepest
}

/// Checks a free-form value: at most [`MAX_DEPTH`] deep and `limit` bytes serialized.
pub fn check_value(value: &Value, limit: usize) -> Result<(), BudgetError> {
    within(depth(value), value, limit)
}

/// [`check_value`] of a JSON object held as its map.
pub fn check_object(map: &Map<String, Value>, limit: usize) -> Result<(), BudgetError> {
    within(1 + map.values().map(depth).max().unwrap_or(0), map, limit)
}

fn within(depth: usize, value: &impl serde::Serialize, limit: usize) -> Result<(), BudgetError> {
    if depth > MAX_DEPTH {
        return Err(BudgetError::TooDeep);
    }
    let bytes = serialized_len(value);
    if bytes > limit {
        return Err(BudgetError::TooBig { bytes, limit });
    }
    Ok(())
}

/// The length of `value` as compact JSON, without building the text.
fn serialized_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value cannot fail; a count that stopped short is still a lower bound.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn text_at_the_depth_budget_passes_and_one_level_more_is_refused() {
        assert_eq!(check_text(nested(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(check_text(nested(MAX_DEPTH + 1).as_bytes()), Err(BudgetError::TooDeep));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!(r#"{{"a": "{}\"[[", "b": [1]}}"#, "[".repeat(200));
        assert_eq!(check_text(text.as_bytes()), Ok(()));
    }

    #[test]
    fn a_parsed_value_is_measured_the_same_way() {
        let value: Value = serde_json::from_str(&nested(MAX_DEPTH)).unwrap();
        assert_eq!(depth(&value), MAX_DEPTH);
        assert_eq!(depth(&json!({"k": [{"x": 1}]})), 3);
        assert_eq!(depth(&json!(1)), 0);
        let deep: Value = serde_json::from_str(&nested(MAX_DEPTH + 1)).unwrap();
        assert_eq!(check_value(&deep, MAX_VALUE_BYTES), Err(BudgetError::TooDeep));
    }

    #[test]
    fn a_value_over_its_size_budget_is_refused() {
        let big = json!("x".repeat(MAX_VALUE_BYTES));
        assert!(matches!(check_value(&big, MAX_VALUE_BYTES), Err(BudgetError::TooBig { .. })));
        assert_eq!(check_value(&json!({"key": "k", "value": 1}), MAX_VALUE_BYTES), Ok(()));
    }
}
