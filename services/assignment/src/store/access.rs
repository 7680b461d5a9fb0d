//! What the in-memory access index is built from: every row that decides access, read in one
//! snapshot with the revision it reflects, and the access change log that says which
//! principals each later revision touched.

use pim_db::{placeholders, stmt};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseBackend, DatabaseTransaction, IsolationLevel, QueryResult,
    TransactionTrait,
};

use super::{Store, current_revision};

/// Rows read per statement when loading the whole index, so that a million schedules never sit
/// in memory twice.
const PAGE: usize = 20_000;
/// Principals per `IN (…)` list when reloading what a change touched.
const SUBJECTS_PER_STATEMENT: usize = 500;
/// How many revisions the log keeps. A replica further behind than this reloads everything.
pub const LOG_KEPT: i64 = 100_000;

/// One revision of the log: the principals (users or groups) whose access it may have changed.
/// Policy and role changes touch nobody's access and log no principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    pub revision: i64,
    pub subjects: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: String,
    pub eligible: bool,
    pub holder: String,
    pub role: String,
    pub scope: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct WindowRow {
    pub id: String,
    pub principal: String,
    pub role: String,
    pub scope: String,
    pub eligibility_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A row that decides access.
#[derive(Debug, Clone)]
pub enum IndexRows {
    /// A principal the directory knows, and whether it is enabled.
    Principal {
        id: String,
        enabled: bool,
    },
    /// `member` belongs to `group` directly.
    Membership {
        member: String,
        group: String,
    },
    Schedule(ScheduleRow),
    Window(WindowRow),
}

/// Every principal or group `changes` touched, once each.
pub fn touched(changes: &[AccessChange]) -> Vec<&str> {
    let mut subjects: Vec<&str> = changes
        .iter()
        .flat_map(|c| c.subjects.iter().map(String::as_str))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

/// What the log holds after a revision.
pub enum Changes {
    /// Nothing newer.
    None,
    /// Each newer revision, in order, and every row of every principal they touched, as of the
    /// last of them.
    Some {
        changes: Vec<AccessChange>,
        rows: Vec<IndexRows>,
    },
    /// The log no longer reaches back that far: reload everything.
    Gap,
}

/// The next revision, logged with the principals whose access the write touched. It runs last in
/// its transaction: the lock it takes on the revision row serializes commits, so the log's rows
/// become visible in revision order.
pub(super) async fn bump_revision(
    txn: &impl ConnectionTrait,
    touched: &[&str],
) -> anyhow::Result<i64> {
    let row = txn
        .query_one_raw(stmt(
            txn,
            "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value",
            [],
        ))
        .await?;
    let revision = row
        .map(|r| r.try_get::<i64>("", "value"))
        .transpose()?
        .unwrap_or(0);
    let mut subjects: Vec<&str> = touched.to_vec();
    subjects.sort_unstable();
    subjects.dedup();
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO access_changes (revision, subjects) VALUES ($1, $2)",
        [revision.into(), serde_json::to_string(&subjects)?.into()],
    ))
    .await?;
    Ok(revision)
}

/// A read-only transaction that sees one instant of the database: on PostgreSQL a repeatable
/// read; a SQLite transaction is one already (and asking it for a level only logs a warning).
async fn snapshot(store: &Store) -> anyhow::Result<DatabaseTransaction> {
    Ok(match store.db.get_database_backend() {
        DatabaseBackend::Postgres => {
            store
                .db
                .begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?
        }
        _ => store.db.begin().await?,
    })
}

fn schedule_row(row: &QueryResult) -> anyhow::Result<ScheduleRow> {
    Ok(ScheduleRow {
        id: row.try_get("", "id")?,
        eligible: row.try_get::<String>("", "kind")? == "eligible",
        holder: row.try_get("", "principal_id")?,
        role: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        start_ms: row.try_get("", "start_ms")?,
        end_ms: row.try_get("", "end_ms")?,
    })
}

fn window_row(row: &QueryResult) -> anyhow::Result<WindowRow> {
    Ok(WindowRow {
        id: row.try_get("", "id")?,
        principal: row.try_get("", "principal_id")?,
        role: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        eligibility_id: row.try_get("", "eligibility_schedule_id")?,
        start_ms: row.try_get("", "start_ms")?,
        end_ms: row.try_get("", "end_ms")?,
    })
}

const SCHEDULE_COLUMNS: &str = "id, kind, principal_id, role_id, scope, start_ms, end_ms";
const WINDOW_COLUMNS: &str =
    "id, principal_id, role_id, scope, eligibility_schedule_id, start_ms, end_ms";

/// Every row of `table` in pages keyed by `key`, handed to `sink` one by one.
async fn pages(
    txn: &DatabaseTransaction,
    table: &str,
    columns: &str,
    key: &str,
    mut sink: impl FnMut(&QueryResult) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut after: Option<String> = None;
    loop {
        let rows = match &after {
            None => {
                txn.query_all_raw(stmt(
                    txn,
                    &format!("SELECT {columns} FROM {table} ORDER BY {key} LIMIT {PAGE}"),
                    [],
                ))
                .await?
            }
            Some(last) => {
                txn.query_all_raw(stmt(
                    txn,
                    &format!(
                        "SELECT {columns} FROM {table} WHERE {key} > $1 ORDER BY {key} LIMIT {PAGE}"
                    ),
                    [last.clone().into()],
                ))
                .await?
            }
        };
        for row in &rows {
            sink(row)?;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE => after = Some(last.try_get("", key)?),
            _ => return Ok(()),
        }
    }
}

