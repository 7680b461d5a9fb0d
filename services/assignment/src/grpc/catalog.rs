//! Handlers of the role catalog. Anyone authenticated may read it; only Global Administrators
//! and Privileged Role Administrators at `/` may change it.

use pim_grpc::{Violations, caller};
use pim_proto::assignment::v1::{
    CreateRoleRequest, CreateRoleResponse, DeleteRoleRequest, DeleteRoleResponse, GetRoleRequest,
    GetRoleResponse, ListRolesRequest, ListRolesResponse, Role, UpdateRoleRequest,
    UpdateRoleResponse,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, invalid};
use crate::{domain::roles::valid_permission, error::AssignmentError};

type Reply<T> = Result<Response<T>, Status>;

fn validate_role(role: &Role, v: &mut Violations) {
    v.require("role.display_name", &role.display_name);
    if role.display_name.len() > 256 {
        v.add("role.display_name", "must be at most 256 characters");
    }
    if role.description.len() > 1024 {
        v.add("role.description", "must be at most 1024 characters");
    }
    if role.permissions.len() > 200 {
        v.add("role.permissions", "must hold at most 200 permissions");
    }
    for (i, permission) in role.permissions.iter().enumerate() {
        if !valid_permission(permission) {
            v.add(
                &format!("role.permissions[{i}]"),
                "must look like resource/action",
            );
        }
    }
}

impl AssignmentApi {
    pub(super) async fn handle_get_role(
        &self,
        request: Request<GetRoleRequest>,
    ) -> Reply<GetRoleResponse> {
        caller(&request)?;
        let id = request.into_inner().role_id;
        let mut v = Violations::default();
        v.require("role_id", &id);
        invalid(v)?;
        let role = self
            .store
            .role(&id)
            .await
            .map_err(AssignmentError::from)?
            .ok_or_else(|| AssignmentError::NotFound(format!("role {id}")))?;
        Ok(Response::new(GetRoleResponse { role: Some(role) }))
    }

    pub(super) async fn handle_list_roles(
        &self,
        request: Request<ListRolesRequest>,
    ) -> Reply<ListRolesResponse> {
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if !(0..=500).contains(&req.page_size) {
            v.add("page_size", "must be between 0 and 500");
        }
        invalid(v)?;
        let limit = if req.page_size == 0 {
            100
        } else {
            req.page_size as u32
        };
        let roles = self
            .store
            .roles(&req.page_token, limit, req.privileged_only)
            .await
            .map_err(AssignmentError::from)?;
        let next_page_token = match roles.last() {
            Some(last) if roles.len() as u32 == limit => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListRolesResponse {
            roles,
            next_page_token,
        }))
    }

    pub(super) async fn handle_create_role(
        &self,
        request: Request<CreateRoleRequest>,
    ) -> Reply<CreateRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = req.role.unwrap_or_default();
        let mut v = Violations::default();
        validate_role(&role, &mut v);
        invalid(v)?;
        self.require_admin_at_root(&caller, "/pim.assignment.v1.AssignmentService/CreateRole")
            .await?;
        let key =
            (!req.request_id.is_empty()).then(|| format!("{}/{}", caller.subject, req.request_id));
        let (role, revision) = self
            .store
            .create_role(
                &self.ctx.outbox,
                role,
                key,
                &caller.subject,
                !req.validate_only,
            )
            .await?;
        self.ctx.outbox.wake();
        Ok(Response::new(CreateRoleResponse {
            role: Some(role),
            revision,
        }))
    }

    pub(super) async fn handle_update_role(
        &self,
        request: Request<UpdateRoleRequest>,
    ) -> Reply<UpdateRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let role = req.role.unwrap_or_default();
        let mut v = Violations::default();
        v.require("role.id", &role.id);
        validate_role(&role, &mut v);
        invalid(v)?;
        self.require_admin_at_root(&caller, "/pim.assignment.v1.AssignmentService/UpdateRole")
            .await?;
        let (role, revision) = self
            .store
            .update_role(&self.ctx.outbox, role, &caller.subject, !req.validate_only)
            .await?;
        self.ctx.outbox.wake();
        Ok(Response::new(UpdateRoleResponse {
            role: Some(role),
            revision,
        }))
    }

    pub(super) async fn handle_delete_role(
        &self,
        request: Request<DeleteRoleRequest>,
    ) -> Reply<DeleteRoleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("role_id", &req.role_id);
        invalid(v)?;
        self.require_admin_at_root(&caller, "/pim.assignment.v1.AssignmentService/DeleteRole")
            .await?;
        let revision = self
            .store
            .delete_role(
                &self.ctx.outbox,
                &req.role_id,
                &caller.subject,
                !req.validate_only,
            )
            .await?;
        self.ctx.outbox.wake();
        Ok(Response::new(DeleteRoleResponse { revision }))
    }
}
