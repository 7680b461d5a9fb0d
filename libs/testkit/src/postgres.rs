//! A fresh PostgreSQL database per test, cloned in milliseconds from a template migrated once
//! per set of migrations (named by their fingerprint, built under an advisory lock because
//! `cargo nextest` runs each test in its own process). Dropped when the test ends.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pim_config::ServiceName;
use pim_db::{PoolSize, with_database};
use sea_orm::{ConnectionTrait, Database};

use crate::engines::postgres_url;

/// A database that lives as long as this value.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// A new database holding the migrated schema of `service`.
    pub async fn fresh(service: ServiceName) -> anyhow::Result<Self> {
        let server = postgres_url();
        let template = format!("tpl_{service}_{}", pim_cli::migration_fingerprint(service));
        ensure_template(service, &server, &template).await?;
        let name = format!("t_{service}_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&server).await?;
        admin
            .execute_unprepared(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
            .with_context(|| format!("cloning {template}"))?;
        admin.close().await?;
        Ok(Self {
            url: with_database(&server, &name),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee, so use a small runtime of its own.
        let name = self.name.clone();
        let server = postgres_url();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&server).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

async fn ensure_template(service: ServiceName, server: &str, template: &str) -> anyhow::Result<()> {
    let admin = pim_db::connect(server, PoolSize { max: 1, min: 1 }).await?;
    let pool = admin.get_postgres_connection_pool();
    let mut lock = pool.acquire().await?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock(724001)")
        .execute(&mut *lock)
        .await?;
    let exists: Option<(i32,)> =
        sea_orm::sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(template)
            .fetch_optional(&mut *lock)
            .await?;
    let result = async {
        if exists.is_some() {
            return Ok(());
        }
        // Build under another name and rename, so a crash never leaves a half-migrated template.
        let building = format!("{template}_building");
        sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
        )))
        .execute(&mut *lock)
        .await?;
        sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{building}\""
        )))
        .execute(&mut *lock)
        .await?;
        pim_cli::migrate_service(service, &with_database(server, &building)).await?;
        sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{template}\""
        )))
        .execute(&mut *lock)
        .await?;
        // Templates of older migration sets of this service are dead weight now.
        let stale: Vec<(String,)> = sea_orm::sqlx::query_as(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 AND datname <> $2 AND datname NOT LIKE '%\\_building'",
        )
        .bind(format!("tpl\\_{service}\\_%"))
        .bind(template)
        .fetch_all(&mut *lock)
        .await?;
        for (name,) in stale {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(drop)).execute(&mut *lock).await {
                tracing::warn!(template = %name, error = %e, "dropping a stale test template failed");
            }
        }
        anyhow::Ok(())
    }
    .await;
    sea_orm::sqlx::query("SELECT pg_advisory_unlock(724001)")
        .execute(&mut *lock)
        .await?;
    drop(lock);
    admin.close().await?;
    result
}

/// Starts a PostgreSQL cluster of this process's own from the installed binaries.
pub(crate) fn throwaway_postgres() -> anyhow::Result<String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| versions.filter_map(Result::ok).map(|v| v.path().join("bin")).find(|b| b.join("postgres").exists()))
        .context("PostgreSQL is neither reachable on 127.0.0.1:5432 nor installed: apt-get install postgresql, or set PIM_TEST_DATABASE_URL")?;
    let dir = PathBuf::from(format!("/tmp/pim-test-pg-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::create_dir_all(&dir)?;
    // postgres refuses to run as root.
    let as_postgres = |program: PathBuf| {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    };
    Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&dir)
        .status()?;
    let status = as_postgres(bin.join("initdb"))
        .args(["-D"])
        .arg(dir.join("data"))
        .args(["-U", "postgres", "--auth=trust"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "initdb failed");
    as_postgres(bin.join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=500",
            "-k",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "throwaway PostgreSQL did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}
