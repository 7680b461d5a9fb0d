//! The activation context's tables.

use pim_events::EventTablesMigration;
use sea_orm::ConnectionTrait;
use sea_orm_migration::{
    DbErr, MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(EventTablesMigration), Box::new(Requests)]
    }
}

struct Requests;

impl MigrationName for Requests {
    fn name(&self) -> &str {
        "m0002_activation_requests"
    }
}

const SQL: &str = r#"
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    client_request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    justification TEXT NOT NULL,
    ticket_system TEXT NOT NULL,
    ticket_number TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    window_id TEXT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (principal_id, client_request_id)
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Requests {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(SQL).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE requests;")
            .await?;
        Ok(())
    }
}
