//! Pure types and rules: no tokio, no sled, no chat crates. Everything here is unit-tested.

pub mod alert;
pub mod card;
pub mod chart;
pub mod classify;
pub mod command;
pub mod condition;
pub mod followup;
pub mod incident;
pub mod playbook;
pub mod policy;
pub mod promql;
pub mod report;
pub mod rfc3339;
pub mod severity;
pub mod stats;
pub mod tally;
