//! The assignment context's tables.

use pim_events::EventTablesMigration;
use sea_orm::ConnectionTrait;
use sea_orm_migration::{
    DbErr, MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(EventTablesMigration), Box::new(Schedules)]
    }
}

struct Schedules;

impl MigrationName for Schedules {
    fn name(&self) -> &str {
        "m0002_assignment_schedules"
    }
}

// Instants are milliseconds since the epoch: exact, and identical on PostgreSQL and SQLite.
const SQL: &str = r#"
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT,
    created_by TEXT NOT NULL,
    request_key TEXT UNIQUE,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX schedules_holder ON schedules (principal_id, role_id, kind);
CREATE TABLE windows (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    eligibility_schedule_id TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX windows_holder ON windows (principal_id, role_id);
CREATE TABLE revision (
    id INTEGER PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Schedules {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(SQL).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE revision; DROP TABLE windows; DROP TABLE schedules;")
            .await?;
        Ok(())
    }
}
