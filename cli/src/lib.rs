//! The library behind the `pim` binary, so tests drive exactly what operators run.

pub mod admin;
pub mod bench;
pub mod dev;
mod hosting;

pub use hosting::{migrate_service, migration_fingerprint, start_service};
