//! The approval context. Its public API, tables and event handling arrive with the approval issue;
//! until then it is hosted like every context: its own database and migrations, an outbox and
//! relay, `EventReplayService`, health and reflection.

use pim_config::ServiceName;
use pim_events::EVENT_TABLES;
use pim_host::{Built, ContextService, HostContext};
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};
use tonic::service::RoutesBuilder;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(EVENT_TABLES)]
    }
}

pub struct Approval;

impl ContextService for Approval {
    const NAME: ServiceName = ServiceName::Approval;
    type Migrator = Migrator;

    async fn build(_ctx: HostContext) -> anyhow::Result<Built> {
        Ok(Built {
            routes: RoutesBuilder::default(),
            handler: None,
        })
    }
}
