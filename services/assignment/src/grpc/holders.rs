//! Listing queries: a role's schedules, who holds a role at a scope now, and what a principal
//! holds. Peers read them by
//! name, readers at `/` and administrators at the scope too.

use pim_auth::Caller;
use pim_client::roles;
use pim_grpc::{Violations, caller};
use pim_proto::{
    assignment::v1::{
        AssignmentState, EffectiveAssignment, ListEffectiveAssignmentsRequest,
        ListEffectiveAssignmentsResponse, ListRoleHoldersRequest, ListRoleHoldersResponse,
        ListSchedulesRequest, ListSchedulesResponse, MemberType, RoleHolder, ScheduleKind,
        ScheduleOrigin,
    },
    timestamp_from_millis,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, Result, invalid, parse_scope};
use crate::{
    domain::{access::Decision, scope::Scope},
    error::AssignmentError,
    store::ScopeFilter,
};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// Direct when held at the scope asked about, inherited when held at an ancestor.
fn member_type(held_at: &str, asked: &Scope) -> MemberType {
    if held_at == asked.as_str() {
        MemberType::Direct
    } else {
        MemberType::Inherited
    }
}

impl AssignmentApi {
    /// PIM's services, readers at `/`, or administrators at `scope`.
    pub(super) async fn require_listing_reader(
        &self,
        caller: &Caller,
        scope: &Scope,
    ) -> Result<()> {
        if caller.service().is_some() {
            return Ok(());
        }
        let root = Scope::parse("/").map_err(|e| anyhow::anyhow!(e))?;
        if self.holds_any(&caller.subject, &roles::READERS, &root)
            || self.holds_any(
                &caller.subject,
                &[
                    roles::GLOBAL_ADMINISTRATOR,
                    roles::PRIVILEGED_ROLE_ADMINISTRATOR,
                ],
                scope,
            )
        {
            return Ok(());
        }
        Err(AssignmentError::Forbidden(
            "listing assignments needs a reader role at / or an administrator role at the scope"
                .into(),
        ))
    }

