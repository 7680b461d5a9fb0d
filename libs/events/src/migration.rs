//! The tables every context carries for the event bus: its outbox and relay state as a
//! producer, and its inbox and per-producer progress as a consumer.

//!
//! The relay publishes strictly in sequence order, so "published" is one number per producer
//! (`relay_state.published_sequence`), not a flag on every row: a published event costs the
//! outbox one insert and one update.

use pim_db::SqlMigration;

/// Include it in every service's migrator.
pub const EVENT_TABLES: SqlMigration = SqlMigration {
    name: "m0001_event_bus",
    postgres: POSTGRES,
    sqlite: SQLITE,
    down: "DROP TABLE consumer_progress; DROP TABLE inbox; DROP TABLE relay_state; DROP TABLE outbox;",
};

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
