//! The assignment database. Every write and its event commit in one transaction, and every
//! write bumps the revision that readers can wait for.

mod access;
mod announcements;
mod directory;
mod policies;
mod roles;
mod schedules;

use access::bump_revision;
pub use access::{AccessChange, Changes, IndexRows, ScheduleRow, WindowRow, touched};
pub use directory::DirectorySync;
use pim_db::stmt;
pub use schedules::{NewSchedule, NewWindow, ScopeFilter};
use sea_orm::{ConnectionTrait, DatabaseConnection};

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn revision(&self) -> anyhow::Result<i64> {
        current_revision(&self.db).await
    }
}

/// The revision as `conn` sees it. Inside a transaction, read it through the transaction: on
/// SQLite (one connection) a second connection would wait for this one.
async fn current_revision(conn: &impl ConnectionTrait) -> anyhow::Result<i64> {
    let row = conn
        .query_one_raw(stmt(conn, "SELECT value FROM revision WHERE id = 1", []))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "value"))
        .transpose()?
        .unwrap_or(0))
}

/// The end of every write: its event, the next revision (logged with the principals whose
/// access it touched), one commit.
async fn commit_with_event(
    txn: sea_orm::DatabaseTransaction,
    outbox: &pim_events::Outbox,
    event: pim_events::NewEvent,
    touched: &[&str],
) -> anyhow::Result<i64> {
    outbox.enqueue(&txn, event).await?;
    let revision = bump_revision(&txn, touched).await?;
    txn.commit().await?;
    Ok(revision)
}
