//! Handlers that change a schedule's window: adminUpdate, adminExtend and adminRenew for
//! administrators, and ExtendSchedule/RenewSchedule for activation after an approved request.

use pim_auth::Caller;
use pim_grpc::{ApiError, caller};
use pim_proto::{
    Timestamp,
    assignment::v1::{
        ExtendScheduleRequest, ExtendScheduleResponse, RenewScheduleRequest, RenewScheduleResponse,
        Schedule, ScheduleChange, ScheduleKind, UpdateScheduleRequest, UpdateScheduleResponse,
    },
    millis_from_timestamp,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, Result};
use crate::{
    domain::{
        change::{ChangeRefusal, next_window},
        policy,
        scope::Scope,
    },
    error::AssignmentError,
};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// Who asks for a change: an administrator (the admin rules apply), or a peer on a decision.
enum Requester<'a> {
    Admin(&'a Caller),
    Peer {
        caller: &'a Caller,
        decision_id: &'a str,
    },
}

impl AssignmentApi {
    #[allow(clippy::too_many_arguments)]
    async fn change(
        &self,
        requester: Requester<'_>,
        schedule_id: &str,
        change: ScheduleChange,
        end_time: Option<&Timestamp>,
        justification: &str,
        write: bool,
    ) -> Result<(Schedule, i64)> {
        if schedule_id.trim().is_empty() {
            return Err(ApiError::InvalidArgument(vec![(
                "schedule_id".into(),
                "is required".into(),
            )])
            .into());
        }
        let before = self.store.schedule_by_id(schedule_id).await?;
        let scope = Scope::parse(&before.scope)
            .map_err(|e| AssignmentError::Internal(anyhow::anyhow!(e)))?;
        if let Requester::Admin(caller) = &requester {
            self.require_admin_at(
                caller,
                &scope,
                "/pim.assignment.v1.AssignmentService/UpdateSchedule",
            )
            .await?;
        }
        let now = self.ctx.clock.now_millis();
        let start = before
            .start_time
            .as_ref()
            .map(millis_from_timestamp)
            .unwrap_or(0);
        let end = before.end_time.as_ref().map(millis_from_timestamp);
        let (new_start, new_end) =
            next_window(change, start, end, end_time.map(millis_from_timestamp), now).map_err(
                |refusal| match refusal {
                    ChangeRefusal::Invalid(field, message) => AssignmentError::from(
                        ApiError::InvalidArgument(vec![(field.into(), message.into())]),
                    ),
                    ChangeRefusal::State(reason, message) => AssignmentError::Refused {
                        reason,
                        message: message.into(),
                    },
                },
            )?;
        let rules = self
            .effective_policy(&before.role_id, &scope)
            .await?
            .rules
            .unwrap_or_default();
        let active = before.kind() == ScheduleKind::Active;
        let (actor, decision_id) = match &requester {
            Requester::Admin(caller) => {
                policy::check_admin_schedule(
                    &rules,
                    active,
                    new_start,
                    new_end,
                    justification,
                    caller.did_mfa(),
                )
                .map_err(AssignmentError::Policy)?;
                (caller.subject.clone(), "")
            }
            Requester::Peer {
                caller,
                decision_id,
            } => {
                policy::check_expiration(&rules, active, new_start, new_end)
                    .map_err(AssignmentError::Policy)?;
                (caller.subject.clone(), *decision_id)
            }
        };
        let event_type = match change {
            ScheduleChange::Extend => "assignment.schedule_extended",
            ScheduleChange::Renew => "assignment.schedule_renewed",
            _ => "assignment.schedule_updated",
        };
        let changed = self
            .store
            .change_schedule(
                &self.ctx.outbox,
                &before,
                event_type,
                new_start,
                new_end,
                justification,
                decision_id,
                &actor,
                write,
            )
            .await?;
        self.written(changed.1).await?;
        Ok(changed)
    }

    pub(super) async fn handle_update_schedule(
        &self,
        request: Request<UpdateScheduleRequest>,
    ) -> Reply<UpdateScheduleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (schedule, revision) = self
            .change(
                Requester::Admin(&caller),
                &req.schedule_id,
                req.change(),
                req.end_time.as_ref(),
                &req.justification,
                !req.validate_only,
            )
            .await?;
        Ok(Response::new(UpdateScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }

    async fn peer_change(
        &self,
        caller: &Caller,
        schedule_id: &str,
        decision_id: &str,
        change: ScheduleChange,
        end_time: Option<&Timestamp>,
    ) -> Result<(Schedule, i64)> {
        if decision_id.trim().is_empty() {
            return Err(ApiError::InvalidArgument(vec![(
                "decision_id".into(),
                "is required".into(),
            )])
            .into());
        }
        let requester = Requester::Peer {
            caller,
            decision_id,
        };
        self.change(requester, schedule_id, change, end_time, "", true)
            .await
    }

    pub(super) async fn handle_extend_schedule(
        &self,
        request: Request<ExtendScheduleRequest>,
    ) -> Reply<ExtendScheduleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (schedule, revision) = self
            .peer_change(
                &caller,
                &req.schedule_id,
                &req.decision_id,
                ScheduleChange::Extend,
                req.end_time.as_ref(),
            )
            .await?;
        Ok(Response::new(ExtendScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }

    pub(super) async fn handle_renew_schedule(
        &self,
        request: Request<RenewScheduleRequest>,
    ) -> Reply<RenewScheduleResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let (schedule, revision) = self
            .peer_change(
                &caller,
                &req.schedule_id,
                &req.decision_id,
                ScheduleChange::Renew,
                req.end_time.as_ref(),
            )
            .await?;
        Ok(Response::new(RenewScheduleResponse {
            schedule: Some(schedule),
            revision,
        }))
    }
}
