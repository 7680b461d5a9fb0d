//! Hosting one bounded context: its database, its outbox relay and consumers, its security-event
//! path, its peers, and its gRPC server. A context crate describes itself through
//! [`ContextService`]; the host does the wiring the same way for all five, whether they run as
//! separate processes (`pim serve`) or together (`pim dev`).

mod bus;
mod context;
mod running;
mod tls;

pub use bus::{LocalBus, SUBSCRIPTIONS, consumers_of};
pub use context::{Built, ContextService, HostContext, Peers};
pub use running::{HostDeps, RunningService, start};
