//! What the assignment context says about people: who an approver list names now, whether a
//! person is enabled, and which groups they are in. Approval keeps no directory of its own.

use pim_client::{PimClient, retry_idempotent, roles};
use pim_proto::assignment::v1::{
    Approver, GetPrincipalRequest, ListGroupMembersRequest, ListGroupsOfRequest,
    ListRoleHoldersRequest, approver::Subject,
};
use tonic::{Code, Status};

/// A person who may decide, and the group they qualified through ("" when named directly).
pub type Person = (String, String);

pub struct Directory<'a> {
    pub assignment: &'a PimClient,
}

use crate::grpc::peer_failed as unavailable;

impl Directory<'_> {
    /// Whether `principal` may act: disabled principals may not. A principal the directory has
    /// never synced counts as enabled, as everywhere in PIM.
    pub async fn enabled(&self, principal: &str) -> Result<bool, Status> {
        let found = retry_idempotent(|| {
            let mut client = self.assignment.assignment();
            let query = GetPrincipalRequest {
                principal_id: principal.to_owned(),
            };
            async move { client.get_principal(query).await }
        })
        .await;
        match found {
            Ok(found) => Ok(found.into_inner().principal.is_none_or(|p| p.enabled)),
            Err(status) if status.code() == Code::NotFound => Ok(true),
            Err(status) => Err(unavailable(status)),
        }
    }

    /// The groups `principal` is a member of now: directly, or just in time.
    pub async fn groups_of(&self, principal: &str) -> Result<Vec<String>, Status> {
        let groups = retry_idempotent(|| {
            let mut client = self.assignment.assignment();
            // Now: including groups joined just in time (PIM for Groups).
            let query = ListGroupsOfRequest {
                principal_id: principal.to_owned(),
                at: None,
            };
            async move { client.list_groups_of(query).await }
        })
        .await
        .map_err(unavailable)?;
        Ok(groups
            .into_inner()
            .groups
            .into_iter()
            .map(|g| g.id)
            .collect())
    }

    /// The enabled people `approvers` names now. An empty list means Entra's default: the
    /// Privileged Role Administrators and Global Administrators at `scope`.
    pub async fn resolve(
        &self,
        approvers: &[Approver],
        scope: &str,
    ) -> Result<Vec<Person>, Status> {
        let mut people = Vec::new();
        if approvers.is_empty() {
            for role in [
                roles::PRIVILEGED_ROLE_ADMINISTRATOR,
                roles::GLOBAL_ADMINISTRATOR,
            ] {
                let holders = retry_idempotent(|| {
                    let mut client = self.assignment.assignment();
                    let query = ListRoleHoldersRequest {
                        role_id: role.to_owned(),
                        scope: scope.to_owned(),
                    };
                    async move { client.list_role_holders(query).await }
                })
                .await
                .map_err(unavailable)?;
                for holder in holders.into_inner().holders {
                    if self.enabled(&holder.principal_id).await? {
                        people.push((holder.principal_id, holder.group_id));
                    }
                }
            }
        }
        for approver in approvers {
            match &approver.subject {
                Some(Subject::UserId(user)) if self.enabled(user).await? => {
                    people.push((user.clone(), String::new()));
                }
                Some(Subject::GroupId(group)) => {
                    let members = retry_idempotent(|| {
                        let mut client = self.assignment.assignment();
                        let query = ListGroupMembersRequest {
                            group_id: group.clone(),
                        };
                        async move { client.list_group_members(query).await }
                    })
                    .await
                    .map_err(unavailable)?;
                    people.extend(
                        members
                            .into_inner()
                            .members
                            .into_iter()
                            .filter(|m| m.enabled)
                            .map(|m| (m.id, group.clone())),
                    );
                }
                Some(Subject::UserId(_)) | None => {}
            }
        }
        people.sort();
        people.dedup();
        Ok(people)
    }
}
