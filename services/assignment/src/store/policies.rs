//! Role management policies, one per (role, scope), stored as their protobuf rules.

use pim_db::stmt;
use pim_events::{NewEvent, Outbox};
use pim_proto::{
    assignment::v1::{PolicyRules, PolicyUpdated, RoleManagementPolicy},
    timestamp_from_millis,
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::{Store, bump_revision};
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
        policy.version = bump_revision(&txn).await?;
        txn.execute_raw(stmt(
            &txn,
            "INSERT INTO policies (role_id, scope, version, rules, updated_by, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (role_id, scope) DO UPDATE SET version = excluded.version, rules = excluded.rules, \
             updated_by = excluded.updated_by, updated_at_ms = excluded.updated_at_ms",
            [
                role.into(),
                scope.into(),
                policy.version.into(),
                policy.rules.clone().unwrap_or_default().encode_to_vec().into(),
                actor.into(),
                now_ms.into(),
            ],
        ))
        .await?;
        let payload = PolicyUpdated {
            policy: Some(policy.clone()),
        };
        outbox
            .enqueue(
                &txn,
                NewEvent::new(
                    "assignment.policy_updated",
                    format!("{role}@{scope}"),
                    pim_proto::pack(&payload),
                )
                .by(actor),
            )
            .await?;
        txn.commit().await?;
        Ok(policy)
    }
}
