//! Handlers of schedule administration (Graph's adminAssign and adminRemove), for both kinds.

use pim_auth::Caller;
use pim_client::roles;
use pim_grpc::{Violations, caller};
use pim_proto::{
    Timestamp,
    assignment::v1::{
        AssignmentServiceConvertScheduleRequest, AssignmentServiceConvertScheduleResponse,
        PrincipalType, RemoveScheduleRequest, RemoveScheduleResponse, Schedule, ScheduleKind,
        ScheduleOrigin,
    },
    millis_from_timestamp,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, Result, invalid, parse_scope};
use crate::{
    domain::{policy, scope::Scope},
    error::AssignmentError,
    store::NewSchedule,
};

/// The shortest schedule PIM writes.
const MIN_WINDOW_MS: i64 = 5 * 60 * 1000;

/// A request to create a schedule of either kind.
pub(super) struct ScheduleOrder {
    pub kind: ScheduleKind,
    pub request_id: String,
    pub principal_id: String,
    pub role_id: String,
    pub scope: String,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub justification: String,
    pub validate_only: bool,
    /// `afterDuration`: the end is this long after the start.
    pub duration: Option<pim_proto::Duration>,
    pub ticket_system: String,
    pub ticket_number: String,
}

impl AssignmentApi {
    /// Global Administrator or Privileged Role Administrator at `scope` or an ancestor, or a
    /// recorded refusal.
    pub(super) async fn require_admin_at(
        &self,
        caller: &Caller,
        scope: &Scope,
        method: &str,
    ) -> Result<()> {
        // A write is authorized against everything committed, not a follower's last look.
        self.index.sync().await?;
        if self.holds_any(
            &caller.subject,
            &[
                roles::GLOBAL_ADMINISTRATOR,
                roles::PRIVILEGED_ROLE_ADMINISTRATOR,
            ],
            scope,
        ) {
            return Ok(());
        }
        Err(self.deny(
            caller,
            method,
            format!("{} may not manage assignments at {scope}", caller.subject),
        ))
    }

    pub(super) async fn create_schedule(
        &self,
        caller: &Caller,
        correlation: &str,
        order: ScheduleOrder,
    ) -> Result<(Schedule, i64)> {
        let mut v = Violations::default();
        v.require("principal_id", &order.principal_id);
        v.require("role_id", &order.role_id);
        let scope = parse_scope(&order.scope, "scope", &mut v);
        let now = self.ctx.clock.now_millis();
        let start_ms = order
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or(now);
        let end_ms = match (&order.end_time, &order.duration) {
            (Some(_), Some(_)) => {
                v.add("duration", "give end_time or duration, not both");
                None
            }
            (Some(end), None) => Some(millis_from_timestamp(end)),
            (None, Some(d)) if d.seconds < 0 || d.nanos < 0 => {
                v.add("duration", "must be positive");
                None
            }
            (None, Some(d)) => Some(
                start_ms
                    .saturating_add(d.seconds.saturating_mul(1000))
                    .saturating_add(i64::from(d.nanos / 1_000_000)),
            ),
            (None, None) => None,
        };
        if order.ticket_system.len() > 100 || order.ticket_number.len() > 100 {
            v.add("ticket_number", "ticket fields are at most 100 characters");
        }
        match end_ms {
            Some(end) if end <= start_ms => v.add("end_time", "must be after start_time"),
            Some(end) if end - start_ms < MIN_WINDOW_MS => {
                v.add("end_time", "a schedule lasts at least 5 minutes")
            }
            Some(end) if end <= now => v.add("end_time", "must be in the future"),
            _ => {}
        }
        if order.justification.len() > 500 {
            v.add("justification", "must be at most 500 characters");
        }
        invalid(v)?;
        let scope = scope.ok_or_else(|| {
            AssignmentError::Internal(anyhow::anyhow!("scope parsed without a violation"))
        })?;
        let method = match order.kind {
            ScheduleKind::Active => "/pim.assignment.v1.AssignmentService/CreateActiveSchedule",
            _ => "/pim.assignment.v1.AssignmentService/CreateEligibilitySchedule",
        };
        self.require_admin_at(caller, &scope, method).await?;
        if self.store.role(&order.role_id).await?.is_none() {
            return Err(AssignmentError::NotFound(format!("role {}", order.role_id)));
        }
        let effective = self.effective_policy(&order.role_id, &scope).await?;
        policy::check_admin_schedule(
            &effective.rules.unwrap_or_default(),
            order.kind == ScheduleKind::Active,
            start_ms,
            end_ms,
            &order.justification,
            caller.did_mfa(),
        )
        .map_err(AssignmentError::Policy)?;
        if order.kind == ScheduleKind::Eligible
            && self
                .store
                .principal(&order.principal_id)
                .await?
                .is_some_and(|p| p.r#type() == PrincipalType::ServicePrincipal)
        {
            return Err(AssignmentError::Refused {
                reason: "SERVICE_PRINCIPAL_ACTIVE_ONLY",
                message: "a service principal may hold active assignments only, not eligibility"
                    .into(),
            });
        }
        let new = NewSchedule {
            kind: order.kind,
            principal_id: order.principal_id,
            role_id: order.role_id,
            scope: scope.to_string(),
            start_ms,
            end_ms,
            created_by: caller.subject.clone(),
            request_key: (!order.request_id.is_empty())
                .then(|| format!("{}/{}", caller.subject, order.request_id)),
            justification: order.justification,
            origin: ScheduleOrigin::Assigned,
            ticket_system: order.ticket_system,
            ticket_number: order.ticket_number,
        };
        let created = self
            .store
            .create_schedule(
                &self.ctx.outbox,
                new,
                now,
                correlation,
                !order.validate_only,
            )
            .await?;
        self.written(created.1).await?;
        Ok(created)
    }

    pub(super) async fn handle_remove_schedule(
        &self,
        request: Request<RemoveScheduleRequest>,
    ) -> std::result::Result<Response<RemoveScheduleResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("schedule_id", &req.schedule_id);
        invalid(v)?;
        let schedule = self.store.schedule_by_id(&req.schedule_id).await?;
        let scope = Scope::parse(&schedule.scope)
            .map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
        self.require_admin_at(
            &caller,
            &scope,
            "/pim.assignment.v1.AssignmentService/RemoveSchedule",
        )
        .await?;
        let revision = self
            .store
            .remove_schedule(
                &self.ctx.outbox,
                &req.schedule_id,
                &caller.subject,
                &req.justification,
                "",
                !req.validate_only,
            )
            .await?;
        self.written(revision).await?;
        Ok(Response::new(RemoveScheduleResponse { revision }))
    }

