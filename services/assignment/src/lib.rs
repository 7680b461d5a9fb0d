//! The assignment context: the source of truth for who may hold what, where and when. It owns
//! schedules, activated windows and the access query. It never decides approvals or sends mail.

mod domain;
mod error;
mod grpc;
mod index;
mod migration;
mod store;
mod timers;

use pim_config::ServiceName;
use pim_grpc::AccessPolicy;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::assignment::v1::{
    assignment_internal_service_server::AssignmentInternalServiceServer,
    assignment_service_server::AssignmentServiceServer,
};
use tonic::service::RoutesBuilder;

pub use domain::scope::Scope;
pub use migration::Migrator;

pub struct Assignment;

impl ContextService for Assignment {
    const NAME: ServiceName = ServiceName::Assignment;
    type Migrator = Migrator;

    fn access_policy() -> AccessPolicy {
        // ARCHITECTURE §4: each internal command has its named callers, and nobody else.
        AccessPolicy::default()
            .allow_services("/pim.assignment.v1.AssignmentInternalService/", &[])
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/ProvisionWindow",
                &["activation"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/RevokeWindow",
                &["activation"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/ExtendSchedule",
                &["activation"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/RenewSchedule",
                &["activation"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/RemoveSchedule",
                &["approval", "audit"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/RemoveSchedules",
                &["approval"],
            )
            .allow_services(
                "/pim.assignment.v1.AssignmentInternalService/ConvertSchedule",
                &["audit"],
            )
    }

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let store = store::Store::new(ctx.db.clone());
        store.seed_built_in_roles().await?;
        store
            .seed_break_glass(
                &ctx.outbox,
                &ctx.settings.break_glass_principals,
                ctx.clock.now_millis(),
            )
            .await?;
        ctx.outbox.wake();
        ctx.spawn(timers::run(
            store.clone(),
            ctx.clone(),
            ctx.settings.timer_interval,
        ));
        let index = index::AccessIndex::load(store.clone()).await?;
        ctx.spawn(index.clone().follow(ctx.cancel.clone()));
        let api = grpc::AssignmentApi::new(store, index, ctx);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(AssignmentServiceServer::new(api.clone()))
            .add_service(AssignmentInternalServiceServer::new(api));
        Ok(Built {
            routes,
            handler: None,
        })
    }
}
