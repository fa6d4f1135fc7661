//! The Command aggregate (id = command UUID, one short stream per remote command): its whole lifecycle
//! from request to a terminal state, and the catalogue of what a vehicle can be asked.

mod aggregate;
#[cfg(test)]
mod answer_tests;
pub mod catalogue;
mod commands;
mod events;
#[cfg(test)]
mod send_tests;
pub mod status;
#[cfg(test)]
mod tests;

pub use aggregate::{Command, CommandError, CommandPreconditions, CommandServices, PreconditionError};
pub use commands::{AnswerStatus, CommandCommand, RequestCommand, VehicleAnswer};
pub use events::{CommandEvent, RejectedBy, Rejection, Undelivered};
pub use status::CommandStatus;
