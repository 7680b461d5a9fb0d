//! gRPC handlers: validate and convert, authorize, call the store or the domain, map the result.

mod catalog;
mod changes;
mod directory;
mod holders;
mod internal;
mod policies;
mod schedules;
mod watch;

use schedules::ScheduleOrder;

use pim_auth::Caller;
use pim_client::roles;
use pim_grpc::{DenialRecorder as _, Violations, caller};
use pim_host::HostContext;
use pim_proto::assignment::v1::{
    ExtendScheduleRequest, ExtendScheduleResponse, RenewScheduleRequest, RenewScheduleResponse,
    UpdateScheduleRequest, UpdateScheduleResponse,
};
use pim_proto::{
    assignment::v1::{
        AssignmentInternalServiceRemoveScheduleRequest,
        AssignmentInternalServiceRemoveScheduleResponse, AssignmentServiceConvertScheduleRequest,
        AssignmentServiceConvertScheduleResponse, CheckAccessRequest, CheckAccessResponse,
        CheckEligibilityRequest, CheckEligibilityResponse, ConvertScheduleRequest,
        ConvertScheduleResponse, CreateActiveScheduleRequest, CreateActiveScheduleResponse,
        CreateEligibilityScheduleRequest, CreateEligibilityScheduleResponse, CreateRoleRequest,
        CreateRoleResponse, DeleteRoleRequest, DeleteRoleResponse, ExportPoliciesRequest,
        ExportPoliciesResponse, GetEffectivePolicyRequest, GetEffectivePolicyResponse,
        GetPolicyRequest, GetPolicyResponse, GetPrincipalRequest, GetPrincipalResponse,
        GetRoleRequest, GetRoleResponse, ImportPoliciesRequest, ImportPoliciesResponse,
        ListEffectiveAssignmentsRequest, ListEffectiveAssignmentsResponse, ListGroupMembersRequest,
        ListGroupMembersResponse, ListGroupsOfRequest, ListGroupsOfResponse,
        ListRoleHoldersRequest, ListRoleHoldersResponse, ListRolesRequest, ListRolesResponse,
        ListSchedulesRequest, ListSchedulesResponse, ProvisionWindowRequest,
        ProvisionWindowResponse, RemoveScheduleRequest, RemoveScheduleResponse,
        RemoveSchedulesRequest, RemoveSchedulesResponse, RevokeWindowRequest, RevokeWindowResponse,
        ScheduleKind, SetPolicyRequest, SetPolicyResponse, UpdateRoleRequest, UpdateRoleResponse,
        UpsertPrincipalsRequest, UpsertPrincipalsResponse, WatchAccessChangesRequest,
        assignment_internal_service_server::AssignmentInternalService,
        assignment_service_server::AssignmentService,
    },
    millis_from_timestamp, timestamp_from_millis,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        access::{Decision, Interval},
        scope::Scope,
    },
    error::{AssignmentError, InvalidInput},
    index::AccessIndex,
    store::{NewWindow, Store},
};

#[derive(Clone)]
pub struct AssignmentApi {
    store: Store,
    index: AccessIndex,
    ctx: HostContext,
}

type Result<T> = std::result::Result<T, AssignmentError>;

fn invalid(v: Violations) -> Result<()> {
    v.check()
        .map_err(|e| AssignmentError::Invalid(InvalidInput(e)))
}

