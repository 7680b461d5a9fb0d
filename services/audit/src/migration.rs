//! The audit context's tables.
//!
//! `m0002` is the record table from before the chain; nothing writes or reads it any more and it
//! is kept, not dropped. `m0003` is the chain: `audit_log` and `audit_checkpoints` are
//! append-only at the database level (PostgreSQL: a trigger refuses UPDATE, DELETE and TRUNCATE,
//! and [`RUNTIME_GRANTS`] gives the runtime role INSERT and SELECT only; SQLite: `RAISE(ABORT)`
//! triggers). The one way to delete is the retention purge, through `audit_purge(cut)`, which
//! needs a signed checkpoint at the cut.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(EVENT_TABLES),
            Box::new(RECORDS),
            Box::new(CHAIN),
            Box::new(ALERTS),
            Box::new(ACTOR_DAY),
        ]
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

const CHAIN: SqlMigration = SqlMigration {
    name: "m0003_audit_chain",
    postgres: CHAIN_POSTGRES,
    sqlite: CHAIN_SQLITE,
    down: "DROP TABLE audit_purge_permit; DROP TABLE audit_checkpoints; DROP TABLE audit_chain_head; DROP TABLE audit_log;",
};

/// The columns of a chained record, shared by both dialects.
macro_rules! audit_log_table {
    () => {
        r#"
CREATE TABLE audit_log (
    sequence BIGINT PRIMARY KEY,
    occurred_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    producer TEXT NOT NULL,
    producer_sequence BIGINT NOT NULL,
    activity TEXT NOT NULL,
    category TEXT NOT NULL,
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    target_principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    result TEXT NOT NULL,
    result_reason TEXT NOT NULL,
    justification TEXT NOT NULL,
    ticket TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    payload_type TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor_id, sequence);
CREATE INDEX audit_log_target ON audit_log (target_principal_id, sequence);
CREATE INDEX audit_log_role ON audit_log (role_id, sequence);
CREATE INDEX audit_log_occurred ON audit_log (occurred_at_ms, sequence);
CREATE INDEX audit_log_recorded ON audit_log (recorded_at_ms);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id);
CREATE INDEX audit_log_trace ON audit_log (trace_id);
CREATE TABLE audit_chain_head (
    id INTEGER PRIMARY KEY,
    sequence BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain_head (id, sequence, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE audit_checkpoints (
    sequence BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    signed_at_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE audit_purge_permit (
    cut BIGINT NOT NULL
);
"#
    };
}

const CHAIN_POSTGRES: &str = concat!(
    audit_log_table!(),
    r#"
REVOKE ALL ON audit_log, audit_checkpoints, audit_chain_head, audit_purge_permit FROM PUBLIC;

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log' THEN
        IF EXISTS (SELECT 1 FROM audit_purge_permit WHERE OLD.sequence <= cut) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Retention's own path: runs as the owner, deletes only up to a signed checkpoint.
CREATE FUNCTION audit_purge(cut BIGINT) RETURNS BIGINT
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    purged BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_checkpoints WHERE sequence = cut) THEN
        RAISE EXCEPTION 'no signed checkpoint at sequence %', cut;
    END IF;
    INSERT INTO audit_purge_permit (cut) VALUES (cut);
    DELETE FROM audit_log WHERE sequence <= cut;
    GET DIAGNOSTICS purged = ROW_COUNT;
    DELETE FROM audit_purge_permit;
    RETURN purged;
END
$fn$;
REVOKE ALL ON FUNCTION audit_purge(BIGINT) FROM PUBLIC;

-- What the runtime role may do, in one place: the owner runs
-- SELECT audit_grant_runtime('<runtime role>') once after `pim migrate audit`.
CREATE FUNCTION audit_grant_runtime(runtime TEXT) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO %I', runtime);
    EXECUTE format('GRANT SELECT, UPDATE ON audit_chain_head TO %I', runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION audit_purge(BIGINT) TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, relay_state, inbox, consumer_progress TO %I', runtime);
    EXECUTE format('GRANT SELECT ON audit_records, audit_head, seaql_migrations TO %I', runtime);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', runtime);
END
$fn$;
REVOKE ALL ON FUNCTION audit_grant_runtime(TEXT) FROM PUBLIC;
"#
);

const CHAIN_SQLITE: &str = concat!(
    audit_log_table!(),
    r#"
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_permit WHERE OLD.sequence <= cut)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
"#
);

/// Security alerts (`crate::alerts`): what the alerts know of the other contexts (projections
/// rebuilt by a refresh), their configuration, incidents and timers. Not append-only: these are
/// analytics over the log, not the log. The runtime role's grants gain these tables.
const ALERTS: SqlMigration = SqlMigration {
    name: "m0004_audit_alerts",
    postgres: ALERTS_POSTGRES,
    sqlite: ALERTS_SQLITE,
    down: "DROP TABLE alert_state; DROP TABLE alert_due; DROP TABLE alert_incidents; \
           DROP TABLE alert_configurations; DROP TABLE alert_break_glass_uses; \
           DROP TABLE alert_policies; DROP TABLE alert_activations; DROP TABLE alert_schedules; \
           DROP TABLE alert_principals; DROP TABLE alert_roles;",
};

macro_rules! alert_tables {
    () => {
        r#"
CREATE TABLE alert_roles (
    role_id TEXT PRIMARY KEY,
    privileged BOOLEAN NOT NULL
);
CREATE TABLE alert_principals (
    principal_id TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    guest BOOLEAN NOT NULL,
    break_glass BOOLEAN NOT NULL,
    disabled_at_ms BIGINT
);
CREATE TABLE alert_schedules (
    schedule_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT,
    origin TEXT NOT NULL
);
CREATE INDEX alert_schedules_principal ON alert_schedules (principal_id);
CREATE INDEX alert_schedules_role ON alert_schedules (role_id);
CREATE TABLE alert_activations (
    window_id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX alert_activations_holder ON alert_activations (principal_id, role_id, at_ms);
CREATE INDEX alert_activations_schedule ON alert_activations (schedule_id, at_ms);
CREATE INDEX alert_activations_at ON alert_activations (at_ms);
CREATE TABLE alert_policies (
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    mfa_required BOOLEAN NOT NULL,
    set_at_ms BIGINT NOT NULL,
    PRIMARY KEY (role_id, scope)
);
CREATE TABLE alert_break_glass_uses (
    sequence BIGINT PRIMARY KEY,
    principal_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX alert_break_glass_uses_principal ON alert_break_glass_uses (principal_id, sequence);
CREATE TABLE alert_configurations (
    alert_id TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    global_admin_count INTEGER,
    global_admin_percentage INTEGER,
    activation_count INTEGER,
    activation_window_ms BIGINT,
    duration_days INTEGER,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE alert_incidents (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    current BOOLEAN NOT NULL,
    state TEXT NOT NULL,
    episode BIGINT NOT NULL,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    count BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    detail TEXT NOT NULL,
    opened_at_ms BIGINT NOT NULL,
    closed_at_ms BIGINT,
    dismissed_by TEXT NOT NULL,
    justification TEXT NOT NULL,
    remediated_by TEXT NOT NULL,
    remediated_at_ms BIGINT
);
CREATE UNIQUE INDEX alert_incidents_current ON alert_incidents (alert_id, incident_key) WHERE current;
CREATE INDEX alert_incidents_alert ON alert_incidents (alert_id, opened_at_ms);
CREATE TABLE alert_due (
    alert_id TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    PRIMARY KEY (alert_id, incident_key)
);
CREATE INDEX alert_due_at ON alert_due (due_at_ms);
CREATE TABLE alert_state (
    id INTEGER PRIMARY KEY,
    scanned_at_ms BIGINT NOT NULL,
    records_scanned BIGINT NOT NULL
);
INSERT INTO alert_state (id, scanned_at_ms, records_scanned) VALUES (1, 0, 0);
"#
    };
}

const ALERTS_SQLITE: &str = alert_tables!();

const ALERTS_POSTGRES: &str = concat!(
    alert_tables!(),
    r#"
REVOKE ALL ON alert_roles, alert_principals, alert_schedules, alert_activations, alert_policies,
    alert_break_glass_uses, alert_configurations, alert_incidents, alert_due, alert_state FROM PUBLIC;

-- m0003's grants, and the alert tables, which the runtime role reads and writes.
CREATE OR REPLACE FUNCTION audit_grant_runtime(runtime TEXT) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO %I', runtime);
    EXECUTE format('GRANT SELECT, UPDATE ON audit_chain_head TO %I', runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION audit_purge(BIGINT) TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, relay_state, inbox, consumer_progress TO %I', runtime);
    EXECUTE format('GRANT SELECT ON audit_records, audit_head, seaql_migrations TO %I', runtime);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON alert_roles, alert_principals, '
        'alert_schedules, alert_activations, alert_policies, alert_break_glass_uses, '
        'alert_configurations, alert_incidents, alert_due, alert_state TO %I', runtime);
END
$fn$;
REVOKE ALL ON FUNCTION audit_grant_runtime(TEXT) FROM PUBLIC;
"#
);

/// One actor's records in a time range (the auditor's commonest question) read only that
/// range: without it the planner walks the actor's whole history newest first, or the whole
/// range of every actor. On a large log, build it before upgrading, `CONCURRENTLY`, under this
/// name: the migration then finds it and skips.
const ACTOR_DAY: SqlMigration = SqlMigration {
    name: "m0005_audit_actor_occurred",
    postgres: ACTOR_DAY_SQL,
    sqlite: ACTOR_DAY_SQL,
    down: "DROP INDEX audit_log_actor_occurred;",
};

const ACTOR_DAY_SQL: &str =
    "CREATE INDEX IF NOT EXISTS audit_log_actor_occurred ON audit_log (actor_id, occurred_at_ms);";
