//! Counters for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Help texts of the counters tacho keeps.
const HELP: [(&str, &str); 15] = [
    ("tacho_mqtt_messages_total", "MQTT messages received, by kind"),
    ("tacho_dead_letters_total", "MQTT messages refused and stored as dead letters, by reason"),
    ("tacho_facts_appended_total", "Vehicle facts appended to the log, by type"),
    ("tacho_commands_published_total", "Command requests published and acknowledged by the broker"),
    (
        "tacho_publish_failures_total",
        "Publishes the broker did not take, by kind and reason (no_subscriber, refused, unavailable)",
    ),
    ("tacho_answers_wrong_vehicle_total", "Command answers refused because they came on another vehicle's topic"),
    ("tacho_signals_dropped_total", "Position signals dropped because the location consent was missing"),
    (
        "tacho_events_passed_over_total",
        "Events of the log a subscriber passed over because they do not decode, by subscriber",
    ),
    (
        "tacho_connection_messages_ignored_total",
        "Connection messages and Last Wills that said nothing new, by reason (stale: of an older session; repeat)",
    ),
    ("tacho_mqtt_dropped_total", "QoS 0 MQTT messages dropped because the inbound queue was full"),
    ("tacho_http_refused_total", "HTTP requests refused for lack of capacity, by what was full"),
    ("tacho_webhook_attempts_total", "Webhook requests sent, by outcome (delivered, failed)"),
    ("tacho_webhook_events_delivered_total", "Events delivered to webhook endpoints (a 2xx answer)"),
    ("tacho_webhook_replays_total", "Webhook replays asked for"),
    (
        "tacho_webhook_commands_unresolved_total",
        "Command events a webhook deliverer passed over because the commands read model has no row for them",
    ),
];

/// Labelled counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Adds `by` to counter `name` with `labels`.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += by;
        }
    }

    /// Adds one.
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// The value of one counter (tests and the bench read it).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.counters
            .lock()
            .map(|c| c.iter().filter(|((n, l), _)| *n == name && *l == wanted.join(",")).map(|(_, v)| *v).sum())
            .unwrap_or(0)
    }

    /// Renders every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(counters) = self.counters.lock() else { return out };
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let mut any = false;
            for ((n, labels), value) in counters.iter().filter(|((n, _), _)| *n == name) {
                any = true;
                match labels.is_empty() {
                    true => {
                        let _ = writeln!(out, "{n} {value}");
                    }
                    false => {
                        let _ = writeln!(out, "{n}{{{labels}}} {value}");
                    }
                }
            }
            if !any {
                let _ = writeln!(out, "{name} 0");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_labels_and_zeroes() {
        let metrics = Metrics::default();
        metrics.inc("tacho_dead_letters_total", &[("reason", "malformed")]);
        metrics.add("tacho_dead_letters_total", &[("reason", "malformed")], 2);
        let text = metrics.render();
        assert!(text.contains("tacho_dead_letters_total{reason=\"malformed\"} 3"), "{text}");
        assert!(text.contains("tacho_commands_published_total 0"));
        assert_eq!(metrics.get("tacho_dead_letters_total", &[("reason", "malformed")]), 3);
    }
}
