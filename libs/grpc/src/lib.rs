//! The gRPC server scaffold every context uses: authentication and per-RPC allow-lists, trace
//! context and request ids, load shedding, health and reflection, graceful shutdown with a drain
//! deadline, and the one mapping from domain errors to `tonic::Status`.

mod authn;
mod error;
mod server;
mod trace;

pub use authn::{AccessPolicy, AuthLayer, DenialRecorder, caller};
pub use error::{ApiError, Violations, code_name, page_size, reason_of};
pub use server::{ServerOptions, serve};
pub use tonic_health::{ServingStatus, server::HealthReporter};
pub use trace::TraceLayer;
