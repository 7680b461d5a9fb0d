//! The directory: principals and direct group membership, as the identity provider syncs them.

use std::collections::BTreeSet;

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::assignment::v1::{
    DiscoveredAssignment, GroupMembers, MembershipChanged, Principal, PrincipalDisabled,
    PrincipalType, PrincipalUpserted, ScheduleKind, ScheduleOrigin,
};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::{
    NewSchedule, Store, bump_revision, current_revision,
    schedules::{insert_schedule, live_duplicate},
};
use pim_db::placeholders;

/// What a sync changed.
#[derive(Debug, Default)]
pub struct DirectoryChange {
    pub created: i32,
    pub updated: i32,
    pub unchanged: i32,
    pub memberships_changed: i32,
    pub discovered: i32,
    pub revision: i64,
}

/// One sync batch, as the identity provider reports it.
pub struct DirectorySync<'a> {
    pub principals: &'a [Principal],
    pub groups: &'a [GroupMembers],
    pub discovered: &'a [DiscoveredAssignment],
}

fn kind_text(kind: PrincipalType) -> &'static str {
    match kind {
        PrincipalType::Group => "group",
        PrincipalType::ServicePrincipal => "service_principal",
        _ => "user",
    }
}

fn principal(row: &QueryResult) -> anyhow::Result<Principal> {
    let kind: String = row.try_get("", "kind")?;
    let kind = match kind.as_str() {
        "group" => PrincipalType::Group,
        "service_principal" => PrincipalType::ServicePrincipal,
        _ => PrincipalType::User,
    };
    Ok(Principal {
        id: row.try_get("", "id")?,
        r#type: kind.into(),
        display_name: row.try_get("", "display_name")?,
        email: row.try_get("", "email")?,
        enabled: row.try_get("", "enabled")?,
        guest: row.try_get("", "guest")?,
        break_glass: row.try_get("", "break_glass")?,
    })
}

impl Store {
    pub async fn principal(&self, id: &str) -> anyhow::Result<Option<Principal>> {
        principal_in(&self.db, id).await
    }

