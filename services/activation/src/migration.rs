//! The activation context's tables.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(EVENT_TABLES),
            Box::new(REQUESTS),
            Box::new(POLICY_VERSION),
        ]
    }
}

const REQUESTS: SqlMigration = SqlMigration {
    name: "m0002_activation_requests",
    postgres: REQUESTS_SQL,
    sqlite: REQUESTS_SQL,
    down: "DROP TABLE requests;",
};

const REQUESTS_SQL: &str = r#"
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

// Applied migrations are never edited: a change is a new migration.
const POLICY_VERSION: SqlMigration = SqlMigration {
    name: "m0003_request_policy_version",
    postgres: POLICY_VERSION_SQL,
    sqlite: POLICY_VERSION_SQL,
    down: "ALTER TABLE requests DROP COLUMN policy_version;",
};

const POLICY_VERSION_SQL: &str =
    "ALTER TABLE requests ADD COLUMN policy_version BIGINT NOT NULL DEFAULT 0;";