    pub(super) async fn handle_list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Reply<ListSchedulesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("role_id", &req.role_id);
        let scope = parse_scope(&req.scope, "scope", &mut v);
        if !(0..=500).contains(&req.page_size) {
            v.add("page_size", "must be between 0 and 500");
        }
        invalid(v)?;
        let scope = scope.ok_or_else(|| {
            AssignmentError::Internal(anyhow::anyhow!("scope parsed without a violation"))
        })?;
        self.require_listing_reader(&caller, &scope).await?;
        let limit = if req.page_size == 0 {
            100
        } else {
            req.page_size as usize
        };
        let kind = match req.kind() {
            ScheduleKind::Unspecified => None,
            kind => Some(kind),
        };
        let matches = ScopeFilter::Subtree {
            root: scope.as_str().to_owned(),
            include_descendants: req.include_descendants,
        };
        let schedules = self
            .store
            .schedules_of_role(
                &req.role_id,
                kind,
                &req.principal_id,
                &matches,
                &req.page_token,
                limit,
            )
            .await
            .map_err(AssignmentError::from)?;
        let next_page_token = match schedules.last() {
            Some(last) if schedules.len() == limit => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListSchedulesResponse {
            schedules,
            next_page_token,
        }))
    }

    pub(super) async fn handle_list_effective_assignments(
        &self,
        request: Request<ListEffectiveAssignmentsRequest>,
    ) -> Reply<ListEffectiveAssignmentsResponse> {
        let caller = caller(&request)?;
        let principal = request.into_inner().principal_id;
        let mut v = Violations::default();
        v.require("principal_id", &principal);
        invalid(v)?;
        self.require_directory_reader(&caller, &principal).await?;
        let now = self.ctx.clock.now_millis();
        let Some(subjects) = self.index.read(|index| index.subject_ids(&principal)) else {
            // A disabled principal holds nothing.
            return Ok(Response::new(ListEffectiveAssignmentsResponse::default()));
        };
        let mut assignments = Vec::new();
        for schedule in self
            .store
            .schedules_held_by(&subjects)
            .await
            .map_err(AssignmentError::from)?
        {
            let start = schedule
                .start_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or(0);
            let end = schedule
                .end_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp);
            if start > now || end.is_some_and(|e| e <= now) {
                continue;
            }
            let state = match (schedule.kind(), end) {
                (ScheduleKind::Eligible, _) => AssignmentState::Eligible,
                (_, None) => AssignmentState::Permanent,
                (_, Some(_)) => AssignmentState::TimeBound,
            };
            let direct = schedule.principal_id == principal;
            assignments.push(EffectiveAssignment {
                role_id: schedule.role_id.clone(),
                scope: schedule.scope.clone(),
                state: state.into(),
                member_type: if direct {
                    MemberType::Direct
                } else {
                    MemberType::Group
                }
                .into(),
                group_id: if direct {
                    String::new()
                } else {
                    schedule.principal_id.clone()
                },
                source: format!("schedule:{}", schedule.id),
                origin: schedule.origin,
                until: schedule.end_time,
            });
        }
        for window in self
            .store
            .windows_of(&principal)
            .await
            .map_err(AssignmentError::from)?
        {
            let scope = Scope::parse(&window.scope)
                .map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
            // A window counts only while its eligibility holds; ask the one place that decides.
            if let Decision::Allowed { via, until_ms } =
                self.decide_at(&principal, &window.role_id, &scope, now)
                && via == format!("window:{}", window.id)
            {
                assignments.push(EffectiveAssignment {
                    role_id: window.role_id.clone(),
                    scope: window.scope.clone(),
                    state: AssignmentState::Activated.into(),
                    member_type: MemberType::Direct.into(),
                    group_id: String::new(),
                    source: via,
                    until: until_ms.map(timestamp_from_millis),
                    origin: ScheduleOrigin::Activated.into(),
                });
            }
        }
        Ok(Response::new(ListEffectiveAssignmentsResponse {
            assignments,
        }))
    }

    pub(super) async fn handle_list_role_holders(
        &self,
        request: Request<ListRoleHoldersRequest>,
    ) -> Reply<ListRoleHoldersResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("role_id", &req.role_id);
        let scope = parse_scope(&req.scope, "scope", &mut v);
        invalid(v)?;
        let scope = scope.ok_or_else(|| {
            AssignmentError::Internal(anyhow::anyhow!("scope parsed without a violation"))
        })?;
        self.require_listing_reader(&caller, &scope).await?;
        let now = self.ctx.clock.now_millis();
        let scopes = scope.with_ancestors();
        let mut holders: Vec<RoleHolder> = Vec::new();
        let in_scope = ScopeFilter::AnyOf(scopes.iter().map(|s| s.to_string()).collect());
        let active = self
            .store
            .schedules_of_role(
                &req.role_id,
                Some(ScheduleKind::Active),
                "",
                &in_scope,
                "",
                usize::MAX,
            )
            .await
            .map_err(AssignmentError::from)?;
        for schedule in active {
            let start = schedule
                .start_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp)
                .unwrap_or(0);
            let end = schedule
                .end_time
                .as_ref()
                .map(pim_proto::millis_from_timestamp);
            if start > now || end.is_some_and(|e| e <= now) {
                continue;
            }
            let members = self
                .store
                .members_of(&schedule.principal_id)
                .await
                .map_err(AssignmentError::from)?;
            let through_group = !members.is_empty();
            let candidates: Vec<(String, MemberType, String)> = if through_group {
                members
                    .into_iter()
                    .map(|m| (m.id, MemberType::Group, schedule.principal_id.clone()))
                    .collect()
            } else {
                vec![(
                    schedule.principal_id.clone(),
                    member_type(&schedule.scope, &scope),
                    String::new(),
                )]
            };
            for (principal, member_type, group) in candidates {
                // A disabled principal (or one in a disabled group) holds nothing.
                if let Decision::Allowed { .. } =
                    self.decide_at(&principal, &req.role_id, &scope, now)
                {
                    holders.push(RoleHolder {
                        principal_id: principal,
                        member_type: member_type.into(),
                        group_id: group,
                        via: format!("active_schedule:{}", schedule.id),
                        until: end.map(timestamp_from_millis),
                        scope: schedule.scope.clone(),
                    });
                }
            }
        }
        for (principal, window_scope) in self
            .store
            .window_holders(&req.role_id, &scopes, now)
            .await
            .map_err(AssignmentError::from)?
        {
            if let Decision::Allowed { via, until_ms } =
                self.decide_at(&principal, &req.role_id, &scope, now)
                && via.starts_with("window:")
            {
                holders.push(RoleHolder {
                    principal_id: principal,
                    member_type: member_type(&window_scope, &scope).into(),
                    group_id: String::new(),
                    via,
                    until: until_ms.map(timestamp_from_millis),
                    scope: window_scope,
                });
            }
        }
        Ok(Response::new(ListRoleHoldersResponse { holders }))
    }
}
