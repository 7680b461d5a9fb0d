//! The approval context's tables. A case is never edited in place: its stages and approvers are
//! recorded when it opens (escalation appends approvers), and every decision and change of state
//! is a new line of `case_log`. `awaiting` and `case_timers` are work queues derived from the
//! log, written in the same transactions.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(EVENT_TABLES),
            Box::new(CASES),
            Box::new(REVIEWS),
            Box::new(CASE_TRACE),
            Box::new(REVIEW_REMINDERS),
        ]
    }
}

/// The same tables for both backends; only the binary column type differs.
macro_rules! cases_sql {
    ($blob:literal) => {
        concat!(
            r#"
CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    kind INTEGER NOT NULL,
    requestor_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    opened_at_ms BIGINT NOT NULL,
    summary "#,
            $blob,
            r#" NOT NULL,
    rule "#,
            $blob,
            r#" NOT NULL
);
CREATE INDEX cases_requestor ON cases (requestor_id, id);

CREATE TABLE case_approvers (
    case_id TEXT NOT NULL REFERENCES cases (id),
    stage INTEGER NOT NULL,
    principal_id TEXT NOT NULL,
    via_group_id TEXT NOT NULL,
    escalation BOOLEAN NOT NULL,
    PRIMARY KEY (case_id, stage, principal_id, via_group_id)
);

-- The history. Its primary key serializes writers of one case: each appends at the sequence
-- after the last it read, so of two racing writers one fails and re-reads. The partial unique
-- indexes state the rules a race must not break.
CREATE TABLE case_log (
    case_id TEXT NOT NULL REFERENCES cases (id),
    seq INTEGER NOT NULL,
    at_ms BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    stage INTEGER NOT NULL,
    justification TEXT NOT NULL,
    PRIMARY KEY (case_id, seq)
);
-- A person decides at most once per stage.
CREATE UNIQUE INDEX case_log_one_vote ON case_log (case_id, stage, actor_id)
    WHERE action IN ('approved', 'denied');
-- A stage completes and escalates at most once.
CREATE UNIQUE INDEX case_log_one_completion ON case_log (case_id, stage)
    WHERE action = 'stage_completed';
CREATE UNIQUE INDEX case_log_one_escalation ON case_log (case_id, stage)
    WHERE action = 'escalated';
-- A case ends once.
CREATE UNIQUE INDEX case_log_one_end ON case_log (case_id)
    WHERE action IN ('case_approved', 'case_denied', 'timed_out', 'canceled');

-- Who the current stage of each open case awaits: the approver's inbox.
CREATE TABLE awaiting (
    principal_id TEXT NOT NULL,
    case_id TEXT NOT NULL REFERENCES cases (id),
    stage INTEGER NOT NULL,
    PRIMARY KEY (principal_id, case_id)
);

-- Escalations and timeouts of current stages, due by the injectable clock.
CREATE TABLE case_timers (
    case_id TEXT NOT NULL REFERENCES cases (id),
    stage INTEGER NOT NULL,
    kind TEXT NOT NULL,
    due_ms BIGINT NOT NULL,
    PRIMARY KEY (case_id, stage, kind)
);
CREATE INDEX case_timers_due ON case_timers (due_ms);
"#
        )
    };
}

const CASES: SqlMigration = SqlMigration {
    name: "m0002_approval_cases",
    postgres: cases_sql!("BYTEA"),
    sqlite: cases_sql!("BLOB"),
    down: "DROP TABLE case_timers; DROP TABLE awaiting; DROP TABLE case_log; \
           DROP TABLE case_approvers; DROP TABLE cases;",
};

/// Access reviews: definitions (their settings as the encoded message), instances, one item per
/// reviewed assignment with its reviewers, and the activation history that recommendations
/// read, fed by activation's events.
macro_rules! reviews_sql {
    ($blob:literal) => {
        concat!(
            r#"
CREATE TABLE review_definitions (
    id TEXT PRIMARY KEY,
    body "#,
            $blob,
            r#" NOT NULL,
    stopped BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    next_start_ms BIGINT
);
CREATE INDEX review_definitions_due ON review_definitions (next_start_ms);

CREATE TABLE review_instances (
    id TEXT PRIMARY KEY,
    definition_id TEXT NOT NULL REFERENCES review_definitions (id),
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    UNIQUE (definition_id, start_ms)
);
CREATE INDEX review_instances_due ON review_instances (status, end_ms);

CREATE TABLE review_items (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES review_instances (id),
    schedule_id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    kind INTEGER NOT NULL,
    recommendation INTEGER NOT NULL,
    recommendation_reason TEXT NOT NULL,
    decision INTEGER NOT NULL,
    justification TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    decided_at_ms BIGINT,
    applied BOOLEAN NOT NULL,
    apply_result TEXT NOT NULL
);
CREATE INDEX review_items_by_instance ON review_items (instance_id, id);

CREATE TABLE review_reviewers (
    item_id TEXT NOT NULL REFERENCES review_items (id),
    reviewer_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    PRIMARY KEY (item_id, reviewer_id)
);
CREATE INDEX review_reviewers_by_reviewer ON review_reviewers (reviewer_id, instance_id);

CREATE TABLE activation_history (
    request_id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX activation_history_by_principal ON activation_history (principal_id, role_id, at_ms);
"#
        )
    };
}

const REVIEWS: SqlMigration = SqlMigration {
    name: "m0003_access_reviews",
    postgres: reviews_sql!("BYTEA"),
    sqlite: reviews_sql!("BLOB"),
    down: "DROP TABLE activation_history; DROP TABLE review_reviewers; DROP TABLE review_items; \
           DROP TABLE review_instances; DROP TABLE review_definitions;",
};

// Applied migrations are never edited: a change is a new migration.
const CASE_TRACE: SqlMigration = SqlMigration {
    name: "m0004_case_trace",
    postgres: CASE_TRACE_SQL,
    sqlite: CASE_TRACE_SQL,
    down: "ALTER TABLE cases DROP COLUMN traceparent; ALTER TABLE cases DROP COLUMN tracestate;",
};

/// The trace of the request a case decides, so its events continue that trace.
const CASE_TRACE_SQL: &str = "ALTER TABLE cases ADD COLUMN traceparent TEXT NOT NULL DEFAULT ''; \
     ALTER TABLE cases ADD COLUMN tracestate TEXT NOT NULL DEFAULT '';";

const REVIEW_REMINDERS: SqlMigration = SqlMigration {
    name: "m0005_review_reminders",
    postgres: REVIEW_REMINDERS_SQL,
    sqlite: REVIEW_REMINDERS_SQL,
    down: "ALTER TABLE review_instances DROP COLUMN reminded;",
};

/// Whether an instance's reviewers were reminded, so a reminder goes out once.
const REVIEW_REMINDERS_SQL: &str =
    "ALTER TABLE review_instances ADD COLUMN reminded BOOLEAN NOT NULL DEFAULT FALSE;";
