//! SQL fragments SQLite says its own way (see [`crate::store::Dialect`]).

/// `column` is one of the strings of the JSON array `param`.
pub fn in_json_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT value FROM json_each({param}))")
}

/// The JSON array `column` with the `count` items of the JSON array `param` appended, in order.
pub fn json_append_all(column: &str, param: &str, count: usize) -> String {
    if count == 0 {
        return column.to_owned();
    }
    let items: Vec<String> = (0..count).map(|i| format!("'$[#]', json(json_extract({param}, '$[{i}]'))")).collect();
    format!("json_insert({column}, {})", items.join(", "))
}

/// The time `time` plus `seconds` seconds, as the RFC 3339 text times are kept in.
pub fn plus_seconds(time: &str, seconds: &str) -> String {
    format!("strftime('%Y-%m-%dT%H:%M:%f+00:00', {time}, '+' || {seconds} || ' seconds')")
}

/// The entries of the JSON object `column` as `alias`, and an entry's value as JSON: `json_each`
/// gives strings unquoted and booleans as 1/0, so they are turned back into JSON.
pub fn object_entries(column: &str, alias: &str) -> (String, String) {
    let value = format!(
        "CASE {alias}.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'object' THEN {alias}.value \
         WHEN 'array' THEN {alias}.value ELSE json_quote({alias}.value) END"
    );
    (format!("json_each({column}) {alias}"), value)
}