fn correlation<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl AssignmentApi {
    pub fn new(store: Store, index: AccessIndex, ctx: HostContext) -> Self {
        Self { store, index, ctx }
    }

    /// May `principal` act as `role` at `scope` now (see [`crate::index::Snapshot::decide`]).
    fn decide(&self, principal: &str, role: &str, scope: &Scope) -> Decision {
        self.decide_at(principal, role, scope, self.ctx.clock.now_millis())
    }

    /// [`Self::decide`] at an instant.
    fn decide_at(&self, principal: &str, role: &str, scope: &Scope, at_ms: i64) -> Decision {
        self.index
            .read(|index| index.decide(principal, role, scope, at_ms))
    }

    /// The eligibility that covers now and lasts longest, if any.
    fn eligibility(&self, principal: &str, role: &str, scope: &Scope) -> Option<Interval> {
        let now = self.ctx.clock.now_millis();
        self.index
            .read(|index| index.eligibility(principal, role, scope, now))
    }

    fn holds_any(&self, principal: &str, role_ids: &[&str], scope: &Scope) -> bool {
        role_ids.iter().any(|role| {
            matches!(
                self.decide(principal, role, scope),
                Decision::Allowed { .. }
            )
        })
    }

    /// Makes a write this replica just committed visible to its own reads before it answers,
    /// and wakes the relay for its event.
    async fn written(&self, revision: i64) -> Result<()> {
        self.ctx.outbox.wake();
        self.index.reach(revision).await?;
        Ok(())
    }

    /// Global Administrator or Privileged Role Administrator at `/`, or a recorded refusal.
    async fn require_admin_at_root(&self, caller: &Caller, method: &str) -> Result<()> {
        // A write is authorized against everything committed, not a follower's last look.
        self.index.sync().await?;
        let root = Scope::parse("/").map_err(|e| anyhow::anyhow!(e))?;
        if self.holds_any(
            &caller.subject,
            &[
                roles::GLOBAL_ADMINISTRATOR,
                roles::PRIVILEGED_ROLE_ADMINISTRATOR,
            ],
            &root,
        ) {
            return Ok(());
        }
        Err(self.deny(
            caller,
            method,
            format!(
                "{} may not change the catalog or the directory",
                caller.subject
            ),
        ))
    }

    /// Reading a principal's directory data: the principal itself, PIM's services, or a reader
    /// role (or Privileged Role Administrator) at `/`.
    async fn require_directory_reader(&self, caller: &Caller, subject: &str) -> Result<()> {
        if caller.subject == subject || caller.service().is_some() {
            return Ok(());
        }
        let root = Scope::parse("/").map_err(|e| anyhow::anyhow!(e))?;
        let mut readers = roles::READERS.to_vec();
        readers.push(roles::PRIVILEGED_ROLE_ADMINISTRATOR);
        if self.holds_any(&caller.subject, &readers, &root) {
            return Ok(());
        }
        Err(AssignmentError::Forbidden(
            "reading the directory needs a reader role at /".into(),
        ))
    }

    /// Refuses, and records the denial through the rate-limited security path.
    fn deny(&self, caller: &Caller, method: &str, message: String) -> AssignmentError {
        self.ctx
            .security
            .record_denial(method, &caller.subject, "NOT_AUTHORIZED");
        AssignmentError::Forbidden(message)
    }
}

fn parse_scope(raw: &str, field: &str, v: &mut Violations) -> Option<Scope> {
    match Scope::parse(raw) {
        Ok(scope) => Some(scope),
        Err(problem) => {
            v.add(field, problem);
            None
        }
    }
}

/// Validates the (role, scope) a policy query names.
fn validate_target_role(role: &str, scope: &str) -> Result<Scope> {
    let mut v = Violations::default();
    v.require("role_id", role);
    let parsed = parse_scope(scope, "scope", &mut v);
    invalid(v)?;
    parsed.ok_or_else(|| {
        AssignmentError::Internal(anyhow::anyhow!("scope parsed without a violation"))
    })
}

