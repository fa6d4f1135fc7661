//! The Webhook aggregate (id = UUID): a partner's or service's subscription to vehicle and command
//! events, pushed to its HTTPS endpoint as signed CloudEvents. What it may receive of a vehicle is
//! decided by the owner's consent at delivery time, not here.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Endpoint, Pause, Topic, Webhook, WebhookCommand, WebhookError, WebhookEvent, WebhookStatus, MAX_ENDPOINT_BYTES,
    MAX_VINS,
};
