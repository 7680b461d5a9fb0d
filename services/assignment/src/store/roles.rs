//! The role catalog.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::assignment::v1::{Role, RoleChanged};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::{Store, bump_revision, current_revision};
use crate::{domain::roles::BUILT_IN, error::AssignmentError};

type Result<T> = std::result::Result<T, AssignmentError>;

fn role(row: &QueryResult) -> anyhow::Result<Role> {
    let permissions: String = row.try_get("", "permissions")?;
    Ok(Role {
        id: row.try_get("", "id")?,
        display_name: row.try_get("", "display_name")?,
        description: row.try_get("", "description")?,
        permissions: permissions.lines().map(str::to_owned).collect(),
        privileged: row.try_get("", "privileged")?,
        built_in: row.try_get("", "built_in")?,
    })
}

impl Store {
    /// Writes the built-in catalog; a newer release's names and descriptions replace older ones.
    pub async fn seed_built_in_roles(&self) -> anyhow::Result<()> {
        for r in BUILT_IN {
            self.db
                .execute_raw(stmt(
                    &self.db,
                    "INSERT INTO roles (id, display_name, description, permissions, privileged, built_in) \
                     VALUES ($1, $2, $3, '', $4, TRUE) ON CONFLICT (id) DO UPDATE SET \
                     display_name = excluded.display_name, description = excluded.description, privileged = excluded.privileged",
                    [r.id.into(), r.name.into(), r.description.into(), r.privileged.into()],
                ))
                .await?;
        }
        Ok(())
    }

