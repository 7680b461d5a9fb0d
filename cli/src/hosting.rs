//! From a service name to its context type: the one place that knows all five.

use pim_config::{ServiceName, Settings};
use pim_host::{ContextService, HostDeps, RunningService, start};

/// Starts the named context.
pub async fn start_service(settings: Settings, deps: HostDeps) -> anyhow::Result<RunningService> {
    match settings.service {
        ServiceName::Assignment => start::<pim_assignment::Assignment>(settings, deps).await,
        ServiceName::Activation => start::<pim_activation::Activation>(settings, deps).await,
        ServiceName::Approval => start::<pim_approval::Approval>(settings, deps).await,
        ServiceName::Notification => start::<pim_notification::Notification>(settings, deps).await,
        ServiceName::Audit => start::<pim_audit::Audit>(settings, deps).await,
    }
}

/// Applies the named context's migrations to `url`.
pub async fn migrate_service(service: ServiceName, url: &str) -> anyhow::Result<()> {
    let db = pim_db::connect(url, pim_db::PoolSize { max: 2, min: 1 }).await?;
    match service {
        ServiceName::Assignment => {
            pim_db::migrate::<<pim_assignment::Assignment as ContextService>::Migrator>(&db).await
        }
        ServiceName::Activation => {
            pim_db::migrate::<<pim_activation::Activation as ContextService>::Migrator>(&db).await
        }
        ServiceName::Approval => {
            pim_db::migrate::<<pim_approval::Approval as ContextService>::Migrator>(&db).await
        }
        ServiceName::Notification => {
            pim_db::migrate::<<pim_notification::Notification as ContextService>::Migrator>(&db)
                .await
        }
        ServiceName::Audit => {
            pim_db::migrate::<<pim_audit::Audit as ContextService>::Migrator>(&db).await
        }
    }?;
    db.close().await?;
    Ok(())
}

/// The fingerprint of the named context's migrations (names the test templates). It covers the
/// migrations' names and their source text, so a migration edited in place still gets a new
/// template instead of a stale one.
pub fn migration_fingerprint(service: ServiceName) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let (names, source) = match service {
        ServiceName::Assignment => (
            pim_db::migration_fingerprint::<<pim_assignment::Assignment as ContextService>::Migrator>(
            ),
            include_str!("../../services/assignment/src/migration.rs"),
        ),
        ServiceName::Activation => (
            pim_db::migration_fingerprint::<<pim_activation::Activation as ContextService>::Migrator>(
            ),
            include_str!("../../services/activation/src/migration.rs"),
        ),
        ServiceName::Approval => (
            pim_db::migration_fingerprint::<<pim_approval::Approval as ContextService>::Migrator>(),
            include_str!("../../services/approval/src/lib.rs"),
        ),
        ServiceName::Notification => (
            pim_db::migration_fingerprint::<
                <pim_notification::Notification as ContextService>::Migrator,
            >(),
            include_str!("../../services/notification/src/lib.rs"),
        ),
        ServiceName::Audit => (
            pim_db::migration_fingerprint::<<pim_audit::Audit as ContextService>::Migrator>(),
            include_str!("../../services/audit/src/migration.rs"),
        ),
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    include_str!("../../libs/events/src/migration.rs").hash(&mut hasher);
    format!("{names}{:08x}", hasher.finish() as u32)
}
