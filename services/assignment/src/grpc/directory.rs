//! Handlers of the directory: the sync's batch upsert (administrators at `/`), and lookups
//! (the principal itself, readers, and PIM's services).

use pim_client::roles;
use pim_grpc::{Violations, caller};
use pim_proto::assignment::v1::{
    DiscoveredAssignment, GetPrincipalRequest, GetPrincipalResponse, ListGroupMembersRequest,
    ListGroupMembersResponse, ListGroupsOfRequest, ListGroupsOfResponse, Principal, PrincipalType,
    UpsertPrincipalsRequest, UpsertPrincipalsResponse,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, invalid, parse_scope};
use crate::{
    domain::{access::Decision, scope::Scope},
    error::AssignmentError,
    store::DirectorySync,
};

type Reply<T> = Result<Response<T>, Status>;

/// The most principals and groups one sync call may carry.
const MAX_BATCH: usize = 1000;

impl AssignmentApi {
    pub(super) async fn handle_upsert_principals(
        &self,
        request: Request<UpsertPrincipalsRequest>,
    ) -> Reply<UpsertPrincipalsResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.principals.len() + req.groups.len() > MAX_BATCH {
            v.add(
                "principals",
                format!("a batch holds at most {MAX_BATCH} principals and groups"),
            );
        }
        for (i, p) in req.principals.iter().enumerate() {
            v.require(&format!("principals[{i}].id"), &p.id);
            if p.r#type() == PrincipalType::Unspecified {
                v.add(
                    &format!("principals[{i}].type"),
                    "must be USER, GROUP or SERVICE_PRINCIPAL",
                );
            }
            if p.id.len() > 256 || p.display_name.len() > 256 || p.email.len() > 320 {
                v.add(
                    &format!("principals[{i}]"),
                    "id and display_name are at most 256 characters, email 320",
                );
            }
        }
        for (i, g) in req.groups.iter().enumerate() {
            v.require(&format!("groups[{i}].group_id"), &g.group_id);
            if g.member_ids
                .iter()
                .any(|m| m.trim().is_empty() || *m == g.group_id)
            {
                v.add(
                    &format!("groups[{i}].member_ids"),
                    "must be non-empty ids other than the group's own",
                );
            }
        }
        if req.discovered_assignments.len() > MAX_BATCH {
            v.add(
                "discovered_assignments",
                format!("a batch holds at most {MAX_BATCH} discovered assignments"),
            );
        }
        let mut discovered = Vec::with_capacity(req.discovered_assignments.len());
        for (i, d) in req.discovered_assignments.iter().enumerate() {
            let field = format!("discovered_assignments[{i}]");
            v.require(&format!("{field}.principal_id"), &d.principal_id);
            v.require(&format!("{field}.role_id"), &d.role_id);
            if let Some(scope) = parse_scope(&d.scope, &format!("{field}.scope"), &mut v) {
                discovered.push(DiscoveredAssignment {
                    scope: scope.to_string(),
                    ..d.clone()
                });
            }
        }
        invalid(v)?;
        self.require_admin_at_root(
            &caller,
            "/pim.assignment.v1.AssignmentService/UpsertPrincipals",
        )
        .await?;
        // The whole batch is refused when one discovered assignment names an unknown role.
        let mut v = Violations::default();
        for (i, d) in discovered.iter().enumerate() {
            if self
                .store
                .role(&d.role_id)
                .await
                .map_err(AssignmentError::from)?
                .is_none()
            {
                v.add(
                    &format!("discovered_assignments[{i}].role_id"),
                    format!("no role {}", d.role_id),
                );
            }
        }
        invalid(v)?;
        let change = self
            .store
            .upsert_directory(
                &self.ctx.outbox,
                DirectorySync {
                    principals: &req.principals,
                    groups: &req.groups,
                    discovered: &discovered,
                },
                &self.ctx.settings.break_glass_principals,
                &caller.subject,
                self.ctx.clock.now_millis(),
            )
            .await
            .map_err(AssignmentError::from)?;
        self.written(change.revision).await?;
        Ok(Response::new(UpsertPrincipalsResponse {
            created: change.created,
            updated: change.updated,
            unchanged: change.unchanged,
            memberships_changed: change.memberships_changed,
            revision: change.revision,
            discovered: change.discovered,
        }))
    }

    pub(super) async fn handle_get_principal(
        &self,
        request: Request<GetPrincipalRequest>,
    ) -> Reply<GetPrincipalResponse> {
        let caller = caller(&request)?;
        let id = request.into_inner().principal_id;
        let mut v = Violations::default();
        v.require("principal_id", &id);
        invalid(v)?;
        self.require_directory_reader(&caller, &id).await?;
        let principal = self
            .store
            .principal(&id)
            .await
            .map_err(AssignmentError::from)?
            .ok_or_else(|| AssignmentError::NotFound(format!("principal {id}")))?;
        Ok(Response::new(GetPrincipalResponse {
            principal: Some(principal),
        }))
    }

    pub(super) async fn handle_list_groups_of(
        &self,
        request: Request<ListGroupsOfRequest>,
    ) -> Reply<ListGroupsOfResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let id = req.principal_id;
        let mut v = Violations::default();
        v.require("principal_id", &id);
        invalid(v)?;
        self.require_directory_reader(&caller, &id).await?;
        let at = req
            .at
            .as_ref()
            .map(pim_proto::millis_from_timestamp)
            .unwrap_or_else(|| self.ctx.clock.now_millis());
        let mut groups = self
            .store
            .groups_of(&id)
            .await
            .map_err(AssignmentError::from)?;
        // Memberships held just in time, through Group Member at `/groups/G`.
        let mut subjects = vec![id.clone()];
        subjects.extend(groups.iter().filter(|g| g.enabled).map(|g| g.id.clone()));
        for group in self
            .store
            .member_groups_by_assignment(&subjects)
            .await
            .map_err(AssignmentError::from)?
        {
            if groups.iter().any(|g| g.id == group) {
                continue;
            }
            let scope = Scope::parse(&format!("/groups/{group}"))
                .map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
            if matches!(
                self.decide_at(&id, roles::GROUP_MEMBER, &scope, at),
                Decision::Allowed { .. }
            ) {
                let known = self
                    .store
                    .principal(&group)
                    .await
                    .map_err(AssignmentError::from)?;
                groups.push(known.unwrap_or(Principal {
                    id: group,
                    r#type: PrincipalType::Group.into(),
                    enabled: true,
                    ..Principal::default()
                }));
            }
        }
        Ok(Response::new(ListGroupsOfResponse { groups }))
    }

    pub(super) async fn handle_list_group_members(
        &self,
        request: Request<ListGroupMembersRequest>,
    ) -> Reply<ListGroupMembersResponse> {
        let caller = caller(&request)?;
        let id = request.into_inner().group_id;
        let mut v = Violations::default();
        v.require("group_id", &id);
        invalid(v)?;
        self.require_directory_reader(&caller, "").await?;
        let members = self
            .store
            .members_of(&id)
            .await
            .map_err(AssignmentError::from)?;
        Ok(Response::new(ListGroupMembersResponse { members }))
    }
}
