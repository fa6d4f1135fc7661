//! Webhooks: subscriptions of partners and services to vehicle and command events, delivered to
//! their HTTPS endpoints as signed CloudEvents, a vehicle's data only under its owner's consent.

pub mod signing;
