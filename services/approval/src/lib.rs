//! The approval context: human decisions on cases, in stages with a quorum each, with
//! escalation and deadlines. It decides and announces; the owners of a request act on the
//! decision. It never grants or removes anything itself.

mod directory;
mod domain;
mod grpc;
mod migration;
mod reviews;
mod store;
mod timers;

use pim_config::ServiceName;
use pim_grpc::AccessPolicy;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::approval::v1::{
    approval_internal_service_server::ApprovalInternalServiceServer,
    approval_service_server::ApprovalServiceServer,
};
use tonic::service::RoutesBuilder;

pub use migration::Migrator;

pub struct Approval;

impl ContextService for Approval {
    const NAME: ServiceName = ServiceName::Approval;
    type Migrator = Migrator;

    fn access_policy() -> AccessPolicy {
        // ARCHITECTURE §4: cases are opened and canceled by the activation context only.
        AccessPolicy::default()
            .allow_services("/pim.approval.v1.ApprovalInternalService/", &["activation"])
    }

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let store = store::Store::new(ctx.db.clone());
        ctx.spawn(timers::run(
            store.clone(),
            ctx.clone(),
            ctx.settings.timer_interval,
        ));
        let reviews = reviews::Reviews {
            store: reviews::ReviewStore::new(ctx.db.clone()),
            ctx: ctx.clone(),
        };
        ctx.spawn(reviews::runner::run(
            reviews.clone(),
            ctx.settings.timer_interval,
        ));
        let history = reviews::history::History {
            store: reviews.store.clone(),
        };
        let api = grpc::ApprovalApi::new(store, ctx, reviews);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(ApprovalServiceServer::new(api.clone()))
            .add_service(ApprovalInternalServiceServer::new(api));
        Ok(Built {
            routes,
            handler: Some(std::sync::Arc::new(history)),
        })
    }
}
