//! Schedules and activated windows.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    assignment::v1::{
        AssignmentInternalServiceRemoveScheduleRequest as Removal, RemovalOutcome, Schedule,
        ScheduleChanged, ScheduleConverted, ScheduleCreated, ScheduleKind, ScheduleOrigin,
        ScheduleRemoved, Window, WindowProvisioned, WindowRevoked,
    },
    timestamp_from_millis,
};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::{Store, bump_revision, commit_with_event, current_revision};
use pim_db::placeholders;

use crate::error::AssignmentError;

/// A schedule to write.
pub struct NewSchedule {
    pub kind: ScheduleKind,
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    pub created_by: String,
    /// `<caller>/<client request id>`, for idempotent creates.
    pub request_key: Option<String>,
    pub justification: String,
    pub origin: ScheduleOrigin,
    pub ticket_system: String,
    pub ticket_number: String,
}

/// Which scopes a listing of schedules covers.
pub enum ScopeFilter {
    /// `root`, and every scope below it when asked.
    Subtree {
        root: String,
        include_descendants: bool,
    },
    /// Exactly these scopes.
    AnyOf(Vec<String>),
}

#[derive(Clone)]
pub struct NewWindow {
    pub request_id: String,
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub eligibility_schedule_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub provisioned_by: String,
}

fn kind_text(kind: ScheduleKind) -> &'static str {
    match kind {
        ScheduleKind::Active => "active",
        _ => "eligible",
    }
}

fn origin_text(origin: ScheduleOrigin) -> &'static str {
    match origin {
        ScheduleOrigin::Discovered => "discovered",
        ScheduleOrigin::Activated => "activated",
        _ => "assigned",
    }
}

fn origin_of(text: &str) -> ScheduleOrigin {
    match text {
        "discovered" => ScheduleOrigin::Discovered,
        "activated" => ScheduleOrigin::Activated,
        _ => ScheduleOrigin::Assigned,
    }
}

/// The id of a live schedule of this principal, role, scope and kind, if there is one.
pub(super) async fn live_duplicate(
    conn: &impl ConnectionTrait,
    principal: &str,
    role: &str,
    scope: &str,
    kind: ScheduleKind,
    now_ms: i64,
) -> anyhow::Result<Option<String>> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            "SELECT id FROM schedules WHERE principal_id = $1 AND role_id = $2 AND scope = $3 AND kind = $4 \
             AND (end_ms IS NULL OR end_ms > $5)",
            [
                principal.into(),
                role.into(),
                scope.into(),
                kind_text(kind).into(),
                now_ms.into(),
            ],
        ))
        .await?;
    Ok(row.map(|r| r.try_get::<String>("", "id")).transpose()?)
}

/// Writes a new schedule and its `assignment.schedule_created` event into `txn`; the caller
/// commits.
pub(super) async fn insert_schedule(
    txn: &impl ConnectionTrait,
    outbox: &Outbox,
    new: NewSchedule,
    now_ms: i64,
    correlation: &str,
) -> anyhow::Result<Schedule> {
    let id = uuid::Uuid::now_v7().to_string();
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO schedules (id, kind, principal_id, role_id, scope, start_ms, end_ms, created_by, request_key, created_at_ms, origin, \
         ticket_system, ticket_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        [
            id.clone().into(),
            kind_text(new.kind).into(),
            new.principal_id.clone().into(),
            new.role_id.clone().into(),
            new.scope.clone().into(),
            new.start_ms.into(),
            new.end_ms.into(),
            new.created_by.clone().into(),
            new.request_key.clone().into(),
            now_ms.into(),
            origin_text(new.origin).into(),
            new.ticket_system.clone().into(),
            new.ticket_number.clone().into(),
        ],
    ))
    .await?;
    let schedule = Schedule {
        id,
        ..unsaved(&new)
    };
    let payload = ScheduleCreated {
        principal: super::directory::principal_in(txn, &schedule.principal_id).await?,
        schedule: Some(schedule.clone()),
        justification: new.justification,
    };
    let mut event = NewEvent::new(
        "assignment.schedule_created",
        schedule.id.clone(),
        pim_proto::pack(&payload),
    )
    .correlated(correlation);
    if !new.created_by.is_empty() {
        event = event.by(&new.created_by);
    }
    outbox.enqueue(txn, event).await?;
    Ok(schedule)
}

