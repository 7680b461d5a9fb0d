//! The activation context: requests from people to activate a role they are eligible for, for a
//! reason, for a while. It enforces the rules at submission, hands off to approval where the
//! policy asks for it, provisions the window into the assignment context and announces every
//! step. It never stores schedules itself.

mod consumer;
mod flow;
mod grpc;
mod migration;
mod model;
mod rules;
mod store;
mod timers;

use std::sync::Arc;

use pim_config::ServiceName;
use pim_host::{Built, ContextService, HostContext};
use pim_proto::activation::v1::activation_service_server::ActivationServiceServer;
use tokio::sync::Notify;
use tonic::service::RoutesBuilder;

pub use migration::Migrator;

pub struct Activation;

impl ContextService for Activation {
    const NAME: ServiceName = ServiceName::Activation;
    type Migrator = Migrator;

    async fn build(ctx: HostContext) -> anyhow::Result<Built> {
        let store = store::Store::new(ctx.db.clone());
        let flow = flow::Flow {
            store: store.clone(),
            ctx: ctx.clone(),
            faults: flow::Faults::new(ctx.settings.fault_points.clone()),
        };
        let approved = Arc::new(Notify::new());
        let every = ctx.settings.timer_interval;
        let expire = timers::expire(flow.clone(), every);
        ctx.spawn(expire);
        let reconcile = timers::reconcile(
            flow.clone(),
            approved.clone(),
            every,
            ctx.settings.reconcile_after,
        );
        ctx.spawn(reconcile);
        let consumer = consumer::Consumer {
            store,
            outbox: ctx.outbox.clone(),
            approved,
            decided: std::sync::atomic::AtomicBool::new(false),
        };
        let mut routes = RoutesBuilder::default();
        routes.add_service(ActivationServiceServer::new(grpc::ActivationApi::new(flow)));
        Ok(Built {
            routes,
            handler: Some(Arc::new(consumer)),
        })
    }
}