/// Validates the (principal, role, scope) every query names.
fn validate_target(principal: &str, role: &str, scope: &str) -> Result<Scope> {
    let mut v = Violations::default();
    v.require("principal_id", principal);
    v.require("role_id", role);
    let parsed = parse_scope(scope, "scope", &mut v);
    invalid(v)?;
    parsed.ok_or_else(|| {
        AssignmentError::Internal(anyhow::anyhow!("scope parsed without a violation"))
    })
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    type WatchAccessChangesStream = watch::WatchStream;

    async fn watch_access_changes(
        &self,
        request: Request<WatchAccessChangesRequest>,
    ) -> std::result::Result<Response<Self::WatchAccessChangesStream>, Status> {
        self.handle_watch_access_changes(request).await
    }

    async fn update_schedule(
        &self,
        request: Request<UpdateScheduleRequest>,
    ) -> std::result::Result<Response<UpdateScheduleResponse>, Status> {
        self.handle_update_schedule(request).await
    }

    async fn list_effective_assignments(
        &self,
        request: Request<ListEffectiveAssignmentsRequest>,
    ) -> std::result::Result<Response<ListEffectiveAssignmentsResponse>, Status> {
        self.handle_list_effective_assignments(request).await
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> std::result::Result<Response<ListSchedulesResponse>, Status> {
        self.handle_list_schedules(request).await
    }

    async fn list_role_holders(
        &self,
        request: Request<ListRoleHoldersRequest>,
    ) -> std::result::Result<Response<ListRoleHoldersResponse>, Status> {
        self.handle_list_role_holders(request).await
    }

    async fn get_effective_policy(
        &self,
        request: Request<GetEffectivePolicyRequest>,
    ) -> std::result::Result<Response<GetEffectivePolicyResponse>, Status> {
        self.handle_get_effective_policy(request).await
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> std::result::Result<Response<GetPolicyResponse>, Status> {
        self.handle_get_policy(request).await
    }

    async fn export_policies(
        &self,
        request: Request<ExportPoliciesRequest>,
    ) -> std::result::Result<Response<ExportPoliciesResponse>, Status> {
        self.handle_export_policies(request).await
    }

    async fn import_policies(
        &self,
        request: Request<ImportPoliciesRequest>,
    ) -> std::result::Result<Response<ImportPoliciesResponse>, Status> {
        self.handle_import_policies(request).await
    }

    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> std::result::Result<Response<SetPolicyResponse>, Status> {
        self.handle_set_policy(request).await
    }

    async fn get_role(
        &self,
        request: Request<GetRoleRequest>,
    ) -> std::result::Result<Response<GetRoleResponse>, Status> {
        self.handle_get_role(request).await
    }

    async fn list_roles(
        &self,
        request: Request<ListRolesRequest>,
    ) -> std::result::Result<Response<ListRolesResponse>, Status> {
        self.handle_list_roles(request).await
    }

    async fn create_role(
        &self,
        request: Request<CreateRoleRequest>,
    ) -> std::result::Result<Response<CreateRoleResponse>, Status> {
        self.handle_create_role(request).await
    }

    async fn update_role(
        &self,
        request: Request<UpdateRoleRequest>,
    ) -> std::result::Result<Response<UpdateRoleResponse>, Status> {
        self.handle_update_role(request).await
    }

    async fn delete_role(
        &self,
        request: Request<DeleteRoleRequest>,
    ) -> std::result::Result<Response<DeleteRoleResponse>, Status> {
        self.handle_delete_role(request).await
    }

    async fn upsert_principals(
        &self,
        request: Request<UpsertPrincipalsRequest>,
    ) -> std::result::Result<Response<UpsertPrincipalsResponse>, Status> {
        self.handle_upsert_principals(request).await
    }

    async fn get_principal(
        &self,
        request: Request<GetPrincipalRequest>,
    ) -> std::result::Result<Response<GetPrincipalResponse>, Status> {
        self.handle_get_principal(request).await
    }

    async fn list_groups_of(
        &self,
        request: Request<ListGroupsOfRequest>,
    ) -> std::result::Result<Response<ListGroupsOfResponse>, Status> {
        self.handle_list_groups_of(request).await
    }

    async fn list_group_members(
        &self,
        request: Request<ListGroupMembersRequest>,
    ) -> std::result::Result<Response<ListGroupMembersResponse>, Status> {
        self.handle_list_group_members(request).await
    }

    async fn create_eligibility_schedule(
        &self,
        request: Request<CreateEligibilityScheduleRequest>,
    ) -> std::result::Result<Response<CreateEligibilityScheduleResponse>, Status> {
        let (caller, correlation) = (caller(&request)?, correlation(&request));
        let r = request.into_inner();
        let order = ScheduleOrder {
            kind: ScheduleKind::Eligible,
            request_id: r.request_id,
            principal_id: r.principal_id,
            role_id: r.role_id,
            scope: r.scope,
            start_time: r.start_time,
            end_time: r.end_time,
            justification: r.justification,
            validate_only: r.validate_only,
            duration: r.duration,
            ticket_system: r.ticket_system,
            ticket_number: r.ticket_number,
        };
        let (schedule, revision) = self.create_schedule(&caller, &correlation, order).await?;
        Ok(Response::new(CreateEligibilityScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }

    async fn create_active_schedule(
        &self,
        request: Request<CreateActiveScheduleRequest>,
    ) -> std::result::Result<Response<CreateActiveScheduleResponse>, Status> {
        let (caller, correlation) = (caller(&request)?, correlation(&request));
        let r = request.into_inner();
        let order = ScheduleOrder {
            kind: ScheduleKind::Active,
            request_id: r.request_id,
            principal_id: r.principal_id,
            role_id: r.role_id,
            scope: r.scope,
            start_time: r.start_time,
            end_time: r.end_time,
            justification: r.justification,
            validate_only: r.validate_only,
            duration: r.duration,
            ticket_system: r.ticket_system,
            ticket_number: r.ticket_number,
        };
        let (schedule, revision) = self.create_schedule(&caller, &correlation, order).await?;
        Ok(Response::new(CreateActiveScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }

    async fn remove_schedule(
        &self,
        request: Request<RemoveScheduleRequest>,
    ) -> std::result::Result<Response<RemoveScheduleResponse>, Status> {
        self.handle_remove_schedule(request).await
    }

    async fn convert_schedule(
        &self,
        request: Request<AssignmentServiceConvertScheduleRequest>,
    ) -> std::result::Result<Response<AssignmentServiceConvertScheduleResponse>, Status> {
        self.handle_convert_schedule_by_admin(request).await
    }

    async fn check_eligibility(
        &self,
        request: Request<CheckEligibilityRequest>,
    ) -> std::result::Result<Response<CheckEligibilityResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let scope = validate_target(&req.principal_id, &req.role_id, &req.scope)?;
        if caller.subject != req.principal_id && caller.service().is_none() {
            return Err(Status::permission_denied(
                "only the principal itself or a PIM service may check eligibility",
            ));
        }
        let found = self.eligibility(&req.principal_id, &req.role_id, &scope);
        Ok(Response::new(match found {
            Some(schedule) => CheckEligibilityResponse {
                eligible: true,
                eligibility_schedule_id: schedule.id,
                eligible_until: schedule.end_ms.map(timestamp_from_millis),
            },
            None => CheckEligibilityResponse::default(),
        }))
    }

    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> std::result::Result<Response<CheckAccessResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let scope = validate_target(&req.principal_id, &req.role_id, &req.scope)?;
        // Anyone may check their own access; PIM's services, Access Checkers and the reader
        // roles at `/` check others'.
        if caller.subject != req.principal_id && caller.service().is_none() {
            let root = Scope::parse("/").map_err(|_| Status::internal("root scope"))?;
            let mut checkers = roles::READERS.to_vec();
            checkers.extend([roles::ACCESS_CHECKER, roles::PRIVILEGED_ROLE_ADMINISTRATOR]);
            if !self.holds_any(&caller.subject, &checkers, &root) {
                return Err(Status::permission_denied(
                    "checking another principal's access needs Access Checker or a reader role at /",
                ));
            }
        }
        let mut revision = self.index.revision();
        if req.at_least_revision > revision {
            // A write another replica answered: catch up with the database before answering.
            revision = self.index.sync().await.map_err(AssignmentError::from)?;
        }
        if req.at_least_revision > revision {
            return Err(Status::unavailable(format!(
                "revision {} is not visible here yet (at {revision}); retry",
                req.at_least_revision
            )));
        }
        let at = req
            .at
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_else(|| self.ctx.clock.now_millis());
        // The nearest miss, when denied, tells the caller what would grant access.
        let (decision, nearest) = self
            .index
            .read(|index| index.check(&req.principal_id, &req.role_id, &scope, at));
        Ok(Response::new(match decision {
            Decision::Allowed { via, until_ms } => CheckAccessResponse {
                allowed: true,
                valid_until: until_ms.map(timestamp_from_millis),
                explanation: via,
                revision,
            },
            Decision::Denied { reason } => {
                let explanation = match nearest {
                    Some(schedule) => format!(
                        "eligible but not active (eligibility_schedule:{}): activate the role",
                        schedule.id
                    ),
                    None => reason.to_owned(),
                };
                CheckAccessResponse {
                    allowed: false,
                    valid_until: None,
                    explanation,
                    revision,
                }
            }
        }))
    }
}

#[tonic::async_trait]
impl AssignmentInternalService for AssignmentApi {
    async fn extend_schedule(
        &self,
        request: Request<ExtendScheduleRequest>,
    ) -> std::result::Result<Response<ExtendScheduleResponse>, Status> {
        self.handle_extend_schedule(request).await
    }

    async fn renew_schedule(
        &self,
        request: Request<RenewScheduleRequest>,
    ) -> std::result::Result<Response<RenewScheduleResponse>, Status> {
        self.handle_renew_schedule(request).await
    }

    async fn revoke_window(
        &self,
        request: Request<RevokeWindowRequest>,
    ) -> std::result::Result<Response<RevokeWindowResponse>, Status> {
        self.handle_revoke_window(request).await
    }

    async fn remove_schedule(
        &self,
        request: Request<AssignmentInternalServiceRemoveScheduleRequest>,
    ) -> std::result::Result<Response<AssignmentInternalServiceRemoveScheduleResponse>, Status>
    {
        self.handle_internal_remove_schedule(request).await
    }

    async fn remove_schedules(
        &self,
        request: Request<RemoveSchedulesRequest>,
    ) -> std::result::Result<Response<RemoveSchedulesResponse>, Status> {
        self.handle_remove_schedules(request).await
    }

    async fn convert_schedule(
        &self,
        request: Request<ConvertScheduleRequest>,
    ) -> std::result::Result<Response<ConvertScheduleResponse>, Status> {
        self.handle_convert_schedule(request).await
    }

    async fn provision_window(
        &self,
        request: Request<ProvisionWindowRequest>,
    ) -> std::result::Result<Response<ProvisionWindowResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("request_id", &req.request_id);
        v.require("principal_id", &req.principal_id);
        v.require("role_id", &req.role_id);
        let scope = parse_scope(&req.scope, "scope", &mut v);
        if req.start_time.is_none() {
            v.add("start_time", "is required");
        }
        if req.end_time.is_none() {
            v.add("end_time", "is required");
        }
        let start_ms = req
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_default();
        let end_ms = req
            .end_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or_default();
        if req.start_time.is_some() && req.end_time.is_some() && end_ms <= start_ms {
            v.add("end_time", "must be after start_time");
        }
        invalid(v)?;
        let Some(scope) = scope else {
            return Err(Status::internal("scope vanished"));
        };
        // Eligibility is checked again at provisioning, against everything committed so far: it
        // may have ended since submission, on any replica.
        self.index.sync().await.map_err(AssignmentError::from)?;
        let Some(eligibility) = self.eligibility(&req.principal_id, &req.role_id, &scope) else {
            return Err(AssignmentError::NotEligible.into());
        };
        let new = NewWindow {
            request_id: req.request_id,
            principal_id: req.principal_id,
            role_id: req.role_id,
            scope: scope.to_string(),
            eligibility_schedule_id: eligibility.id,
            start_ms,
            end_ms,
            provisioned_by: caller.subject,
        };
        let (window, revision) = self
            .store
            .provision_window(&self.ctx.outbox, new, self.ctx.clock.now_millis())
            .await
            .map_err(AssignmentError::from)?;
        self.written(revision).await?;
        Ok(Response::new(ProvisionWindowResponse {
            window: Some(window),
            revision,
        }))
    }
}