    /// The groups `member` directly belongs to. A group the directory has no record of is
    /// listed as an enabled group with only its id.
    pub async fn groups_of(&self, member: &str) -> anyhow::Result<Vec<Principal>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT m.group_id, p.* FROM group_members m LEFT JOIN principals p ON p.id = m.group_id \
                 WHERE m.member_id = $1 ORDER BY m.group_id",
                [member.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| match row.try_get::<Option<String>>("", "id")? {
                Some(_) => principal(row),
                None => Ok(Principal {
                    id: row.try_get("", "group_id")?,
                    r#type: PrincipalType::Group.into(),
                    enabled: true,
                    ..Principal::default()
                }),
            })
            .collect()
    }

    pub async fn members_of(&self, group: &str) -> anyhow::Result<Vec<Principal>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT m.member_id, p.* FROM group_members m LEFT JOIN principals p ON p.id = m.member_id \
                 WHERE m.group_id = $1 ORDER BY m.member_id",
                [group.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| match row.try_get::<Option<String>>("", "id")? {
                Some(_) => principal(row),
                None => Ok(Principal {
                    id: row.try_get("", "member_id")?,
                    r#type: PrincipalType::User.into(),
                    enabled: true,
                    ..Principal::default()
                }),
            })
            .collect()
    }

    /// Applies a sync batch in one transaction: principals created or changed, group members
    /// replaced, standing assignments discovered. Break-glass flags come from configuration,
    /// never from the batch. Disabling the last enabled permanent Global Administrator is
    /// applied, because the identity provider is the truth, and announced as a high-severity
    /// security fact.
    pub async fn upsert_directory(
        &self,
        outbox: &Outbox,
        sync: DirectorySync<'_>,
        break_glass: &[String],
        actor: &str,
        now_ms: i64,
    ) -> anyhow::Result<DirectoryChange> {
        let txn = self.db.begin().await?;
        let mut change = DirectoryChange::default();
        let mut disabled = Vec::new();
        // Whose access the batch may change: every principal it names.
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        for incoming in sync.principals {
            touched.insert(&incoming.id);
            let desired = Principal {
                break_glass: break_glass.contains(&incoming.id),
                ..incoming.clone()
            };
            let current = txn
                .query_one_raw(stmt(
                    &txn,
                    "SELECT * FROM principals WHERE id = $1",
                    [desired.id.clone().into()],
                ))
                .await?
                .map(|row| principal(&row))
                .transpose()?;
            match &current {
                Some(current) if *current == desired => {
                    change.unchanged += 1;
                    continue;
                }
                Some(_) => change.updated += 1,
                None => change.created += 1,
            }
            txn.execute_raw(stmt(
                &txn,
                "INSERT INTO principals (id, kind, display_name, email, enabled, guest, break_glass, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, \
                 display_name = excluded.display_name, email = excluded.email, enabled = excluded.enabled, \
                 guest = excluded.guest, break_glass = excluded.break_glass, updated_at_ms = excluded.updated_at_ms",
                [
                    desired.id.clone().into(),
                    kind_text(desired.r#type()).into(),
                    desired.display_name.clone().into(),
                    desired.email.clone().into(),
                    desired.enabled.into(),
                    desired.guest.into(),
                    desired.break_glass.into(),
                    now_ms.into(),
                ],
            ))
            .await?;
            let payload = PrincipalUpserted {
                principal: Some(desired.clone()),
            };
            outbox
                .enqueue(
                    &txn,
                    NewEvent::new(
                        "assignment.principal_upserted",
                        desired.id.clone(),
                        pim_proto::pack(&payload),
                    )
                    .by(actor),
                )
                .await?;
            let was_enabled = current.as_ref().is_none_or(|c| c.enabled);
            if was_enabled && !desired.enabled {
                disabled.push(desired);
            }
        }
        let mut removed_members = Vec::new();
        for group in sync.groups {
            change.memberships_changed += self
                .replace_members(&txn, outbox, group, actor, &mut removed_members)
                .await?;
            touched.insert(&group.group_id);
            touched.extend(group.member_ids.iter().map(String::as_str));
        }
        touched.extend(removed_members.iter().map(String::as_str));
        for found in sync.discovered {
            touched.insert(&found.principal_id);
            change.discovered += discover(&txn, outbox, found, actor, now_ms).await?;
        }
        let last_global_admin_gone =
            !disabled.is_empty() && enabled_permanent_global_admins(&txn).await? == 0;
        for principal in disabled {
            let payload = PrincipalDisabled {
                last_global_admin: last_global_admin_gone,
                principal: Some(principal.clone()),
            };
            if last_global_admin_gone {
                tracing::error!(principal = %principal.id, "a directory sync disabled the last enabled permanent Global Administrator");
            }
            outbox
                .enqueue(
                    &txn,
                    NewEvent::new(
                        "assignment.principal_disabled",
                        principal.id.clone(),
                        pim_proto::pack(&payload),
                    )
                    .by(actor),
                )
                .await?;
        }
        change.revision =
            if change.created + change.updated + change.memberships_changed + change.discovered > 0
            {
                bump_revision(&txn, &touched.into_iter().collect::<Vec<_>>()).await?
            } else {
                current_revision(&txn).await?
            };
        txn.commit().await?;
        Ok(change)
    }

    /// Replaces a group's direct members; returns 1 when they changed.
    async fn replace_members(
        &self,
        txn: &impl ConnectionTrait,
        outbox: &Outbox,
        group: &GroupMembers,
        actor: &str,
        removed_members: &mut Vec<String>,
    ) -> anyhow::Result<i32> {
        let rows = txn
            .query_all_raw(stmt(
                txn,
                "SELECT member_id FROM group_members WHERE group_id = $1",
                [group.group_id.clone().into()],
            ))
            .await?;
        let current: BTreeSet<String> = rows
            .iter()
            .map(|r| r.try_get::<String>("", "member_id"))
            .collect::<Result<_, _>>()?;
        let desired: BTreeSet<String> = group.member_ids.iter().cloned().collect();
        let added: Vec<String> = desired.difference(&current).cloned().collect();
        let removed: Vec<String> = current.difference(&desired).cloned().collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(0);
        }
        for member in &added {
            txn.execute_raw(stmt(
                txn,
                "INSERT INTO group_members (group_id, member_id) VALUES ($1, $2)",
                [group.group_id.clone().into(), member.clone().into()],
            ))
            .await?;
        }
        if !removed.is_empty() {
            let mut values = vec![group.group_id.clone().into()];
            values.extend(removed.iter().cloned().map(Into::into));
            txn.execute_raw(stmt(
                txn,
                &format!(
                    "DELETE FROM group_members WHERE group_id = $1 AND member_id IN ({})",
                    placeholders(2, removed.len())
                ),
                values,
            ))
            .await?;
        }
        removed_members.extend(removed.iter().cloned());
        let payload = MembershipChanged {
            group_id: group.group_id.clone(),
            added,
            removed,
        };
        outbox
            .enqueue(
                txn,
                NewEvent::new(
                    "assignment.membership_changed",
                    group.group_id.clone(),
                    pim_proto::pack(&payload),
                )
                .by(actor),
            )
            .await?;
        Ok(1)
    }
}

