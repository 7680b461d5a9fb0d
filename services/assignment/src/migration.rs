//! The assignment context's tables. Instants are milliseconds since the epoch: exact, and
//! identical on PostgreSQL and SQLite.

use pim_db::SqlMigration;
use pim_events::EVENT_TABLES;
use sea_orm_migration::{MigrationTrait, MigratorTrait, async_trait};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(EVENT_TABLES),
            Box::new(SCHEDULES),
            Box::new(DIRECTORY),
            Box::new(POLICIES),
            Box::new(ANNOUNCEMENTS),
            Box::new(LISTING_INDEXES),
            Box::new(ORIGINS),
            Box::new(TICKETS),
            Box::new(ACCESS_CHANGES),
        ]
    }
}

const SCHEDULES: SqlMigration = SqlMigration {
    name: "m0002_assignment_schedules",
    postgres: SCHEDULES_SQL,
    sqlite: SCHEDULES_SQL,
    down: "DROP TABLE revision; DROP TABLE windows; DROP TABLE schedules;",
};

const SCHEDULES_SQL: &str = r#"
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

const DIRECTORY: SqlMigration = SqlMigration {
    name: "m0003_roles_and_directory",
    postgres: DIRECTORY_SQL,
    sqlite: DIRECTORY_SQL,
    down: "DROP TABLE group_members; DROP TABLE principals; DROP TABLE roles;",
};

const DIRECTORY_SQL: &str = r#"
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    permissions TEXT NOT NULL,
    privileged BOOLEAN NOT NULL,
    built_in BOOLEAN NOT NULL,
    request_key TEXT UNIQUE
);
CREATE UNIQUE INDEX roles_display_name ON roles (LOWER(display_name));
CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    guest BOOLEAN NOT NULL,
    break_glass BOOLEAN NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX group_members_member ON group_members (member_id);
"#;

const POLICIES: SqlMigration = SqlMigration {
    name: "m0004_policies",
    postgres: r#"
CREATE TABLE policies (
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    version BIGINT NOT NULL,
    rules BYTEA NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (role_id, scope)
);
"#,
    sqlite: r#"
CREATE TABLE policies (
    role_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    version BIGINT NOT NULL,
    rules BLOB NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (role_id, scope)
);
"#,
    down: "DROP TABLE policies;",
};

/// Which expiry facts were announced for which schedule: the primary key makes each fire once,
/// however many replicas run the timer.
const ANNOUNCEMENTS: SqlMigration = SqlMigration {
    name: "m0005_schedule_announcements",
    postgres: ANNOUNCEMENTS_SQL,
    sqlite: ANNOUNCEMENTS_SQL,
    down: "DROP TABLE schedule_announcements;",
};

const ANNOUNCEMENTS_SQL: &str = r#"
CREATE TABLE schedule_announcements (
    schedule_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    announced_at_ms BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, kind)
);
CREATE INDEX schedules_end ON schedules (end_ms);
"#;

const LISTING_INDEXES: SqlMigration = SqlMigration {
    name: "m0006_listing_indexes",
    postgres: LISTING_INDEXES_SQL,
    sqlite: LISTING_INDEXES_SQL,
    down: "DROP INDEX schedules_by_role; DROP INDEX schedules_permanent_active;",
};

/// Pages of `ListSchedules` walk a role's schedules by id; the last-Global-Administrator check
/// locks the permanent active assignments at a scope. Neither may scan the whole table.
const LISTING_INDEXES_SQL: &str = "CREATE INDEX schedules_by_role ON schedules (role_id, kind, id); \
     CREATE INDEX schedules_permanent_active ON schedules (role_id, scope) \
     WHERE kind = 'active' AND end_ms IS NULL;";

/// Where each schedule came from: existing rows were all written by admins through PIM.
const ORIGINS: SqlMigration = SqlMigration {
    name: "m0007_schedule_origins",
    postgres: ORIGINS_SQL,
    sqlite: ORIGINS_SQL,
    down: "ALTER TABLE schedules DROP COLUMN origin;",
};

const ORIGINS_SQL: &str =
    "ALTER TABLE schedules ADD COLUMN origin TEXT NOT NULL DEFAULT 'assigned';";

/// The change ticket behind an admin's assignment (Graph's ticketInfo).
const TICKETS: SqlMigration = SqlMigration {
    name: "m0008_schedule_tickets",
    postgres: TICKETS_SQL,
    sqlite: TICKETS_SQL,
    down: "ALTER TABLE schedules DROP COLUMN ticket_number; ALTER TABLE schedules DROP COLUMN ticket_system;",
};

const TICKETS_SQL: &str = "ALTER TABLE schedules ADD COLUMN ticket_system TEXT NOT NULL DEFAULT ''; \
     ALTER TABLE schedules ADD COLUMN ticket_number TEXT NOT NULL DEFAULT '';";

/// The access change log: for each revision, the principals (users or groups) whose schedules,
/// windows, enablement or memberships it touched. Replicas follow it to keep their in-memory
/// access index current; every write appends its row in its own transaction, and the lock on
/// the revision row makes rows commit in revision order, so a reader never skips one.
const ACCESS_CHANGES: SqlMigration = SqlMigration {
    name: "m0009_access_changes",
    postgres: ACCESS_CHANGES_SQL,
    sqlite: ACCESS_CHANGES_SQL,
    down: "DROP TABLE access_changes;",
};

const ACCESS_CHANGES_SQL: &str =
    "CREATE TABLE access_changes (revision BIGINT PRIMARY KEY, subjects TEXT NOT NULL);";
