//! Read models and the machinery that keeps them: durable, checkpointed subscribers of the log
//! ([`crate::store::log`]).
//!
//! A subscriber applies each event exactly once: its read-model writes and its checkpoint are one
//! transaction. Read models import the store, never a transport.

pub mod commands;
pub mod consents;
pub mod devices;
pub mod rebuild;
mod runner;
pub mod seals;
pub mod state;
pub mod vehicles;
pub mod webhooks;

pub use rebuild::Rebuilt;
pub use runner::{Process, Projection, ProjectionError, Subscriptions};
