//! The audit context's tables.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(EVENT_TABLES), Box::new(RECORDS)]
    }
}

const RECORDS: SqlMigration = SqlMigration {
    name: "m0002_audit_records",
    postgres: RECORDS_POSTGRES,
    sqlite: RECORDS_SQLITE,
    down: "DROP TABLE audit_head; DROP TABLE audit_records;",
};

const RECORDS_POSTGRES: &str = r#"
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
    payload BYTEA NOT NULL
);
CREATE INDEX audit_records_correlation ON audit_records (correlation_id);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    sequence BIGINT NOT NULL
);
INSERT INTO audit_head (id, sequence) VALUES (1, 0);
"#;

const RECORDS_SQLITE: &str = r#"
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
    payload BLOB NOT NULL
);
CREATE INDEX audit_records_correlation ON audit_records (correlation_id);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    sequence BIGINT NOT NULL
);
INSERT INTO audit_head (id, sequence) VALUES (1, 0);
"#;
