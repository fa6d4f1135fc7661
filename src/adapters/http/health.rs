//! Liveness and readiness probes (no auth).

use super::state::AppState;
use crate::adapters::mqtt::dynsec::Health;
use crate::store::{lag, queries};
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "Alive", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// The database answers, no subscriber of the log lags more than `TACHO_READY_MAX_LAG_S` (default
/// 60 s), the broker took tacho's subscriptions and, when tacho keeps the devices' rights at the
/// broker, the broker answers for them;
/// otherwise 503 says what is wrong, naming the backend that holds the readers back when there is one.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Ready", body = String),
              (status = 503, description = "Database unreachable, a subscriber stalled (named, with what holds it back), the broker refused tacho's subscriptions, or the broker's device rights cannot be kept (why)", body = String)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    if let Some(refused) = state.inbound_refused.as_ref().and_then(|r| r.borrow().clone()) {
        let why = format!("the broker refused tacho's subscriptions ({refused}): tacho hears nothing on them");
        return (StatusCode::SERVICE_UNAVAILABLE, why);
    }
    for rights in &state.broker_rights {
        // A broker down or restarting is a passing fault every instance shares: not a reason to take
        // tacho (reads, revocations) out of service. A broker that answers and refuses is a set-up
        // to fix.
        if let Health::Failing(why) = rights.health() {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("broker rights: {why}"));
        }
    }
    if let Err(e) = queries::ping(&state.db).await {
        tracing::warn!(error = %e, "readiness check failed");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable".into());
    }
    let lags = match lag::of(&state.db, &state.subscriptions.names()).await {
        Ok(lags) => lags,
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable".into());
        }
    };
    let limit = state.ready_max_lag.as_secs_f64();
    let stalled: Vec<String> = lags
        .iter()
        .filter(|l| l.seconds > limit)
        .map(|l| format!("subscriber {} is {:.0} s ({} events) behind the log", l.subscriber, l.seconds, l.events))
        .collect();
    if stalled.is_empty() {
        return (StatusCode::OK, "ready".into());
    }
    let holder = match lag::oldest_writer(&state.db).await {
        Ok(Some(writer)) => format!("; the oldest running writer of the log is {writer}"),
        _ => String::new(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("{}{holder}", stalled.join("; ")))
}

/// Counters in the Prometheus text format (MQTT messages, dead letters by reason, publishes ...),
/// and each subscriber's lag behind the log.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut text = state.metrics.render();
    match lag::of(&state.db, &state.subscriptions.names()).await {
        Ok(lags) => text.push_str(&render_lags(&lags)),
        Err(e) => tracing::warn!(error = %e, "cannot measure the subscribers' lag"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The lag gauges.
fn render_lags(lags: &[lag::Lag]) -> String {
    let mut out = String::from(
        "# HELP tacho_subscriber_lag_events Events of the log after a subscriber's checkpoint (counted up to 100000)\n\
         # TYPE tacho_subscriber_lag_events gauge\n",
    );
    for l in lags {
        out.push_str(&format!("tacho_subscriber_lag_events{{subscriber=\"{}\"}} {}\n", l.subscriber, l.events));
    }
    out.push_str(
        "# HELP tacho_subscriber_lag_seconds Age of the oldest event a subscriber has not handled yet\n\
         # TYPE tacho_subscriber_lag_seconds gauge\n",
    );
    for l in lags {
        out.push_str(&format!("tacho_subscriber_lag_seconds{{subscriber=\"{}\"}} {:.3}\n", l.subscriber, l.seconds));
    }
    out
}
