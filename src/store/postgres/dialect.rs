//! SQL fragments PostgreSQL says its own way (see [`crate::store::Dialect`]).

/// `column` is one of the strings of the JSON array `param`.
pub fn in_json_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT jsonb_array_elements_text({param}))")
}

/// The entries of the JSON object `column` as `alias`, and an entry's value as JSON.
pub fn object_entries(column: &str, alias: &str) -> (String, String) {
    (format!("jsonb_each({column}) {alias}"), format!("{alias}.value"))
}
