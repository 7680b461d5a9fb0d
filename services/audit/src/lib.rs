//! The audit context: one record per event of every context, in a dense sequence, written only
//! from the streams. Hash chaining, verification and export arrive with the audit issue.

mod activity;
mod grpc;
mod ingest;
mod migration;

use std::sync::Arc;

use pim_config::ServiceName;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::audit::v1::audit_service_server::AuditServiceServer;
use tonic::service::RoutesBuilder;

pub use migration::Migrator;

pub struct Audit;

impl ContextService for Audit {
    const NAME: ServiceName = ServiceName::Audit;
    type Migrator = Migrator;

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let mut routes = RoutesBuilder::default();
        routes.add_service(AuditServiceServer::new(grpc::AuditApi::new(ctx.clone())));
        Ok(Built {
            routes,
            handler: Some(Arc::new(ingest::Recorder::new(ctx.clock.clone()))),
        })
    }
}
