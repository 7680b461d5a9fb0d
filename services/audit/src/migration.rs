//! The audit context's tables.

use pim_events::EventTablesMigration;
use sea_orm::{ConnectionTrait, DatabaseBackend};
use sea_orm_migration::{
    DbErr, MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(EventTablesMigration), Box::new(Records)]
    }
}

struct Records;

impl MigrationName for Records {
    fn name(&self) -> &str {
        "m0002_audit_records"
    }
}

const SQL: &str = r#"
CREATE TABLE audit_records (
    sequence BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    activity TEXT NOT NULL,
    producer TEXT NOT NULL,
    producer_sequence BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    payload_type TEXT NOT NULL,
    payload BLOB_TYPE NOT NULL
);
CREATE INDEX audit_records_correlation ON audit_records (correlation_id);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    sequence BIGINT NOT NULL
);
INSERT INTO audit_head (id, sequence) VALUES (1, 0);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Records {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let blob = match db.get_database_backend() {
            DatabaseBackend::Sqlite => "BLOB",
            _ => "BYTEA",
        };
        db.execute_unprepared(&SQL.replace("BLOB_TYPE", blob))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE audit_head; DROP TABLE audit_records;")
            .await?;
        Ok(())
    }
}
