//! The audit context: one record per event of every context, in a dense, hash-chained sequence,
//! written only from the streams and never changed. Signed checkpoints vouch for the chain;
//! `VerifyChain` and the independent verifier (`tools/verify-audit.py`) check it; queries and a
//! streaming export read it. The format is `docs/audit-format.md`.

mod activity;
pub mod alerts;
pub mod chain;
pub mod export;
mod extract;
mod grpc;
mod ingest;
mod migration;
pub mod offline;
pub mod record;
pub mod signing;
pub mod store;
pub mod verify;

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
        let signer = Arc::new(signing::CheckpointSigner::from_settings(&ctx.settings)?);
        match signer.source {
            signing::KeySource::Ephemeral => tracing::warn!(
                key_id = signer.key_id(),
                "PIM_AUDIT_SIGNING_KEY_FILE is not set: checkpoints are signed with a key of this \
                 process only, which a restarted service cannot vouch for"
            ),
            source => tracing::info!(
                key_id = signer.key_id(),
                ?source,
                "audit checkpoint key loaded"
            ),
        }
        let mut routes = RoutesBuilder::default();
        routes.add_service(AuditServiceServer::new(grpc::AuditApi::new(
            ctx.clone(),
            signer.clone(),
        )));
        routes.add_service(alerts::service(ctx.clone()));
        ctx.spawn(chain::run(ctx.clone(), signer));
        ctx.spawn(alerts::run_timer(ctx.clone()));
        Ok(Built {
            routes,
            handler: Some(Arc::new(ingest::Recorder::new(
                ctx.clock.clone(),
                alerts::Alerting::new(ctx.outbox.clone(), &ctx.settings.audit.alerts_disabled),
            ))),
        })
    }
}
