//! Connecting to a context's own database: PostgreSQL in every deployment, SQLite files for
//! `pim dev`. Migrations are per service (sea-orm-migration); they run at start or through
//! `pim migrate` with a separate owner URL, so the runtime role need not own the tables.

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, Statement,
};
use sea_orm_migration::MigratorTrait;

pub use sea_orm;
pub use sea_orm_migration;

/// A raw statement for either backend. Queries are written with PostgreSQL's `$N`
/// placeholders; SQLite gets `?N`, which binds by the same index.
pub fn stmt(
    conn: &impl ConnectionTrait,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Statement {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Pool sizing for one service.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    pub max: u32,
    pub min: u32,
}

/// Opens a pool. SQLite gets WAL and a busy timeout, or concurrent writers fail with
/// "database is locked"; its file is created when missing.
pub async fn connect(url: &str, pool: PoolSize) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    // SQLite has one writer; a single connection turns lock upgrades that would fail with
    // "database is locked" into an orderly queue.
    let max = if is_sqlite(url) { 1 } else { pool.max };
    options
        .max_connections(max)
        .min_connections(pool.min.min(max))
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    if is_sqlite(url) {
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .create_if_missing(true)
        });
    }
    let mut db = Database::connect(options)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    // Every statement is a span under the span that ran it (`db.*` attributes).
    let system = if is_sqlite(url) {
        "sqlite"
    } else {
        "postgresql"
    };
    db.set_metric_callback(move |info| {
        pim_telemetry::db_statement(system, &info.statement.sql, info.elapsed, info.failed);
    });
    Ok(db)
}

/// A migration written as SQL, with a variant per backend where they differ.
pub struct SqlMigration {
    pub name: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
    pub down: &'static str,
}

impl sea_orm_migration::MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl sea_orm_migration::MigrationTrait for SqlMigration {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), sea_orm::DbErr> {
        let db = manager.get_connection();
        let sql = match db.get_database_backend() {
            DatabaseBackend::Sqlite => self.sqlite,
            _ => self.postgres,
        };
        db.execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), sea_orm::DbErr> {
        manager
            .get_connection()
            .execute_unprepared(self.down)
            .await?;
        Ok(())
    }
}

/// Applies every pending migration of `M`.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> anyhow::Result<()> {
    M::up(db, None).await.context("running migrations")
}

/// A stable name for the set of migrations of `M`, so a changed set gets a new test template.
pub fn migration_fingerprint<M: MigratorTrait>() -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for migration in M::migrations() {
        migration.name().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

pub fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Creates a PostgreSQL database on the server of `server_url` if it does not exist yet.
pub async fn ensure_postgres_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = Database::connect(server_url)
        .await
        .with_context(|| format!("connecting to {}", redact(server_url)))?;
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await?
        .is_some();
    if !exists {
        // Names are ours (pim_<service>), never a caller's; quote anyway.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', ""));
        if let Err(e) = admin.execute_unprepared(&sql).await {
            // A concurrent creator wins the race; that is fine.
            if !e.to_string().contains("already exists") {
                return Err(e.into());
            }
        }
    }
    admin.close().await?;
    Ok(())
}

/// The URL of database `name` on the same server as `url`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // postgres://user@host:port/db -> keep everything up to the path.
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A URL safe to log: the password is replaced.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Whether `error` is a unique-constraint violation: how optimistic writers learn that a racing
/// transaction got there first.
pub fn is_unique_violation(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sea_orm::DbErr>()
            .and_then(|e| e.sql_err())
            .is_some_and(|e| matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_)))
    })
}

/// `$first, $first+1, …` placeholders for an `IN (…)` list of `n` values.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_swap_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "pim_audit"),
            "postgres://u:p@h:5432/pim_audit"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=require", "x"),
            "postgres://h/x?sslmode=require"
        );
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
