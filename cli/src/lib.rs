//! The library behind the `pim` binary, so tests drive exactly what operators run.

pub mod admin;
pub mod alerts;
pub mod approvals;
pub mod audit;
pub mod bench;
pub mod dev;
mod directory;
mod hosting;
pub mod policies;
pub mod requests;
pub mod reviews;
pub mod webhooks;

pub use hosting::{migrate_service, migration_fingerprint, start_service};