    /// adminUpdate of a schedule's kind: the admin policy of the target kind applies to the
    /// schedule's window, and a service principal stays active only.
    pub(super) async fn handle_convert_schedule_by_admin(
        &self,
        request: Request<AssignmentServiceConvertScheduleRequest>,
    ) -> std::result::Result<Response<AssignmentServiceConvertScheduleResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.require("schedule_id", &req.schedule_id);
        if req.target_kind() == ScheduleKind::Unspecified {
            v.add("target_kind", "must be ELIGIBLE or ACTIVE");
        }
        if req.justification.len() > 500 {
            v.add("justification", "must be at most 500 characters");
        }
        invalid(v)?;
        let schedule = self.store.schedule_by_id(&req.schedule_id).await?;
        let scope = Scope::parse(&schedule.scope)
            .map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
        self.require_admin_at(
            &caller,
            &scope,
            "/pim.assignment.v1.AssignmentService/ConvertSchedule",
        )
        .await?;
        let target = req.target_kind();
        if target == ScheduleKind::Eligible
            && self
                .store
                .principal(&schedule.principal_id)
                .await
                .map_err(AssignmentError::from)?
                .is_some_and(|p| p.r#type() == PrincipalType::ServicePrincipal)
        {
            return Err(AssignmentError::Refused {
                reason: "SERVICE_PRINCIPAL_ACTIVE_ONLY",
                message: "a service principal may hold active assignments only, not eligibility"
                    .into(),
            }
            .into());
        }
        let effective = self.effective_policy(&schedule.role_id, &scope).await?;
        policy::check_admin_schedule(
            &effective.rules.unwrap_or_default(),
            target == ScheduleKind::Active,
            schedule
                .start_time
                .as_ref()
                .map(millis_from_timestamp)
                .unwrap_or(0),
            schedule.end_time.as_ref().map(millis_from_timestamp),
            &req.justification,
            caller.did_mfa(),
        )
        .map_err(AssignmentError::Policy)?;
        let (schedule, revision) = self
            .store
            .convert_schedule(
                &self.ctx.outbox,
                &req.schedule_id,
                target,
                &caller.subject,
                "",
                self.ctx.clock.now_millis(),
                !req.validate_only,
            )
            .await?;
        self.written(revision).await?;
        Ok(Response::new(AssignmentServiceConvertScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }
}