/// The schedule `new` describes, before it has an id.
fn unsaved(new: &NewSchedule) -> Schedule {
    Schedule {
        id: String::new(),
        kind: new.kind.into(),
        principal_id: new.principal_id.clone(),
        role_id: new.role_id.clone(),
        scope: new.scope.clone(),
        start_time: Some(timestamp_from_millis(new.start_ms)),
        end_time: new.end_ms.map(timestamp_from_millis),
        created_by: new.created_by.clone(),
        origin: new.origin.into(),
        ticket_system: new.ticket_system.clone(),
        ticket_number: new.ticket_number.clone(),
    }
}

impl Store {
    /// The groups G for which any of `holders` has an active schedule, or `holders[0]` an
    /// activated window, of Group Member at `/groups/G`: candidates for just-in-time membership,
    /// to be decided at an instant.
    pub async fn member_groups_by_assignment(
        &self,
        holders: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let Some(principal) = holders.first() else {
            return Ok(Vec::new());
        };
        let mut values: Vec<sea_orm::Value> = vec![
            pim_client::roles::GROUP_MEMBER.into(),
            principal.clone().into(),
        ];
        values.extend(holders.iter().cloned().map(Into::into));
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "SELECT scope FROM schedules WHERE role_id = $1 AND kind = 'active' AND principal_id IN ({}) \
                     UNION SELECT scope FROM windows WHERE role_id = $1 AND principal_id = $2",
                    placeholders(3, holders.len())
                ),
                values,
            ))
            .await?;
        let mut groups = Vec::new();
        for row in rows {
            let scope: String = row.try_get("", "scope")?;
            if let Some(group) = scope.strip_prefix("/groups/")
                && !group.is_empty()
                && !group.contains('/')
                && !groups.iter().any(|g| g == group)
            {
                groups.push(group.to_owned());
            }
        }
        Ok(groups)
    }

    /// Creates a schedule; idempotent by request key. A second live schedule of the same
    /// principal, role, scope and kind is refused. With `write` false it answers exactly as the
    /// real call would, and writes nothing.
    pub async fn create_schedule(
        &self,
        outbox: &Outbox,
        new: NewSchedule,
        now_ms: i64,
        correlation: &str,
        write: bool,
    ) -> Result<(Schedule, i64), AssignmentError> {
        let txn = self.db.begin().await?;
        if let Some(key) = &new.request_key
            && let Some(existing) = txn
                .query_one_raw(stmt(
                    &txn,
                    "SELECT * FROM schedules WHERE request_key = $1",
                    [key.clone().into()],
                ))
                .await?
        {
            let schedule = schedule(&existing)?;
            txn.rollback().await?;
            let revision = self.revision().await?;
            return Ok((schedule, revision));
        }
        if let Some(existing) = live_duplicate(
            &txn,
            &new.principal_id,
            &new.role_id,
            &new.scope,
            new.kind,
            now_ms,
        )
        .await?
        {
            return Err(AssignmentError::Refused {
                reason: "DUPLICATE_SCHEDULE",
                message: format!(
                    "{} already holds this role at {} as schedule {existing}; update or remove it instead",
                    new.principal_id, new.scope
                ),
            });
        }
        if !write {
            let schedule = unsaved(&new);
            return Ok((schedule, current_revision(&txn).await?));
        }
        let schedule = insert_schedule(&txn, outbox, new, now_ms, correlation).await?;
        let revision = bump_revision(&txn, &[&schedule.principal_id]).await?;
        txn.commit().await?;
        Ok((schedule, revision))
    }

    /// Idempotent by request id: a second call returns the window written by the first, also
    /// when the two race (the loser's insert fails on the unique request id, and it reads).
    pub async fn provision_window(
        &self,
        outbox: &Outbox,
        new: NewWindow,
        now_ms: i64,
    ) -> anyhow::Result<(Window, i64)> {
        match self.try_provision_window(outbox, new.clone(), now_ms).await {
            Err(e) if pim_db::is_unique_violation(&e) => {
                self.try_provision_window(outbox, new, now_ms).await
            }
            other => other,
        }
    }

    async fn try_provision_window(
        &self,
        outbox: &Outbox,
        new: NewWindow,
        now_ms: i64,
    ) -> anyhow::Result<(Window, i64)> {
        let txn = self.db.begin().await?;
        if let Some(existing) = txn
            .query_one_raw(stmt(
                &txn,
                "SELECT * FROM windows WHERE request_id = $1",
                [new.request_id.clone().into()],
            ))
            .await?
        {
            let window = window(&existing)?;
            txn.rollback().await?;
            return Ok((window, self.revision().await?));
        }
        let id = uuid::Uuid::now_v7().to_string();
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO windows (id, request_id, principal_id, role_id, scope, eligibility_schedule_id, start_ms, end_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                id.clone().into(),
                new.request_id.clone().into(),
                new.principal_id.clone().into(),
                new.role_id.clone().into(),
                new.scope.clone().into(),
                new.eligibility_schedule_id.clone().into(),
                new.start_ms.into(),
                new.end_ms.into(),
                now_ms.into(),
            ],
        ))
        .await?;
        let window = Window {
            id: id.clone(),
            request_id: new.request_id.clone(),
            principal_id: new.principal_id,
            role_id: new.role_id,
            scope: new.scope,
            eligibility_schedule_id: new.eligibility_schedule_id,
            start_time: Some(timestamp_from_millis(new.start_ms)),
            end_time: Some(timestamp_from_millis(new.end_ms)),
        };
        let payload = WindowProvisioned {
            window: Some(window.clone()),
        };
        let event = NewEvent::new(
            "assignment.window_provisioned",
            id,
            pim_proto::pack(&payload),
        )
        .by(&new.provisioned_by)
        .correlated(new.request_id);
        let revision = commit_with_event(txn, outbox, event, &[&window.principal_id]).await?;
        Ok((window, revision))
    }

    /// Schedules of `role` in `scopes`, of one kind or both, of one principal or all, ordered by
    /// id after `after`, at most `limit`. The scope is filtered in SQL, so a page reads only its
    /// own rows.
    pub async fn schedules_of_role(
        &self,
        role: &str,
        kind: Option<ScheduleKind>,
        principal: &str,
        scopes: &ScopeFilter,
        after: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<Schedule>> {
        let mut values: Vec<sea_orm::Value> = vec![
            role.into(),
            kind.map(kind_text).unwrap_or_default().into(),
            after.into(),
            principal.into(),
            (limit.min(i64::MAX as usize) as i64).into(),
        ];
        let scope_sql = match scopes {
            ScopeFilter::Subtree {
                root,
                include_descendants,
            } => {
                let below = if root == "/" {
                    "/".to_owned()
                } else {
                    format!("{root}/")
                };
                values.extend([
                    root.clone().into(),
                    i32::from(*include_descendants).into(),
                    below.into(),
                ]);
                "(scope = $6 OR ($7 = 1 AND substr(scope, 1, length($8)) = $8))".to_owned()
            }
            ScopeFilter::AnyOf(list) => {
                let first = values.len() + 1;
                values.extend(list.iter().cloned().map(sea_orm::Value::from));
                format!("scope IN ({})", placeholders(first, list.len().max(1)))
            }
        };
        if matches!(scopes, ScopeFilter::AnyOf(list) if list.is_empty()) {
            return Ok(Vec::new());
        }
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "SELECT * FROM schedules WHERE role_id = $1 AND ($2 = '' OR kind = $2) AND id > $3 \
                     AND ($4 = '' OR principal_id = $4) AND {scope_sql} ORDER BY id LIMIT $5"
                ),
                values,
            ))
            .await?;
        rows.iter().map(schedule).collect()
    }

    /// Principals with an activated window of `role` at any of `scopes` that has not ended, each
    /// with the scope of its window nearest the last of `scopes`.
    pub async fn window_holders(
        &self,
        role: &str,
        scopes: &[String],
        now_ms: i64,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT DISTINCT principal_id, scope FROM windows WHERE role_id = $1 AND start_ms <= $2 AND end_ms > $2",
                [role.into(), now_ms.into()],
            ))
            .await?;
        // Per principal, the window nearest the asked scope (the last of `scopes`).
        let mut holders: Vec<(String, String)> = Vec::new();
        for row in rows {
            let scope: String = row.try_get("", "scope")?;
            let principal: String = row.try_get("", "principal_id")?;
            let Some(depth) = scopes.iter().position(|s| *s == scope) else {
                continue;
            };
            match holders.iter_mut().find(|(p, _)| *p == principal) {
                Some((_, held)) => {
                    if scopes.iter().position(|s| s == held) < Some(depth) {
                        *held = scope;
                    }
                }
                None => holders.push((principal, scope)),
            }
        }
        Ok(holders)
    }

    /// Every schedule held by any of `holders`, of any role.
    pub async fn schedules_held_by(&self, holders: &[String]) -> anyhow::Result<Vec<Schedule>> {
        let values: Vec<sea_orm::Value> = holders.iter().cloned().map(Into::into).collect();
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                &format!(
                    "SELECT * FROM schedules WHERE principal_id IN ({}) ORDER BY role_id, scope",
                    placeholders(1, holders.len())
                ),
                values,
            ))
            .await?;
        rows.iter().map(schedule).collect()
    }

    /// Every window of `principal`, of any role.
    pub async fn windows_of(&self, principal: &str) -> anyhow::Result<Vec<Window>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT * FROM windows WHERE principal_id = $1 ORDER BY role_id, scope",
                [principal.into()],
            ))
            .await?;
        rows.iter().map(window).collect()
    }

    pub async fn schedule_by_id(&self, id: &str) -> Result<Schedule, AssignmentError> {
        schedule_in(&self.db, id).await
    }

    /// Removes a schedule (adminRemove). The last enabled permanent Global Administrator at `/`
    /// cannot be removed: the Global Administrator rows are locked first, so of two concurrent
    /// removals of the last two, exactly one succeeds.
    pub async fn remove_schedule(
        &self,
        outbox: &Outbox,
        id: &str,
        actor: &str,
        justification: &str,
        decision_id: &str,
        write: bool,
    ) -> Result<i64, AssignmentError> {
        let txn = self.db.begin().await?;
        self.lock_global_admins(&txn).await?;
        let removed = schedule_in(&txn, id).await?;
        let permanent_global_admin = removed.kind() == ScheduleKind::Active
            && removed.role_id == pim_client::roles::GLOBAL_ADMINISTRATOR
            && removed.scope == "/"
            && removed.end_time.is_none();
        txn.execute_raw(stmt(
            &txn,
            "DELETE FROM schedules WHERE id = $1",
            [id.into()],
        ))
        .await?;
        if permanent_global_admin {
            keep_a_global_admin(
                &txn,
                "this is the last enabled permanent Global Administrator at /; assign another first",
            )
            .await?;
        }
        if !write {
            txn.rollback().await?;
            return Ok(self.revision().await?);
        }
        let holder = removed.principal_id.clone();
        let payload = ScheduleRemoved {
            principal: super::directory::principal_in(&txn, &removed.principal_id).await?,
            schedule: Some(removed),
            justification: justification.to_owned(),
            decision_id: decision_id.to_owned(),
        };
        let revision = commit_with_event(
            txn,
            outbox,
            NewEvent::new(
                "assignment.schedule_removed",
                id.to_owned(),
                pim_proto::pack(&payload),
            )
            .by(actor),
            &[&holder],
        )
        .await?;
        Ok(revision)
    }

    /// Removes a batch of schedules in one transaction with one revision, each on its own
    /// decision; a removal that is refused (not found, or the last enabled permanent Global
    /// Administrator) leaves the others alone.
    pub async fn remove_schedules(
        &self,
        outbox: &Outbox,
        removals: &[Removal],
        actor: &str,
    ) -> Result<(Vec<RemovalOutcome>, i64), AssignmentError> {
        let txn = self.db.begin().await?;
        self.lock_global_admins(&txn).await?;
        let mut outcomes = Vec::with_capacity(removals.len());
        let mut holders: Vec<String> = Vec::new();
        for removal in removals {
            let refused = |e: AssignmentError| {
                let (reason, message) = match e {
                    AssignmentError::NotFound(what) => ("NOT_FOUND", format!("no {what}")),
                    AssignmentError::Refused { reason, message } => (reason, message),
                    other => return Err(other),
                };
                Ok(RemovalOutcome {
                    schedule_id: removal.schedule_id.clone(),
                    removed: false,
                    reason: reason.to_owned(),
                    message,
                })
            };
            let removed = match schedule_in(&txn, &removal.schedule_id).await {
                Ok(schedule) => schedule,
                Err(e) => {
                    outcomes.push(refused(e)?);
                    continue;
                }
            };
            // Only a permanent Global Administrator at `/` can break the invariant; its delete
            // runs under a savepoint, so that a refusal undoes it alone.
            let guarded = removed.kind() == ScheduleKind::Active
                && removed.role_id == pim_client::roles::GLOBAL_ADMINISTRATOR
                && removed.scope == "/"
                && removed.end_time.is_none();
            let savepoint = txn.begin().await?;
            savepoint
                .execute_raw(stmt(
                    &savepoint,
                    "DELETE FROM schedules WHERE id = $1",
                    [removal.schedule_id.clone().into()],
                ))
                .await?;
            if guarded
                && let Err(e) = keep_a_global_admin(
                    &savepoint,
                    "this is the last enabled permanent Global Administrator at /; assign another first",
                )
                .await
            {
                savepoint.rollback().await?;
                outcomes.push(refused(e)?);
                continue;
            }
            savepoint.commit().await?;
            holders.push(removed.principal_id.clone());
            let payload = ScheduleRemoved {
                principal: super::directory::principal_in(&txn, &removed.principal_id).await?,
                schedule: Some(removed),
                justification: removal.justification.clone(),
                decision_id: removal.decision_id.clone(),
            };
            outbox
                .enqueue(
                    &txn,
                    NewEvent::new(
                        "assignment.schedule_removed",
                        removal.schedule_id.clone(),
                        pim_proto::pack(&payload),
                    )
                    .by(actor),
                )
                .await?;
            outcomes.push(RemovalOutcome {
                schedule_id: removal.schedule_id.clone(),
                removed: true,
                ..Default::default()
            });
        }
        let revision = if !holders.is_empty() {
            let touched: Vec<&str> = holders.iter().map(String::as_str).collect();
            bump_revision(&txn, &touched).await?
        } else {
            current_revision(&txn).await?
        };
        txn.commit().await?;
        Ok((outcomes, revision))
    }

    /// Writes a schedule's new window (update, extend, renew). The window was checked against
    /// the schedule as read before; here the schedule must still be as it was, and the last
    /// enabled permanent Global Administrator must stay permanent.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_schedule(
        &self,
        outbox: &Outbox,
        before: &Schedule,
        event_type: &str,
        start_ms: i64,
        end_ms: Option<i64>,
        justification: &str,
        decision_id: &str,
        actor: &str,
        write: bool,
    ) -> Result<(Schedule, i64), AssignmentError> {
        let txn = self.db.begin().await?;
        self.lock_global_admins(&txn).await?;
        let current = schedule_in(&txn, &before.id).await?;
        if current != *before {
            return Err(AssignmentError::Refused {
                reason: "CONCURRENT_CHANGE",
                message: "the schedule changed meanwhile; read it again".into(),
            });
        }
        txn.execute_raw(stmt(
            &txn,
            "UPDATE schedules SET start_ms = $1, end_ms = $2 WHERE id = $3",
            [start_ms.into(), end_ms.into(), before.id.clone().into()],
        ))
        .await?;
        keep_a_global_admin(
            &txn,
            "this is the last enabled permanent Global Administrator at /; it stays permanent",
        )
        .await?;
        let changed = Schedule {
            start_time: Some(timestamp_from_millis(start_ms)),
            end_time: end_ms.map(timestamp_from_millis),
            ..current.clone()
        };
        if !write {
            txn.rollback().await?;
            return Ok((changed, self.revision().await?));
        }
        // Reminders may fire again for the new end.
        txn.execute_raw(stmt(
            &txn,
            "DELETE FROM schedule_announcements WHERE schedule_id = $1",
            [before.id.clone().into()],
        ))
        .await?;
        let payload = ScheduleChanged {
            principal: super::directory::principal_in(&txn, &changed.principal_id).await?,
            schedule: Some(changed.clone()),
            previous_start: current.start_time,
            previous_end: current.end_time,
            justification: justification.to_owned(),
            decision_id: decision_id.to_owned(),
        };
        let revision = commit_with_event(
            txn,
            outbox,
            NewEvent::new(event_type, before.id.clone(), pim_proto::pack(&payload)).by(actor),
            &[&changed.principal_id],
        )
        .await?;
        Ok((changed, revision))
    }

    /// Locks the Global Administrator rows, so that changes to them serialize (PostgreSQL;
    /// SQLite has a single writer anyway).
    async fn lock_global_admins(&self, txn: &impl ConnectionTrait) -> anyhow::Result<()> {
        if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            txn.execute_raw(stmt(
                txn,
                "SELECT id FROM schedules WHERE kind = 'active' AND role_id = $1 AND scope = '/' AND end_ms IS NULL FOR UPDATE",
                [pim_client::roles::GLOBAL_ADMINISTRATOR.into()],
            ))
            .await?;
        }
        Ok(())
    }

    /// Converts a schedule to `target` kind (ConvertSchedule), keeping its window. With `write`
    /// false it answers exactly as the real call would, and writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn convert_schedule(
        &self,
        outbox: &Outbox,
        id: &str,
        target: ScheduleKind,
        actor: &str,
        decision_id: &str,
        now_ms: i64,
        write: bool,
    ) -> Result<(Schedule, i64), AssignmentError> {
        let txn = self.db.begin().await?;
        self.lock_global_admins(&txn).await?;
        let current = schedule_in(&txn, id).await?;
        let from = current.kind();
        if from == target {
            return Ok((current, current_revision(&txn).await?));
        }
        let duplicate = live_duplicate(
            &txn,
            &current.principal_id,
            &current.role_id,
            &current.scope,
            target,
            now_ms,
        )
        .await?;
        if duplicate.is_some() {
            return Err(AssignmentError::Refused {
                reason: "DUPLICATE_SCHEDULE",
                message: format!(
                    "{} already holds this role at {} as {}",
                    current.principal_id,
                    current.scope,
                    kind_text(target)
                ),
            });
        }
        // A converted schedule is managed by PIM from now on, whatever its origin.
        txn.execute_raw(stmt(
            &txn,
            "UPDATE schedules SET kind = $1, origin = 'assigned' WHERE id = $2",
            [kind_text(target).into(), id.into()],
        ))
        .await?;
        keep_a_global_admin(
            &txn,
            "this is the last enabled permanent Global Administrator at /; assign another first",
        )
        .await?;
        let converted = Schedule {
            kind: target.into(),
            origin: ScheduleOrigin::Assigned.into(),
            ..current
        };
        if !write {
            txn.rollback().await?;
            return Ok((converted, self.revision().await?));
        }
        let payload = ScheduleConverted {
            principal: super::directory::principal_in(&txn, &converted.principal_id).await?,
            schedule: Some(converted.clone()),
            from_kind: from.into(),
            decision_id: decision_id.to_owned(),
        };
        let revision = commit_with_event(
            txn,
            outbox,
            NewEvent::new(
                "assignment.schedule_converted",
                id.to_owned(),
                pim_proto::pack(&payload),
            )
            .by(actor),
            &[&converted.principal_id],
        )
        .await?;
        Ok((converted, revision))
    }

    /// Ends the window of an activation request now (RevokeWindow). Idempotent: a window that
    /// already ended is returned as it is.
    pub async fn revoke_window(
        &self,
        outbox: &Outbox,
        request_id: &str,
        actor: &str,
        decision_id: &str,
        now_ms: i64,
    ) -> Result<(Window, i64), AssignmentError> {
        let txn = self.db.begin().await?;
        let current = txn
            .query_one_raw(stmt(
                &txn,
                "SELECT * FROM windows WHERE request_id = $1",
                [request_id.into()],
            ))
            .await?
            .map(|row| window(&row))
            .transpose()?
            .ok_or_else(|| AssignmentError::NotFound(format!("window of request {request_id}")))?;
        let end = current
            .end_time
            .as_ref()
            .map(pim_proto::millis_from_timestamp)
            .unwrap_or(0);
        if end <= now_ms {
            return Ok((current, current_revision(&txn).await?));
        }
        txn.execute_raw(stmt(
            &txn,
            "UPDATE windows SET end_ms = $1 WHERE request_id = $2",
            [now_ms.into(), request_id.into()],
        ))
        .await?;
        let revoked = Window {
            end_time: Some(timestamp_from_millis(now_ms)),
            ..current
        };
        let payload = WindowRevoked {
            window: Some(revoked.clone()),
            decision_id: decision_id.to_owned(),
        };
        let revision = commit_with_event(
            txn,
            outbox,
            NewEvent::new(
                "assignment.window_revoked",
                revoked.id.clone(),
                pim_proto::pack(&payload),
            )
            .by(actor)
            .correlated(request_id),
            &[&revoked.principal_id],
        )
        .await?;
        Ok((revoked, revision))
    }

    /// Break-glass principals get permanent, active Global Administrator at `/` on first start.
    pub async fn seed_break_glass(
        &self,
        outbox: &Outbox,
        principals: &[String],
        now_ms: i64,
    ) -> anyhow::Result<()> {
        for principal in principals {
            let new = NewSchedule {
                kind: ScheduleKind::Active,
                principal_id: principal.clone(),
                role_id: pim_client::roles::GLOBAL_ADMINISTRATOR.to_owned(),
                scope: "/".to_owned(),
                start_ms: 0,
                end_ms: None,
                created_by: "service:assignment".to_owned(),
                request_key: Some(format!("break-glass/{principal}")),
                justification: "break-glass principal from configuration".to_owned(),
                origin: ScheduleOrigin::Assigned,
                ticket_system: String::new(),
                ticket_number: String::new(),
            };
            self.create_schedule(outbox, new, now_ms, "", true).await?;
        }
        Ok(())
    }
}

