//! The notification context's tables: webhook subscriptions (secrets sealed), deliveries (one
//! row per event, channel and recipient, written in the consumer's transaction) and their
//! attempts. `deliveries` is also the work queue: workers claim due rows atomically.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(EVENT_TABLES),
            Box::new(DELIVERIES),
            Box::new(DIGEST),
            Box::new(DELIVERY_TRACE),
        ]
    }
}

/// The same tables for both backends; only the binary column type differs.
macro_rules! deliveries_sql {
    ($blob:literal) => {
        concat!(
            r#"
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    -- Comma-separated exact types or `producer.*` wildcards.
    event_types TEXT NOT NULL,
    description TEXT NOT NULL,
    -- AES-256-GCM under PIM_NOTIFICATION_SECRET_KEY; never the plain secret.
    sealed_secret "#,
            $blob,
            r#" NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    -- The host or mail domain: the unit of per-endpoint concurrency.
    endpoint TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The rendered message: JSON of the e-mail, or the webhook body.
    body "#,
            $blob,
            r#" NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- The attempt number after which it is dead-lettered; a manual retry raises it.
    give_up_after INTEGER NOT NULL,
    -- When pending: when it is due, or until when a worker holds it.
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    -- One message per event, channel and recipient, however often the event arrives.
    UNIQUE (event_id, channel, recipient)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE status = 'pending';
CREATE INDEX deliveries_recent ON deliveries (created_at_ms, id);

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    number INTEGER NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    succeeded BOOLEAN NOT NULL,
    http_status INTEGER NOT NULL,
    error TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
"#
        )
    };
}

const DELIVERIES: SqlMigration = SqlMigration {
    name: "m0002_notification_deliveries",
    postgres: deliveries_sql!("BYTEA"),
    sqlite: deliveries_sql!("BLOB"),
    down: "DROP TABLE delivery_attempts; DROP TABLE deliveries; DROP TABLE subscriptions;",
};

/// What the admins' digest counts, recorded as events are consumed, and the periods sent.
const DIGEST_SQL: &str = r#"
CREATE TABLE digest_facts (
    event_id TEXT PRIMARY KEY,
    -- activation, assignment, case_opened or case_closed
    kind TEXT NOT NULL,
    case_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX digest_facts_kind_at ON digest_facts (kind, at_ms);

-- One row per period end: the replica that inserts it sends that digest.
CREATE TABLE digest_runs (
    period_end_ms BIGINT PRIMARY KEY,
    recorded_at_ms BIGINT NOT NULL,
    -- false for the baseline recorded at first start, which sends nothing.
    sent BOOLEAN NOT NULL
);
"#;

const DIGEST: SqlMigration = SqlMigration {
    name: "m0003_notification_digest",
    postgres: DIGEST_SQL,
    sqlite: DIGEST_SQL,
    down: "DROP TABLE digest_runs; DROP TABLE digest_facts;",
};

/// The trace context of the event a delivery came from: each attempt is a span of that trace.
const DELIVERY_TRACE_SQL: &str = "
ALTER TABLE deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN tracestate TEXT NOT NULL DEFAULT '';
";

const DELIVERY_TRACE: SqlMigration = SqlMigration {
    name: "m0004_notification_delivery_trace",
    postgres: DELIVERY_TRACE_SQL,
    sqlite: DELIVERY_TRACE_SQL,
    down: "ALTER TABLE deliveries DROP COLUMN tracestate; ALTER TABLE deliveries DROP COLUMN traceparent;",
};