/// A principal as the directory has it, read through `conn` (a transaction when there is one).
/// Schedule events carry it: notification needs names and e-mail addresses, alerts the guest
/// and break-glass flags.
pub(super) async fn principal_in(
    conn: &impl ConnectionTrait,
    id: &str,
) -> anyhow::Result<Option<Principal>> {
    conn.query_one_raw(stmt(
        conn,
        "SELECT * FROM principals WHERE id = $1",
        [id.into()],
    ))
    .await?
    .map(|row| principal(&row))
    .transpose()
}

/// Records a standing assignment the sync found as a permanent active schedule of origin
/// `Discovered`, unless PIM already knows an active one for the same principal, role and scope.
/// Returns 1 when it was new.
async fn discover(
    txn: &impl ConnectionTrait,
    outbox: &Outbox,
    found: &DiscoveredAssignment,
    actor: &str,
    now_ms: i64,
) -> anyhow::Result<i32> {
    let known = live_duplicate(
        txn,
        &found.principal_id,
        &found.role_id,
        &found.scope,
        ScheduleKind::Active,
        now_ms,
    )
    .await?;
    if known.is_some() {
        return Ok(0);
    }
    let new = NewSchedule {
        kind: ScheduleKind::Active,
        principal_id: found.principal_id.clone(),
        role_id: found.role_id.clone(),
        scope: found.scope.clone(),
        start_ms: now_ms,
        end_ms: None,
        created_by: actor.to_owned(),
        request_key: None,
        justification: "discovered by the directory sync: standing access outside PIM".to_owned(),
        origin: ScheduleOrigin::Discovered,
        ticket_system: String::new(),
        ticket_number: String::new(),
    };
    insert_schedule(txn, outbox, new, now_ms, "").await?;
    Ok(1)
}

/// Enabled principals holding permanent, active Global Administrator at `/` directly. A
/// principal the directory has no record of counts as enabled.
pub(super) async fn enabled_permanent_global_admins(
    conn: &impl ConnectionTrait,
) -> anyhow::Result<i64> {
    let row = conn
        .query_one_raw(stmt(
            conn,
            "SELECT COUNT(DISTINCT s.principal_id) AS n FROM schedules s LEFT JOIN principals p ON p.id = s.principal_id \
             WHERE s.kind = 'active' AND s.role_id = $1 AND s.scope = '/' AND s.end_ms IS NULL \
             AND (p.id IS NULL OR p.enabled = TRUE)",
            [pim_client::roles::GLOBAL_ADMINISTRATOR.into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}
