//! Who receives an e-mail: an event's audiences filtered by the role policy's notification
//! rules (level none, critical or all; default recipients on or off; additional addresses),
//! expanded through the assignment context's directory. Disabled principals, groups and
//! principals without an address are skipped.

use std::collections::BTreeMap;

use pim_client::{PimClient, retry_idempotent, roles};
use pim_proto::assignment::v1::{
    GetEffectivePolicyRequest, GetPrincipalRequest, GetRoleRequest, ListRoleHoldersRequest,
    NotificationRules, Principal, PrincipalType,
};
use tonic::Code;

use crate::notice::{Audience, Defaults, Facts, admitted};

/// Roles whose holders are a scope's admins for notifications.
const ADMIN_ROLES: [&str; 3] = [
    roles::GLOBAL_ADMINISTRATOR,
    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
    roles::SECURITY_ADMINISTRATOR,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Empty for a rule's additional recipients.
    pub principal_id: String,
    pub email: String,
    pub name: String,
}

pub struct Directory<'a> {
    pub assignment: &'a PimClient,
}

fn failed(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: the assignment service answered {:?}: {}",
        status.code(),
        status.message()
    )
}

impl Directory<'_> {
    async fn rules(&self, role_id: &str, scope: &str) -> anyhow::Result<NotificationRules> {
        let policy = retry_idempotent(|| {
            let mut client = self.assignment.assignment();
            let query = GetEffectivePolicyRequest {
                role_id: role_id.to_owned(),
                scope: scope.to_owned(),
            };
            async move { client.get_effective_policy(query).await }
        })
        .await
        .map_err(|s| failed("reading the effective policy", s))?;
        Ok(policy
            .into_inner()
            .rules
            .and_then(|r| r.notifications)
            .unwrap_or_default())
    }

    /// The principal, or `None` when the directory does not know it.
    async fn principal(&self, id: &str) -> anyhow::Result<Option<Principal>> {
        let found = retry_idempotent(|| {
            let mut client = self.assignment.assignment();
            let query = GetPrincipalRequest {
                principal_id: id.to_owned(),
            };
            async move { client.get_principal(query).await }
        })
        .await;
        match found {
            Ok(found) => Ok(found.into_inner().principal),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(failed("reading a principal", status)),
        }
    }

    async fn admins(&self, scope: &str) -> anyhow::Result<Vec<String>> {
        let mut admins = Vec::new();
        for role in ADMIN_ROLES {
            let holders = retry_idempotent(|| {
                let mut client = self.assignment.assignment();
                let query = ListRoleHoldersRequest {
                    role_id: role.to_owned(),
                    scope: scope.to_owned(),
                };
                async move { client.list_role_holders(query).await }
            })
            .await
            .map_err(|s| failed("listing admins", s))?;
            admins.extend(
                holders
                    .into_inner()
                    .holders
                    .into_iter()
                    .map(|h| h.principal_id),
            );
        }
        Ok(admins)
    }

    async fn role_name(&self, role_id: &str) -> anyhow::Result<String> {
        let found = retry_idempotent(|| {
            let mut client = self.assignment.assignment();
            let query = GetRoleRequest {
                role_id: role_id.to_owned(),
            };
            async move { client.get_role(query).await }
        })
        .await;
        match found {
            Ok(found) => Ok(found
                .into_inner()
                .role
                .map(|r| r.display_name)
                .unwrap_or_else(|| role_id.to_owned())),
            Err(status) if status.code() == Code::NotFound => Ok(role_id.to_owned()),
            Err(status) => Err(failed("reading a role", status)),
        }
    }

    async fn name_of(&self, id: &str) -> anyhow::Result<String> {
        if id.is_empty() || id.starts_with("service:") {
            return Ok(id.to_owned());
        }
        Ok(self
            .principal(id)
            .await?
            .map(|p| p.display_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.to_owned()))
    }

    /// Fills the facts' display names from the directory.
    pub async fn name(&self, facts: &mut Facts) -> anyhow::Result<()> {
        if !facts.role_id.is_empty() {
            facts.role_name = self.role_name(&facts.role_id).await?;
        }
        facts.principal_name = self.name_of(&facts.principal_id).await?;
        facts.actor_name = self.name_of(&facts.actor_id).await?;
        Ok(())
    }

    /// The e-mail recipients of `audiences`, each once, in a stable order.
    pub async fn recipients(
        &self,
        facts: &Facts,
        audiences: &[Audience],
    ) -> anyhow::Result<Vec<Recipient>> {
        let needs_policy = audiences.iter().any(|a| a.slot.is_some());
        let rules = if needs_policy && !facts.role_id.is_empty() {
            self.rules(&facts.role_id, &facts.scope).await?
        } else {
            NotificationRules::default()
        };
        let mut people: Vec<String> = Vec::new();
        let mut addresses: Vec<String> = Vec::new();
        for audience in audiences {
            let (defaults, extra) = match audience.slot {
                Some(slot) => {
                    let rule = slot.rule(&rules);
                    if !admitted(&rule, audience.critical) {
                        continue;
                    }
                    (rule.default_recipients, rule.additional_recipients)
                }
                None => (true, Vec::new()),
            };
            addresses.extend(extra);
            if !defaults {
                continue;
            }
            match &audience.defaults {
                Defaults::People(ids) => people.extend(ids.iter().cloned()),
                Defaults::Admins(scope) => people.extend(self.admins(scope).await?),
            }
        }
        people.sort();
        people.dedup();
        // Keyed by address, so a person reached twice gets one message.
        let mut recipients: BTreeMap<String, Recipient> = BTreeMap::new();
        for id in people.into_iter().filter(|id| !id.is_empty()) {
            let Some(principal) = self.principal(&id).await? else {
                tracing::debug!(principal = %id, "not in the directory; no e-mail");
                continue;
            };
            if !principal.enabled
                || principal.r#type() == PrincipalType::Group
                || principal.email.trim().is_empty()
            {
                continue;
            }
            let name = if principal.display_name.is_empty() {
                principal.id.clone()
            } else {
                principal.display_name.clone()
            };
            recipients
                .entry(principal.email.trim().to_ascii_lowercase())
                .or_insert(Recipient {
                    principal_id: principal.id,
                    email: principal.email.trim().to_owned(),
                    name,
                });
        }
        for address in addresses {
            let address = address.trim().to_owned();
            if address.is_empty() {
                continue;
            }
            recipients
                .entry(address.to_ascii_lowercase())
                .or_insert(Recipient {
                    principal_id: String::new(),
                    email: address.clone(),
                    name: address,
                });
        }
        Ok(recipients.into_values().collect())
    }
}
