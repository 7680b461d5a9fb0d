//! The activation context: requests from people to activate a role they are eligible for, for a
//! reason, for a while. It enforces the rules at submission, provisions the window into the
//! assignment context and announces every step. It never stores schedules itself.

mod grpc;
mod migration;
mod rules;
mod store;

use pim_config::ServiceName;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::activation::v1::activation_service_server::ActivationServiceServer;
use tonic::service::RoutesBuilder;

pub use migration::Migrator;

pub struct Activation;

impl ContextService for Activation {
    const NAME: ServiceName = ServiceName::Activation;
    type Migrator = Migrator;

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let api = grpc::ActivationApi::new(store::Store::new(ctx.db.clone()), ctx);
        let mut routes = RoutesBuilder::default();
        routes.add_service(ActivationServiceServer::new(api));
        Ok(Built {
            routes,
            handler: None,
        })
    }
}