pub(super) fn schedule(row: &QueryResult) -> anyhow::Result<Schedule> {
    let kind: String = row.try_get("", "kind")?;
    Ok(Schedule {
        id: row.try_get("", "id")?,
        kind: if kind == "active" {
            ScheduleKind::Active
        } else {
            ScheduleKind::Eligible
        }
        .into(),
        principal_id: row.try_get("", "principal_id")?,
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        start_time: Some(timestamp_from_millis(row.try_get("", "start_ms")?)),
        end_time: row
            .try_get::<Option<i64>>("", "end_ms")?
            .map(timestamp_from_millis),
        created_by: row.try_get("", "created_by")?,
        origin: origin_of(&row.try_get::<String>("", "origin")?).into(),
        ticket_system: row.try_get("", "ticket_system")?,
        ticket_number: row.try_get("", "ticket_number")?,
    })
}

fn window(row: &QueryResult) -> anyhow::Result<Window> {
    Ok(Window {
        id: row.try_get("", "id")?,
        request_id: row.try_get("", "request_id")?,
        principal_id: row.try_get("", "principal_id")?,
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        eligibility_schedule_id: row.try_get("", "eligibility_schedule_id")?,
        start_time: Some(timestamp_from_millis(row.try_get("", "start_ms")?)),
        end_time: Some(timestamp_from_millis(row.try_get("", "end_ms")?)),
    })
}

/// A schedule read inside a transaction, or NOT_FOUND.
async fn schedule_in(txn: &impl ConnectionTrait, id: &str) -> Result<Schedule, AssignmentError> {
    txn.query_one_raw(stmt(
        txn,
        "SELECT * FROM schedules WHERE id = $1",
        [id.into()],
    ))
    .await?
    .map(|row| schedule(&row))
    .transpose()?
    .ok_or_else(|| AssignmentError::NotFound(format!("schedule {id}")))
}

/// Refuses with `LAST_GLOBAL_ADMIN` when the transaction's changes leave no enabled principal
/// with permanent, active Global Administrator at `/`; the caller's transaction then rolls back
/// as it drops.
async fn keep_a_global_admin(
    txn: &impl ConnectionTrait,
    message: &str,
) -> Result<(), AssignmentError> {
    if super::directory::enabled_permanent_global_admins(txn).await? == 0 {
        return Err(AssignmentError::Refused {
            reason: "LAST_GLOBAL_ADMIN",
            message: message.to_owned(),
        });
    }
    Ok(())
}
