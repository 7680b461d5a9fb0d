//! Role management policies, one per (role, scope), stored as their protobuf rules.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    assignment::v1::{PolicyEntry, PolicyRules, PolicyUpdated, RoleManagementPolicy},
    timestamp_from_millis,
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::{Store, bump_revision, current_revision};
use crate::{domain::policy::Layer, error::AssignmentError};

fn policy(row: &QueryResult) -> anyhow::Result<RoleManagementPolicy> {
    let rules: Vec<u8> = row.try_get("", "rules")?;
    Ok(RoleManagementPolicy {
        role_id: row.try_get("", "role_id")?,
        scope: row.try_get("", "scope")?,
        version: row.try_get("", "version")?,
        rules: Some(PolicyRules::decode(rules.as_slice())?),
        updated_by: row.try_get("", "updated_by")?,
        updated_at: Some(timestamp_from_millis(row.try_get("", "updated_at_ms")?)),
    })
}

impl Store {
    pub async fn policy(
        &self,
        role: &str,
        scope: &str,
    ) -> anyhow::Result<Option<RoleManagementPolicy>> {
        self.db
            .query_one_raw(stmt(
                &self.db,
                "SELECT * FROM policies WHERE role_id = $1 AND scope = $2",
                [role.into(), scope.into()],
            ))
            .await?
            .map(|row| policy(&row))
            .transpose()
    }

    /// The policies of `role` set at any of `scopes` (given root first), nearest scope first.
    pub async fn policy_layers(&self, role: &str, scopes: &[String]) -> anyhow::Result<Vec<Layer>> {
        let mut layers = Vec::new();
        for scope in scopes.iter().rev() {
            if let Some(found) = self.policy(role, scope).await? {
                layers.push(Layer {
                    scope: found.scope,
                    version: found.version,
                    rules: found.rules.unwrap_or_default(),
                });
            }
        }
        Ok(layers)
    }

    /// Sets (or, with `write` false, checks) the policy of (role, scope). Its version is the
    /// revision of the write, so versions only grow.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_policy(
        &self,
        outbox: &Outbox,
        role: &str,
        scope: &str,
        rules: PolicyRules,
        expected_version: i64,
        actor: &str,
        now_ms: i64,
        write: bool,
    ) -> Result<RoleManagementPolicy, AssignmentError> {
        let txn = self.db.begin().await?;
        let current = txn
            .query_one_raw(stmt(
                &txn,
                "SELECT version FROM policies WHERE role_id = $1 AND scope = $2",
                [role.into(), scope.into()],
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "version"))
            .transpose()?
            .unwrap_or(0);
        if expected_version != 0 && expected_version != current {
            return Err(AssignmentError::Refused {
                reason: "STALE_VERSION",
                message: format!(
                    "the policy is at version {current}, not {expected_version}; read it again"
                ),
            });
        }
        let mut policy = RoleManagementPolicy {
            role_id: role.to_owned(),
            scope: scope.to_owned(),
            version: current,
            rules: Some(rules),
            updated_by: actor.to_owned(),
            updated_at: Some(timestamp_from_millis(now_ms)),
        };
        if !write {
            return Ok(policy);
        }
        policy.version = bump_revision(&txn, &[]).await?;
        write_policy(&txn, outbox, &policy).await?;
        txn.commit().await?;
        Ok(policy)
    }

    /// Every policy set at any scope, ordered by role and scope, and the revision read at.
    pub async fn all_policies(&self) -> anyhow::Result<(Vec<RoleManagementPolicy>, i64)> {
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all_raw(stmt(
                &txn,
                "SELECT * FROM policies ORDER BY role_id, scope",
                [],
            ))
            .await?;
        let revision = current_revision(&txn).await?;
        txn.commit().await?;
        Ok((
            rows.iter().map(policy).collect::<anyhow::Result<_>>()?,
            revision,
        ))
    }

    /// Sets every entry whose rules differ from what is stored, in one transaction under one
    /// revision, which becomes each changed policy's version. With `write` false it only
    /// counts. Returns (changed, unchanged, revision).
    pub async fn import_policies(
        &self,
        outbox: &Outbox,
        entries: &[PolicyEntry],
        actor: &str,
        now_ms: i64,
        write: bool,
    ) -> anyhow::Result<(i32, i32, i64)> {
        let txn = self.db.begin().await?;
        let mut changed = Vec::new();
        let mut unchanged = 0;
        for entry in entries {
            let current = txn
                .query_one_raw(stmt(
                    &txn,
                    "SELECT rules FROM policies WHERE role_id = $1 AND scope = $2",
                    [entry.role_id.clone().into(), entry.scope.clone().into()],
                ))
                .await?
                .map(|row| row.try_get::<Vec<u8>>("", "rules"))
                .transpose()?
                .map(|bytes| PolicyRules::decode(bytes.as_slice()))
                .transpose()?;
            if current.as_ref() == entry.rules.as_ref() {
                unchanged += 1;
            } else {
                changed.push(entry);
            }
        }
        let count = i32::try_from(changed.len()).unwrap_or(i32::MAX);
        if !write || changed.is_empty() {
            let revision = current_revision(&txn).await?;
            return Ok((count, unchanged, revision));
        }
        let revision = bump_revision(&txn, &[]).await?;
        for entry in changed {
            let policy = RoleManagementPolicy {
                role_id: entry.role_id.clone(),
                scope: entry.scope.clone(),
                version: revision,
                rules: entry.rules.clone(),
                updated_by: actor.to_owned(),
                updated_at: Some(timestamp_from_millis(now_ms)),
            };
            write_policy(&txn, outbox, &policy).await?;
        }
        txn.commit().await?;
        Ok((count, unchanged, revision))
    }
}

/// Upserts `policy` and announces it with `assignment.policy_updated`, in `txn`.
async fn write_policy(
    txn: &impl ConnectionTrait,
    outbox: &Outbox,
    policy: &RoleManagementPolicy,
) -> anyhow::Result<()> {
    txn.execute_raw(stmt(
        txn,
        "INSERT INTO policies (role_id, scope, version, rules, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (role_id, scope) DO UPDATE SET version = excluded.version, rules = excluded.rules, \
         updated_by = excluded.updated_by, updated_at_ms = excluded.updated_at_ms",
        [
            policy.role_id.clone().into(),
            policy.scope.clone().into(),
            policy.version.into(),
            policy.rules.clone().unwrap_or_default().encode_to_vec().into(),
            policy.updated_by.clone().into(),
            policy
                .updated_at
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or_default()
                .into(),
        ],
    ))
    .await?;
    let payload = PolicyUpdated {
        policy: Some(policy.clone()),
    };
    outbox
        .enqueue(
            txn,
            NewEvent::new(
                "assignment.policy_updated",
                format!("{}@{}", policy.role_id, policy.scope),
                pim_proto::pack(&payload),
            )
            .by(&policy.updated_by),
        )
        .await?;
    Ok(())
}