    pub async fn role(&self, id: &str) -> anyhow::Result<Option<Role>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                "SELECT * FROM roles WHERE id = $1",
                [id.into()],
            ))
            .await?
            .map(|row| role(&row))
            .transpose()
    }

    /// Roles ordered by id, after `after` (exclusive).
    pub async fn roles(
        &self,
        after: &str,
        limit: u32,
        privileged_only: bool,
    ) -> anyhow::Result<Vec<Role>> {
        let rows = self
            .db
            .query_all_raw(stmt(
                &self.db,
                "SELECT * FROM roles WHERE id > $1 AND ($2 = FALSE OR privileged = TRUE) ORDER BY id LIMIT $3",
                [after.into(), privileged_only.into(), i64::from(limit).into()],
            ))
            .await?;
        rows.iter().map(role).collect()
    }

    async fn name_taken(
        &self,
        conn: &impl ConnectionTrait,
        name: &str,
        except_id: &str,
    ) -> anyhow::Result<bool> {
        Ok(conn
            .query_one_raw(stmt(
                conn,
                "SELECT id FROM roles WHERE LOWER(display_name) = LOWER($1) AND id <> $2",
                [name.into(), except_id.into()],
            ))
            .await?
            .is_some())
    }

    /// Creates a custom role; idempotent by `request_key`.
    pub async fn create_role(
        &self,
        outbox: &Outbox,
        mut new: Role,
        request_key: Option<String>,
        actor: &str,
        write: bool,
    ) -> Result<(Role, i64)> {
        let txn = self.db.begin().await?;
        if let Some(key) = &request_key
            && let Some(existing) = txn
                .query_one_raw(stmt(
                    &txn,
                    "SELECT * FROM roles WHERE request_key = $1",
                    [key.clone().into()],
                ))
                .await?
        {
            return Ok((role(&existing)?, current_revision(&txn).await?));
        }
        if self.name_taken(&txn, &new.display_name, "").await? {
            return Err(AssignmentError::AlreadyExists(format!(
                "a role named {:?} exists",
                new.display_name
            )));
        }
        new.id = uuid::Uuid::now_v7().to_string();
        new.built_in = false;
        if !write {
            return Ok((new, current_revision(&txn).await?));
        }
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO roles (id, display_name, description, permissions, privileged, built_in, request_key) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6)",
            [
                new.id.clone().into(),
                new.display_name.clone().into(),
                new.description.clone().into(),
                new.permissions.join("\n").into(),
                new.privileged.into(),
                request_key.into(),
            ],
        ))
        .await?;
        let revision = self
            .announce(&txn, outbox, "assignment.role_created", &new, actor)
            .await?;
        txn.commit().await?;
        Ok((new, revision))
    }

    pub async fn update_role(
        &self,
        outbox: &Outbox,
        updated: Role,
        actor: &str,
        write: bool,
    ) -> Result<(Role, i64)> {
        let txn = self.db.begin().await?;
        let current = self.editable(&txn, &updated.id).await?;
        if self
            .name_taken(&txn, &updated.display_name, &updated.id)
            .await?
        {
            return Err(AssignmentError::AlreadyExists(format!(
                "a role named {:?} exists",
                updated.display_name
            )));
        }
        let updated = Role {
            built_in: false,
            ..updated
        };
        if !write || updated == current {
            return Ok((updated, current_revision(&txn).await?));
        }
        txn.execute_raw(stmt(
            &txn,
            "UPDATE roles SET display_name = $1, description = $2, permissions = $3, privileged = $4 WHERE id = $5",
            [
                updated.display_name.clone().into(),
                updated.description.clone().into(),
                updated.permissions.join("\n").into(),
                updated.privileged.into(),
                updated.id.clone().into(),
            ],
        ))
        .await?;
        let revision = self
            .announce(&txn, outbox, "assignment.role_updated", &updated, actor)
            .await?;
        txn.commit().await?;
        Ok((updated, revision))
    }

    /// Deletes a custom role that nothing is assigned.
    pub async fn delete_role(
        &self,
        outbox: &Outbox,
        id: &str,
        actor: &str,
        write: bool,
    ) -> Result<i64> {
        let txn = self.db.begin().await?;
        let current = self.editable(&txn, id).await?;
        let in_use = txn
            .query_one_raw(stmt(
                &txn,
                "SELECT 1 AS one FROM schedules WHERE role_id = $1 UNION ALL SELECT 1 AS one FROM windows WHERE role_id = $1",
                [id.into()],
            ))
            .await?
            .is_some();
        if in_use {
            return Err(AssignmentError::Refused {
                reason: "ROLE_IN_USE",
                message: format!("role {id} is still assigned; remove its assignments first"),
            });
        }
        if !write {
            return Ok(current_revision(&txn).await?);
        }
        txn.execute_raw(stmt(&txn, "DELETE FROM roles WHERE id = $1", [id.into()]))
            .await?;
        let revision = self
            .announce(&txn, outbox, "assignment.role_deleted", &current, actor)
            .await?;
        txn.commit().await?;
        Ok(revision)
    }

    /// The current definition of a custom role; built-in and unknown roles are refused.
    async fn editable(&self, conn: &impl ConnectionTrait, id: &str) -> Result<Role> {
        let current = conn
            .query_one_raw(stmt(conn, "SELECT * FROM roles WHERE id = $1", [id.into()]))
            .await?
            .map(|row| role(&row))
            .transpose()?
            .ok_or_else(|| AssignmentError::NotFound(format!("role {id}")))?;
        if current.built_in {
            return Err(AssignmentError::Refused {
                reason: "BUILT_IN_ROLE",
                message: format!(
                    "{} is a built-in role and cannot be changed or deleted",
                    current.display_name
                ),
            });
        }
        Ok(current)
    }

    async fn announce(
        &self,
        txn: &impl ConnectionTrait,
        outbox: &Outbox,
        event_type: &str,
        role: &Role,
        actor: &str,
    ) -> anyhow::Result<i64> {
        let payload = RoleChanged {
            role: Some(role.clone()),
        };
        outbox
            .enqueue(
                txn,
                NewEvent::new(event_type, role.id.clone(), pim_proto::pack(&payload)).by(actor),
            )
            .await?;
        bump_revision(txn, &[]).await
    }
}
