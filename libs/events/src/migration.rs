//! The tables every context carries for the event bus: its outbox and relay state as a
//! producer, and its inbox and per-producer progress as a consumer.

use sea_orm::{ConnectionTrait, DatabaseBackend};
use sea_orm_migration::{DbErr, MigrationName, MigrationTrait, SchemaManager, async_trait};

/// Include it in every service's migrator.
pub struct EventTablesMigration;

impl MigrationName for EventTablesMigration {
    fn name(&self) -> &str {
        "m0001_event_bus"
    }
}

const POSTGRES: &str = r#"
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    sequence BIGINT UNIQUE,
    sequenced_at_ms BIGINT
);
CREATE INDEX outbox_unassigned ON outbox (id) WHERE sequence IS NULL;
CREATE TABLE relay_state (
    producer TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    published_sequence BIGINT NOT NULL
);
CREATE TABLE inbox (
    event_id TEXT PRIMARY KEY,
    producer TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX inbox_producer_sequence ON inbox (producer, sequence);
CREATE TABLE consumer_progress (
    producer TEXT PRIMARY KEY,
    contiguous_sequence BIGINT NOT NULL
);
"#;

const SQLITE: &str = r#"
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    envelope BLOB NOT NULL,
    sequence BIGINT UNIQUE,
    sequenced_at_ms BIGINT
);
CREATE INDEX outbox_unassigned ON outbox (id) WHERE sequence IS NULL;
CREATE TABLE relay_state (
    producer TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    published_sequence BIGINT NOT NULL
);
CREATE TABLE inbox (
    event_id TEXT PRIMARY KEY,
    producer TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX inbox_producer_sequence ON inbox (producer, sequence);
CREATE TABLE consumer_progress (
    producer TEXT PRIMARY KEY,
    contiguous_sequence BIGINT NOT NULL
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for EventTablesMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let sql = match db.get_database_backend() {
            DatabaseBackend::Sqlite => SQLITE,
            _ => POSTGRES,
        };
        db.execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE consumer_progress; DROP TABLE inbox; DROP TABLE relay_state; DROP TABLE outbox;")
            .await?;
        Ok(())
    }
}