impl Store {
    /// Every row that decides access, in one snapshot, and the revision that snapshot is at.
    pub async fn read_index(&self, mut sink: impl FnMut(IndexRows)) -> anyhow::Result<i64> {
        let txn = snapshot(self).await?;
        let revision = current_revision(&txn).await?;
        for row in txn
            .query_all_raw(stmt(&txn, "SELECT id, enabled FROM principals", []))
            .await?
        {
            sink(IndexRows::Principal {
                id: row.try_get("", "id")?,
                enabled: row.try_get("", "enabled")?,
            });
        }
        for row in txn
            .query_all_raw(stmt(
                &txn,
                "SELECT group_id, member_id FROM group_members",
                [],
            ))
            .await?
        {
            sink(IndexRows::Membership {
                member: row.try_get("", "member_id")?,
                group: row.try_get("", "group_id")?,
            });
        }
        pages(&txn, "schedules", SCHEDULE_COLUMNS, "id", |row| {
            sink(IndexRows::Schedule(schedule_row(row)?));
            Ok(())
        })
        .await?;
        pages(&txn, "windows", WINDOW_COLUMNS, "id", |row| {
            sink(IndexRows::Window(window_row(row)?));
            Ok(())
        })
        .await?;
        txn.commit().await?;
        Ok(revision)
    }

    /// The revisions after `after`, and the rows of the principals they touched, read in one
    /// snapshot.
    pub async fn read_changes(&self, after: i64) -> anyhow::Result<Changes> {
        let txn = snapshot(self).await?;
        let changes = changes_after(&txn, after, None).await?;
        match changes.first() {
            None => return Ok(Changes::None),
            Some(first) if first.revision != after + 1 => return Ok(Changes::Gap),
            Some(_) => {}
        }
        let subjects = touched(&changes);
        let mut rows = Vec::new();
        for chunk in subjects.chunks(SUBJECTS_PER_STATEMENT) {
            read_rows_of(&txn, chunk, &mut rows).await?;
        }
        txn.commit().await?;
        Ok(Changes::Some { changes, rows })
    }

    /// The log after `after`, at most `limit` revisions, for watchers catching up.
    pub async fn access_changes_after(
        &self,
        after: i64,
        limit: u64,
    ) -> anyhow::Result<Vec<AccessChange>> {
        changes_after(&self.db, after, Some(limit)).await
    }

    /// The oldest revision the log still holds, if any.
    pub async fn oldest_logged_revision(&self) -> anyhow::Result<Option<i64>> {
        let row = self
            .db
            .query_one_raw(stmt(
                &self.db,
                "SELECT MIN(revision) AS oldest FROM access_changes",
                [],
            ))
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<i64>>("", "oldest").ok().flatten()))
    }

    /// Drops the log's rows that no replica needs any longer.
    pub async fn trim_access_changes(&self, revision: i64) -> anyhow::Result<()> {
        self.db
            .execute_raw(stmt(
                &self.db,
                "DELETE FROM access_changes WHERE revision <= $1",
                [(revision - LOG_KEPT).into()],
            ))
            .await?;
        Ok(())
    }
}

async fn changes_after(
    conn: &impl ConnectionTrait,
    after: i64,
    limit: Option<u64>,
) -> anyhow::Result<Vec<AccessChange>> {
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let rows = conn
        .query_all_raw(stmt(
            conn,
            &format!(
                "SELECT revision, subjects FROM access_changes WHERE revision > $1 ORDER BY revision{limit}"
            ),
            [after.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AccessChange {
                revision: row.try_get("", "revision")?,
                subjects: serde_json::from_str(&row.try_get::<String>("", "subjects")?)?,
            })
        })
        .collect()
}

/// Everything the index holds of `subjects`: their enablement, the groups they belong to, the
/// schedules they hold and their windows.
async fn read_rows_of(
    txn: &DatabaseTransaction,
    subjects: &[&str],
    rows: &mut Vec<IndexRows>,
) -> anyhow::Result<()> {
    let values = || subjects.iter().map(|s| (*s).into()).collect::<Vec<_>>();
    let list = placeholders(1, subjects.len());
    for row in txn
        .query_all_raw(stmt(
            txn,
            &format!("SELECT id, enabled FROM principals WHERE id IN ({list})"),
            values(),
        ))
        .await?
    {
        rows.push(IndexRows::Principal {
            id: row.try_get("", "id")?,
            enabled: row.try_get("", "enabled")?,
        });
    }
    for row in txn
        .query_all_raw(stmt(
            txn,
            &format!("SELECT group_id, member_id FROM group_members WHERE member_id IN ({list})"),
            values(),
        ))
        .await?
    {
        rows.push(IndexRows::Membership {
            member: row.try_get("", "member_id")?,
            group: row.try_get("", "group_id")?,
        });
    }
    for row in txn
        .query_all_raw(stmt(
            txn,
            &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE principal_id IN ({list})"),
            values(),
        ))
        .await?
    {
        rows.push(IndexRows::Schedule(schedule_row(&row)?));
    }
    for row in txn
        .query_all_raw(stmt(
            txn,
            &format!("SELECT {WINDOW_COLUMNS} FROM windows WHERE principal_id IN ({list})"),
            values(),
        ))
        .await?
    {
        rows.push(IndexRows::Window(window_row(&row)?));
    }
    Ok(())
}
