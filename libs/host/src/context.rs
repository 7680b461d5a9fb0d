//! What a context crate implements, and what the host hands it.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use pim_client::{Credentials, PimClient};
use pim_clock::SharedClock;
use pim_config::{ServiceName, Settings};
use pim_events::{EventHandler, Outbox, SecurityEvents};
use pim_grpc::AccessPolicy;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

/// Everything a context needs at run time. Cloning is cheap.
#[derive(Clone)]
pub struct HostContext {
    pub service: ServiceName,
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub outbox: Outbox,
    pub security: SecurityEvents,
    pub peers: Peers,
    pub cancel: CancellationToken,
}

impl HostContext {
    /// Spawns a background task of this context (a timer, a runner): the spans it starts
    /// without a parent of their own are exported under this context's name.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(pim_telemetry::in_service(self.service.as_str(), task));
    }
}

/// Clients of the other contexts, authenticated as this service.
#[derive(Clone)]
pub struct Peers {
    clients: Arc<HashMap<ServiceName, PimClient>>,
}

impl Peers {
    pub(crate) fn new(settings: &Settings, credentials: Credentials) -> anyhow::Result<Self> {
        let mut clients = HashMap::new();
        let tls = crate::tls::peers(settings)?;
        for peer in ServiceName::ALL {
            let channel = pim_client::channel(
                settings.peer_url(peer),
                Duration::from_secs(10),
                tls.clone(),
            )?;
            clients.insert(peer, PimClient::new(channel, credentials.clone()));
        }
        Ok(Self {
            clients: Arc::new(clients),
        })
    }

    pub fn get(&self, peer: ServiceName) -> &PimClient {
        // Every name is inserted in `new`.
        &self.clients[&peer]
    }
}

/// What a context's `build` returns: its gRPC services and its event handler.
pub struct Built {
    pub routes: RoutesBuilder,
    /// Handles the events of the producers this context subscribes to (see [`crate::SUBSCRIPTIONS`]).
    pub handler: Option<Arc<dyn EventHandler>>,
}

/// A bounded context, as the host sees it.
pub trait ContextService: Send + Sync + 'static {
    const NAME: ServiceName;
    type Migrator: MigratorTrait;

    /// Internal methods and the service identities allowed on them.
    fn access_policy() -> AccessPolicy {
        AccessPolicy::default()
    }

    /// Builds the context's handlers; may seed data (idempotently).
    fn build(ctx: HostContext) -> impl Future<Output = anyhow::Result<Built>> + Send;
}
