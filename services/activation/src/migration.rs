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
            Box::new(LIFECYCLE),
            Box::new(REQUEST_TRACE),
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

const LIFECYCLE: SqlMigration = SqlMigration {
    name: "m0004_request_lifecycle",
    postgres: lifecycle_sql!("BYTEA"),
    sqlite: lifecycle_sql!("BLOB"),
    down: "DROP TABLE request_history;",
};

/// The whole lifecycle: the approval case, the planned window, the reason of an end, the
/// history of every step, and the index that makes a second live activation of the same role
/// and scope impossible, whatever races.
macro_rules! lifecycle_sql {
    ($blob:literal) => {
        concat!(
            r#"
ALTER TABLE requests ADD COLUMN case_id TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN duration_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN requested_start_ms BIGINT;
ALTER TABLE requests ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN updated_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN approval_rule "#,
            $blob,
            r#";
CREATE TABLE request_history (
    request_id TEXT NOT NULL REFERENCES requests (id),
    seq INTEGER NOT NULL,
    at_ms BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
);
CREATE UNIQUE INDEX requests_one_live ON requests (principal_id, role_id, scope)
    WHERE action = 'self_activate'
      AND status IN ('pending_approval', 'pending_provisioning', 'schedule_created', 'provisioned');
CREATE INDEX requests_by_status_end ON requests (status, end_ms);
CREATE INDEX requests_by_status_updated ON requests (status, updated_at_ms);
CREATE INDEX requests_by_principal ON requests (principal_id, id);
"#
        )
    };
}
use lifecycle_sql;

const REQUEST_TRACE: SqlMigration = SqlMigration {
    name: "m0005_request_trace",
    postgres: REQUEST_TRACE_SQL,
    sqlite: REQUEST_TRACE_SQL,
    down: "ALTER TABLE requests DROP COLUMN traceparent; ALTER TABLE requests DROP COLUMN tracestate;",
};

/// The trace of the submission, which every later step of the request continues.
const REQUEST_TRACE_SQL: &str = "ALTER TABLE requests ADD COLUMN traceparent TEXT NOT NULL DEFAULT ''; \
     ALTER TABLE requests ADD COLUMN tracestate TEXT NOT NULL DEFAULT '';";
